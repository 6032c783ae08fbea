"""Simulated time: one knob, ``speed``, makes Azure's latencies run N times faster.

Every latency the emulator simulates is expressed in *simulated seconds* (a Run Command takes
20-40 s, Windows booting 15-30 s, ...). ``speed`` divides them into real seconds: at ``speed=100`` a
30 s Run Command completes in 0.3 s of wall time. The simulated clock is simply real elapsed
time multiplied by ``speed``, so benchmarks can report simulated seconds for anything they time
(``TimeScale.now()``), and ARM timestamps (``startTime``/``endTime``) are on the simulated clock.

The :class:`Scheduler` fires state transitions (a Run Command finishing, a VM booting) at their
simulated due time, from one background thread.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from azrdp.clock import SYSTEM_CLOCK, Clock

Span = tuple[float, float]

# Simulated latencies, in simulated seconds (low, high); each occurrence draws uniformly.
RUN_COMMAND: Span = (20.0, 40.0)      # Action Run Command: "the minimum time ... is about 20 seconds"
# The power operations as real Azure times them (../shared/reference/real-azure-behaviour.md,
# "Timing and state around power operations": recorded endTime - startTime): the operation ends
# quickly and Windows restarts *after* it has succeeded.
RESTART: Span = (0.2, 0.3)            # ARM restart operation, until it reports Succeeded
START: Span = (3.3, 4.1)              # starting a stopped or deallocated VM (allocation + power on)
SHUTDOWN: Span = (3.0, 10.0)          # after a restart succeeded: Windows still up, shutting down
#                                       (unverified: how long an old listener keeps answering)
BOOT: Span = (15.0, 30.0)             # Windows boots, the agent reports Ready and TermService listens
AGENT_HEARTBEAT = 15.0                # the VM agent reports its status this often (unverified)
NSG_UPDATE: Span = (3.0, 10.0)        # a security rule create/delete until it is applied
ARM_LATENCY: Span = (0.05, 0.3)       # every ARM call's own response time
AGENT_TIMEOUT: Span = (300.0, 300.0)  # Run Command on a VM whose agent is not Ready fails after this


class TimeScale:
    """Converts simulated durations to real ones and keeps the simulated clock.

    ``seed`` makes the drawn durations reproducible.
    """

    def __init__(self, speed: float = 1.0, *, seed: int | None = None, clock: Clock = SYSTEM_CLOCK):
        if not speed > 0:
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        self.speed = float(speed)
        self.clock = clock
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._t0 = clock.monotonic()
        self._wall0 = clock.now()

    def now(self) -> float:
        """Simulated seconds since this time scale started."""
        return (self.clock.monotonic() - self._t0) * self.speed

    def wall(self, at: float | None = None) -> datetime:
        """The simulated UTC wall clock (at simulated second ``at``, default now)."""
        return self._wall0 + timedelta(seconds=self.now() if at is None else at)

    def iso(self, at: float | None = None) -> str:
        """ARM's timestamp format, e.g. ``2026-01-01T10:00:00.1234567+00:00``."""
        stamp = self.wall(at).astimezone(timezone.utc)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond:06d}0+00:00"

    def real(self, simulated_seconds: float) -> float:
        """Real seconds that ``simulated_seconds`` take at this speed."""
        return simulated_seconds / self.speed

    def draw(self, span: Span) -> float:
        """A simulated duration drawn uniformly from ``span``."""
        low, high = span
        with self._rng_lock:
            return self._rng.uniform(low, high)

    def sleep(self, simulated_seconds: float) -> None:
        """Wait ``simulated_seconds`` of simulated time (really: that divided by speed)."""
        self.clock.sleep(self.real(simulated_seconds))


@dataclass(order=True)
class _Event:
    due: float
    seq: int
    action: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Scheduler:
    """Runs callbacks at simulated due times, on one daemon thread.

    ``run_due()`` also fires whatever is due from the caller's thread, so an HTTP request never
    sees a transition that should already have happened but whose thread has not woken yet.
    Callbacks run one at a time (never concurrently with each other).
    """

    def __init__(self, timescale: TimeScale, on_error: Callable[[BaseException], None] | None = None):
        self.timescale = timescale
        self._events: list[_Event] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._fire_lock = threading.RLock()
        self._stopped = False
        self._on_error = on_error
        self.current: float | None = None   # the due time of the event being fired, while it runs
        self._thread = threading.Thread(target=self._loop, name="emulator-scheduler", daemon=True)
        self._thread.start()

    def at(self, simulated_delay: float, action: Callable[[], None]) -> _Event:
        """Run ``action`` ``simulated_delay`` simulated seconds from now; returns a cancel handle."""
        event = _Event(self.now() + max(0.0, simulated_delay), next(self._seq), action)
        with self._cond:
            heapq.heappush(self._events, event)
            self._cond.notify()
        return event

    @staticmethod
    def cancel(event: _Event | None) -> None:
        if event is not None:
            event.cancelled = True

    def now(self) -> float:
        """Simulated now; inside a firing event, its due time (so a 30 s operation is recorded as
        exactly 30 s however late the thread woke)."""
        return self.current if self.current is not None else self.timescale.now()

    def run_due(self) -> None:
        with self._fire_lock:
            while True:
                with self._cond:
                    if not self._events or self._events[0].due > self.timescale.now():
                        return
                    event = heapq.heappop(self._events)
                if event.cancelled:
                    continue
                self.current = event.due
                try:
                    event.action()
                except BaseException as err:  # noqa: BLE001 - a failing transition must not kill the loop
                    if self._on_error:
                        self._on_error(err)
                finally:
                    self.current = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                if self._events:
                    wait = self.timescale.real(self._events[0].due - self.timescale.now())
                    if wait > 0:
                        self._cond.wait(min(wait, 1.0))
                        continue
                else:
                    self._cond.wait(1.0)
                    continue
            self.run_due()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=2)
