"""Time as a dependency: every wait in azrdp takes a Clock, so tests run fast and exact.

The real clock is interruptible: once a stop is requested (:func:`request_stop`, which the CLI's
SIGINT/SIGTERM handler calls), every ``sleep`` on it - in any thread: sweep's workers, LRO polls,
retry pauses - wakes at once and raises :class:`Interrupted`, and :func:`stop_requested` tells
code about to send a change not to (azrdp.audit refuses every intent record after a stop).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

_STOP = threading.Event()
_STOP_REASON: list[str] = []


class Interrupted(KeyboardInterrupt):
    """A stop was requested (Ctrl-C / SIGINT, or SIGTERM) while azrdp waited or was about to change
    something. A KeyboardInterrupt, so every path that handles Ctrl-C handles it."""


def request_stop(reason: str) -> None:
    """From now on no new change is sent and every sleep on the real clock raises Interrupted."""
    if not _STOP.is_set():
        _STOP_REASON[:] = [reason]
        _STOP.set()


def stop_requested() -> str | None:
    """The reason of a requested stop ('SIGINT', 'SIGTERM'), or None."""
    return (_STOP_REASON[0] if _STOP_REASON else "stop") if _STOP.is_set() else None


def clear_stop() -> None:
    """Forget a stop (the start of each CLI command; tests)."""
    _STOP.clear()
    _STOP_REASON.clear()


class Clock:
    """The real clock: monotonic seconds for deadlines, UTC wall time for reports; its sleeps end
    early, raising Interrupted, when a stop is requested."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if _STOP.is_set() or (seconds > 0 and _STOP.wait(seconds)):
            raise Interrupted(stop_requested())

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class ManualClock(Clock):
    """A clock that only moves when slept on or advanced: for tests and benchmarks.

    ``sleeps`` records every requested sleep, so a test can assert the exact waits.
    """

    def __init__(self, start: float = 0.0, wall: datetime | None = None):
        self._t = start
        self._wall0 = wall or datetime(2026, 1, 1, tzinfo=timezone.utc)
        self._t0 = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._t += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._t += seconds

    def now(self) -> datetime:
        with self._lock:
            return self._wall0 + timedelta(seconds=self._t - self._t0)


SYSTEM_CLOCK = Clock()
