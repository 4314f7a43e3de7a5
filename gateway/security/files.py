"""Secret files (private keys, bearer tokens): written with mode 0600 from their creation."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` with mode 0600 from the file's creation (never a window with wider rights:
    a fresh temporary file, O_EXCL, so a stale one or a symlink left there is not written
    through), then rename over the old file so a reader sees the old or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
