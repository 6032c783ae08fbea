"""Proving a fix: wait until RDP answers on the wire (after a restart, only once Windows has really
gone down and come back), or, without an address to probe, judge the guest side; then re-diagnose
and say what is left (azrdp.repair_result.next_steps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from azrdp.checks import Status
from azrdp.repair_result import RepairResult, next_steps
from azrdp.target import Target

if TYPE_CHECKING:
    from azrdp.azure.vm import AzureVm
    from azrdp.clock import Clock
    from azrdp.diagnose import Diagnosis
    from azrdp.repair import FixOptions


class Verifier:
    """Verification, as a fix job (azrdp.repair) runs it after the executor."""

    vm: AzureVm
    options: FixOptions
    result: RepairResult
    target: Target
    clock: Clock
    prober: Any
    in_flight: str | None
    changed_something: bool
    power_changed_at: Any
    restarted_at: Any
    say: Callable[[str], None]
    waiting: Callable[..., Any]
    timed: Callable[[str, float], float]
    diagnose: Callable[..., Diagnosis]

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
