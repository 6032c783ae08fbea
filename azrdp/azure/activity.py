"""Is somebody else changing this VM right now? Read from what ARM already told the diagnosis
(pure: no ARM call), so that azrdp repairs one VM one run at a time.

Three signs, each one real Azure shows while another run (azrdp, a sweep, a person, a pipeline)
works on the VM:

- a Run Command in flight: the instance view's RunCommandWindows extension reports
  ``ProvisioningState/transitioning`` until the script ends (Learn, "Run scripts in your Windows VM
  by using action Run Commands": one Run Command at a time per VM; the next one waits or fails);
- an ARM operation in flight: the instance view's status ``ProvisioningState/updating`` (and the
  VM's provisioningState ``Updating``) while a restart, start, stop or update runs
  (Learn, "Azure Virtual Machines provisioning states"; real-azure-behaviour.md);
- a restart that Windows has not answered yet: the agent's last report is older than the VM's
  last operation, and that operation is recent. The other run is waiting for the VM to boot and
  will verify it; a second repair now would restart it again or queue a Run Command behind the boot.
  After ``recent`` the VM is judged as it is (a VM whose agent never came back is broken, not busy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from azrdp.checks import Check, Status
from azrdp.logsafe import printable

RECENT = timedelta(minutes=15)
"""How long after an operation a VM whose agent has not reported since counts as another run's:
azrdp's own bound on waiting for a restarted VM (repair.DEFAULT_WAIT_TIMEOUT, 900 s)."""


def run_in_progress(instance_view: Mapping[str, Any] | None, checks: Iterable[Check], now: datetime,
                    *, recent: timedelta = RECENT) -> tuple[str, str] | None:
    """What shows that another run is changing the VM, and since when or why (text safe to print:
    "another Run Command is in progress", " since 2026-...") or None."""
    from azrdp.azure.lro import arm_time
    from azrdp.azure.runcommand import run_command_state

    view = instance_view or {}
    run = run_command_state(view)
    if run is not None and run["state"] == "transitioning":
        return "another Run Command is in progress", f" since {run['time']:%H:%M:%S} UTC" if run["time"] else ""
    for status in view.get("statuses") or []:
        if str(status.get("code") or "").lower() == "provisioningstate/updating":
            since = f" since {printable(status.get('time'))}" if status.get("time") else ""
            return "an Azure operation (restart, start or update) is in progress", since
    by_id = {check.id: check for check in checks}
    agent = by_id.get("vm.agent")
    if agent is not None and agent.status is Status.WARN and agent.details.get("last_operation"):
        changed = arm_time(agent.details["last_operation"])
        if changed is not None and timedelta(0) <= now - changed <= recent:
            return ("a restart Windows has not answered yet is in progress",
                    f" since {changed:%H:%M:%S} UTC (the VM agent has not reported since)")
    return None
