"""The signal that a stream ends because the gateway shuts down, not because it is finished.

Raised by the stream sources (event hubs, the telemetry fan-out, the JetStream reader) once they
have handed out what they had; the gRPC stream wrapper (gateway/api/errors.py) turns it into
UNAVAILABLE, so a client knows to reconnect (elsewhere) and resume from its last cursor instead
of taking the end as "nothing more will come".
"""

from __future__ import annotations

GOING_AWAY_MESSAGE = "the server is going away (shutting down); reconnect and resume from your last cursor"


class GoingAway(Exception):
    """The gateway stops: the stream ends with UNAVAILABLE after what it has sent."""

    def __init__(self) -> None:
        super().__init__(GOING_AWAY_MESSAGE)
