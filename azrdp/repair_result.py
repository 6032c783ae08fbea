"""What a fix did: RepairResult (before -> after, what changed and how to undo it, the verdict in
one sentence, its JSON), where each guest change left its backup, and what to try next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from azrdp.checks import Status
from azrdp.errors import EXIT_PROBLEM, OperationTimeout
from azrdp.job import JobResult
from azrdp.plan import Plan
from azrdp.target import Target

# Which repair step re-checks (and repairs) what a guest check found: its result is the guest's
# status after when the guest is not read again.
GUEST_CHECK_STEPS: dict[str, tuple[str, ...]] = {
    "guest.cert": ("cert",), "guest.machinekeys": ("machinekeys-rename", "machinekeys-acl"),
    "guest.sessions": ("sessions",), "guest.termservice": ("rdp-config",), "guest.rdp_enabled": ("rdp-config",),
    "guest.firewall": ("rdp-config",), "guest.listener": ("rdp-config",),
}
_OUTCOME_WORDS = {"cert_expired": "its certificate has expired", "cert_not_yet_valid": "its certificate is not valid "
                  "yet", "negotiation_failure": "it refuses the negotiation", "tls_error": "the TLS handshake fails",
                  "unexpected_protocol": "it selects a protocol clients do not know",
                  "standard_rdp_security": "it offers only Standard RDP Security"}



UNTRUSTED_BACKUP_ROOT = "backup folder "
"""How the repair payload's errors begin when %ProgramData%\\azrdp (or its backup folder) is a
reparse point or has a foreign owner: it then backs nothing up there, and every step that needs a
backup fails before changing anything (desk review finding 22)."""


def untrusted_backup_root_advice(target: Target) -> str:
    """What to do when someone else made the backup root first: it blocks every backing-up step for
    good until an administrator moves it aside (azrdp never takes over a folder it did not make)."""
    return (r"C:\ProgramData\azrdp was made by someone else (a junction, or a folder another account owns), so "
            "azrdp keeps no backups there and changes nothing that needs one: as an administrator on the VM, look "
            r"at it (`icacls C:\ProgramData\azrdp`, `dir /al C:\ProgramData`), move it aside (`move "
            r"C:\ProgramData\azrdp C:\ProgramData\azrdp.untrusted`), then run "
            f"`azrdp fix {target.name} -g {target.resource_group}` again")


HOLD_BACK_ADVICE = {
    # (step, the end of its hold-back message) -> what to do, from the command line
    ("cert", "restarts only with MultiSession"):
        "the cert step's TermService restart would disconnect every user of this session host: run "
        "`azrdp fix {vm} --step cert` to allow it (their sessions stay; they reconnect)",
    ("sessions", "logs off only with MultiSession"):
        "on a session host azrdp logs no one off by itself: `azrdp fix {vm} --step sessions` logs off the sessions "
        "that were disconnected when the repair started",
    ("sessions", "LogOffActive"):
        "the seats are held by users whom azrdp's own TermService restart disconnected in the last 24 h (they were "
        "working): azrdp does not log them off; ask them to reconnect or to sign out",
}


@dataclass
class RepairResult(JobResult):
    """What a fix did (azrdp.job.JobResult: before, actions, verification, after, verdict, error, audit)."""

    plans: list[Plan] = field(default_factory=list)
    repair: Any = None                       # azrdp.guest.RepairOutcome
    counts: dict[str, int] = field(default_factory=lambda: {"diagnose_run_commands": 0, "repair_run_commands": 0,
                                                            "restarts": 0, "starts": 0, "nsg_rules": 0})
    pending: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    audit_records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def plan(self) -> Plan | None:
        return self.plans[0] if self.plans else None

    def dry_run_code(self) -> int:
        return self.before.exit_code if self.before is not None else EXIT_PROBLEM

    def changes(self) -> list[dict[str, Any]]:
        """Every check whose status or summary differs between before and after."""
        if self.before is None or self.after is None:
            return []
        after = {c.id: c for c in self.after.checks}
        out = []
        for old in self.before.checks:
            new = after.get(old.id)
            if new is None or (new.status, new.summary) == (old.status, old.summary):
                continue
            out.append({"id": old.id, "before": old.status.value, "after": new.status.value,
                        "before_summary": old.summary, "after_summary": new.summary})
        return out

    def summary(self) -> str:
        """The verdict as one sentence (it never repeats the verdict's name)."""
        v = self.verification or {}
        where = v.get("where")
        nothing = "nothing needed repair; " if not any(r["action"] != "run-command" and r.get("status") != "unchanged"
                                                          for r in self.actions) else ""
        answers = f"RDP answers{f' on {where}' if where else ' (checked from the guest side)'}"
        blockers = [b for plan in self.plans for b in plan.blockers]
        if blockers:  # RDP answers, but part of the VM could not be checked or repaired: say so
            answers += f"; but {blockers[0]}"
        if self.verdict == "verified":
            return answers if blockers else f"{nothing}{answers}"
        if self.verdict == "dry_run":
            return "nothing was changed; the plan above is what azrdp would do"
        if self.verdict == "declined":
            return "the plan was not confirmed, so nothing was changed"
        if self.verdict == "interrupted":
            flight = (self.interrupted or {}).get("in_flight")
            done = (self.interrupted or {}).get("done")
            return ("Ctrl-C stopped azrdp" + (f" while {flight} was under way" if flight else "") +
                    ("; see what was done above" if done else "; nothing was changed" if not flight else ""))
        if self.verdict == "failed":
            return (self.error.one_line() if self.error else "an Azure operation failed") + \
                ("; what was changed is listed above" if self.actions else "")
        # not verified
        if v.get("method") == "wire" and v.get("answered"):
            return f"RDP answers on {where}, but a client cannot connect: {_OUTCOME_WORDS.get(str(v.get('outcome')), v.get('outcome'))}"
        if v.get("method") == "wire" or not v:
            return f"RDP still does not answer{f' on {where}' if where else ''}"
        outside = str(v.get("outside_check") or "").removeprefix("skipped: ")
        guest = v.get("guest_ok")
        side = ("" if guest is None else "; the guest side is healthy (listener up, certificate valid)" if guest
                else "; the guest side is not healthy either (see the checks below)")
        return f"RDP could not be checked from outside: {outside}{side}"

    def failed_before(self) -> list[dict[str, Any]]:
        """Every check that failed (or errored) before, and its status after: from the re-diagnosis
        when it read that check again, else, for a guest check, from the repair payload's own re-check
        of the step that repairs it, else "not checked again"."""
        if self.before is None:
            return []
        after = {c.id: c for c in self.after.checks} if self.after is not None else {}
        steps = {st["name"]: st for st in (self.repair.steps if self.repair is not None else [])}
        out = []
        for old in self.before.checks:
            if old.status not in (Status.FAIL, Status.ERROR):
                continue
            row = {"id": old.id, "side": old.side, "before": old.status.value, "before_summary": old.summary}
            new = after.get(old.id)
            step = next((steps[name] for name in GUEST_CHECK_STEPS.get(old.id, ()) if name in steps), None)
            if new is not None and not (new.status is Status.SKIP and step is not None):
                row.update(after=new.status.value, after_summary=new.summary, source="re-diagnosis")
            elif step is not None:
                row.update(after={"changed": "repaired", "unchanged": "unchanged"}.get(step["status"], step["status"]),
                           after_summary=f"repair step {step['name']} {step['status']}"
                                         + (f": {step['error']}" if step.get("error") else "")
                                         + (" (needs a restart to take effect)" if step["reboot_required"]
                                            and not self.counts["restarts"] else ""),
                           source="repair payload")
            else:
                row.update(after="not checked", after_summary="not checked again", source=None)
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "vm": self.before.vm if self.before is not None else {"name": self.target.name,
                                                                  "resource_group": self.target.resource_group},
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "before": self.before.to_dict() if self.before is not None else None,
            "plan": self.plan.to_dict() if self.plan else None,
            "plans": [p.to_dict() for p in self.plans[1:]],
            "actions": self.actions,
            "repair": self.repair.to_dict() if self.repair is not None else None,
            "verification": self.verification,
            "after": self.after.to_dict() if self.after is not None else None,
            "changes": self.changes(),
            "failed_before": self.failed_before(),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "counts": dict(self.counts),
            "pending": list(self.pending),
            "next_steps": list(self.next_steps),
            "interrupted": self.interrupted,
            "error": self.error_dict(),
            "audit": {"path": self.audit_path, "records": self.audit_records, "error": self.audit_error},
        }


