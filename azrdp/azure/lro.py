"""Waiting on ARM long-running operations on azrdp's Clock, with a deadline.

The SDK's ARMPolling sleeps with time.sleep and ``poller.result(timeout)`` does not raise when
time runs out (azure-sdk-notes.md §0). Run Command, restart, start and NSG rule writes all wait
the same way here: the poller's sleeps go through the injected Clock and stop at a deadline, and
``wait()`` tells a finished operation from one that ran out of time. :func:`run_lro` sends the
request that starts one (a POST without the SDK's blind resends, a 429 waited out within the
throttling budget) and waits for it; power.py (restart, start), nsg_writes.py and disks.py use it.
The error names (``PowerOperationFailed``, ``PowerRequestUncertain``) are the ``error.type`` of
azrdp's JSON output and keep their first users' names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from azure.mgmt.core.polling.arm_polling import ARMPolling

from azrdp.clock import Clock, Interrupted
from azrdp.errors import AzureOperationError, OperationTimeout

if TYPE_CHECKING:
    from azrdp.azure.vm import Session

THROTTLE_RETRIES = 3     # 429s a POST is sent again after (each after its Retry-After, within the budget)
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


class PowerOperationFailed(AzureOperationError):
    """ARM accepted a restart or start, and the operation then failed."""


class PowerRequestUncertain(AzureOperationError):
    """The POST may or may not have reached ARM (5xx, dropped connection): not resent."""


@dataclass
class LroOutcome:
    """One ARM long-running operation: what, how long (on the injected clock), how many POSTs."""

    action: str
    seconds: float
    attempts: int = 1
    throttle_waits: tuple[float, ...] = ()
    result: Any = None
    started: datetime | None = None     # when ARM says the operation started (its clock), if it said

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "seconds": round(self.seconds, 3), "attempts": self.attempts,
                "throttle_waits": list(self.throttle_waits),
                "started": self.started.isoformat() if self.started else None}


def run_lro(begin: Callable[..., Any], *, client: Any, action: str, doing: str, clock: Clock,
            timeout: float, polling_interval: float | None = None,
            subscription: str | None = None, idempotent: bool = False,
            on_poll: Callable[[str], None] | None = None,
            evidence: Callable[[], str | None] | None = None) -> LroOutcome:
    """Start an ARM LRO with ``begin(polling=..., **retry)`` and wait for it on ``clock``.

    ``client`` is the management client (its base URL and polling interval are used). A
    non-idempotent ``begin`` (a POST) is sent without the SDK's blind retries (see module doc).
    ``on_poll(status)`` hears what ARM last said about the operation, and about a 429 pause.
    A 429 is waited out while its Retry-After fits the session's throttling budget (the client's
    ``azrdp_throttle``) and the deadline. After an ambiguous failure ``evidence()`` reads what the
    VM shows (an operation under way?) before PowerRequestUncertain says so.
    Raises OperationTimeout, PowerOperationFailed, PowerRequestUncertain or the translated error.
    """
    from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError

    from azrdp.azure.arm_errors import translate

    start = clock.monotonic()
    deadline = start + timeout
    retry = {} if idempotent else {"retry_total": 0}
    attempts = 0
    waits: list[float] = []
    while True:
        attempts += 1
        polling = clocked_polling(client, clock=clock, deadline=deadline, polling_interval=polling_interval,
                                  on_poll=on_poll)
        try:
            poller = begin(polling=polling, **retry)
            break
        except HttpResponseError as err:
            status = err.status_code or 0
            if status == 429 and attempts <= THROTTLE_RETRIES:
                pause = _retry_after(err)
                budget = getattr(client, "azrdp_throttle", None)   # the session's throttling budget
                if clock.monotonic() + pause <= deadline and (budget is None or budget.take(pause)):
                    notify = getattr(client, "azrdp_notify", None)
                    if notify is not None:
                        notify(f"Azure is throttling the {action} (429); waiting {pause:g} s before sending it again ...")
                    if on_poll is not None:
                        on_poll(f"throttled by ARM (429), sending again in {pause:g} s")
                    waits.append(pause)
                    clock.sleep(pause)
                    continue
            if status >= 500 and not idempotent:
                raise _uncertain(f"Azure answered {status} while {doing}", evidence) from None
            raise translate(err, doing=doing, subscription=subscription) from None
        except ServiceRequestError as err:  # never reached ARM: nothing was accepted
            raise translate(err, doing=doing, subscription=subscription) from None
        except AzureError as err:
            if idempotent:
                raise translate(err, doing=doing, subscription=subscription) from None
            raise _uncertain(f"the connection to Azure failed while {doing}", evidence) from None

    try:
        result, finished = wait(poller, clock=clock, deadline=deadline)
    except HttpResponseError as err:
        raise PowerOperationFailed(f"Azure accepted {action} but it failed while {doing}: "
                                   f"{_message(err)}",
                                   hint="Look at the VM's activity log in the portal; `az vm "
                                        "get-instance-view` shows its state.") from None
    except AzureError as err:
        raise translate(err, doing=doing, subscription=subscription) from None
    if not finished or str(poller.status()).lower() not in ("succeeded",):
        if finished:
            raise PowerOperationFailed(f"{action} ended {poller.status()} while {doing}.")
        raise OperationTimeout(f"{action} did not finish within {timeout:g} s while {doing}.",
                               hint="It may still complete in Azure; check the VM's power state.")
    return LroOutcome(action, clock.monotonic() - start, attempts, tuple(waits), result,
                      getattr(polling, "operation_start", None))


def _uncertain(what: str, evidence: Callable[[], str | None] | None) -> PowerRequestUncertain:
    """An ambiguous failure of a POST that acts: find out (a GET) what the VM shows before saying."""
    seen = None
    if evidence is not None:
        try:
            seen = evidence()
        except Exception:  # noqa: BLE001 - the evidence is a courtesy; the verdict stays "may have"
            seen = None
    tail = f" ({seen})" if seen else " (the VM shows no sign of it yet)" if evidence is not None else ""
    return PowerRequestUncertain(
        f"{what}: the request may or may not have been accepted, so it may have run{tail}.",
        hint="azrdp does not resend it blindly; look at the VM's activity log or power state "
             "in a minute before trying again.")


def _retry_after(err: Any) -> float:
    """The 429's Retry-After (seconds or an HTTP date), at least 1 s; 10 s when it gives none."""
    from azrdp.azure.throttle import MIN_PAUSE, retry_after_seconds

    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    seconds = retry_after_seconds(headers.get("Retry-After"))
    return 10.0 if seconds is None else max(MIN_PAUSE, seconds)


def _message(err: Any) -> str:
    from azrdp.azure.arm_errors import arm_error_code, arm_error_message

    code = arm_error_code(err)
    return f"({code}) {arm_error_message(err)}" if code else arm_error_message(err)
