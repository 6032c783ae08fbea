"""Waiting on ARM long-running operations on azrdp's Clock, with a deadline.

The SDK's ARMPolling sleeps with time.sleep and ``poller.result(timeout)`` does not raise when
time runs out (azure-sdk-notes.md §0). Run Command, restart, start and NSG rule writes all wait
the same way here: the poller's sleeps go through the injected Clock and stop at a deadline, and
``wait()`` tells a finished operation from one that ran out of time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from azure.mgmt.core.polling.arm_polling import ARMPolling

from azrdp.clock import Clock, Interrupted

if TYPE_CHECKING:
    from azrdp.azure.vm import Session

POLL_CAP = 5.0          # LRO status polls at most this far apart (the SDK default is 30 s)


def poll_interval(session: Session) -> float:
    """How often to poll an ARM operation azrdp waits on: the session's interval, capped at 5 s,
    so an operation that ends is noticed within seconds, not up to 30 s later (a Retry-After from
    ARM still wins)."""
    return min(float(getattr(session, "polling_interval", POLL_CAP)), POLL_CAP)


class DeadlinePassed(Exception):
    """Raised inside the SDK's polling thread when the next sleep would pass the deadline."""


class PollingStopped(Exception):
    """Raised inside the SDK's polling thread when a stop (SIGINT/SIGTERM) woke its sleep: an
    Exception, so the SDK hands it to ``result()`` instead of the thread dying with a traceback;
    ``wait()`` turns it back into azrdp.clock.Interrupted in the waiting thread."""


class ClockedPolling(ARMPolling):
    """ARMPolling whose sleeps go through azrdp's Clock and stop at a deadline. ``on_poll(status)``
    hears the operation's last status (``InProgress``, ...) before each sleep: the live status line.

    It also keeps when ARM says the operation started (``started``, ARM's clock): the status body's
    ``startTime`` (Compute sends it on every poll), else the ``Date`` of the answer that accepted
    the request. A restart is judged against it: only what the VM reports after it is news."""

    def __init__(self, delay: float, *, clock: Clock, deadline: float,
                 on_poll: Callable[[str], None] | None = None, **kwargs: Any):
        super().__init__(delay, **kwargs)
        self._clock = clock
        self._deadline = deadline
        self._on_poll = on_poll
        self.started: datetime | None = None
        self._accepted_at: datetime | None = None

    def initialize(self, client: Any, initial_response: Any, deserialization_callback: Any) -> None:
        self._accepted_at = http_date(_header(initial_response, "Date"))
        super().initialize(client, initial_response, deserialization_callback)

    def update_status(self) -> None:
        super().update_status()
        if self.started is None:
            try:
                body = self._pipeline_response.http_response.json()
            except Exception:  # noqa: BLE001 - a status without a JSON body says nothing about its start
                body = None
            if isinstance(body, dict):
                self.started = arm_time(body.get("startTime"))

    @property
    def operation_start(self) -> datetime | None:
        """ARM's start of the operation: startTime when a status poll gave it, else the Date the
        POST was accepted at (whole seconds), else None."""
        return self.started or self._accepted_at

    def _sleep(self, delay: float) -> None:
        if self._on_poll is not None:
            self._on_poll(str(self.status()))
        if self._clock.monotonic() + delay > self._deadline:
            raise DeadlinePassed()
        try:
            self._clock.sleep(delay)
        except Interrupted as stop:
            raise PollingStopped(str(stop)) from None


def clocked_polling(client: Any, *, clock: Clock, deadline: float, polling_interval: float | None = None,
                    on_poll: Callable[[str], None] | None = None) -> ClockedPolling:
    """A ClockedPolling for an operation of ``client`` (its base URL, and its polling interval
    unless ``polling_interval`` is given; tests pass 0)."""
    config = getattr(client, "_config", None)
    delay = polling_interval if polling_interval is not None else getattr(config, "polling_interval", 30)
    base_url = getattr(config, "base_url", None)
    kwargs = {"path_format_arguments": {"endpoint": base_url}} if base_url else {}
    return ClockedPolling(delay, clock=clock, deadline=deadline, on_poll=on_poll, **kwargs)


def wait(poller: Any, *, clock: Clock, deadline: float) -> tuple[Any, bool]:
    """(result, finished) of ``poller``. ``finished`` is False when the deadline passed before the
    operation ended. SDK errors (a Failed operation) propagate to the caller."""
    try:
        # The polling thread stops itself at the deadline; this real-time wait is only a backstop.
        result = poller.result(timeout=max(1.0, deadline - clock.monotonic()) + 60.0)
    except DeadlinePassed:
        return None, False
    except PollingStopped as stop:
        raise Interrupted(str(stop)) from None
    return result, poller.done()


def _header(pipeline_response: Any, name: str) -> str | None:
    headers = getattr(getattr(pipeline_response, "http_response", None), "headers", None) or {}
    return headers.get(name)


def http_date(value: str | None) -> datetime | None:
    """An HTTP ``Date`` header as an aware datetime (None when absent or malformed)."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


_FRACTION = re.compile(r"(\.\d{6})\d+")


def arm_time(value: Any) -> datetime | None:
    """An ARM timestamp (``2026-01-01T10:00:00.1234567+00:00``, ``...Z``, or the SDK's datetime) as
    an aware datetime; None when absent or unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str) or not value.strip():
        return None
    text = _FRACTION.sub(r"\1", value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