def backups_of(step: dict[str, Any], steps: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    """Where a guest step left its backups (paths inside the guest). A run keeps all its backups in
    one folder; the ACL steps report it, so the cert step's exports are named by that folder (or,
    when no ACL step ran, by the run id written in the folder's run-id.txt)."""
    info = step.get("info") or {}
    out = {}
    if info.get("backup"):
        out["folder" if step["name"] == "machinekeys-acl" else "rdp_key"] = info["backup"]
    if info.get("acl_backup"):
        out["acl_folder"] = info["acl_backup"]
    if step["name"] == "cert" and (info.get("removed_total") or info.get("cleared_binding")):
        run_folder = next((f for s in steps for f in ((s.get("info") or {}).get("acl_backup"),
                           (s.get("info") or {}).get("backup") if s["name"] == "machinekeys-acl" else None) if f),
                          None)
        where = run_folder or f"%ProgramData%/azrdp/backup/<UTC time>/ (its run-id.txt says {run_id})"
        if info.get("removed_total"):  # moved, not deleted: the undo line is in the run folder's undo.txt
            out["certificates"] = "Cert:/LocalMachine/azrdp-backup (undo: " + \
                (f"{where}/undo.txt)" if run_folder else f"undo.txt in {where})")
        if info.get("cleared_binding"):
            out["binding"] = f"{where}/SSLCertificateSHA1Hash.txt" if run_folder else \
                f"SSLCertificateSHA1Hash.txt in {where}"
    return out


def next_steps(result: RepairResult, target: Target) -> list[str]:
    """What is left and what to try next, when RDP is not verified."""
    if result.verdict == "verified":
        return []
    vm = f"{target.name} -g {target.resource_group}"
    steps: list[str] = []
    for plan in result.plans:
        steps += [b for b in plan.blockers if b not in steps]
    steps += [p for p in result.pending if p not in steps]
    repair = result.repair
    if repair is not None:
        acl = next((s for s in repair.steps if s["name"] == "machinekeys-acl"), None)
        cert = next((s for s in repair.steps if s["name"] == "cert"), None)
        if acl and cert and (cert["after"] or {}).get("current") is None:
            steps.append(f"the MachineKeys ACL repair did not give RDP a usable certificate: try "
                         f"`azrdp fix {vm} --step machinekeys-rename` (it moves only the RDP key container aside, and keeps it)")
        for s in repair.steps:
            if s["status"] in ("failed", "skipped"):
                steps.append(f"guest step {s['name']} {s['status']}: {s['error']}")
        if any((s["error"] or "").startswith(UNTRUSTED_BACKUP_ROOT) for s in repair.steps):
            steps.append(untrusted_backup_root_advice(target))
        for s in repair.steps:
            advice = HOLD_BACK_ADVICE.get((s["name"], (s["error"] or "").rsplit("; ", 1)[-1]))
            if advice and advice.format(vm=vm) not in steps:
                steps.append(advice.format(vm=vm))
        final = repair.result.get("termservice")
        if final not in (None, "Running"):
            steps.append(f"TermService is {final} after the repair (the payload could not start it again): restart "
                         f"the VM (`azrdp fix {vm} --reboot`) or use the serial console")
    error = result.error
    if isinstance(error, OperationTimeout) and "Run Command" in error.message:
        steps.append(f"the repair Run Command took longer than azrdp waited; once it has finished in the guest, run "
                     f"`azrdp fix {vm} --run-command-timeout 30m` (it repairs only what is still broken)")
    verification = result.verification or {}
    if verification.get("method") == "wire" and verification.get("waited") and not verification.get("answered"):
        steps.append(f"RDP did not answer within the wait ({verification.get('outcome')}): run "
                     f"`azrdp diagnose {vm} --screenshot shot.png` to see the console")
    after = result.after
    if after is not None:
        for check in after.checks:
            if check.status in (Status.FAIL, Status.ERROR) and check.remedy:
                line = f"{check.id}: {check.summary} -> {check.remedy}"
                if line not in steps:
                    steps.append(line)
    return steps


def restart_still_needed(result: RepairResult, target: Target) -> list[str]:
    """After a restart that failed (or never finished): the guest changes that still need one."""
    if result.repair is None or not any(r["action"] == "restart" and r.get("status") == "failed"
                                        for r in result.actions):
        return []
    needs = [st["name"] for st in result.repair.steps if st["reboot_required"]]
    if not needs:
        return []
    return [f"{', '.join(needs)} changed the guest and takes full effect only after a restart, which did not happen: "
            f"`az vm restart -g {target.resource_group} -n {target.name}` once Azure lets you (the repair itself "
            "need not run again)"]
