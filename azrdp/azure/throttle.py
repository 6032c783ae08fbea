"""One shared back-off for all the workers of a fleet job.

ARM throttles per subscription (a token bucket: reads 250, refilled 25 per second) and resource
providers throttle their own operations; both answer 429 with ``Retry-After``. When many workers
talk to one subscription, each honouring Retry-After on its own still hammers ARM: every worker
burns its own retries, and the moment one waits out its delay the others are already sending.

:class:`SharedBackoff` is one gate per subscription. A 429 with Retry-After closes it until that
time for every worker; each request waits at the gate before it is sent. The pause is announced
once per closing, not once per worker. :class:`BackoffTransport` applies the gate below the SDK's
retry policy: a throttled request is sent again after the pause (a 429 means ARM did not act on
it, so this is safe for POSTs too), so a long throttling period does not use up the SDK's few
retry attempts. Past ``max_wait`` of pauses for one request, the 429 goes up to the SDK as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from azrdp.clock import SYSTEM_CLOCK, Clock

DEFAULT_MAX_WAIT = 900.0   # seconds of pauses one request may sit out before its 429 surfaces
MIN_PAUSE = 1.0            # a 429 with "Retry-After: 0" still pauses this long: never a tight loop
DEFAULT_BUDGET = 300.0     # seconds one command may wait out throttling in total (AZRDP_THROTTLE_BUDGET)
BUDGET_ENV = "AZRDP_THROTTLE_BUDGET"


def retry_after_seconds(value: str | None, now: Callable[[], Any] | None = None) -> float | None:
    """Retry-After as seconds: a number (fractions allowed) or an HTTP date; None when absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import datetime, timezone

    current = now() if now is not None else datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


class SharedBackoff:
    """A gate shared by every worker of one subscription.

    Throttling is per operation group (Compute counts LowCostGet, HighCostGet, GetOperation,
    UpdateVM... in 3- and 30-minute windows; real-azure-behaviour.md, "Throttling"), so a 429 that
    names its group closes the gate for that group only: workers reading other groups (another
    VM's network, a poll) go on. A 429 without a known group (ARM's own subscription limit) closes
    it for everyone."""

    def __init__(self, label: str = "", *, clock: Clock = SYSTEM_CLOCK,
                 notify: Callable[[str], None] | None = None, max_wait: float = DEFAULT_MAX_WAIT):
        self.label = label
        self.clock = clock
        self.notify = notify
        self.max_wait = max_wait
        self.throttled = 0          # 429 answers seen
        self.pauses = 0             # times the gate closed (or a closing was extended)
        self.paused_seconds = 0.0   # how long the gate was closed, in total
        self._until: dict[str | None, float] = {}
        self._lock = threading.Lock()

    def wait(self, group: str | None = None) -> None:
        """Block until the gate is open for ``group`` (and for the whole subscription)."""
        while True:
            with self._lock:
                until = max(self._until.get(None, 0.0), self._until.get(group, 0.0) if group else 0.0)
                remaining = until - self.clock.monotonic()
            if remaining <= 0:
                return
            self.clock.sleep(remaining)

    def hold(self, seconds: float, what: str = "", group: str | None = None) -> None:
        """Close the gate (for ``group``, or for everyone) for ``seconds`` from now (a later end
        wins; an earlier one changes nothing)."""
        announce = None
        with self._lock:
            self.throttled += 1
            now = self.clock.monotonic()
            until = now + max(seconds, 0.0)
            current = self._until.get(group, 0.0)
            if until > current:
                self.paused_seconds += until - max(current, now)
                if current <= now:
                    self.pauses += 1
                    where = f"{f' for {self.label}' if self.label else ''}"
                    who = f"requests in {group} pause" if group else "every worker pauses"
                    announce = (f"Azure is throttling {group or 'requests'}{where} "
                                f"(429{f' on {what}' if what else ''}); {who} {seconds:g} s ...")
                self._until[group] = until
        if announce and self.notify is not None:
            self.notify(announce)

    def to_dict(self) -> dict[str, Any]:
        return {"throttled": self.throttled, "pauses": self.pauses, "paused_seconds": round(self.paused_seconds, 3)}


