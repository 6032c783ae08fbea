"""Time as a dependency: every wait in azrdp takes a Clock, so tests run fast and exact."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone


class Clock:
    """The real clock: monotonic seconds for deadlines, UTC wall time for reports."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

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
