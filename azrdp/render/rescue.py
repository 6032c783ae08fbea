"""`azrdp rescue`: the plan it asks about, and the report of a rescue, resume or undo."""

from __future__ import annotations

from azrdp.render.job import audit_line
from azrdp.report import render_checks
from azrdp.rescue import COST, RescuePlan, RescueResult


def render_rescue_plan(plan: RescuePlan) -> str:
    lines = ["Rescue plan (offline repair through a rescue VM):"]
    lines += [f"  why: {w}" for w in plan.why]
    lines += [f"  blocked: {b}" for b in plan.blockers]
    if plan.state and not plan.blockers:
        done = set(plan.state.get("done", ()))
        for step in plan.steps:
            mark = "done" if step["phase"] in done else "    "
            lines.append(f"  {mark} {step['phase']:<15} {step['what']}")
        lines.append(f"  cost: {COST}")
    return "\n".join(lines)


def render_rescue(result: RescueResult, *, verbose: int = 0) -> str:
    lines = [f"VM {result.target.name} in {result.target.resource_group}"]
    if result.before is not None:
        lines.append("Before:")
        lines += ["  " + line for line in render_checks(result.before.checks, verbose=verbose).splitlines()]
    if result.plan is not None:
        lines.append(render_rescue_plan(result.plan))
    if result.repair is not None:
        lines.append(f"Offline repair on volume {result.repair['volume']} ({result.repair['control_set']}), backups in "
                     f"{result.repair['backup'] or '-'}:")
        for step in result.repair["steps"]:
            lines.append(f"  {step['name']:<12} {step['status']:<9} {', '.join(step['actions'])}"
                         + (f" ({step['error']})" if step["error"] else ""))
    done = [r for r in result.actions if r.get("status") == "done" and r.get("phase") not in ("plan",)]
    if done:
        lines.append("Done: " + ", ".join(r["phase"] for r in done))
    v = result.verification
    if v:
        lines.append(f"RDP: {v.get('outcome', v.get('outside_check'))} on {v.get('where') or '-'}"
                     + (f" after {v['seconds']:.1f} s" if v.get("seconds") is not None else "")
                     + f"; VM agent {'Ready' if v.get('agent_ready') else 'not Ready'}")
    if result.after is not None:
        lines.append("After:")
        lines += ["  " + line for line in render_checks(result.after.checks, verbose=verbose).splitlines()]
    res = result.resources()
    if res:
        lines.append("Resources:")
        lines += [f"  {r['kind']:<13} {r['name']}: {r['remove']}" for r in res]
    if result.interrupted:
        lines.append(f"Interrupted (Ctrl-C) during {result.interrupted['in_flight'] or 'a wait'}; done: "
                     f"{', '.join(result.interrupted['done']) or 'nothing'}")
    if result.timings:
        lines.append("Phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))
    audit = audit_line(result)
    if audit:
        lines.append(audit)
    lines.append(f"Verdict: {result.verdict}: {result.summary()}")
    return "\n".join(lines)
