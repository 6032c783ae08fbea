"""`azrdp fix` (and the fix `azrdp demo` runs): the report of one repair, and its JUnit suites."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from azrdp.checks import Check, Status
from azrdp.logsafe import printable
from azrdp.render.job import audit_line
from azrdp.render.plan import render_plan
from azrdp.repair_result import RepairResult
from azrdp.report import render_checks

_MARK = {Status.PASS: "ok", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.ERROR: "ERR", Status.SKIP: "skip"}


def render_fix(result: RepairResult, *, verbose: int = 0, shown: Sequence[Any] = ()) -> str:
    """The report of one fix. ``shown`` holds what the operator already saw before answering the
    question (the diagnosis, the plans asked about): it is not printed a second time."""
    lines = []
    before = result.before
    if before is not None:
        vm = before.vm
        facts = ", ".join(str(v) for v in (vm.get("os_type"), vm.get("power_state"), vm.get("location")) if v)
        lines.append(printable(f"VM {vm['name']} in {vm['resource_group']}: {facts}"))
        if not any(item is before for item in shown):
            lines.append("Before:")
            lines.append(_indent(render_checks(before.checks, verbose=verbose)))
    for plan in result.plans:
        if not any(item is plan for item in shown):
            lines.append(render_plan(plan))
    if result.actions:
        lines.append("Done:")
        for n, record in enumerate(result.actions):
            if record["action"] == "nsg-rule" and record.get("status") == "requested" and any(
                    later["action"] == "nsg-rule" and later.get("rule", {}).get("name") == record["rule"]["name"]
                    for later in result.actions[n + 1:]):
                continue   # the intent of a rule whose outcome follows
            lines.append("  " + printable(_describe(record)))
    if result.verification:
        v = result.verification
        if v["method"] == "wire":
            lines.append(f"RDP: {v['outcome']} on {v['where']} after {v['seconds']:.1f} s ({v['attempts']} attempts)")
        else:
            guest = v.get("guest_ok")
            lines.append(f"RDP: outside check {v['outside_check']}" + (
                "" if guest is None else "; guest side: listener up and certificate valid" if guest
                else "; guest side: listener or certificate not healthy (see below)"))
    failed = result.failed_before()
    if failed:
        lines.append("Before -> after:")
        for row in failed:
            after = _MARK.get(Status(row["after"]), row["after"]) if row["after"] in _STATUSES else row["after"]
            lines.append(f"  {row['id']:<18} {_MARK[Status(row['before'])]:>4} -> {after:<9} "
                         f"{printable(row['after_summary'])}")
    changed = [c for c in result.changes() if c["id"] not in {row["id"] for row in failed}]
    if changed:
        lines.append("Other changes:")
        for change in changed:
            lines.append(f"  {change['id']:<18} {_MARK[Status(change['before'])]:>4} -> {_MARK[Status(change['after'])]:<9} "
                         f"{printable(change['after_summary'])}")
    guest = guest_changes(result)
    if guest:
        lines.append("Guest before -> after (the repair payload's own re-checks):")
        lines += [f"  {printable(line)}" for line in guest]
    if result.timings:
        names = {"diagnose": "diagnose", "start": "start", "agent": "agent", "nsg": "NSG rules",
                 "run_command": "Run Command", "restart": "restart", "rdp": "time to RDP", "after": "re-diagnose"}
        lines.append("Phases: " + ", ".join(f"{names.get(k, k)} {v:.1f} s" for k, v in result.timings.items()))
    counts = result.counts
    lines.append(f"Azure: {counts['repair_run_commands']} repair Run Command(s), {counts['diagnose_run_commands']} "
                 f"diagnose Run Command(s), {counts['restarts']} restart(s), {counts['starts']} start(s), "
                 f"{counts['nsg_rules']} NSG rule(s)")
    if result.interrupted:
        signal = {"SIGTERM": "SIGTERM"}.get(result.interrupted.get("signal") or "", "Ctrl-C")
        lines.append(f"Interrupted ({signal}): " + ("done: " + "; ".join(result.interrupted["done"])
                                                if result.interrupted["done"] else
                                                "nothing was finished" if result.interrupted["in_flight"] else
                                                "nothing was changed"))
        if result.interrupted["in_flight"]:
            lines.append(f"  still in flight: {result.interrupted['in_flight']}")
    for item in result.pending:
        lines.append(f"Pending: {printable(item)}")
    for item in result.next_steps:
        if item not in result.pending:
            lines.append(f"Next: {printable(item)}")
    audit = audit_line(result, records=len(result.audit_records))
    if audit:
        lines.append(audit)
    lines.append(f"Verdict: {result.verdict}: {result.summary().rstrip('.')}.")
    return "\n".join(lines)


_STATUSES = {s.value for s in Status}


def guest_changes(result: RepairResult) -> list[str]:
    """One line per repair step: what the guest looked like before -> after (from the step's own
    before/after states in the repair result)."""
    if result.repair is None:
        return []
    out = []
    for step in result.repair.steps:
        before, after = step.get("before") or {}, step.get("after") or {}
        facts = _STEP_FACTS.get(step["name"], lambda b, a: "")(before, after) if before and after else ""
        flags = [step["status"]] + (["needs a reboot"] if step["reboot_required"] else [])
        error = f"; {step['error']}" if step.get("error") else ""
        out.append(f"{step['name']:<18} {', '.join(flags):<24} {facts}{error}".rstrip())
    return out


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _cert(state: dict[str, Any]) -> str:
    if not state.get("current"):
        return "no usable one"
    return f"{state['current'][:8]}... until {str(state.get('current_not_after') or '?')[:10]}"


_STEP_FACTS: dict[str, Callable[[dict[str, Any], dict[str, Any]], str]] = {
    "rdp-config": lambda b, a: (f"fDenyTSConnections {b['deny']} -> {a['deny']}, TermService "
                                f"{b['services'][0]['state']} -> {a['services'][0]['state']}, firewall rules on "
                                f"{b['fw_rules_enabled']}/{b['fw_rules']} -> {a['fw_rules_enabled']}/{a['fw_rules']}"),
    "machinekeys-acl": lambda b, a: (f"MachineKeys default ACL {_yes(b['default'])} -> {_yes(a['default'])}, "
                                     f"RDP key readable by NETWORK SERVICE {_yes(b['rdp_key']['network_service_read'])}"
                                     f" -> {_yes(a['rdp_key']['network_service_read'])}"),
    "machinekeys-rename": lambda b, a: (f"RDP key container present {_yes(b['rdp_key']['present'])} -> "
                                        f"{_yes(a['rdp_key']['present'])}, key files {b['files']} -> {a['files']}"),
    "cert": lambda b, a: (f"certificate {_cert(b)} -> {_cert(a)}, unusable ones {b['bad']} -> {a['bad']}"),
    "sessions": lambda b, a: (f"free seats {b['free']} -> {a['free']} of {a['seat_limit']}, disconnected sessions "
                              f"{b['disconnected']} -> {a['disconnected']}"),
}


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _describe(record: dict[str, Any]) -> str:
    action = record["action"]
    if action == "guest-step" and record["step"] == "sessions" and record.get("info"):
        return (f"guest step sessions: {record['status']} (logged off {record['info']['logged_off_total']}, "
                f"{record['info']['seats_freed']} seat(s) freed)")
    if action == "guest-step":
        backups = ", ".join(f"{k} {v}" for k, v in (record.get("backups") or {}).items())
        return f"guest step {record['step']}: {record['status']}" + (f" (backup: {backups})" if backups else "") + \
            (f": {record['error']}" if record.get("error") else "")
    if action == "nsg-rule":
        rule = record["rule"]
        failed = f" FAILED: {record['error']}" if record.get("status") == "failed" else \
            " (requested; it may exist)" if record.get("status") == "requested" else ""
        return (f"NSG rule {rule['name']} on {rule['nsg_name']}: Allow TCP {rule['port']} from {rule['source']} "
                f"until {rule['expires']} (undo: {record['undo']}){failed}")
    extra = f" in {record['seconds']:.1f} s" if record.get("seconds") is not None else ""
    return f"{action}: {record.get('status')}{extra}" + (f" ({record['why']})" if record.get("why") else "") + \
        (f": {record['error']}" if record.get("error") else "")


def junit_suites(result: RepairResult) -> list[tuple[str, list[Check]]]:
    """(suite, checks) pairs for report.junit_xml: the checks before, and after."""
    suites = []
    if result.before is not None:
        suites.append(("before", list(result.before.checks)))
    if result.after is not None:
        suites.append(("after", list(result.after.checks)))
    return suites
