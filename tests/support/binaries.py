"""The real server binaries some tests need (xrdp, FreeRDP shadow, Xvfb)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(name: str) -> str:
    """Path of a real server binary; skip the test when it is absent, except under CI=true,
    where a missing server is a failure (CI must never go green by skipping)."""
    # Debian installs xrdp in /usr/sbin, which is not on a normal user's PATH.
    path = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if path:
        return path
    message = f"{name} is not installed (scripts/test installs it as root on Debian)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires every real-server test to run")
    pytest.skip(message)
