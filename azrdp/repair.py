"""The fix job: from broken to verified in one call.

    fix(session, target, FixOptions(...), audit=AuditLog(...), confirm=ask) -> RepairResult

1. diagnose all three sides (in ``fused`` mode the guest is not read separately: the repair
   payload re-checks and repairs only what is broken, saving one Run Command of 20-40 s);
2. plan (:mod:`azrdp.plan`), show it, ``confirm(plan)``; ``dry_run`` stops here;
3. execute: start (only when asked), NSG rules (only with ``--allow-from``), ONE repair Run
   Command carrying every guest step, then at most ONE restart through ARM when a step needs it;
4. wait until RDP answers on the wire (``wait_until_answers``), or, without an address to probe,
   verify from the guest (listener up, certificate valid) and say the outside check was skipped;
5. re-diagnose, and report before -> after, what changed, the phase timings and the verdict.

Every change is written to the audit log the moment it is made (and returned in the result).
Ctrl-C stops waiting, records what was done and what may still be in flight, and returns an
``interrupted`` result (exit 130). Errors after the first change are returned in the result too, so
the report and the audit are complete whatever happens.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from azrdp.checks import Check, Status
from azrdp.clock import Clock
from azrdp.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEM, AzrdpError, OperationTimeout
from azrdp.plan import Plan, check_steps, fused_eligible, render_plan
from azrdp.plan import plan as make_plan
from azrdp.target import Target

if TYPE_CHECKING:
    from azrdp.azure.vm import Session

DEFAULT_WAIT_TIMEOUT = 900.0

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


@dataclass
class FixOptions:
    port: int = 3389
    host: str | None = None                  # HOST[:PORT] to verify instead of the public IP
    source_ip: str | None = None
    probe_timeout: float = 5.0
    force_steps: Sequence[str] = ()
    skip_steps: Sequence[str] = ()
    reboot: bool | None = None               # None: when a step needs it
    start: bool | None = False               # None: ask (confirm) in a terminal
    allow_from: str | None = None            # IP | CIDR | me
    allow_for: timedelta = timedelta(hours=2)
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    fused: bool = False                      # skip the separate guest diagnosis when the wire gives evidence
    dry_run: bool = False
    who: str | None = None                   # recorded in NSG rule descriptions and the audit
    run_id: str | None = None
    run_command_timeout: float = 900.0
    power_timeout: float = 900.0
    advice: str = "fix"                      # the command printing the report: advice names only its options
    force: bool = False                      # change the VM even while another Run Command is in flight


@dataclass
class RepairResult:
    target: Target
    before: Any = None                       # azrdp.diagnose.Diagnosis
    plans: list[Plan] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)   # the audit records of changes
    repair: Any = None                       # azrdp.guest.RepairOutcome
    verification: dict[str, Any] | None = None
    after: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"diagnose_run_commands": 0, "repair_run_commands": 0,
                                                            "restarts": 0, "starts": 0, "nsg_rules": 0})
    verdict: str = "not_verified"            # verified | not_verified | dry_run | declined | interrupted | failed
    error: AzrdpError | None = None
    interrupted: dict[str, Any] | None = None
    pending: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    audit_records: list[dict[str, Any]] = field(default_factory=list)
    audit_path: str | None = None
    audit_error: str | None = None           # the audit log could not be written (the records are here)

    @property
    def plan(self) -> Plan | None:
        return self.plans[0] if self.plans else None

    @property
    def exit_code(self) -> int:
        if self.verdict == "interrupted":
            return EXIT_INTERRUPTED
        if self.error is not None:
            return self.error.exit_code
        if self.audit_error is not None:
            return EXIT_PROBLEM
        if self.verdict == "dry_run":
            return self.before.exit_code if self.before is not None else EXIT_PROBLEM
        return EXIT_OK if self.verdict == "verified" else EXIT_PROBLEM

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
            return f"RDP answers on {where}, but a client cannot connect: {_OUTCOME_WORDS.get(v.get('outcome'), v.get('outcome'))}"
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
            "error": ({"type": type(self.error).__name__, "message": self.error.message, "hint": self.error.hint}
                      if self.error is not None else None),
            "audit": {"path": self.audit_path, "records": self.audit_records, "error": self.audit_error},
        }


class _Job:
    """One fix run: its state is what a Ctrl-C report needs (done, in flight)."""

    def __init__(self, session: Session, target: Target, options: FixOptions, *, audit: Any, clock: Clock,
                 progress: Any, confirm: Callable[[Plan], bool], prober: Any,
                 on_diagnosis: Callable[[Any], None] | None = None):
        self.session = session
        self.target = target
        self.vm = session.vm(target, clock=clock)   # every ARM call about the VM, on this job's clock
        self.options = options
        self.audit = audit
        self.clock = clock
        self.progress = progress
        self.confirm = confirm
        self.prober = prober
        self.on_diagnosis = on_diagnosis
        self.result = RepairResult(target, audit_records=audit.records,
                                   audit_path=str(audit.path) if audit.path else None)
        self.in_flight: str | None = None
        self.network: Any = None
        self.changed_something = False
        self.power_changed_at: Any = None   # ARM's start of the last restart/start azrdp sent
        self.restarted_at: Any = None
        self.run_id = options.run_id or f"azrdp-{secrets.token_hex(4)}"

    # -- small helpers -----------------------------------------------------------------------
    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.info(text)

    def waiting(self, what: str, *, said: str = "waiting", limit: float | None = None) -> Any:
        """The live status line for one wait (a Run Command, a restart, the agent, RDP)."""
        from azrdp.ui import waiting

        return waiting(self.progress, what, said=said, limit=limit)

    def timed(self, phase: str, start: float) -> float:
        seconds = self.clock.monotonic() - start
        self.result.timings[phase] = self.result.timings.get(phase, 0.0) + seconds
        return seconds

    def record(self, action: str, *, intent: bool = False, **fields: Any) -> dict[str, Any]:
        """Audit one record; ``intent``: written (and fsynced) before the change is sent, and when it
        cannot be written the change is not sent (AuditWriteError)."""
        entry = self.audit.record(action, intent=intent, **fields)
        self.result.actions.append(entry)
        return entry

    # -- diagnose ----------------------------------------------------------------------------
    def diagnose(self, *, guest: str = "auto") -> Any:
        """guest: auto (read it unless fused mode stands in), always, never."""
        from azrdp.diagnose import diagnose, guest_stage

        def capture(ctx: Any) -> list[Check]:
            self.network = (ctx.inventory, ctx.path)
            return []

        def guest_or_fused(ctx: Any) -> list[Check]:
            if guest == "never" or (guest == "auto" and self.options.fused
                                     and fused_eligible(ctx.checks, ctx.probe_result)):
                return []
            checks = guest_stage(ctx)
            if ctx.guest is not None:
                self.result.counts["diagnose_run_commands"] += 1
            return checks

        o = self.options
        return diagnose(self.session, self.target, port=o.port, source_ip=o.source_ip, host=o.host,
                        probe_timeout=o.probe_timeout, stages=(capture, guest_or_fused), progress=self.progress)

    def plan(self, diagnosis: Any, *, start: bool | None) -> Plan:
        from azrdp.azure.nsg_rules import parse_allow_from
        from azrdp.azure.session import caller_identity

        o = self.options
        allow = parse_allow_from(o.allow_from, source_ip=o.source_ip) if o.allow_from else None
        who = o.who or (caller_identity(self.session) if allow else "unknown user")
        return make_plan(diagnosis, force_steps=o.force_steps, skip_steps=o.skip_steps, reboot=o.reboot,
                         start=start, allow_from=allow, allow_for=o.allow_for, network=self.network, who=who,
                         now=self.clock.now(), run_id=self.run_id, advice=o.advice)

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> RepairResult:
        from azrdp.azure.nsg_rules import parse_allow_from

        check_steps(self.options.force_steps, self.options.skip_steps, self.options.reboot)
        if self.options.allow_from:  # a bad source is a usage error before anything is read or sent
            parse_allow_from(self.options.allow_from, source_ip=self.options.source_ip)
        start = self.clock.monotonic()
        self.say("Diagnosing Azure, the network, the wire" + ("" if self.options.fused else " and the guest") + " ...")
        self.result.before = current = self.diagnose()
        self.timed("diagnose", start)
        if self.on_diagnosis is not None:
            self.on_diagnosis(current)
        plan = self.plan(current, start=self.options.start)
        self.result.plans.append(plan)
        if self.options.dry_run:
            self.result.verdict = "dry_run"
            return self.result
        if not plan.empty and not self.confirm(plan):
            self.result.verdict = "declined"
            return self.result
        if not plan.empty and not self.options.force:
            refuse_if_busy(self.network[0].vm_properties.get("instanceView") if self.network else None,
                           current.checks, self.clock.now(), self.target)
        self.execute(plan)
        if plan.start:
            current = self.second_pass()
        self.verify(current)
        return self.result

    def second_pass(self) -> Any:
        """After a start: read the now running VM (all sides), plan the rest, run it."""
        start = self.clock.monotonic()
        self.say("Diagnosing the started VM ...")
        diagnosis = self.diagnose()
        self.timed("diagnose", start)
        if self.on_diagnosis is not None:
            self.on_diagnosis(diagnosis)
        plan = self.plan(diagnosis, start=False)
        self.result.plans.append(plan)
        if not plan.empty and self.confirm(plan):
            self.execute(plan)
        return diagnosis

    def execute(self, plan: Plan) -> None:
        o = self.options
        rg, vm = self.target.resource_group, self.target.name
        if plan.start:
            self.say(f"Starting VM {self.target} through ARM (seconds, then Windows boots for about a minute) ...")
            self.record("start", status="requested", intent=True)
            self.in_flight = "a start of the VM (ARM will finish it)"
            begun = self.clock.monotonic()
            with self.waiting(f"Start of {vm}", said="sent", limit=o.power_timeout) as wait:
                outcome = self.vm.start(timeout=o.power_timeout, on_poll=wait.update)
                wait.end("started")
            self.in_flight = None
            self.timed("start", begun)
            self.result.counts["starts"] += 1
            self.changed_something = True
            self.record("start", status="done", seconds=round(outcome.seconds, 3))
            self.say(f"Started in {outcome.seconds:.1f} s; waiting for the VM agent ...")
            begun = self.clock.monotonic()
            self.power_changed_at = outcome.started
            with self.waiting(f"VM agent on {vm}", limit=o.wait_timeout) as wait:
                agent = self.vm.wait_for_agent(timeout=o.wait_timeout, since=outcome.started, on_poll=wait.update)
                wait.end("Ready" if agent.ready else f"not Ready ({agent.why})")
            self.timed("agent", begun)
            if not agent.ready:
                self.result.pending.append(f"the VM agent did not become Ready within {o.wait_timeout:g} s "
                                           f"({agent.why})")
            return
        for rule in plan.rules:
            self.say(f"Adding NSG rule {rule.name} to {rule.nsg_name} (TCP {rule.port} from {rule.source}) ...")
            self.record("nsg-rule", status="requested", rule=rule.to_dict(), undo=f"azrdp revoke {vm} -g {rg}",
                        intent=True)
            self.in_flight = f"the creation of NSG rule {rule.name} on {rule.nsg_name}"
            begun = self.clock.monotonic()
            try:
                with self.waiting(f"NSG rule {rule.name} on {rule.nsg_name}", said="sent", limit=300.0) as wait:
                    self.vm.put_rule(rule, on_poll=wait.update)
                    wait.end("created")
            except AzrdpError as err:  # ARM may have accepted the PUT: the rule may exist
                self.in_flight = None
                self.record("nsg-rule", status="failed", rule=rule.to_dict(), error=err.message,
                            undo=f"azrdp revoke {vm} -g {rg}")
                raise
            self.in_flight = None
            self.timed("nsg", begun)
            self.result.counts["nsg_rules"] += 1
            self.changed_something = True
            self.record("nsg-rule", status="created", rule=rule.to_dict(),
                        undo=f"azrdp revoke {vm} -g {rg}")
        outcome = None
        if plan.values:
            outcome = self.repair(plan)
        self.restart_if_needed(plan, outcome)

    def repair(self, plan: Plan) -> Any:
        from azrdp.guest import RepairOutcome, run_payload

        o = self.options
        parameters = plan.parameters()
        self.say(f"Running the repair payload through Run Command ({', '.join(plan.guest_steps)}; about 20-40 s) ...")
        self.record("run-command", status="sent", payload="repair", run_id=self.run_id, parameters=parameters,
                    intent=True)
        self.in_flight = ("the repair Run Command (it cannot be cancelled: it finishes inside the guest; its "
                          "changes are recorded in the guest's backup folder for run id " + self.run_id + ")")
        begun = self.clock.monotonic()
        self.result.counts["repair_run_commands"] += 1
        values = dict(plan.values or {})
        view = self.network[0].vm_properties.get("instanceView") if self.network else None
        from azrdp.azure.runcommand import RunCommandUncertain

        try:
            with self.waiting(f"Run Command on {self.target.name}", said="sent", limit=o.run_command_timeout) as wait:
                result, run = run_payload(self.vm, "repair", values, instance_view=view,
                                          timeout=o.run_command_timeout, on_wait=wait.update, on_conflict=wait.note)
        except RunCommandUncertain as err:   # never resent: it may have changed the guest
            self.in_flight = None
            self.changed_something = True
            self.record("run-command", status="may-have-run", run_id=self.run_id, started=err.started,
                        error=err.message)
            raise
            wait.end("finished")
        self.in_flight = None
        self.timed("run_command", begun)
        outcome = self.result.repair = RepairOutcome(result, run)
        for step in outcome.steps:
            if step["status"] != "unchanged":
                self.changed_something = self.changed_something or step["status"] == "changed"
                self.record("guest-step", step=step["name"], status=step["status"], before=step["before"],
                            after=step["after"], info=step["info"], reboot_required=step["reboot_required"],
                            error=step["error"], backups=backups_of(step, outcome.steps, self.run_id),
                            run_id=self.run_id)
        self.record("run-command", status="done", run_id=self.run_id, changed=outcome.changed,
                    reboot_required=outcome.reboot_required, seconds=round(run.seconds, 3))
        changed = [f"{st['name']} {st['status']}" for st in outcome.steps]
        self.say(f"Repair finished in {run.seconds:.1f} s: {', '.join(changed)}")
        return outcome

    def restart_if_needed(self, plan: Plan, outcome: Any) -> None:
        needs = []
        if outcome is not None:
            needs = [st["name"] for st in outcome.steps if st["reboot_required"]]
            if outcome.result["reboot_pending"] and outcome.changed and plan.step("reboot") is not None:
                needs.append("a reboot Windows already had pending")
        if plan.reboot == "always" and plan.step("reboot") is None:
            return  # --reboot, but the VM is not running: the plan's blocker says why; nothing unplanned is sent
        if plan.reboot == "never" or (plan.reboot == "auto" and not needs):
            if needs:
                self.result.pending.append(f"--no-reboot: {', '.join(needs)} takes full effect only after the VM "
                                           f"restarts (`azrdp fix {self.target.name} -g {self.target.resource_group} "
                                           f"--reboot` or `az vm restart`)")
            return
        why = "asked with --reboot" if plan.reboot == "always" else f"needed by {', '.join(needs)}"
        self.say(f"Restarting VM {self.target} through ARM ({why}; Windows then reboots for about a minute) ...")
        self.record("restart", status="requested", why=why, intent=True)
        self.in_flight = "a restart of the VM (ARM may still be restarting it)"
        begun = self.clock.monotonic()
        self.result.counts["restarts"] += 1
        try:
            with self.waiting(f"Restart of {self.target.name}", said="sent", limit=self.options.power_timeout) as wait:
                outcome_lro = self.vm.restart(timeout=self.options.power_timeout, on_poll=wait.update)
                wait.end("restarted")
        except AzrdpError as err:
            from azrdp.azure.power import PowerRequestUncertain

            self.in_flight = None
            self.record("restart", status="may-have-run" if isinstance(err, PowerRequestUncertain) else "failed",
                        error=err.message)
            raise
        self.in_flight = None
        self.changed_something = True
        self.power_changed_at = self.restarted_at = outcome_lro.started
        self.timed("restart", begun)
        self.record("restart", status="done", seconds=round(outcome_lro.seconds, 3))
        self.say(f"Restarted in {outcome_lro.seconds:.1f} s.")

    # -- verify ------------------------------------------------------------------------------
    def verify(self, latest: Any) -> None:
        from azrdp.rdp import parse_target, wait_until_answers

        o = self.options
        verification: dict[str, Any]
        blocked = (latest.check("nsg.effective") is not None and latest.check("nsg.effective").status is Status.FAIL
                   and self.result.counts["nsg_rules"] == 0)
        address = o.host or latest.vm.get("public_ip")
        need_guest = self.changed_something or latest.guest is None
        power = latest.vm.get("power_state")
        if blocked:
            verification = {"method": "guest", "ok": False, "where": None,
                            "outside_check": "skipped: the NSG blocks the RDP port (see nsg.effective)"}
        elif power not in (None, "running") and not o.host:
            # power decides first: a stopped VM answers nothing (and a Dynamic public IP has no address)
            verification = {"method": "guest", "ok": False, "where": None,
                            "outside_check": f"skipped: the VM is {power}, nothing answers RDP until it runs"}
        elif address:
            host, port = parse_target(o.host, default_port=o.port) if o.host else (address, o.port)
            where = f"{host}:{port}"
            # No wait when the repair says TermService is not running (stuck in StopPending): nothing
            # will answer until someone restarts the VM; one probe says where things stand.
            final = self.result.repair.result.get("termservice") if self.result.repair is not None else None
            waited = self.changed_something and final in (None, "Running")
            timeout = o.wait_timeout if waited else o.probe_timeout
            self.say(f"Waiting for RDP to answer on {where}" + (f" (up to {timeout:g} s) ..." if waited else " ..."))
            begun = self.clock.monotonic()
            self.in_flight = None

            kwargs = {"prober": self.prober} if self.prober is not None else {}
            reboot = self.wait_for_reboot(host, port) if self.restarted_at is not None else None
            with self.waiting(f"RDP on {where}", said="probing", limit=timeout) as shown:
                wait = wait_until_answers(host, port, timeout=timeout, clock=self.clock,
                                          probe_timeout=min(o.probe_timeout, 3.0),
                                          on_attempt=lambda result: shown.update(result.outcome), **kwargs)
                shown.end(wait.last.outcome)
            self.timed("rdp", begun)
            verification = {"method": "wire", "where": where, "ok": wait.last.ok, "answered": wait.answered,
                            "waited": waited, "reboot": reboot.to_dict() if reboot else None,
                            "attempts": wait.attempts, "seconds": round(wait.elapsed, 3),
                            "outcome": wait.last.outcome}
            need_guest = not wait.last.ok and (self.changed_something or latest.guest is None)
            self.say(f"RDP on {where}: {wait.last.outcome} after {wait.elapsed:.1f} s ({wait.attempts} attempts)")
        else:
            verification = {"method": "guest", "ok": False, "where": None,
                            "outside_check": "skipped: the VM has no public IP address (a dynamic one has none "
                                             "while the VM is deallocated) and no host to probe was given; "
                                             "verified from the guest side (listener up, certificate valid)"}
        if need_guest and (self.result.counts["restarts"] or self.result.counts["starts"]):
            self.wait_for_agent_after_change()
        begun = self.clock.monotonic()
        self.say("Re-diagnosing ...")
        self.result.after = after = self.diagnose(guest="always" if need_guest else "never")
        self.timed("after", begun)
        if verification["method"] == "guest":
            read = after if after.guest is not None else latest   # nothing changed: the reading before stands
            listener, cert = read.check("guest.listener"), read.check("guest.cert")
            guest_ok = (listener is not None and listener.status is Status.PASS and cert is not None
                        and cert.status in (Status.PASS, Status.WARN))
            verification["guest_ok"] = guest_ok if read.guest is not None else None
            if not blocked:
                verification["ok"] = guest_ok
        self.result.verification = verification
        self.result.verdict = "verified" if verification["ok"] else "not_verified"
        self.result.next_steps = next_steps(self.result, self.target)

    def wait_for_agent_after_change(self) -> None:
        begun = self.clock.monotonic()
        with self.waiting(f"VM agent on {self.target.name} (to read the guest)", limit=self.options.wait_timeout) as wait:
            agent = self.vm.wait_for_agent(timeout=self.options.wait_timeout, since=self.power_changed_at,
                                           on_poll=wait.update)
            wait.end("Ready" if agent.ready else f"not Ready ({agent.why})")
        self.timed("agent", begun)

    def wait_for_reboot(self, host: str, port: int) -> Any:
        """A restart's operation ends before Windows goes down: an answer from the old listener
        verifies nothing. Wait for the port to go down or a fresh agent report first."""
        from azrdp.rdp import probe

        prober = self.prober or probe
        probe_timeout = min(self.options.probe_timeout, 3.0)
        with self.waiting(f"the restart to reach Windows on {self.target.name}",
                          limit=self.options.wait_timeout) as wait:
            reboot = self.vm.wait_for_reboot(
                since=self.restarted_at,
                port_answers=lambda: prober(host, port, timeout=probe_timeout, clock=self.clock).answers,
                timeout=self.options.wait_timeout, on_poll=wait.update)
            wait.end({"port_down": "RDP went down", "agent_reported": "the agent reported after the restart",
                      "unknown": "not judged", "timeout": "no sign of it"}[reboot.seen])
        if reboot.seen == "timeout":
            self.result.pending.append(f"the restart did not visibly reach Windows within "
                                       f"{self.options.wait_timeout:g} s (RDP kept answering and the agent did "
                                       "not report): the answer below may come from before the restart")
        return reboot


def refuse_if_busy(instance_view: Any, checks: Any, now: Any, target: Target) -> None:
    """One repair at a time per VM: while another run changes the VM (a Run Command in flight, an
    ARM operation in flight, a restart Windows has not answered yet: azrdp.azure.activity), a repair
    is a usage error (exit 2) before anything is changed, unless ``--force``."""
    from azrdp.azure.activity import run_in_progress
    from azrdp.errors import UsageError

    busy = run_in_progress(instance_view, checks, now)
    if busy is not None:
        what, since = busy
        raise UsageError(f"{what} on VM {target}{since} (another azrdp fix or sweep, or a person): azrdp repairs one VM "
                         "one run at a time; nothing was changed.",
                         hint="Wait for it to finish and run azrdp again, or pass --force.")


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


def _restart_still_needed(result: RepairResult, target: Target) -> list[str]:
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


def fix(session: Session, target: Target, options: FixOptions | None = None, *, audit: Any,
        confirm: Callable[[Plan], bool] = lambda plan: True, clock: Clock | None = None, progress: Any = None,
        prober: Any = None, on_diagnosis: Callable[[Any], None] | None = None) -> RepairResult:
    """Diagnose, plan, confirm, repair, restart when needed, wait until RDP answers, re-diagnose.

    ``on_diagnosis(diagnosis)`` hears each diagnosis before its plan is made and confirmed (an
    interactive ``fix`` shows it there, so the question comes after the reasons).

    ``confirm(plan)`` is asked before anything changes (``fix --yes`` passes one that says yes).
    ``prober`` replaces the wire probe in the wait (the emulator's transport, tests). Raises typed
    errors only for what stops the job before any change (sign-in, VM not found, bad options);
    afterwards errors and Ctrl-C end up in the result, with the audit written.
    """
    options = options or FixOptions()
    job = _Job(session, target, options, audit=audit, clock=clock or session.clock, progress=progress,
               confirm=confirm, prober=prober, on_diagnosis=on_diagnosis)
    try:
        result = job.run()
        if job.result.actions:
            audit.record("result", verdict=result.verdict, counts=dict(result.counts),
                         timings={k: round(v, 3) for k, v in result.timings.items()})
        result.audit_error = audit.error
        return result
    except KeyboardInterrupt:
        done = [f"{r['action']} {r.get('step') or ''} {r.get('status')}".replace("  ", " ") for r in job.result.actions
                if r.get("status") not in ("requested", "remove-requested")]   # intents: in flight, not done
        from azrdp.clock import stop_requested

        signal = stop_requested() or "SIGINT"
        job.result.interrupted = {"done": done, "in_flight": job.in_flight, "signal": signal}
        job.result.verdict = "interrupted"
        audit.record("interrupted", done=done, in_flight=job.in_flight, signal=signal)
        job.result.audit_error = audit.error
        return job.result
    except Exception as err:  # after the first change nothing may hide it: the report says what was done
        if not job.result.actions:
            raise
        if not isinstance(err, AzrdpError):
            err = AzrdpError(f"azrdp stopped on an unexpected {type(err).__name__}: {err}",
                             hint="Please report it; what was changed is listed above.")
        job.result.error = err
        job.result.verdict = "failed"
        if job.in_flight:   # cut off mid-operation (ARM lost, a timeout): it may still be going on
            job.result.pending.append(f"{job.in_flight} may still be under way: azrdp stopped waiting before "
                                      "Azure said it had ended")
        job.result.pending += _restart_still_needed(job.result, target)
        audit.record("failed", error=err.message, hint=err.hint)
        job.result.audit_error = audit.error
        job.result.next_steps = next_steps(job.result, target)
        return job.result
    finally:
        if progress is not None:
            progress.done()


# -- rendering ----------------------------------------------------------------------------------

_MARK = {Status.PASS: "ok", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.ERROR: "ERR", Status.SKIP: "skip"}


def render_text(result: RepairResult, *, verbose: int = 0, shown: Sequence[Any] = ()) -> str:
    """The report of one fix. ``shown`` holds what the operator already saw before answering the
    question (the diagnosis, the plans asked about): it is not printed a second time."""
    from azrdp.logsafe import printable
    from azrdp.report import render_checks

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
    if result.audit_error:
        lines.append(f"Audit: FAILED to write {result.audit_path}: {result.audit_error}; the records are only in "
                     "this report (-o json keeps them all)")
    elif result.audit_path:
        lines.append(f"Audit: {result.audit_path} ({len(result.audit_records)} records)")
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
