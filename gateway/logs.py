"""Log output: `log_format` text (one line for a person) or json (one object per line for a log
collector), at `log_level`.

A JSON line holds ts (UTC, ISO 8601 with milliseconds), level, logger, event, message, and the
fields the call passed in ``extra`` (besides ``event``). ``event`` is a stable snake_case name
per log call: given as ``extra={"event": ...}``, or else derived from the call's message
template (its words before the first placeholder's arguments are filled in), so it does not
change with the values and every existing call has one without an edit.

What may be logged is decided at the call: no token, security code or password ever (the
texts that could hold one pass through gateway/redact.py first); VINs at DEBUG, in WARNING
lines an operator acts on, and in the audit log (gateway.audit, who did what to which car) -
never in bulk at INFO (README "Logging").
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

# The attributes every LogRecord has: what is not among them came through ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_PLACEHOLDER = re.compile(r"%(\([^)]*\))?[-#0 +]*\d*(\.\d+)?[diouxXeEfFgGcrsa%]")
_NON_WORD = re.compile(r"[^a-z0-9]+")
EVENT_MAX = 60

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def event_name(record: logging.LogRecord) -> str:
    """The record's ``event``, else the snake_case words of its message template."""
    given = record.__dict__.get("event")
    if isinstance(given, str) and given:
        return given
    template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
    words = _NON_WORD.sub("_", _PLACEHOLDER.sub(" ", template).lower()).strip("_")
    return words[:EVENT_MAX].rstrip("_") or "log"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": event_name(record),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "event" and key not in out:
                plain = isinstance(value, str | int | float | bool) or value is None
                out[key] = value if plain else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # One line whatever the values hold (json.dumps escapes newlines): a value cannot forge
        # a second record.
        return json.dumps(out, ensure_ascii=False)


def configure(level: str, fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records to `stream` (stderr) in `fmt` ("text" | "json")."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
