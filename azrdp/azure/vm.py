"""The typed Azure edge: a :class:`Session` protocol, and one handle per VM that owns its ARM calls.

Jobs (diagnose, fix, rescue, revoke, sweep) never take a session apart into ``(compute, rg, vm,
clock, polling interval, subscription)``: they ask the session for the VM's handle,
``session.vm(target)``, and call it. The handle fills in the clock, the LRO polling interval
(``lro.poll_interval``: the session's, capped at 5 s) and the subscription (for error messages)
itself. The loose functions it calls (``power.restart_vm``, ``runcommand.run_script``, ...) stay
the implementation, and the tests of each still drive them directly.

Both sessions the jobs see satisfy :class:`Session`: the plain :class:`~azrdp.azure.session.AzureSession`
and the fleet's :class:`~azrdp.azure.shared_reads.SharedReadSession` (whose Network reads are
shared across the VMs of one job); mypy checks both against it where the jobs receive them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from azrdp.clock import Clock
from azrdp.target import Target

if TYPE_CHECKING:
    from azrdp.azure.inventory import Inventory
    from azrdp.azure.lro import LroOutcome
    from azrdp.azure.nsg_rules import RulePlan
    from azrdp.azure.power import AgentWait, RebootWait
    from azrdp.azure.runcommand import RunCommandOutcome

Poll = Callable[[str], None]
Fetch = Callable[[str], bytes]


@runtime_checkable
class Session(Protocol):
    """What every job needs of a session: the two ARM clients (azure-mgmt-compute and
    azure-mgmt-network, untyped SDK objects), the clock every wait runs on, the LRO polling
    interval, the subscription it is bound to, the credential, and a handle per VM."""

    @property
    def compute(self) -> Any: ...

    @property
    def network(self) -> Any: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def polling_interval(self) -> float: ...

    @property
    def subscription_id(self) -> str: ...

    @property
    def credential(self) -> Any: ...

    def vm(self, target: Target, *, clock: Clock | None = None) -> AzureVm: ...


class AzureVm:
    """Every ARM call about one VM, with the session's clock, polling interval and subscription.

    ``clock`` overrides the session's (a job run on its own clock, as ``fix(..., clock=)`` allows).
    Rule writes go to the NSG the :class:`~azrdp.azure.nsg_rules.RulePlan` names (a subnet's NSG may
    sit in another resource group than the VM)."""

    def __init__(self, session: Session, target: Target, *, clock: Clock | None = None):
        self.session = session
        self.target = target
        self.clock = clock if clock is not None else session.clock

    # -- what the handle fills in -------------------------------------------------------------
    @property
    def resource_group(self) -> str:
        return self.target.resource_group

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def subscription_id(self) -> str:
        return self.session.subscription_id

    @property
    def polling_interval(self) -> float:
        from azrdp.azure.lro import poll_interval

        return poll_interval(self.session)

    @property
    def compute(self) -> Any:
        return self.session.compute

    def __repr__(self) -> str:
        return f"AzureVm({self.target})"

    # -- reads ----------------------------------------------------------------------------------
    def inventory(self, *, want_vnet: bool = False, progress: Any = None, listed: Any = None) -> Inventory:
        """The VM and everything on its RDP path (azrdp.azure.inventory.read_inventory)."""
        from azrdp.azure.inventory import read_inventory
        from azrdp.ui import SILENT

        return read_inventory(self.session, self.target, want_vnet=want_vnet,
                              progress=progress if progress is not None else SILENT, listed=listed)

    def read_agent(self, inventory: Inventory) -> None:
        """Complete a listed VM's inventory with its full instance view (one read)."""
        from azrdp.azure.inventory import read_agent

        read_agent(self.session, inventory)

    def screenshot(self, path: str | Path, *, fetch: Fetch | None = None) -> dict[str, Any]:
        """The boot-diagnostics screenshot, saved to ``path`` as PNG."""
        from azrdp.azure.screenshot import save_screenshot

        return save_screenshot(self.session, self.resource_group, self.name, path, fetch=fetch)

    def serial_log(self, *, fetch: Fetch | None = None) -> str:
        """The boot-diagnostics serial log's text."""
        from azrdp.azure.healthreport import read_serial_log

        return read_serial_log(self.session, self.resource_group, self.name, fetch=fetch)

    # -- Run Command ----------------------------------------------------------------------------
    def run_script(self, script_lines: Sequence[str], parameters: Sequence[Mapping[str, str]] = (), *,
                   instance_view: Any = None, timeout: float | None = None,
                   on_wait: Poll | None = None, on_conflict: Poll | None = None) -> RunCommandOutcome:
        """Action Run Command with ``script_lines`` and ``parameters`` (azrdp.azure.runcommand)."""
        from azrdp.azure.runcommand import DEFAULT_TIMEOUT, run_script

        return run_script(self.compute, self.resource_group, self.name, script_lines, parameters,
                          instance_view=instance_view, clock=self.clock,
                          timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
                          polling_interval=self.polling_interval, subscription=self.subscription_id,
                          on_wait=on_wait, on_conflict=on_conflict)

    # -- power ----------------------------------------------------------------------------------
    def start(self, *, timeout: float | None = None, on_poll: Poll | None = None) -> LroOutcome:
        from azrdp.azure.power import DEFAULT_POWER_TIMEOUT, start_vm

        return start_vm(self.compute, self.resource_group, self.name, clock=self.clock,
                        timeout=DEFAULT_POWER_TIMEOUT if timeout is None else timeout,
                        polling_interval=self.polling_interval, subscription=self.subscription_id, on_poll=on_poll)

    def restart(self, *, timeout: float | None = None, on_poll: Poll | None = None) -> LroOutcome:
        from azrdp.azure.power import DEFAULT_POWER_TIMEOUT, restart_vm

        return restart_vm(self.compute, self.resource_group, self.name, clock=self.clock,
                          timeout=DEFAULT_POWER_TIMEOUT if timeout is None else timeout,
                          polling_interval=self.polling_interval, subscription=self.subscription_id,
                          on_poll=on_poll)

    def wait_for_agent(self, *, timeout: float | None = None, interval: float | None = None,
                       since: datetime | None = None, on_poll: Poll | None = None) -> AgentWait:
        from azrdp.azure.power import AGENT_POLL_INTERVAL, DEFAULT_POWER_TIMEOUT, wait_for_agent

        return wait_for_agent(self.compute, self.resource_group, self.name, clock=self.clock,
                              timeout=DEFAULT_POWER_TIMEOUT if timeout is None else timeout,
                              interval=AGENT_POLL_INTERVAL if interval is None else interval,
                              subscription=self.subscription_id, since=since, on_poll=on_poll)

    def wait_for_reboot(self, *, since: datetime | None, port_answers: Callable[[], bool],
                        timeout: float | None = None, on_poll: Poll | None = None) -> RebootWait:
        from azrdp.azure.power import DEFAULT_POWER_TIMEOUT, wait_for_reboot

        return wait_for_reboot(self.compute, self.resource_group, self.name, since=since,
                               port_answers=port_answers, clock=self.clock,
                               timeout=DEFAULT_POWER_TIMEOUT if timeout is None else timeout,
                               subscription=self.subscription_id, on_poll=on_poll)

    # -- NSG rules (the NSGs on this VM's path) ------------------------------------------------
    def put_rule(self, rule: RulePlan, *, timeout: float = 300.0, on_poll: Poll | None = None) -> LroOutcome:
        """Create ``rule`` on its NSG and wait for ARM to provision it (a priority taken meanwhile
        is re-planned: azrdp.azure.nsg_writes.create_rule)."""
        from azrdp.azure.nsg_writes import create_rule

        return create_rule(self.session, rule, clock=self.clock, timeout=timeout, on_poll=on_poll)

    def delete_rule(self, resource_group: str, nsg_name: str, name: str, *, timeout: float = 300.0,
                    on_poll: Poll | None = None) -> LroOutcome:
        """Remove rule ``name`` from NSG ``resource_group/nsg_name`` and wait for ARM."""
        from azrdp.azure.nsg_writes import delete_rule

        return delete_rule(self.session, resource_group, nsg_name, name, clock=self.clock, timeout=timeout,
                           on_poll=on_poll)

