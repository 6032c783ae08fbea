"""Power operations through ARM (restart, start) and the waits after them (agent, reboot).

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

from azrdp.azure.lro import LroOutcome, run_lro
from azrdp.clock import SYSTEM_CLOCK, Clock

DEFAULT_POWER_TIMEOUT = 900.0      # restart's operation is 0.2-0.3 s and start's 3.3-4.1 s on Azure
AGENT_POLL_INTERVAL = 5.0


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
