"""Power operations through ARM (restart, start) and ARM long-running operations on azrdp's clock.

Built around Azure's documented behaviour (../shared/reference/azure-sdk-notes.md sections 1, 3, 4):

* ``restart`` and ``start`` are POSTs answered 202 + Azure-AsyncOperation/Location; the SDK's
  ARMPolling follows them. Its sleeps go through the injected Clock and stop at azrdp's deadline
  (``poller.result(timeout)`` alone does not raise on timeout), so a late operation is an
  :class:`~azrdp.errors.OperationTimeout`, and tests never sleep.
* A POST is not idempotent: a restart sent twice may restart the VM twice. The SDK's retry policy
  would resend a POST after a 500/503/504 or any answer carrying Retry-After; here the initial
  POST goes out with ``retry_total=0`` (and azrdp's session policy never resends such a POST).
  Only an answer that proves ARM did NOT accept the request (429 throttling) is retried, after
  its Retry-After, on the clock and within the session's throttling budget. Anything else (5xx, a
  dropped connection, a timeout) is "may have run": azrdp reads the instance view for a sign of
  the operation, reports what it saw, and never resends it blindly.
* After a start (or a restart) Windows boots for a while before the VM agent is Ready; Run Command
  needs it, so :func:`wait_for_agent` polls the instance view (GETs, safe to retry) on the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azrdp.clock import SYSTEM_CLOCK, Clock
from azrdp.errors import AzureOperationError, OperationTimeout

DEFAULT_POWER_TIMEOUT = 900.0      # restart's operation is 0.2-0.3 s and start's 3.3-4.1 s on Azure
THROTTLE_RETRIES = 3
AGENT_POLL_INTERVAL = 5.0


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


def run_lro(begin: Callable[..., Any], *, client: Any, action: str, doing: str, clock: Clock = SYSTEM_CLOCK,
            timeout: float = DEFAULT_POWER_TIMEOUT, polling_interval: float | None = None,
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
    from azrdp.azure.lro import clocked_polling, wait

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


def power_evidence(compute: Any, resource_group: str, vm_name: str) -> str | None:
    """What the instance view says of a restart or start under way: an operation in progress, the
    VM starting, or an operation newer than the agent's last report (the guest is rebooting)."""
    from azrdp.azure import wire_dict
    from azrdp.azure.lro import arm_time

    view = wire_dict(compute.virtual_machines.instance_view(resource_group, vm_name))
    statuses = view.get("statuses") or []
    codes = {str(s.get("code") or "").lower(): s for s in statuses}
    if "provisioningstate/updating" in codes:
        return "Azure shows an operation under way on the VM"
    if "powerstate/starting" in codes:
        return "the VM is starting"
    changed = next((arm_time(s.get("time")) for c, s in codes.items() if c.startswith("provisioningstate/")), None)
    agent = ((view.get("vmAgent") or {}).get("statuses") or [{}])[0]
    reported = arm_time(agent.get("time"))
    if changed is not None and reported is not None and reported < changed:
        return "the VM was changed after its agent last reported: it is rebooting"
    return None


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


def restart_vm(compute: Any, resource_group: str, vm_name: str, *, clock: Clock = SYSTEM_CLOCK,
               timeout: float = DEFAULT_POWER_TIMEOUT, polling_interval: float | None = None,
               subscription: str | None = None, on_poll: Callable[[str], None] | None = None) -> LroOutcome:
    """Restart the VM through ARM (``begin_restart``) and wait until ARM says it restarted."""
    return run_lro(lambda **kw: compute.virtual_machines.begin_restart(resource_group, vm_name, **kw),
                   client=compute, action="restart", doing=f"restarting VM {resource_group}/{vm_name}",
                   clock=clock, timeout=timeout, polling_interval=polling_interval, subscription=subscription,
                   on_poll=on_poll,
                   evidence=lambda: power_evidence(compute, resource_group, vm_name))


def start_vm(compute: Any, resource_group: str, vm_name: str, *, clock: Clock = SYSTEM_CLOCK,
             timeout: float = DEFAULT_POWER_TIMEOUT, polling_interval: float | None = None,
             subscription: str | None = None, on_poll: Callable[[str], None] | None = None) -> LroOutcome:
    """Start a stopped or deallocated VM through ARM (``begin_start``) and wait for it."""
    return run_lro(lambda **kw: compute.virtual_machines.begin_start(resource_group, vm_name, **kw),
                   client=compute, action="start", doing=f"starting VM {resource_group}/{vm_name}",
                   clock=clock, timeout=timeout, polling_interval=polling_interval, subscription=subscription,
                   on_poll=on_poll,
                   evidence=lambda: power_evidence(compute, resource_group, vm_name))


