"""The ARM side of azrdp's temporary NSG rules: create one (a PUT, re-planned when its priority
was taken meanwhile), remove one (a DELETE), list the NSGs of a scope. Each write is an ARM
long-running operation waited on azrdp's clock (lro.run_lro); both are idempotent, so they go
out with the SDK's retries. Jobs reach the writes through the VM handle (``AzureVm.put_rule`` /
``delete_rule``); only ``revoke --expired``, which has no VM, calls them here. What the rules are
and whose they are is azrdp.azure.nsg_rules (pure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azrdp.azure.lro import LroOutcome
    from azrdp.azure.nsg_rules import RulePlan
    from azrdp.azure.vm import Session
    from azrdp.clock import Clock

PRIORITY_ATTEMPTS = 3


def create_rule(session: Session, rule: RulePlan, *, clock: Clock, timeout: float = 300.0,
                attempts: int = PRIORITY_ATTEMPTS, on_poll: Callable[[str], None] | None = None) -> LroOutcome:
    """PUT the rule and wait for ARM to finish provisioning it (an idempotent PUT: retried as usual).
    ``on_poll(status)`` hears ARM's status of the operation while azrdp waits (the status line).

    Another run (or a person) may take the planned priority between azrdp's read and its PUT:
    ARM then refuses the rule with SecurityRuleConflict (same priority and direction). The NSG is
    read again, the next free priority before the deny rule chosen (``rule.priority`` updated) and
    the PUT sent again, up to ``attempts`` times."""
    from azrdp.azure.lro import poll_interval, run_lro
    from azrdp.errors import AzrdpError

    network = session.network
    for attempt in range(1, attempts + 1):
        try:
            return run_lro(lambda **kw: network.security_rules.begin_create_or_update(
                rule.resource_group, rule.nsg_name, rule.name, rule.body(), **kw),
                client=network, action="NSG rule creation", doing=f"adding rule {rule.name} to NSG {rule.nsg_name}",
                clock=clock, timeout=timeout, polling_interval=poll_interval(session),
                subscription=session.subscription_id, idempotent=True, on_poll=on_poll)
        except AzrdpError as err:
            if attempt == attempts or not _priority_conflict(err):
                raise
            priority = _next_free_priority(session, rule)
            if priority is None:
                raise
            rule.priority = priority
    raise AssertionError("unreachable")


def _priority_conflict(err: BaseException) -> bool:
    from azrdp.azure.arm_errors import arm_error_code

    cause = err.__cause__
    if cause is not None and hasattr(cause, "status_code") and arm_error_code(cause) == "SecurityRuleConflict":  # type: ignore[arg-type]
        return True
    return "SecurityRuleConflict" in getattr(err, "message", "")   # translate() names ARM's code


def _next_free_priority(session: Session, rule: RulePlan) -> int | None:
    from azrdp.azure import wire_dict
    from azrdp.azure.nsg import SecurityGroup, free_priority

    nsg = SecurityGroup.from_arm(wire_dict(session.network.network_security_groups.get(rule.resource_group,
                                                                                        rule.nsg_name)))
    return free_priority(nsg, below=int(rule.beats.get("priority") or rule.priority + 1))


def delete_rule(session: Session, resource_group: str, nsg_name: str, name: str, *, clock: Clock,
                timeout: float = 300.0, on_poll: Callable[[str], None] | None = None) -> LroOutcome:
    from azrdp.azure.lro import poll_interval, run_lro

    network = session.network
    return run_lro(lambda **kw: network.security_rules.begin_delete(resource_group, nsg_name, name, **kw),
                   client=network, action="NSG rule removal", doing=f"removing rule {name} from NSG {nsg_name}",
                   clock=clock, timeout=timeout, polling_interval=poll_interval(session),
                   subscription=session.subscription_id, idempotent=True, on_poll=on_poll)


def list_nsgs(session: Session, resource_group: str | None = None) -> list[dict[str, Any]]:
    """Every NSG of ``resource_group`` (or of the session's whole subscription) as ARM's wire JSON:
    NetworkSecurityGroups_List / _ListAll, every page."""
    from azure.core.exceptions import AzureError

    from azrdp.azure import wire_dict
    from azrdp.azure.arm_errors import translate

    scope = f"resource group {resource_group}" if resource_group else f"subscription {session.subscription_id}"
    groups = session.network.network_security_groups
    try:
        return [wire_dict(n) for n in (groups.list(resource_group) if resource_group else groups.list_all())]
    except AzureError as err:
        raise translate(err, doing=f"listing the NSGs of {scope}", subscription=session.subscription_id) from err
