"""Carrying out a fix's plan on the VM: the executor dispatches on the step kind - power (start,
restart), network (the NSG rules --allow-from asked for), guest (ONE repair Run Command for every
guest step) - and keeps, for each step, its progress line, its audit intent (written before the
change is sent), what is in flight while it runs and its outcome, in one place.

Before anything is sent, :func:`refuse_if_busy` keeps it to one run at a time per VM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from azrdp.errors import AzrdpError
from azrdp.plan import Plan
from azrdp.repair_result import RepairResult, backups_of
from azrdp.target import Target

if TYPE_CHECKING:
    from azrdp.azure.vm import AzureVm
    from azrdp.clock import Clock
    from azrdp.diagnose import Diagnosis
    from azrdp.repair import FixOptions


class Executor:
    """The steps of a plan, as a fix job (azrdp.repair) runs them; the job provides its VM handle,
    options, result, audit record(), say(), waiting(), timed() and its in-flight state."""

    vm: AzureVm
    options: FixOptions
    result: RepairResult
    target: Target
    clock: Clock
    run_id: str
    in_flight: str | None
    changed_something: bool
    power_changed_at: Any
    restarted_at: Any
    record: Callable[..., dict[str, Any]]
    say: Callable[[str], None]
    waiting: Callable[..., Any]
    timed: Callable[[str, float], float]

    def execute(self, plan: Plan, diagnosis: Diagnosis) -> None:
        """The plan's steps by kind: power first (a start ends this pass: the rest is planned again on
        the running VM), then network (each NSG rule), guest (one Run Command), and the reboot."""
        if plan.start:
            self.start_vm()
            return
        for rule in plan.rules:
            self.add_rule(rule)
        repaired = self.repair(plan, diagnosis) if plan.values else None
        self.restart_if_needed(plan, repaired)

    def start_vm(self) -> None:
        o = self.options
        vm = self.target.name
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

    def add_rule(self, rule: Any) -> None:
        vm, rg = self.target.name, self.target.resource_group
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

    def repair(self, plan: Plan, diagnosis: Diagnosis) -> Any:
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
        from azrdp.azure.runcommand import RunCommandUncertain

        try:
            with self.waiting(f"Run Command on {self.target.name}", said="sent", limit=o.run_command_timeout) as wait:
                result, run = run_payload(self.vm, "repair", values, instance_view=diagnosis.instance_view,
                                          timeout=o.run_command_timeout, on_wait=wait.update, on_conflict=wait.note)
        except RunCommandUncertain as err:   # never resent: it may have changed the guest
            self.in_flight = None
            self.changed_something = True
            self.record("run-command", status="may-have-run", run_id=self.run_id, started=err.started,
                        error=err.message)
            raise
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
            from azrdp.azure.lro import PowerRequestUncertain

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
