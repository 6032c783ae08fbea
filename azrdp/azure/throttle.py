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
from email.utils import parsedate_to_datetime
from typing import Any, Callable

from azrdp.clock import SYSTEM_CLOCK, Clock

DEFAULT_MAX_WAIT = 900.0   # seconds of pauses one request may sit out before its 429 surfaces
MIN_PAUSE = 1.0            # a 429 with "Retry-After: 0" still pauses this long: never a tight loop


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
    """A gate shared by every worker of one subscription."""

    def __init__(self, label: str = "", *, clock: Clock = SYSTEM_CLOCK,
                 notify: Callable[[str], None] | None = None, max_wait: float = DEFAULT_MAX_WAIT):
        self.label = label
        self.clock = clock
        self.notify = notify
        self.max_wait = max_wait
        self.throttled = 0          # 429 answers seen
        self.pauses = 0             # times the gate closed (or a closing was extended)
        self.paused_seconds = 0.0   # how long the gate was closed, in total
        self._until = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until the gate is open."""
        while True:
            with self._lock:
                remaining = self._until - self.clock.monotonic()
            if remaining <= 0:
                return
            self.clock.sleep(remaining)

    def hold(self, seconds: float, what: str = "") -> None:
        """Close the gate for ``seconds`` from now (a later end wins; an earlier one changes nothing)."""
        announce = None
        with self._lock:
            self.throttled += 1
            now = self.clock.monotonic()
            until = now + max(seconds, 0.0)
            if until > self._until:
                self.paused_seconds += until - max(self._until, now)
                if self._until <= now:
                    self.pauses += 1
                    announce = (f"Azure is throttling requests{f' for {self.label}' if self.label else ''} "
                                f"(429{f' on {what}' if what else ''}); every worker pauses {seconds:g} s ...")
                self._until = until
        if announce and self.notify is not None:
            self.notify(announce)

    def to_dict(self) -> dict[str, Any]:
        return {"throttled": self.throttled, "pauses": self.pauses, "paused_seconds": round(self.paused_seconds, 3)}


def _transport_base() -> type:
    from azure.core.pipeline.transport import HttpTransport

    return HttpTransport


def backoff_transport(backoff: SharedBackoff, inner: Any = None, *, pool_size: int = 32) -> Any:
    """An azure-core HttpTransport that waits at ``backoff`` before each request and turns a 429
    with Retry-After into a shared pause and a resend. ``inner`` defaults to a requests transport
    with a connection pool of ``pool_size`` (one connection per concurrent request)."""

    class BackoffTransport(_transport_base()):
        def __init__(self) -> None:
            self.inner = inner if inner is not None else _requests_transport(pool_size)
            self.backoff = backoff

        def send(self, request: Any, **kwargs: Any) -> Any:
            waited = 0.0
            while True:
                self.backoff.wait()
                response = self.inner.send(request, **kwargs)
                if response.status_code != 429:
                    return response
                delay = retry_after_seconds(response.headers.get("Retry-After"))
                if delay is None:
                    return response
                delay = max(delay, MIN_PAUSE)
                if waited + delay > self.backoff.max_wait:
                    return response
                waited += delay
                self.backoff.hold(delay, _short_path(request.url))

        def open(self) -> None:
            self.inner.open()

        def close(self) -> None:
            self.inner.close()

        def __exit__(self, *args: Any) -> None:
            self.close()

    return BackoffTransport()


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
