"""The diagnose job: why does this Azure Windows VM refuse Remote Desktop?

diagnose() reads Azure (VM, agent, boot diagnostics, NICs, NSGs, public IP) in at most three
sequential ARM round trips, evaluates the NSG rules for the RDP port, probes the wire when there
is an address to probe, and returns a Diagnosis: plain data with to_dict() and a text rendering.

The data flows one way. The sides run in order: the ``azure`` and ``network`` stages (vm.*,
boot.diagnostics, net.public_ip, nsg.*), then the wire (rdp.*: :func:`probe_wire` returns its
checks and the probe), then boot.health (the serial log's VM Health Report, read only for a
running VM whose agent is not Ready or whose RDP does not answer), then any extra ``stages`` the
caller passes (each receives a
DiagnoseContext: the inventory, the VM facts, the wire's probe and the checks so far, and
returns checks), then, when ``guest`` asks for it, the guest (:func:`read_guest`: one read-only
Run Command payload, cross-checked with the probe). A stage never writes the context for a later
one to read; what the stages produced comes back in the Diagnosis, with the evidence the next
stages of a job need (the inventory, the network path, the instance view, the probe, the guest)::

    before = diagnose(session, target, guest=True)
    plan(before)                        # reads before.inventory and before.path for NSG rules
    fix(session, target, options, before=before)    # sweep and check reuse what they read
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azrdp.checks import Check, Status, verdict
from azrdp.errors import EXIT_OK, EXIT_PROBLEM, AzrdpError, UsageError
from azrdp.target import Target
from azrdp.ui import SILENT, ProgressSink

if TYPE_CHECKING:
    from azrdp.azure.vm import Session

DEFAULT_PORT = 3389


@dataclass
class DiagnoseContext:
    """What a stage sees: read it, never change Azure from a diagnosis stage."""

    session: Session
    target: Target
    inventory: Any                    # azrdp.azure.inventory.Inventory
    path: Any                         # azrdp.azure.checks.RdpPath: the IP configuration RDP reaches
    vm: dict[str, Any]
    checks: list[Check]
    port: int = DEFAULT_PORT
    source_ip: str | None = None
    host: str | None = None           # HOST[:PORT] to probe instead of the public IP
    probe: bool = True
    probe_timeout: float = 5.0
    progress: ProgressSink = SILENT
    probe_result: Any = None          # the wire's ProbeResult (given to the stages after the wire)
    boot_health: Check | None = None  # the boot.health an earlier diagnosis of this VM read (not read again)

    def status(self, check_id: str) -> Status | None:
        return next((c.status for c in self.checks if c.id == check_id), None)

    def say(self, text: str) -> None:
        self.progress.status(text)


Stage = Callable[[DiagnoseContext], Iterable[Check]]
GuestGate = Callable[[DiagnoseContext], bool]   # read the guest? decided from the Azure side and the wire


@dataclass
class Diagnosis:
    vm: dict[str, Any]
    checks: list[Check]
    port: int = DEFAULT_PORT
    source: str = "any Internet address"
    round_trips: int = 0              # sequential ARM round trips before the Azure-side verdict
    requests: int = 0
    screenshot: dict[str, Any] | None = None
    probe_result: Any = None          # azrdp.rdp.ProbeResult, when the wire was probed
    guest: Any = None                 # azrdp.guest.GuestDiagnosis, when the guest was read
    inventory: Any = None             # azrdp.azure.inventory.Inventory: what Azure said (not in to_dict)
    path: Any = None                  # azrdp.azure.checks.RdpPath: the IP configuration RDP reaches

    @property
    def instance_view(self) -> dict[str, Any] | None:
        """The VM's instance view as the diagnosis read it (agent, extensions, statuses)."""
        return self.inventory.vm_properties.get("instanceView") if self.inventory is not None else None

    @property
    def verdict(self) -> Status:
        return verdict(self.checks)

    @property
    def ok(self) -> bool:
        return all(c.status not in (Status.FAIL, Status.ERROR) for c in self.checks)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_PROBLEM

    def check(self, check_id: str) -> Check | None:
        return next((c for c in self.checks if c.id == check_id), None)

    def summary(self) -> str:
        """One line: the first failing check (Azure side first), else what passed."""
        for status in (Status.FAIL, Status.ERROR):
            for c in self.checks:
                if c.status is status:
                    return f"{c.id}: {c.summary}"
        warnings = sum(1 for c in self.checks if c.status is Status.WARN)
        tail = f" ({warnings} warning{'s' if warnings != 1 else ''})" if warnings else ""
        return f"no problem found{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "vm": self.vm,
            "port": self.port,
            "source": self.source,
            "checks": [c.to_dict() for c in self.checks],
            "verdict": self.verdict.value,
            "summary": self.summary(),
            "arm": {"round_trips": self.round_trips, "requests": self.requests},
            "screenshot": self.screenshot,
            "probe": self.probe_result.to_dict() if self.probe_result is not None else None,
            "guest": self.guest.result if self.guest is not None else None,
        }


