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
from collections.abc import Callable
from dataclasses import dataclass

from azrdp.emulator import exceptions as err

REMAINING_READS = "x-ms-ratelimit-remaining-subscription-reads"
EMULATOR_ACTOR = "9f1d7c2e-4b3a-4e5f-8a6b-0c1d2e3f4a5b"   # the object id the emulator's callers sign in as


@dataclass(frozen=True)
class ReadLimit:
    bucket: int = 250                 # tokens when full
    refill_per_second: float = 25.0   # tokens added per simulated second

    def __post_init__(self) -> None:
        if self.bucket < 1 or not self.refill_per_second > 0:
            raise ValueError("a read limit needs a bucket of at least 1 and a positive refill rate")

    @classmethod
    def parse(cls, text: str) -> ReadLimit:
        """``250/25``: bucket size / refill per second."""
        try:
            bucket, refill = text.split("/")
            return cls(int(bucket), float(refill))
        except ValueError:
            raise ValueError(f"read limit {text!r} is not BUCKET/REFILL_PER_SECOND, e.g. 250/25") from None


class SubscriptionRequestsThrottled(err.ArmError):
    """ARM's own 429 for a subscription over its read limit (before any resource provider)."""

    status, code = 429, "SubscriptionRequestsThrottled"

    def __init__(self, subscription: str, wait_seconds: int, retry_after: str, actor: str = EMULATOR_ACTOR):
        # Real answers name the caller too ("... for subscription 'S' actor 'A' exceeded ...":
        # real-azure-behaviour.md, "Throttling"); the bucket is per subscription and principal.
        super().__init__(
            f"Number of 'read' requests for subscription '{subscription}' actor '{actor}' exceeded. "
            f"Please try again after "
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


# -- rate-limit headers on every answer --------------------------------------------------------------
# Real Azure (../shared/reference/real-azure-behaviour.md, "Throttling"): every Compute answer carries
# ``x-ms-ratelimit-remaining-resource: Microsoft.Compute/LowCostGet3Min;3994,Microsoft.Compute/
# LowCostGet30Min;31982`` (GetOperation3Min... on polls, UpdateVM3Min... on POST), and ARM adds
# ``x-ms-ratelimit-remaining-subscription-reads`` / ``-writes`` / ``-deletes``. Here they count
# down honestly (sliding windows on simulated time) but only the read bucket, when switched on,
# and the ``throttle`` fault ever answer 429.

# Compute's operation group of each operationId (3-minute and 30-minute windows); the limits are
# the recorded LowCostGet ones (3994 of 4000 left after a few calls); the others are unverified.
COMPUTE_GROUPS = {
    "VirtualMachines_Get": "LowCostGet", "VirtualMachines_InstanceView": "LowCostGet",
    "VirtualMachines_List": "HighCostGet", "VirtualMachines_ListAll": "HighCostGet",
    "ComputeOperations_Get": "GetOperation", "ComputeOperationResults_Get": "GetOperation",
    "VirtualMachines_RunCommand": "UpdateVM", "VirtualMachines_Restart": "UpdateVM",
    "VirtualMachines_Start": "UpdateVM", "VirtualMachines_RetrieveBootDiagnosticsData": "UpdateVM",
}
WINDOW_LIMITS = {"LowCostGet": (4000, 32000), "HighCostGet": (300, 1500), "GetOperation": (4800, 36000),
                 "UpdateVM": (240, 1200)}
WINDOWS = ((180.0, "3Min"), (1800.0, "30Min"))
# ARM's subscription buckets (Microsoft Learn, "Request limits and throttling", since 2024):
# reads 250 refilled 25/s, writes and deletes 200 refilled 10/s.
SUBSCRIPTION_BUCKETS = {"reads": (250, 25.0), "writes": (200, 10.0), "deletes": (200, 10.0)}


def compute_group(operation: str | None) -> str | None:
    return COMPUTE_GROUPS.get(operation or "")


class RateLimitHeaders:
    """Counts calls per subscription like ARM and Compute do and renders their headers."""

    def __init__(self, now: Callable[[], float]):
        self.now = now
        self._calls: dict[tuple[str, str], list[float]] = {}
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _bucket(self, subscription: str, kind: str, now: float) -> int:
        size, refill = SUBSCRIPTION_BUCKETS[kind]
        key = (subscription.lower(), kind)
        tokens, at = self._buckets.get(key, (float(size), now))
        tokens = max(0.0, min(float(size), tokens + (now - at) * refill) - 1.0)
        self._buckets[key] = (tokens, now)
        return int(tokens)

    def headers(self, subscription: str, method: str, operation: str | None,
                reads_header: bool = True) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._lock:
            now = self.now()
            kind = "reads" if method == "GET" else "deletes" if method == "DELETE" else "writes"
            if kind != "reads" or reads_header:
                out[f"x-ms-ratelimit-remaining-subscription-{kind}"] = str(self._bucket(subscription, kind, now))
            group = compute_group(operation)
            if group is not None:
                key = (subscription.lower(), group)
                calls = [t for t in self._calls.get(key, []) if t > now - WINDOWS[-1][0]]
                calls.append(now)
                self._calls[key] = calls
                parts = []
                for (seconds, suffix), limit in zip(WINDOWS, WINDOW_LIMITS[group], strict=False):
                    used = sum(1 for t in calls if t > now - seconds)
                    parts.append(f"Microsoft.Compute/{group}{suffix};{max(0, limit - used)}")
                out["x-ms-ratelimit-remaining-resource"] = ",".join(parts)
        return out
