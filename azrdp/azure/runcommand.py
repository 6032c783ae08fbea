"""Action Run Command (``virtualMachines/runCommand``, RunPowerShellScript), done carefully.

Azure's documented behaviour this module is built around (../shared/reference/rdp-repair-on-azure.md
section 3.2, azure-sdk-notes.md sections 0, 3 and 4):

* Run Command needs the VM agent Ready; otherwise the call hangs for up to 90 minutes. So the
  agent is checked first, from an instance view the caller passes or one read here, and a VM whose
  agent is not Ready gets :class:`AgentNotReady` without any Run Command being sent.
* One script at a time per VM: a second call is refused with 409 Conflict "Run command extension
  execution is in progress". That is waited out with capped exponential backoff on the injected
  Clock, up to ``conflict_wait`` seconds, then :class:`RunCommandBusy`.
* The LRO (202 + Azure-AsyncOperation + Location; the result is the final GET of Location) is
  polled by the SDK's own ARMPolling, whose sleeps go through the Clock and which stops at the
  invocation's deadline. ``poller.result(timeout)`` does not raise on timeout, so ``done()`` is
  checked as well; a late run raises :class:`~azrdp.errors.OperationTimeout`.
* The script is sent as the shipped file's lines, unchanged; values travel only in ``parameters``.
* SDK errors go through :func:`azrdp.azure.arm_errors.translate`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError

from azrdp.azure import wire_dict
from azrdp.azure.arm_errors import arm_error_message, translate
from azrdp.azure.lro import arm_time, clocked_polling, wait
from azrdp.azure.runcommand_output import RunCommandOutput, output_from_statuses
from azrdp.clock import SYSTEM_CLOCK, Clock
from azrdp.errors import AzureOperationError, OperationTimeout

COMMAND_ID = "RunPowerShellScript"
DEFAULT_TIMEOUT = 900.0          # seconds for one invocation, conflicts included
DEFAULT_CONFLICT_WAIT = 600.0    # seconds to wait out another Run Command on the same VM
CONFLICT_BACKOFF_FIRST = 5.0
CONFLICT_BACKOFF_MAX = 60.0
_IN_PROGRESS = "execution is in progress"


class AgentNotReady(AzureOperationError):
    """Run Command cannot work: the VM agent is not Ready (or the VM is not running)."""


class RunCommandBusy(AzureOperationError):
    """Another Run Command kept running on the VM for longer than azrdp waits."""


class RunCommandUncertain(AzureOperationError):
    """The Run Command POST failed ambiguously (5xx, a dropped connection, a timeout): the script
    may have run. It is never sent again; ``started`` says what the instance view showed after the
    failure (True: a Run Command began after azrdp's request, False: none did, None: unreadable)."""

    def __init__(self, message: str, *, hint: str | None = None, started: bool | None = None):
        super().__init__(message, hint=hint)
        self.started = started


RUN_COMMAND_EXTENSION = "runcommandwindows"


def run_command_state(instance_view: Any) -> dict[str, Any] | None:
    """Action Run Command's state in an instance view: its RunCommandWindows extension's status
    (``transitioning`` while a command runs) and time; None when the VM shows none."""
    view = wire_dict(instance_view) if instance_view is not None else {}
    for extension in view.get("extensions") or []:
        kind = str(extension.get("type") or "").rsplit(".", 1)[-1].lower()
        if str(extension.get("name") or "").lower() == RUN_COMMAND_EXTENSION or kind == RUN_COMMAND_EXTENSION:
            status = (extension.get("statuses") or [{}])[0]
            code = str(status.get("code") or "").split("/", 1)[-1].lower()
            return {"state": code, "time": arm_time(status.get("time")),
                    "display": status.get("displayStatus")}
    return None


def _started_since(before: dict[str, Any] | None, after: dict[str, Any] | None,
                   answered_at: datetime | None = None) -> bool:
    """Did a Run Command start after azrdp's request? One in progress did (only one runs at a
    time); a finished one did when its status is newer than the view azrdp had before, and (when
    ARM dated its failed answer) not older than when the request reached ARM (``answered_at``: the
    answer's Date less the request's own round trip) minus the seconds a Date truncates. A gateway
    that answers 504 a minute after accepting must not make an accepted command look unsent."""
    from datetime import timedelta

    if after is None:
        return False
    if after["state"] == "transitioning":
        return True
    if after["time"] is None:
        return False
    if before is not None and before["time"] is not None and after["time"] <= before["time"]:
        return False
    return answered_at is None or after["time"] >= answered_at - timedelta(seconds=2)


@dataclass
class RunCommandOutcome:
    """One Run Command: its output and how it went (attempts, waits, simulated/real seconds)."""

    output: RunCommandOutput
    attempts: int = 1                          # POSTs sent (1 + 409 retries)
    conflict_waits: list[float] = field(default_factory=list)
    seconds: float = 0.0                       # on the injected clock
    statuses: list[dict[str, Any]] = field(default_factory=list)   # value[] without messages

    def to_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "conflict_waits": self.conflict_waits,
                "seconds": round(self.seconds, 3), "statuses": self.statuses, **self.output.to_dict()}


