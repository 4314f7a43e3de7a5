"""Identity and authorization (issue 9): certificates, backend credentials, security codes."""