def azure_stage(ctx: DiagnoseContext) -> list[Check]:
    from azrdp.azure.checks import azure_checks

    return azure_checks(ctx.inventory, ctx.path)


def network_stage(ctx: DiagnoseContext) -> list[Check]:
    from azrdp.azure.checks import nsg_checks

    return nsg_checks(ctx.inventory, ctx.path, port=ctx.port, source_ip=ctx.source_ip)


def azrdp_rules_stage(ctx: DiagnoseContext) -> list[Check]:
    """nsg.azrdp_rules: the temporary rules `fix --allow-from` added, expired ones flagged (only
    when there are any). Reads only the NSG bodies the inventory already holds."""
    from azrdp.azure.nsg_rules import azrdp_rules, check_azrdp_rules, look_alike_rules, vm_nsgs

    nsgs = vm_nsgs(ctx.inventory)
    return check_azrdp_rules(azrdp_rules(nsgs), now=ctx.session.clock.now(), vm=ctx.target.name,
                             resource_group=ctx.target.resource_group, look_alikes=look_alike_rules(nsgs))


def probe_wire(ctx: DiagnoseContext) -> tuple[list[Check], Any]:
    """rdp.* from the wire probe, when there is an address to probe, and the probe (None: not
    probed). A probe the caller already has (``ctx.probe_result``: a fleet job's second look at a
    VM, a smoke check's wait) is judged again, not repeated."""
    if not ctx.probe:
        return [Check("rdp.tcp", Status.SKIP, "not probed (--no-probe)")], None
    from azrdp.rdp import parse_target

    if ctx.host:
        host, port = parse_target(ctx.host, default_port=ctx.port)
    else:
        address = ctx.vm.get("public_ip")
        if not address:
            return [Check("rdp.tcp", Status.SKIP, "not probed: no public IP (probe from inside the network "
                          "with --host PRIVATE_IP)")], None
        if ctx.vm.get("power_state") != "running":
            return [Check("rdp.tcp", Status.SKIP, "not probed: the VM is not running")], None
        host, port = address, ctx.port
    from azrdp.rdp import probe, rdp_checks

    result = ctx.probe_result
    if result is None:
        ctx.say(f"Probing RDP on {host}:{port} ...")
        result = probe(host, port, timeout=ctx.probe_timeout)
    return rdp_checks(result), result


