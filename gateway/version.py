"""The gateway's version, as installed (package metadata, from pyproject.toml's `version`).

One source for `telematics-gateway --version` and the gateway_build_info series, so an SRE
reading a dashboard and an operator at the shell see the same number."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "telematics-gateway"


def gateway_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def python_version() -> str:
    return platform.python_version()