@dataclass
class AgentWait:
    ready: bool
    seconds: float
    polls: int
    why: str
    instance_view: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "seconds": round(self.seconds, 3), "polls": self.polls, "why": self.why}


def wait_for_agent(compute: Any, resource_group: str, vm_name: str, *, clock: Clock = SYSTEM_CLOCK,
                   timeout: float = DEFAULT_POWER_TIMEOUT, interval: float = AGENT_POLL_INTERVAL,
                   subscription: str | None = None, on_poll: Callable[[str], None] | None = None,
                   since: datetime | None = None) -> AgentWait:
    """Poll the instance view until the VM agent is Ready (Run Command can work) or ``timeout``.

    ``since`` is the start (ARM's clock) of the restart or start that should have changed the
    agent: only a Ready reported after it counts. Azure keeps showing the agent's last report,
    Ready with its old time, for tens of seconds after a restart (real-azure-behaviour.md), so a
    Ready older than ``since`` means the VM is still rebooting."""
    from azure.core.exceptions import AzureError

    from azrdp.azure.arm_errors import translate
    from azrdp.azure.runcommand import agent_state

    start = clock.monotonic()
    polls = 0
    while True:
        try:
            view = compute.virtual_machines.instance_view(resource_group, vm_name)
        except AzureError as err:
            raise translate(err, doing=f"reading the instance view of VM {resource_group}/{vm_name}",
                            subscription=subscription) from None
        polls += 1
        ready, why = agent_state(view, since=since)
        elapsed = clock.monotonic() - start
        if ready:
            return AgentWait(True, elapsed, polls, why, view)
        if on_poll is not None:
            on_poll(why)
        if elapsed + interval > timeout:
            return AgentWait(False, elapsed, polls, why, view)
        clock.sleep(interval)


@dataclass
class RebootWait:
    """How azrdp knew a restart had reached Windows: ``port_down`` (the old listener went away),
    ``agent_reported`` (a Ready reported after the restart began), ``unknown`` (ARM gave no start
    time to judge by), or ``timeout``."""

    seen: str
    seconds: float
    polls: int

    def to_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "seconds": round(self.seconds, 3), "polls": self.polls}


REBOOT_PROBE_INTERVAL = 1.0


def wait_for_reboot(compute: Any, resource_group: str, vm_name: str, *, since: datetime | None,
                    port_answers: Callable[[], bool], clock: Clock = SYSTEM_CLOCK,
                    timeout: float = DEFAULT_POWER_TIMEOUT, interval: float = REBOOT_PROBE_INTERVAL,
                    agent_interval: float = AGENT_POLL_INTERVAL, subscription: str | None = None,
                    on_poll: Callable[[str], None] | None = None) -> RebootWait:
    """After a restart: wait until it has reached Windows, before anything may verify it.

    A restart operation succeeds in a fraction of a second and Windows goes down afterwards, so
    an RDP answer right after it comes from the old, not yet restarted Windows. This waits until
    the RDP port stops answering (``port_answers()`` False) or the agent reports Ready after
    ``since``, whichever comes first, polling the port every ``interval`` and the instance view
    every ``agent_interval`` seconds, at most ``timeout``."""
    from azure.core.exceptions import AzureError

    from azrdp.azure.arm_errors import translate
    from azrdp.azure.runcommand import agent_state

    start = clock.monotonic()
    if since is None:
        return RebootWait("unknown", 0.0, 0)
    polls = 0
    next_view = start
    while True:
        polls += 1
        if not port_answers():
            return RebootWait("port_down", clock.monotonic() - start, polls)
        if clock.monotonic() >= next_view:
            try:
                view = compute.virtual_machines.instance_view(resource_group, vm_name)
            except AzureError as err:
                raise translate(err, doing=f"reading the instance view of VM {resource_group}/{vm_name}",
                                subscription=subscription) from None
            ready, why = agent_state(view, since=since)
            if ready:
                return RebootWait("agent_reported", clock.monotonic() - start, polls)
            if on_poll is not None:
                on_poll(why)
            next_view = clock.monotonic() + agent_interval
        if clock.monotonic() - start + interval > timeout:
            return RebootWait("timeout", clock.monotonic() - start, polls)
        clock.sleep(interval)
