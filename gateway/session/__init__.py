"""Vehicle sessions: presence, link, privacy and physical state, per VIN."""