def agent_state(instance_view: Any, since: datetime | None = None) -> tuple[bool, str]:
    """(ready, what to tell the user) from a VM instance view (SDK model or camelCase dict).

    Power state decides first: a stopped VM keeps its agent's last report (Ready), which says
    nothing about now. ``since`` (ARM's clock) is the start of a restart or start that should have
    changed the agent: a report older than it is the agent's last word before the reboot, so the
    VM is "rebooting" however that report looks (real-azure-behaviour.md)."""
    view = wire_dict(instance_view)
    power = next((str(s.get("code", "")).split("/", 1)[1] for s in view.get("statuses") or []
                  if str(s.get("code", "")).startswith("PowerState/")), None)
    if power and power != "running":
        return False, f"the VM is {power}, so Run Command cannot reach the guest"
    agent = view.get("vmAgent") or {}
    statuses = agent.get("statuses") or []
    if not statuses:
        return False, "the VM agent reports no status (not installed, or not started)"
    display = str(statuses[0].get("displayStatus") or statuses[0].get("code") or "unknown")
    if since is not None:
        reported = arm_time(statuses[0].get("time"))
        if reported is None or reported <= since:
            last = f"{display} at {reported:%H:%M:%S} UTC" if reported else f"{display}, undated"
            return False, (f"the VM is rebooting: the agent's last report ({last}) is older than the operation "
                           f"that started at {since:%H:%M:%S} UTC")
    if display.lower() == "ready":
        return True, "the VM agent is Ready"
    message = statuses[0].get("message")
    return False, f"the VM agent is {display}" + (f" ({message})" if message else "")


def _is_conflict(err: HttpResponseError) -> bool:
    return err.status_code == 409 and _IN_PROGRESS in arm_error_message(err).lower()