def read_guest(ctx: DiagnoseContext) -> tuple[list[Check], Any]:
    """guest.* from ONE read-only Run Command payload, cross-checked with the wire probe.

    Skipped when Run Command cannot work (VM not running, agent not Ready): it would hang for up
    to 90 minutes. A failure to run it (permission, busy, timeout, unreadable output) is one
    ``guest.run`` error; the Azure and wire sides still stand. Returns the checks and the
    GuestDiagnosis (None when the guest was not read)."""
    if ctx.status("vm.power") is not Status.PASS:
        return [Check("guest.run", Status.SKIP, "guest not read: the VM is not running")], None
    if ctx.status("vm.agent") is not Status.PASS:
        return [Check("guest.run", Status.SKIP, "guest not read: Run Command needs a Ready VM agent "
                      "(see vm.agent)")], None
    from azrdp.guest import DEFAULT_TIMEOUT, diagnose_guest
    from azrdp.ui import waiting

    ctx.say("Reading the guest through Run Command (about 20-40 s) ...")
    try:
        with waiting(ctx.progress, f"Run Command (read the guest) on {ctx.target.name}", said="sent",
                     limit=DEFAULT_TIMEOUT) as wait:
            guest = diagnose_guest(
                ctx.session.vm(ctx.target), instance_view=ctx.inventory.vm_properties.get("instanceView"),
                probe_result=ctx.probe_result, rdp_port=ctx.port, on_wait=wait.update, on_conflict=wait.note)
            wait.end("finished")
    except AzrdpError as err:
        return [Check("guest.run", Status.ERROR, f"the guest diagnosis did not complete: {err.message}",
                      details={"error": type(err).__name__},
                      remedy=err.hint or f"Run `azrdp diagnose {ctx.target.name} -g {ctx.target.resource_group}` "
                                         "again, or `azrdp diagnose ... --no-guest` to see only the Azure and "
                                         "wire sides.")], None
    run = guest.run.to_dict()
    return [Check("guest.run", Status.PASS, "the guest diagnosis ran through Run Command",
                  details={"attempts": run["attempts"], "seconds": run["seconds"]}),
            *guest.checks], guest


def boot_health_needed(ctx: DiagnoseContext) -> bool:
    """Whether the serial log is worth its read: for a running VM whose agent is read and not Ready
    (Run Command cannot reach the guest: the health report is the one word from inside it), or whose
    RDP port did not answer the wire probe. A healthy VM, a stopped one (its power says why) and a
    fleet-listed VM whose agent is not read yet (the sweep reads it first, then diagnoses again)
    cost no read."""
    if ctx.status("vm.power") is not Status.PASS or not getattr(ctx.inventory, "agent_known", True):
        return False
    if ctx.status("vm.agent") is Status.FAIL:
        return True
    return ctx.probe_result is not None and not ctx.probe_result.answers


def boot_health_stage(ctx: DiagnoseContext) -> list[Check]:
    """boot.health: the serial log's VM Health Report (azrdp.azure.healthreport), read when boot
    diagnostics are on and :func:`boot_health_needed` says it matters (no check otherwise). Its age
    is judged on the session's clock. One ARM request (retrieveBootDiagnosticsData; the blob itself
    is fetched from storage by its SAS URI), counted in the inventory's requests like every read of
    the VM."""
    from azrdp.azure.healthreport import health_check, parse_health_report

    if not boot_health_needed(ctx):
        return []
    if ctx.boot_health is not None:      # read by the diagnosis this one re-judges (fix after sweep)
        return [ctx.boot_health]
    target = ctx.target
    hint = f"`azrdp rescue {target.name} -g {target.resource_group}` repairs the OS disk offline"
    if not (ctx.vm.get("boot_diagnostics") or {}).get("enabled"):
        return [Check("boot.health", Status.SKIP, "boot diagnostics are disabled: no serial log", {})]
    ctx.say("Reading the serial log's VM Health Report ...")
    now = ctx.session.clock.now()
    ctx.inventory.requests += 1
    try:
        log = ctx.session.vm(target).serial_log()
    except AzrdpError as err:
        return [health_check(None, now=now, rescue_hint=hint, error=err.message[:80])]
    return [health_check(parse_health_report(log), now=now, rescue_hint=hint)]


BUILTIN_STAGES: tuple[Stage, ...] = (azure_stage, network_stage, azrdp_rules_stage)
WIRE_STAGES: tuple[Stage, ...] = (boot_health_stage,)   # judged with the wire's answer, before the caller's