def request_group(method: str, url: str) -> str | None:
    """The Compute operation group a request counts against (without its window), as far as the
    URL tells: a VM or its instance view LowCostGet, a VM list HighCostGet, an operation poll
    GetOperation, a VM action UpdateVM; None for anything else (network reads, ARM's own)."""
    from urllib.parse import urlsplit

    path = urlsplit(url).path.rstrip("/").lower()
    if "/providers/microsoft.compute/" not in path:
        return None
    tail = path.split("/providers/microsoft.compute/", 1)[1].split("/")
    if tail[0] == "locations" and "operations" in tail:
        return "Microsoft.Compute/GetOperation"
    if tail[0] != "virtualmachines":
        return None
    if len(tail) == 1:
        return "Microsoft.Compute/HighCostGet" if method.upper() == "GET" else None
    if method.upper() == "GET":
        return "Microsoft.Compute/LowCostGet"
    return "Microsoft.Compute/UpdateVM" if method.upper() == "POST" else None


def group_family(group: str | None) -> str | None:
    """``Microsoft.Compute/HighCostGet3Min`` -> ``Microsoft.Compute/HighCostGet`` (one family, two
    windows); subscription limits and unknown groups -> None (the whole subscription)."""
    import re

    if not group or not group.startswith("Microsoft.Compute/"):
        return None
    return re.sub(r"\d+Min$", "", group)


def _transport_base() -> type:
    from azure.core.pipeline.transport import HttpTransport

    return HttpTransport


def backoff_transport(backoff: SharedBackoff, inner: Any = None, *, pool_size: int = 32) -> Any:
    """An azure-core HttpTransport that waits at ``backoff`` before each request and turns a 429
    with Retry-After into a shared pause and a resend. ``inner`` defaults to a requests transport
    with a connection pool of ``pool_size`` (one connection per concurrent request)."""

    base: Any = _transport_base()

    class BackoffTransport(base):
        def __init__(self) -> None:
            self.inner = inner if inner is not None else _requests_transport(pool_size)
            self.backoff = backoff

        def send(self, request: Any, **kwargs: Any) -> Any:
            waited = 0.0
            mine = request_group(getattr(request, "method", "GET") or "GET", request.url)
            while True:
                self.backoff.wait(mine)
                response = self.inner.send(request, **kwargs)
                if response.status_code != 429:
                    return response
                delay = retry_after_seconds(response.headers.get("Retry-After"))
                if delay is None:
                    return response
                delay = max(delay, MIN_PAUSE)
                if waited + delay > self.backoff.max_wait:
                    # all this request may wait: the 429 goes up, and the SDK's policy must not
                    # wait again (the VM is reported throttled, the others go on)
                    try:
                        response.azrdp_throttle_spent = True
                    except AttributeError:
                        pass
                    return response
                waited += delay
                self.backoff.hold(delay, _short_path(request.url), group_family(_response_group(response)))

        def open(self) -> None:
            self.inner.open()

        def close(self) -> None:
            self.inner.close()

        def __exit__(self, *args: Any) -> None:
            self.close()

    return BackoffTransport()


def _response_group(response: Any) -> str | None:
    try:
        body = response.json() if hasattr(response, "json") else None
    except Exception:  # noqa: BLE001 - a 429 without a JSON body names its group in a header, if at all
        body = None
    return operation_group(body, getattr(response, "headers", None))


def _requests_transport(pool_size: int) -> Any:
    import requests
    from azure.core.pipeline.transport import RequestsTransport

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(session=session, session_owner=True)


def _short_path(url: str) -> str:
    from urllib.parse import urlsplit

    return "/".join(urlsplit(url).path.rstrip("/").split("/")[-2:])


# -- one command's throttling budget ---------------------------------------------------------------

class ThrottleBudget:
    """How long one command may sleep on Azure's throttling, in total: a Retry-After that fits is
    waited out (and announced with its length); one that does not is never slept, and the 429
    ends the request at once (Compute answers Retry-After 120 s, sometimes 1200 s:
    real-azure-behaviour.md, "Throttling"). Thread-safe: a fix's parallel reads share it."""

    def __init__(self, seconds: float = DEFAULT_BUDGET):
        self.seconds = max(0.0, float(seconds))
        self.spent = 0.0
        self.refused: list[float] = []     # Retry-Afters that did not fit
        self._lock = threading.Lock()

    @property
    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self.seconds - self.spent)

    def take(self, seconds: float) -> bool:
        """True (and counted) when a wait of ``seconds`` fits what is left."""
        with self._lock:
            if self.spent + seconds > self.seconds:
                self.refused.append(seconds)
                return False
            self.spent += seconds
            return True


def budget_from(text: str | None) -> float:
    """AZRDP_THROTTLE_BUDGET: seconds (0 to 86400); the default when unset."""
    from azrdp.errors import UsageError

    if text is None or not text.strip():
        return DEFAULT_BUDGET
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86_400:
        raise UsageError(f"{BUDGET_ENV}={text!r} is not a number of seconds from 0 to 86400.",
                         hint=f"Unset it (default {DEFAULT_BUDGET:g} s), or set e.g. {BUDGET_ENV}=600.")
    return value