def run_script(compute: Any, resource_group: str, vm_name: str, script_lines: Sequence[str],
               parameters: Sequence[Mapping[str, str]] = (), *, instance_view: Any = None,
               clock: Clock = SYSTEM_CLOCK, timeout: float = DEFAULT_TIMEOUT,
               conflict_wait: float = DEFAULT_CONFLICT_WAIT, polling_interval: float | None = None,
               subscription: str | None = None, on_wait: Callable[[str], None] | None = None,
               on_conflict: Callable[[str], None] | None = None) -> RunCommandOutcome:
    """Run ``script_lines`` with ``parameters`` through action Run Command; return its output.

    ``compute`` is an ``azure.mgmt.compute.ComputeManagementClient``. ``instance_view`` is the
    VM's instance view when the caller already has it (else it is read). ``polling_interval``
    overrides the client's (tests use 0). Raises AgentNotReady, RunCommandBusy, OperationTimeout
    or the translated ARM error.

    ``on_wait(said)`` hears what Azure last said while azrdp waits (the operation's status on each
    poll; "waiting for another Run Command ..." behind a 409); ``on_conflict(text)`` is told once,
    on the first 409, what holds the VM and how long azrdp will wait for it. ARM's 409 does not say
    whose script runs, only that the Run Command extension is busy, so that is what is named.
    """
    where = f"VM {resource_group}/{vm_name}"
    if instance_view is None:
        try:
            instance_view = compute.virtual_machines.instance_view(resource_group, vm_name)
        except AzureError as err:
            raise translate(err, doing=f"reading the instance view of {where}",
                            subscription=subscription) from None
    ready, why = agent_state(instance_view)
    if not ready:
        raise AgentNotReady(f"cannot run a command in {where}: {why}.",
                            hint="Run Command needs a running VM with a Ready agent (it would hang up "
                                 "to 90 minutes otherwise); restart the VM or repair the agent first.")

    body = {"commandId": COMMAND_ID, "script": list(script_lines),
            "parameters": [{"name": p["name"], "value": p["value"]} for p in parameters]}
    before = run_command_state(instance_view)
    start = clock.monotonic()
    deadline = start + timeout

    attempts = 0
    waits: list[float] = []
    backoff = CONFLICT_BACKOFF_FIRST
    while True:
        attempts += 1
        polling = clocked_polling(compute, clock=clock, deadline=deadline, polling_interval=polling_interval,
                                  on_poll=on_wait)
        sent = time.monotonic()   # a measurement of this one request (not a wait): how early it may have started
        try:
            poller = compute.virtual_machines.begin_run_command(resource_group, vm_name, body,
                                                                polling=polling)
            break
        except HttpResponseError as err:
            if (err.status_code or 0) >= 500:
                from azrdp.azure.lro import http_date

                response: Any = err.response
                answered = http_date((response.headers if response is not None else {}).get("Date"))
                if answered is not None:  # the command may have started as soon as ARM had the request
                    answered -= timedelta(seconds=time.monotonic() - sent)
                raise _uncertain(compute, resource_group, vm_name, before, f"Azure answered {err.status_code}",
                                 subscription, answered) from None
            if not _is_conflict(err):
                raise translate(err, doing=f"starting Run Command in {where}",
                                subscription=subscription) from None
            waited = sum(waits)
            now = clock.monotonic()
            pause = min(backoff, CONFLICT_BACKOFF_MAX)
            if waited + pause > conflict_wait or now + pause > deadline:
                raise RunCommandBusy(
                    f"another Run Command is still running in {where} after {waited:g} s of waiting "
                    f"({attempts} attempts).",
                    hint="Action Run Command runs one script at a time and cannot be cancelled; "
                         "wait for it to finish (at most 90 minutes) and run azrdp again.") from None
            limit = min(conflict_wait, deadline - start)
            if not waits and on_conflict is not None:
                on_conflict(f"Another Run Command is running on {vm_name} (Azure: \"{arm_error_message(err)}\"); "
                            f"it cannot be cancelled, so azrdp waits for it up to {limit:g} s, trying again "
                            "with back-off.")
            waits.append(pause)
            if on_wait is not None:
                on_wait(f"waiting for another Run Command to finish ({waited:g} s of up to {limit:g} s; "
                        f"next try in {pause:g} s)")
            clock.sleep(pause)
            backoff *= 2
        except ServiceRequestError as err:   # never reached ARM: nothing was sent
            raise translate(err, doing=f"starting Run Command in {where}", subscription=subscription) from None
        except AzureError:            # a reset or a timeout after the request went out
            raise _uncertain(compute, resource_group, vm_name, before, "the connection to Azure failed",
                             subscription) from None

    try:
        result, finished = wait(poller, clock=clock, deadline=deadline)
    except AzureError as err:
        raise translate(err, doing=f"running a command in {where}", subscription=subscription) from None
    if not finished or result is None and not _finished_ok(poller):
        raise OperationTimeout(
            f"Run Command in {where} did not finish within {timeout:g} s.",
            hint="The script may still be running in the guest (Run Command cannot be cancelled); "
                 "wait, then run azrdp again.")
    statuses = list(getattr(result, "value", None) or [])
    return RunCommandOutcome(
        output=output_from_statuses(statuses),
        attempts=attempts,
        conflict_waits=waits,
        seconds=clock.monotonic() - start,
        statuses=[{"code": getattr(s, "code", None), "level": str(getattr(s, "level", "") or ""),
                   "display_status": getattr(s, "display_status", None)} for s in statuses],
    )


def _uncertain(compute: Any, resource_group: str, vm_name: str, before: dict[str, Any] | None, why: str,
               subscription: str | None, answered_at: datetime | None = None) -> RunCommandUncertain:
    """The POST failed ambiguously: look (a GET, safe to repeat) whether a Run Command started
    after azrdp's request before deciding anything; never send it again."""
    where = f"VM {resource_group}/{vm_name}"
    hint = ("azrdp does not send it again: a second run would find the first one's changes and report them "
            "unchanged. Wait until the VM's instance view shows the Run Command finished "
            f"(`az vm get-instance-view -g {resource_group} -n {vm_name}`), then run azrdp diagnose.")
    try:
        after = run_command_state(compute.virtual_machines.instance_view(resource_group, vm_name))
    except AzureError:
        return RunCommandUncertain(f"{why} while starting Run Command in {where}: the command may have run "
                                   "(the instance view could not be read to tell).", hint=hint, started=None)
    if after is not None and _started_since(before, after, answered_at):
        when = f" since {after['time']:%H:%M:%S} UTC" if after and after["time"] else ""
        what = "is in progress" if after["state"] == "transitioning" else "ran"
        return RunCommandUncertain(f"{why} while starting Run Command in {where}: the command may have run "
                                   f"(the VM shows a Run Command that {what}{when}).", hint=hint, started=True)
    return RunCommandUncertain(f"{why} while starting Run Command in {where}: the command may have run, though "
                               "the VM shows no Run Command started since the request (most likely it did not "
                               "start).", hint=hint, started=False)


def _finished_ok(poller: Any) -> bool:
    """True when the LRO reached Succeeded (a result of None is then Azure's answer, not a timeout)."""
    try:
        return str(poller.status()).lower() == "succeeded"
    except Exception:  # noqa: BLE001 - status() of a broken poller: treat as not finished
        return False
