"""The revoke job: remove the temporary NSG rules `azrdp fix --allow-from` made.

    revoke(session, target, audit=AuditLog(...)) -> RevokeResult     # the rules made for one VM
    revoke_expired(session, audit=..., resource_group=None)          # every expired one in a scope

Which rules are azrdp's, and for which VM, is azrdp.azure.nsg_rules (pure); the removals go
through the VM's handle (``AzureVm.delete_rule``), or, for a scope with no VM, through
azrdp.azure.nsg_writes. Each removal is audited (intent first) as it happens; nothing is removed
without its record, and none after SIGINT/SIGTERM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azrdp.azure.nsg_rules import TIME_FORMAT, FoundRule, azrdp_rules, made_for, vm_nsgs
from azrdp.logsafe import printable
from azrdp.target import Target

if TYPE_CHECKING:
    from azrdp.azure.vm import Session
    from azrdp.clock import Clock


@dataclass
class RevokeResult:
    vm: str                                                       # the VM, or the scope (--expired)
    found: list[FoundRule] = field(default_factory=list)
    removed: list[FoundRule] = field(default_factory=list)
    kept: list[FoundRule] = field(default_factory=list)          # not expired, with expired_only
    others: list[FoundRule] = field(default_factory=list)        # made for another VM (kept; --all removes)
    failed: list[tuple[FoundRule, str]] = field(default_factory=list)
    dry_run: bool = False
    now: datetime | None = None
    audit_error: str | None = None
    scope: bool = False

    @property
    def exit_code(self) -> int:
        from azrdp.errors import EXIT_AZURE, EXIT_OK, EXIT_PROBLEM

        return EXIT_AZURE if self.failed else EXIT_PROBLEM if self.audit_error else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {("scope" if self.scope else "vm"): self.vm, "dry_run": self.dry_run,
                "found": [r.to_dict(self.now) for r in self.found],
                "removed": [r.to_dict(self.now) for r in self.removed],
                "kept": [r.to_dict(self.now) for r in self.kept],
                "other_vms": [r.to_dict(self.now) for r in self.others],
                "failed": [{**r.to_dict(self.now), "error": e} for r, e in self.failed],
                "audit_error": self.audit_error, "exit_code": self.exit_code}


def render_text(result: RevokeResult) -> str:
    """What `azrdp revoke` prints: what was (or would be) removed, kept and why, what failed."""
    where = f"in {result.vm}" if result.scope else f"on the NSGs of VM {result.vm}"
    if not result.found and not result.others:
        return f"No azrdp rules {where}: nothing to remove."
    verb = "Would remove" if result.dry_run else "Removed"
    lines = [f"{verb} {len(result.removed)} of {len(result.found)} azrdp rule(s) {where}:"]
    for rule in result.removed:
        lines.append(f"  {rule.name} on {rule.nsg_name} (from {rule.source}, priority {rule.priority})")
    for rule in result.kept:
        lines.append(f"  kept {rule.name} on {rule.nsg_name}: " + (f"not expired (until {rule.expires:{TIME_FORMAT}})"
                                                                  if rule.expires else "its description gives no expiry"))
    for rule in result.others:
        lines.append(f"  kept {rule.name} on {rule.nsg_name}: made for VM {rule.vm or '(not named)'} "
                     "(--all removes every azrdp rule on these NSGs)")
    for rule, error in result.failed:
        lines.append(f"  FAILED {rule.name} on {rule.nsg_name}: {error}")
    if result.audit_error:
        lines.append(f"Audit: FAILED: {result.audit_error}")
    return "\n".join(printable(line) for line in lines)


def revoke(session: Session, target: Target, *, audit: Any, clock: Clock | None = None, progress: Any = None,
           expired_only: bool = False, dry_run: bool = False, every_vm: bool = False) -> RevokeResult:
    """Remove the rules azrdp made for ``target`` on the NSGs of its NICs and subnets (and only
    those: a subnet NSG may carry rules azrdp made for other VMs; ``every_vm`` removes those too);
    with ``expired_only`` only the expired ones. Each removal is audited as it happens."""
    clock = clock or session.clock
    vm = session.vm(target, clock=clock)
    inventory = vm.inventory(progress=progress)
    now = clock.now()
    private_ips = [str((c.get("properties") or {}).get("privateIPAddress") or "").split("/")[0]
                   for nic in inventory.resources.values() if nic.kind == "nic" and nic.body is not None
                   for c in nic.properties.get("ipConfigurations") or []]
    rules = azrdp_rules(vm_nsgs(inventory))
    mine = [r for r in rules if every_vm or made_for(r, target.name, private_ips)]
    result = RevokeResult(str(target), mine, dry_run=dry_run, now=now,
                          others=[r for r in rules if r not in mine])
    return _remove(result, lambda rule, on_poll: vm.delete_rule(rule.resource_group, rule.nsg_name, rule.name,
                                                                on_poll=on_poll),
                   audit=audit, progress=progress, now=now, expired_only=expired_only)


def revoke_expired(session: Session, *, audit: Any, resource_group: str | None = None, clock: Clock | None = None,
                   progress: Any = None, dry_run: bool = False) -> RevokeResult:
    """Remove every expired azrdp rule on every NSG of a resource group (or of the whole
    subscription): what an Automation schedule runs, since Azure never expires a rule by itself."""
    from azrdp.azure.nsg_writes import delete_rule, list_nsgs

    clock = clock or session.clock
    scope = f"resource group {resource_group}" if resource_group else f"subscription {session.subscription_id}"
    if progress is not None:
        progress.info(f"Listing the NSGs of {scope} ...")
    bodies = list_nsgs(session, resource_group)
    now = clock.now()
    rules = azrdp_rules(_Listed(b) for b in bodies)
    result = RevokeResult(scope, rules, dry_run=dry_run, now=now, scope=True)
    return _remove(result, lambda rule, on_poll: delete_rule(session, rule.resource_group, rule.nsg_name, rule.name,
                                                             clock=clock, on_poll=on_poll),
                   audit=audit, progress=progress, now=now, expired_only=True)


@dataclass
class _Listed:
    """An NSG from a list call, shaped like an inventory Resource for azrdp_rules."""

    body: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.body.get("id") or "")

    @property
    def name(self) -> str:
        return str(self.body.get("name") or self.id.rsplit("/", 1)[-1])

    @property
    def properties(self) -> dict[str, Any]:
        return self.body.get("properties") or {}


def _remove(result: RevokeResult, delete: Callable[[FoundRule, Callable[[str], None]], Any], *, audit: Any,
            progress: Any, now: datetime, expired_only: bool) -> RevokeResult:
    """Remove ``result.found`` (or its expired ones) one by one with ``delete(rule, on_poll)``:
    each removal audited before it is sent, none after a stop, a failure kept and the rest tried."""
    from azrdp.audit import AuditWriteError
    from azrdp.errors import AzrdpError

    for rule in result.found:
        if expired_only and not rule.expired(now):
            result.kept.append(rule)
            continue
        if result.dry_run:
            result.removed.append(rule)
            continue
        stop = _stop_requested()
        if stop:   # no new removal after SIGINT/SIGTERM
            audit.record("interrupted", done=[f"removed {r.name} from {r.nsg_name}" for r in result.removed],
                         in_flight=None, signal=stop)
            raise KeyboardInterrupt(stop)
        if progress is not None:
            progress.info(f"Removing NSG rule {rule.name} from {rule.nsg_name} ...")
        try:
            audit.record("nsg-rule", status="remove-requested", rule=rule.to_dict(now), intent=True)
        except AuditWriteError as err:  # nothing is removed without a record
            result.audit_error = err.message
            result.kept.extend(r for r in result.found if r not in result.removed and r not in result.kept
                               and all(r is not f for f, _ in result.failed))
            break
        try:
            from azrdp.ui import waiting

            with waiting(progress, f"Removal of NSG rule {rule.name}", said="sent", limit=300.0) as wait:
                delete(rule, wait.update)
                wait.end("removed")
        except AzrdpError as err:
            result.failed.append((rule, err.message))
            audit.record("nsg-rule", status="remove-failed", rule=rule.to_dict(now), error=err.message)
            continue
        except KeyboardInterrupt:  # the DELETE may have been accepted: say so, in the audit and on stderr
            in_flight = f"the removal of rule {rule.name} from NSG {rule.nsg_name}"
            audit.record("interrupted", done=[f"removed {r.name} from {r.nsg_name}" for r in result.removed],
                         in_flight=in_flight, rule=rule.to_dict(now))
            if progress is not None:
                progress.info(f"Interrupted: {in_flight} may still be in flight; run azrdp revoke again to finish.")
            raise
        result.removed.append(rule)
        audit.record("nsg-rule", status="removed", rule=rule.to_dict(now))
    result.audit_error = result.audit_error or audit.error
    if progress is not None:
        progress.done()
    return result


def _stop_requested() -> str | None:
    """A signal azrdp caught (SIGINT/SIGTERM) that says: send no new change (azrdp.clock)."""
    from azrdp.clock import stop_requested

    return stop_requested()
