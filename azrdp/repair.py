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
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from azrdp.clock import Clock
from azrdp.errors import AzrdpError
from azrdp.execute import Executor, refuse_if_busy
from azrdp.job import Job
from azrdp.plan import Plan, check_steps, fused_eligible
from azrdp.plan import plan as make_plan
from azrdp.repair_result import RepairResult, next_steps, restart_still_needed
from azrdp.target import Target
from azrdp.ui import SILENT, ProgressSink
from azrdp.verify import Verifier

if TYPE_CHECKING:
    from azrdp.azure.vm import Session
    from azrdp.diagnose import Diagnosis

DEFAULT_WAIT_TIMEOUT = 900.0

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


class _Job(Job[RepairResult], Executor, Verifier):
    """One fix run: the orchestration (diagnose, plan, confirm, execute, verify); its state is what a
    Ctrl-C report needs (done, in flight). The steps run in azrdp.execute, the proof in azrdp.verify."""

    def __init__(self, session: Session, target: Target, options: FixOptions, *, audit: Any, clock: Clock,
                 progress: ProgressSink, confirm: Callable[[Plan], bool], prober: Any,
                 on_diagnosis: Callable[[Any], None] | None = None):
        super().__init__(target, audit=audit, clock=clock, progress=progress,
                         result=RepairResult(target, audit_records=audit.records,
                                             audit_path=str(audit.path) if audit.path else None))
        self.session = session
        self.vm = session.vm(target, clock=clock)   # every ARM call about the VM, on this job's clock
        self.options = options
        self.confirm = confirm
        self.prober = prober
        self.on_diagnosis = on_diagnosis
        self.changed_something = False
        self.power_changed_at: Any = None   # ARM's start of the last restart/start azrdp sent
        self.restarted_at: Any = None
        self.run_id = options.run_id or f"azrdp-{secrets.token_hex(4)}"

    # -- small helpers -----------------------------------------------------------------------
    def record(self, action: str, *, intent: bool = False, **fields: Any) -> dict[str, Any]:
        """Audit one record; ``intent``: written (and fsynced) before the change is sent, and when it
        cannot be written the change is not sent (AuditWriteError)."""
        entry = self.audit.record(action, intent=intent, **fields)
        self.result.actions.append(entry)
        return entry

    # -- what azrdp.verify asks of the job ------------------------------------------------------
    def rules_added(self) -> int:
        return self.result.counts["nsg_rules"]

    def termservice_after_change(self) -> str | None:
        # No wait when the repair says TermService is not running (stuck in StopPending)
        return self.result.repair.result.get("termservice") if self.result.repair is not None else None

    def powered_on(self) -> bool:
        return bool(self.result.counts["restarts"] or self.result.counts["starts"])

    def verified(self) -> None:
        self.result.next_steps = next_steps(self.result, self.target)

    def restart_unseen(self, text: str) -> None:
        self.result.pending.append(text)

    # -- how a run ends (azrdp.job.Job.guarded) -----------------------------------------------
    def on_finished(self, result: RepairResult) -> None:
        if result.actions:
            self.audit.record("result", verdict=result.verdict, counts=dict(result.counts),
                              timings={k: round(v, 3) for k, v in result.timings.items()})

    def on_interrupted(self) -> None:
        from azrdp.clock import stop_requested

        done = [f"{r['action']} {r.get('step') or ''} {r.get('status')}".replace("  ", " ") for r in self.result.actions
                if r.get("status") not in ("requested", "remove-requested")]   # intents: in flight, not done
        signal = stop_requested() or "SIGINT"
        self.result.interrupted = {"done": done, "in_flight": self.in_flight, "signal": signal}
        self.audit.record("interrupted", done=done, in_flight=self.in_flight, signal=signal)

    def on_failed(self, error: AzrdpError) -> None:
        if self.in_flight:   # cut off mid-operation (ARM lost, a timeout): it may still be going on
            self.result.pending.append(f"{self.in_flight} may still be under way: azrdp stopped waiting before "
                                       "Azure said it had ended")
        self.result.pending += restart_still_needed(self.result, self.target)
        self.audit.record("failed", error=error.message, hint=error.hint)
        self.result.next_steps = next_steps(self.result, self.target)

    # -- diagnose ----------------------------------------------------------------------------
    def diagnose(self, *, guest: str = "auto", reuse: Diagnosis | None = None) -> Diagnosis:
        """guest: auto (read it unless fused mode stands in), always, never. ``reuse``: a diagnosis
        the caller already has (sweep, check): its inventory and probe are judged again, not re-read."""
        from azrdp.diagnose import diagnose

        def read_guest(ctx: Any) -> bool:
            return guest == "always" or (guest == "auto" and not (self.options.fused
                                                                  and fused_eligible(ctx.checks, ctx.probe_result)))

        o = self.options
        diagnosis = diagnose(self.session, self.target, port=o.port, source_ip=o.source_ip, host=o.host,
                             probe_timeout=o.probe_timeout, guest=read_guest, progress=self.progress,
                             inventory=reuse.inventory if reuse is not None else None,
                             probe_result=reuse.probe_result if reuse is not None else None,
                             boot_health=reuse.check("boot.health") if reuse is not None else None)
        if diagnosis.guest is not None:
            self.result.counts["diagnose_run_commands"] += 1
        return diagnosis

    def first_diagnosis(self, before: Diagnosis | None) -> Diagnosis:
        """The diagnosis the plan is made from: the caller's (``before``), read again only for the
        guest when this fix needs it and ``before`` did not read it; else a fresh one."""
        if before is not None and (before.guest is not None or not self.needs_guest(before)):
            return before
        start = self.clock.monotonic()
        if before is None:
            self.say("Diagnosing Azure, the network, the wire" + ("" if self.options.fused else " and the guest") + " ...")
        current = self.diagnose(reuse=before)
        self.timed("diagnose", start)
        return current

    def needs_guest(self, diagnosis: Diagnosis) -> bool:
        """Whether this fix reads the guest before it repairs (not in fused mode, where the repair
        payload re-checks), judged on ``diagnosis``' Azure side and wire."""
        return not (self.options.fused and fused_eligible(diagnosis.checks, diagnosis.probe_result))

    def plan(self, diagnosis: Any, *, start: bool | None) -> Plan:
        from azrdp.azure.nsg_rules import parse_allow_from
        from azrdp.azure.session import caller_identity

        o = self.options
        allow = parse_allow_from(o.allow_from, source_ip=o.source_ip) if o.allow_from else None
        who = o.who or (caller_identity(self.session) if allow else "unknown user")
        return make_plan(diagnosis, force_steps=o.force_steps, skip_steps=o.skip_steps, reboot=o.reboot,
                         start=start, allow_from=allow, allow_for=o.allow_for, who=who,
                         now=self.clock.now(), run_id=self.run_id, advice=o.advice)

    # -- the run -----------------------------------------------------------------------------
    def run(self, before: Diagnosis | None = None) -> RepairResult:
        from azrdp.azure.nsg_rules import parse_allow_from

        check_steps(self.options.force_steps, self.options.skip_steps, self.options.reboot)
        if self.options.allow_from:  # a bad source is a usage error before anything is read or sent
            parse_allow_from(self.options.allow_from, source_ip=self.options.source_ip)
        self.result.before = current = self.first_diagnosis(before)
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
            refuse_if_busy(current.instance_view, current.checks, self.clock.now(), self.target)
        self.execute(plan, current)
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
            self.execute(plan, diagnosis)
        return diagnosis


def fix(session: Session, target: Target, options: FixOptions | None = None, *, audit: Any,
        confirm: Callable[[Plan], bool] = lambda plan: True, clock: Clock | None = None, progress: ProgressSink = SILENT,
        prober: Any = None, on_diagnosis: Callable[[Any], None] | None = None,
        before: Diagnosis | None = None) -> RepairResult:
    """Diagnose, plan, confirm, repair, restart when needed, wait until RDP answers, re-diagnose.

    ``before``: the diagnosis of ``target`` the caller already made (``sweep --fix``): the plan is
    made from it, and the VM is not read again before the repair (only its guest, when this fix
    needs a guest reading and ``before`` has none).

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
    return job.guarded(lambda: job.run(before))
