"""Proving a change: wait until RDP answers on the wire (after a restart, only once Windows has really
gone down and come back), or, without an address to probe, judge the guest side; then re-diagnose
and say what is left. The one place both jobs that change a VM prove it: ``fix`` (azrdp.repair,
which says what is left through azrdp.repair_result.next_steps) and ``rescue`` (azrdp.rescue, after
the OS-disk swap and the start); each fills in the hooks below."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from azrdp.checks import Status
from azrdp.target import Target

if TYPE_CHECKING:
    from azrdp.azure.power import AgentWait
    from azrdp.azure.vm import AzureVm
    from azrdp.clock import Clock
    from azrdp.diagnose import Diagnosis


class Verifier:
    """Verification, as a job runs it after its changes (fix after the executor, rescue after the
    start on the repaired disk). The job provides the attributes below and may override the hooks."""

    vm: AzureVm
    options: Any        # a FixOptions or RescueOptions: port, host, probe_timeout, wait_timeout are read
    result: Any         # the job's result (azrdp.job.JobResult): verification, after, verdict are set
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

    # -- the hooks (a fix's answers are in azrdp.repair; these are a job's that did neither) --
    def rules_added(self) -> int:
        """NSG rules this job added for the caller (none: a blocked port is not waited on)."""
        return 0

    def termservice_after_change(self) -> str | None:
        """TermService's state as the job's own repair left it (None: not known)."""
        return None

    def powered_on(self) -> bool:
        """Whether this job started or restarted the VM (the agent must report anew before a guest read)."""
        return False

    def guest_after(self, need_guest: bool) -> str:
        """Read the guest in the re-diagnosis (``always``) or not (``never``); waits for the agent
        first when this job started or restarted the VM."""
        if need_guest and self.powered_on():
            self.wait_for_agent_after_change()
        return "always" if need_guest else "never"

    def verified(self) -> None:
        """After the verdict is set: say what is left."""

    def restart_unseen(self, text: str) -> None:
        """A restart this job sent did not visibly reach Windows (only a job that restarts: fix)."""
        raise NotImplementedError(text)

    # -- verify ------------------------------------------------------------------------------
    def verify(self, latest: Any) -> None:
        from azrdp.rdp import parse_target, wait_until_answers

        o = self.options
        verification: dict[str, Any]
        blocked = (latest.check("nsg.effective") is not None and latest.check("nsg.effective").status is Status.FAIL
                   and self.rules_added() == 0)
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
            final = self.termservice_after_change()
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
        guest = self.guest_after(need_guest)
        begun = self.clock.monotonic()
        self.say("Re-diagnosing ...")
        self.result.after = after = self.diagnose(guest=guest)
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
        self.verified()

    def wait_for_agent_after_change(self, *, timeout: float | None = None, interval: float | None = None) -> AgentWait:
        """Until the agent reports Ready after this job's start or restart (ARM's ``since``), within
        ``timeout`` (the job's wait timeout), polling every ``interval`` (the handle's default)."""
        limit = self.options.wait_timeout if timeout is None else timeout
        begun = self.clock.monotonic()
        with self.waiting(f"VM agent on {self.target.name} (to read the guest)", limit=limit) as wait:
            agent = self.vm.wait_for_agent(timeout=limit, interval=interval, since=self.power_changed_at,
                                           on_poll=wait.update)
            wait.end("Ready" if agent.ready else f"not Ready ({agent.why})")
        self.timed("agent", begun)
        return agent

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
            self.restart_unseen(f"the restart did not visibly reach Windows within "
                                f"{self.options.wait_timeout:g} s (RDP kept answering and the agent did "
                                "not report): the answer below may come from before the restart")
        return reboot