def diagnose(session: Session, target: Target, *, port: int = DEFAULT_PORT, source_ip: str | None = None,
             host: str | None = None, probe: bool = True, probe_timeout: float = 5.0,
             stages: Sequence[Stage] = (), guest: bool | GuestGate = False, screenshot: str | Path | None = None,
             fetch: Callable[[str], bytes] | None = None, progress: ProgressSink = SILENT,
             inventory: Any = None, probe_result: Any = None, boot_health: Check | None = None) -> Diagnosis:
    """Diagnose ``target`` through ``session`` (an AzureSession). Raises typed errors for what stops
    a diagnosis (sign-in, permissions, VM not found, a Linux VM); everything else is a check.

    ``guest``: read the guest (True), or ask ``guest(ctx)`` once the Azure side and the wire are
    judged (fix's fused mode). A job that has read the VM already passes the ``inventory`` (a
    fleet's lists, azrdp.azure.fleet, or an earlier diagnosis) and the ``probe_result`` it has:
    neither is read again; nor is the serial log when it passes that diagnosis' ``boot_health``."""
    from azrdp.azure.checks import OS_LINUX, os_type, rdp_path, vm_facts

    validate_options(port, source_ip, probe_timeout, host=host)
    if inventory is None:
        inventory = session.vm(target).inventory(want_vnet=bool(source_ip), progress=progress)
    if os_type(inventory) == OS_LINUX:
        raise UsageError(f"VM {target} runs Linux; azrdp diagnoses Remote Desktop on Windows VMs.",
                         hint=f"For Linux use SSH, e.g. `az ssh vm -g {target.resource_group} -n {target.name}`.")
    path = rdp_path(inventory)
    ctx = DiagnoseContext(session, target, inventory, path, vm_facts(inventory, path), [], port=port,
                          source_ip=source_ip, host=host, probe=probe, probe_timeout=probe_timeout,
                          progress=progress, probe_result=probe_result, boot_health=boot_health)
    for stage in BUILTIN_STAGES:
        ctx.checks.extend(stage(ctx))
    wire, probe_result = probe_wire(ctx)
    ctx.checks.extend(wire)
    ctx = replace(ctx, probe_result=probe_result)   # the wire's answer, for the stages after it
    for stage in (*WIRE_STAGES, *stages):
        ctx.checks.extend(stage(ctx))
    read = None
    if guest is True or (callable(guest) and guest(ctx)):
        checks, read = read_guest(ctx)
        ctx.checks.extend(checks)
    diagnosis = Diagnosis(ctx.vm, ctx.checks, port=port, source=source_ip or "any Internet address",
                          round_trips=inventory.round_trips, requests=inventory.requests,
                          probe_result=probe_result, guest=read, inventory=inventory, path=path)
    if screenshot is not None:
        diagnosis.screenshot = _screenshot(session, target, ctx.vm, screenshot, fetch, progress)
    progress.done()
    return diagnosis


def _screenshot(session: Session, target: Target, vm: dict[str, Any], path: str | Path,
                fetch: Callable[[str], bytes] | None, progress: ProgressSink) -> dict[str, Any]:
    if not vm["boot_diagnostics"]["enabled"]:
        return {"path": None, "error": "boot diagnostics are disabled, so there is no screenshot"}
    progress.status("Fetching the boot-diagnostics screenshot ...")
    try:
        return session.vm(target).screenshot(path, fetch=fetch)
    except AzrdpError as err:
        return {"path": None, "error": err.message}
    except OSError as err:
        return {"path": None, "error": f"cannot write {path}: {err.strerror or err}"}


def validate_options(port: int, source_ip: str | None, probe_timeout: float = 5.0, *,
                     host: str | None = None) -> None:
    """The options a diagnosis takes from the user, checked before anything is read (exit 2)."""
    import ipaddress

    if host is not None:
        from azrdp.rdp import parse_target

        try:
            parse_target(host, default_port=port if 1 <= int(port) <= 65535 else 3389)
        except UsageError as err:
            raise UsageError(f"--host: {err.message}", hint=err.hint) from None

    if not 1 <= int(port) <= 65535:
        raise UsageError(f"--port {port} is not a TCP port (1-65535).")
    if not probe_timeout > 0:
        raise UsageError(f"--probe-timeout {probe_timeout:g} must be more than 0 seconds.")
    if source_ip is not None:
        try:
            ipaddress.ip_address(source_ip)
        except ValueError:
            raise UsageError(f"--source-ip {source_ip!r} is not an IP address.",
                             hint="Give the public address you connect from, e.g. 203.0.113.7.") from None
