"""The plan as a person reads it before saying yes (azrdp.plan.Plan)."""

from __future__ import annotations

from azrdp.logsafe import printable
from azrdp.plan import Plan, step_effects


def render_plan(plan: Plan, *, detail: bool = False, vm: str = "VM", resource_group: str = "RG") -> str:
    """The plan as a person reads it before saying yes. ``detail`` adds, under each step, its effect
    on signed-in users, whether it needs a reboot and its undo (the interactive question). A reason
    quotes check summaries, which quote what the guest, ARM or the served certificate said: each is
    kept on its one line (a newline in a certificate's CN must not forge a plan step)."""
    lines = [f"Plan ({'guest diagnosis, then one repair Run Command' if plan.mode == 'separate' else 'one repair Run Command that re-checks and repairs only what is broken'}):"]
    if plan.empty:
        lines.append("  nothing to change")
    for number, step in enumerate(plan.steps, 1):
        when = "only if needed" if step.kind == "power" else "only if still broken"
        marks = [m for m, on in ((when, step.conditional), ("asked", step.forced)) if on]
        lines.append(f"  {number}. {step.name:<18} {printable(step.why)}" + (f" [{', '.join(marks)}]" if marks else ""))
        if detail:
            effects = step_effects(step, plan, vm=vm, resource_group=resource_group)
            lines.append(f"     {'':<18} users: {effects['users']}; reboot: {effects['reboot']}; "
                         f"undo: {effects['undo']}")
    if plan.values:
        params = " ".join(f"-{p['name']} {p['value']}" for p in plan.parameters())
        lines.append(f"  Run Command: repair.ps1 {params}")
    for rule in plan.rules:
        lines.append(f"  NSG rule: {rule.name} on {rule.nsg_name}: Allow TCP {rule.port} from {rule.source} to "
                     f"{rule.destination}, priority {rule.priority}; \"{printable(rule.description)}\"")
    for blocker in plan.blockers:
        lines.append(f"  Blocked: {printable(blocker)}")
    for note in plan.notes:
        lines.append(f"  Note: {printable(note)}")
    return "\n".join(lines)
