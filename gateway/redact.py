"""The one place that makes a URL safe to show: in an error, a log line or a metric.

A broker URL may carry a password (``mqtt://user:secret@host``). Every message that names a
URL goes through ``redact_url``; it never raises, so it is safe on exactly the malformed input
that produces error messages (bad scheme, bad port, unbalanced brackets).
"""

from __future__ import annotations

import re

MASK = "***"
# What may be shown of a URL without userinfo: a host (name, IPv4 or bracketed IPv6) with an
# optional numeric port, then anything from a path on. Anything else after the scheme may be
# `user:password` whose `@host` was forgotten: withheld whole.
_PLAIN = re.compile(r"(\[[0-9A-Fa-f:.]*\]?|[A-Za-z0-9._~-]*)(:[0-9]*)?([/?#].*)?", re.DOTALL)


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``***``; the user name is kept.

    Parsing is deliberately cruder than ``urllib.parse``: the userinfo is everything before the
    *last* ``@`` of what follows the scheme, whatever characters it contains (an unescaped
    ``/``, ``?``, ``#`` or ``@`` in a password must not let part of it through). Of a userinfo
    with a colon only the part before the first colon is kept; one without is a user name.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, after = rest.rpartition("@")
    if not at:
        # No userinfo, unless the URL lost its `@host`: `mqtt://user:secret` would parse as
        # host `user`, port `secret`.
        return url if _PLAIN.fullmatch(rest) else f"{scheme}{sep}{MASK}"
    user, colon, _secret = userinfo.partition(":")
    if colon and user:
        shown = f"{user}:{MASK}"
    elif colon:
        shown = MASK
    else:
        shown = user  # a bare user name (no password) is not a secret
    return f"{scheme}{sep}{shown}@{after}"