# -- what a 429 says ---------------------------------------------------------------------------------

def operation_group(status_body: Any, headers: Any) -> str | None:
    """The throttled operation group a 429 names: Compute's ``details[].target``
    (``HighCostGet3Min``) with its ``operationgroup``, ARM's subscription read/write limit, or the
    rate-limit header entry that reached 0 (``Microsoft.Compute/HighCostGet3Min;0``)."""
    import json

    error = (status_body or {}).get("error") if isinstance(status_body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        if code == "SubscriptionRequestsThrottled":
            message = str(error.get("message") or "").lower()
            kind = next((k for k in ("read", "write", "delete") if f"'{k}'" in message), "read")
            return f"subscription {kind}s"
        for detail in error.get("details") or []:
            if not isinstance(detail, dict):
                continue
            target = detail.get("target")
            try:
                info = json.loads(detail.get("message") or "")
            except (TypeError, ValueError):
                info = {}
            group = (info.get("operationgroup") or info.get("operationGroup")) if isinstance(info, dict) else None
            if target or group:
                return f"Microsoft.Compute/{target or group}"
    header = (headers or {}).get("x-ms-ratelimit-remaining-resource") if headers is not None else None
    for name, remaining in parse_remaining_resource(header):
        if remaining <= 0:
            return name
    return None


def parse_remaining_resource(value: str | None) -> list[tuple[str, int]]:
    """``Microsoft.Compute/LowCostGet3Min;3994,Microsoft.Compute/LowCostGet30Min;31982`` ->
    [("Microsoft.Compute/LowCostGet3Min", 3994), ...] (malformed entries skipped)."""
    out = []
    for entry in (value or "").split(","):
        name, _, count = entry.strip().rpartition(";")
        try:
            out.append((name, int(count)))
        except ValueError:
            continue
    return [(n, c) for n, c in out if n]


# -- slowing down before the bucket is empty -------------------------------------------------------

LOW_WATER = 10             # requests left in a window below which azrdp spaces its requests out
SUBSCRIPTION_REFILL = 25.0  # tokens per second ARM refills a subscription's read bucket with
_WINDOW = {"3min": 180.0, "30min": 1800.0, "1min": 60.0, "10min": 600.0}


def _window_seconds(group: str) -> float:
    lowered = group.lower()
    return next((seconds for suffix, seconds in _WINDOW.items() if lowered.endswith(suffix)), 60.0)


class RateLimitPacer:
    """Reads every answer's ``x-ms-ratelimit-remaining-*`` headers (Compute sends them on every
    answer: real-azure-behaviour.md, "Throttling") and, when a bucket runs low, spaces the next
    requests out so it is not emptied: for ARM's subscription buckets (refilled 25 tokens per
    second) long enough to refill to the low-water mark, for Compute's windows (3 or 30 minutes)
    the window shared out over what is left. Pauses come out of the command's ThrottleBudget and
    are announced once per low bucket."""

    def __init__(self, *, clock: Any, budget: ThrottleBudget, notify: Callable[[str], None] | None = None,
                 low_water: int = LOW_WATER):
        self.clock = clock
        self.budget = budget
        self.notify = notify
        self.low_water = low_water
        self.paused = 0.0
        self._pause = 0.0
        self._why = ""
        self._announced: set[str] = set()
        self._lock = threading.Lock()

    def observe(self, headers: Any) -> None:
        if headers is None:
            return
        pause, why = 0.0, ""
        for kind in ("reads", "writes", "deletes"):
            try:
                left = int(headers.get(f"x-ms-ratelimit-remaining-subscription-{kind}"))
            except (TypeError, ValueError):
                continue
            if left < self.low_water:
                wait = (self.low_water - left) / SUBSCRIPTION_REFILL
                if wait > pause:
                    pause, why = wait, f"subscription {kind}"
        for group, left in parse_remaining_resource(headers.get("x-ms-ratelimit-remaining-resource")):
            if 0 < left < self.low_water:
                wait = _window_seconds(group) / (left + 1)
                if wait > pause:
                    pause, why = wait, group
        with self._lock:
            self._pause, self._why = pause, why

    def wait(self) -> None:
        with self._lock:
            pause, why = self._pause, self._why
            self._pause = 0.0
        if pause <= 0 or not self.budget.take(pause):
            return
        if self.notify is not None and why not in self._announced:
            self._announced.add(why)
            self.notify(f"Azure's rate limit for {why} is nearly used up; spacing requests {pause:.1f} s apart ...")
        self.paused += pause
        self.clock.sleep(pause)
