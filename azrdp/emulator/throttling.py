"""ARM's subscription read throttling, as Microsoft documents it since 2024 ("Request limits and
throttling"): a token bucket per subscription. Each read (GET) takes a token; tokens refill at a
steady rate up to the bucket size (reads: 250 tokens, 25 per second). A read that finds the bucket
empty is answered 429 with ``Retry-After`` (whole seconds until a token is back) and is not
forwarded to the resource provider; every answer carries
``x-ms-ratelimit-remaining-subscription-reads``.

The bucket runs on simulated time: at ``speed=N`` it refills N times faster in real time and the
``Retry-After`` header carries the real seconds to wait (simulated whole seconds divided by N), so
a client that honours the header waits exactly as long as it would against Azure, scaled.

Off unless asked for (``Emulator.start(read_limit=ReadLimit())``, ``serve --read-limit 250/25``):
tests that drive simulated time by hand would otherwise see a bucket that never refills.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable

from azrdp.emulator import exceptions as err

REMAINING_READS = "x-ms-ratelimit-remaining-subscription-reads"


@dataclass(frozen=True)
class ReadLimit:
    bucket: int = 250                 # tokens when full
    refill_per_second: float = 25.0   # tokens added per simulated second

    def __post_init__(self) -> None:
        if self.bucket < 1 or not self.refill_per_second > 0:
            raise ValueError("a read limit needs a bucket of at least 1 and a positive refill rate")

    @classmethod
    def parse(cls, text: str) -> "ReadLimit":
        """``250/25``: bucket size / refill per second."""
        try:
            bucket, refill = text.split("/")
            return cls(int(bucket), float(refill))
        except ValueError:
            raise ValueError(f"read limit {text!r} is not BUCKET/REFILL_PER_SECOND, e.g. 250/25") from None


class SubscriptionRequestsThrottled(err.ArmError):
    """ARM's own 429 for a subscription over its read limit (before any resource provider)."""

    status, code = 429, "SubscriptionRequestsThrottled"

    def __init__(self, subscription: str, wait_seconds: int, retry_after: str):
        super().__init__(
            f"Number of 'read' requests for subscription '{subscription}' exceeded. Please try again after "
            f"'{wait_seconds}' seconds after additional tokens are available. Refer to "
            "https://aka.ms/arm-throttling for additional information.",
            headers={"Retry-After": retry_after, REMAINING_READS: "0"})


class ReadThrottle:
    """One token bucket per subscription, on the simulated clock ``now``."""

    def __init__(self, limit: ReadLimit, now: Callable[[], float], speed: float):
        self.limit = limit
        self.now = now
        self.speed = speed
        self.throttled = 0
        self._buckets: dict[str, tuple[float, float]] = {}   # subscription -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, subscription: str) -> dict[str, str]:
        """Take a read token: the headers for the answer, or SubscriptionRequestsThrottled."""
        key = subscription.lower()
        with self._lock:
            now = self.now()
            tokens, at = self._buckets.get(key, (float(self.limit.bucket), now))
            tokens = min(float(self.limit.bucket), tokens + (now - at) * self.limit.refill_per_second)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                self.throttled += 1
                wait = max(1, math.ceil((1.0 - tokens) / self.limit.refill_per_second))
                raise SubscriptionRequestsThrottled(subscription, wait, f"{wait / self.speed:g}")
            self._buckets[key] = (tokens - 1.0, now)
            return {REMAINING_READS: str(int(tokens - 1.0))}
