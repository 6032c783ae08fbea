"""Poll until RDP answers (after a reboot or a repair), with an overall deadline.

Attempts start ``initial_interval`` apart, doubling up to ``max_interval`` (start to start, so a
slow refused/timed-out attempt does not stretch the gap). With the default cap of 2 s, a server
that starts answering is noticed by the next attempt, at most 2 s later (plus the time that
attempt itself takes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azrdp.clock import SYSTEM_CLOCK, Clock
from azrdp.rdp.wire_probe import ProbeResult, probe

MIN_PROBE_TIMEOUT = 0.2  # no attempt starts with less time than this before the deadline


@dataclass(frozen=True)
class WaitResult:
    answered: bool  # an RDP stack spoke (last.answers); last.ok says whether a client can connect
    attempts: int
    elapsed: float
    last: ProbeResult

    def to_dict(self) -> dict[str, Any]:
        return {"answered": self.answered, "attempts": self.attempts,
                "elapsed": round(self.elapsed, 3), "last": self.last.to_dict()}


def wait_until_answers(host: str, port: int, *, timeout: float, clock: Clock = SYSTEM_CLOCK,
                       probe_timeout: float = 3.0, initial_interval: float = 0.5, max_interval: float = 2.0,
                       on_attempt: Callable[[ProbeResult], None] | None = None,
                       prober: Callable[..., ProbeResult] = probe) -> WaitResult:
    """Probe ``host:port`` until RDP answers or ``timeout`` seconds have passed.

    ``prober(host, port, timeout=..., clock=...)`` does one attempt (default: the real wire
    probe); the emulator passes its own transport. Every wait goes through ``clock.sleep``.
    """
    if timeout <= 0 or probe_timeout <= 0:
        raise ValueError("timeout and probe_timeout must be positive")
    if not 0 < initial_interval <= max_interval:
        raise ValueError("need 0 < initial_interval <= max_interval")
    start = clock.monotonic()
    deadline = start + timeout
    interval = initial_interval
    attempts = 0
    while True:
        attempt_start = clock.monotonic()
        budget = min(probe_timeout, deadline - attempt_start)
        last = prober(host, port, timeout=budget, clock=clock)
        attempts += 1
        if on_attempt is not None:
            on_attempt(last)
        now = clock.monotonic()
        if last.answers:
            return WaitResult(answered=True, attempts=attempts, elapsed=now - start, last=last)
        pause = max(0.0, interval - (now - attempt_start))
        if now + pause + MIN_PROBE_TIMEOUT > deadline:  # no time left for a fair attempt
            return WaitResult(answered=False, attempts=attempts, elapsed=now - start, last=last)
        clock.sleep(pause)
        interval = min(interval * 2, max_interval)
