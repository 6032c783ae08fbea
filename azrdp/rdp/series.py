"""Repeated probes (`azrdp probe --count N --interval S`): success rate and timing spread.

The client-side view of "packet loss, high latency": how many attempts got through, and how the
connect / negotiation / TLS times vary. Jitter is the mean absolute difference between
consecutive samples (as RTP's interarrival jitter, without smoothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from azrdp.clock import SYSTEM_CLOCK, Clock
from azrdp.errors import EXIT_OK, EXIT_PROBLEM
from azrdp.rdp.wire_probe import ProbeResult, probe
from azrdp.rdp.x224 import DEFAULT_PROTOCOLS

TIMED_PHASES = ("connect", "negotiation", "tls", "total")


@dataclass(frozen=True)
class Spread:
    samples: int
    min: float
    median: float
    max: float
    jitter: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        jitter = (sum(abs(b - a) for a, b in zip(values, values[1:], strict=False)) / (len(values) - 1)
                  if len(values) > 1 else 0.0)
        return cls(len(values), min(values), _median(values), max(values), jitter)

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "min": round(self.min, 6), "median": round(self.median, 6),
                "max": round(self.max, 6), "jitter": round(self.jitter, 6)}


def _median(values: Sequence[float]) -> float:
    """The median (statistics.median, without its import cost on every `azrdp probe`)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@dataclass
class SeriesResult:
    host: str
    port: int
    interval: float
    attempts: list[ProbeResult] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.attempts)

    @property
    def successes(self) -> int:
        return sum(1 for attempt in self.attempts if attempt.ok)

    @property
    def success_rate(self) -> float:
        return self.successes / self.count if self.count else 0.0

    @property
    def answered(self) -> int:
        return sum(1 for attempt in self.attempts if attempt.answers)

    @property
    def ok(self) -> bool:
        """Every attempt succeeded: a single failure is a finding (loss, a flapping listener)."""
        return bool(self.attempts) and self.successes == self.count

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_PROBLEM

    @property
    def outcomes(self) -> dict[str, int]:
        return dict(Counter(attempt.outcome for attempt in self.attempts))

    def spread(self, phase: str) -> Spread | None:
        """Timing spread of ``phase`` over the attempts that completed it."""
        return Spread.of([attempt.timings[phase] for attempt in self.attempts
                          if phase in attempt.timings and _completed(attempt, phase)])

    def timings(self) -> dict[str, Spread]:
        spreads = {phase: self.spread(phase) for phase in TIMED_PHASES}
        return {phase: spread for phase, spread in spreads.items() if spread is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "count": self.count,
            "interval": self.interval,
            "ok": self.ok,
            "successes": self.successes,
            "answered": self.answered,
            "success_rate": round(self.success_rate, 4),
            "outcomes": self.outcomes,
            "timings": {phase: spread.to_dict() for phase, spread in self.timings().items()},
            "attempts": [attempt.to_dict() for attempt in self.attempts],
        }


def _completed(attempt: ProbeResult, phase: str) -> bool:
    """A phase's time counts only when the phase succeeded (a timed-out connect is no latency)."""
    if phase == "connect":
        return attempt.connected
    if phase == "negotiation":
        return attempt.answers
    if phase == "tls":
        return attempt.tls_version is not None
    return True


def probe_series(host: str, port: int, *, count: int, interval: float, timeout: float = 5.0,
                 protocols: int = DEFAULT_PROTOCOLS, clock: Clock = SYSTEM_CLOCK,
                 on_attempt: Callable[[int, ProbeResult], None] | None = None,
                 prober: Callable[..., ProbeResult] = probe) -> SeriesResult:
    """Probe ``count`` times, starting attempts ``interval`` seconds apart (start to start)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if interval < 0:
        raise ValueError(f"interval must not be negative, got {interval}")
    series = SeriesResult(host=host, port=port, interval=interval)
    for index in range(count):
        started = clock.monotonic()
        result = prober(host, port, timeout=timeout, protocols=protocols, clock=clock)
        series.attempts.append(result)
        if on_attempt is not None:
            on_attempt(index, result)
        if index < count - 1:
            clock.sleep(max(0.0, interval - (clock.monotonic() - started)))
    return series
