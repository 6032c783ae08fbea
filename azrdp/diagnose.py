"""The diagnose job: why does this Azure Windows VM refuse Remote Desktop?

diagnose() reads Azure (VM, agent, boot diagnostics, NICs, NSGs, public IP) in at most three
sequential ARM round trips, evaluates the NSG rules for the RDP port, probes the wire when there
is an address to probe, and returns a Diagnosis: plain data with to_dict() and a text rendering.

The sides run as stages, in order: ``azure`` (vm.*, boot.diagnostics, net.public_ip), ``network``
(nsg.*), ``wire`` (rdp.*), then any extra ``stages`` the caller passes. Each stage receives a
DiagnoseContext (the inventory, the VM facts and the checks so far) and returns checks. The guest
side (one read-only Run Command payload) plugs in there, e.g.::

    diagnose(session, target, stages=[guest_stage])   # guest_stage(ctx) -> list[Check]

A stage can look at ``ctx.status("vm.agent")`` to skip itself when Run Command cannot work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azrdp.checks import Check, Status, verdict
from azrdp.errors import EXIT_OK, EXIT_PROBLEM, AzrdpError, UsageError
from azrdp.target import Target

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
    progress: Any = None
    probe_result: Any = None          # the wire probe's ProbeResult, when the wire was probed
    guest: Any = None                 # azrdp.guest.GuestDiagnosis, when the guest was read

    def status(self, check_id: str) -> Status | None:
        return next((c.status for c in self.checks if c.id == check_id), None)

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.status(text)


Stage = Callable[[DiagnoseContext], Iterable[Check]]


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


def wire_stage(ctx: DiagnoseContext) -> list[Check]:
    """rdp.* from the wire probe, when there is an address to probe."""
    if not ctx.probe:
        return [Check("rdp.tcp", Status.SKIP, "not probed (--no-probe)")]
    from azrdp.rdp import parse_target

    if ctx.host:
        host, port = parse_target(ctx.host, default_port=ctx.port)
    else:
        address = ctx.vm.get("public_ip")
        if not address:
            return [Check("rdp.tcp", Status.SKIP, "not probed: no public IP (probe from inside the network "
                          "with --host PRIVATE_IP)")]
        if ctx.vm.get("power_state") != "running":
            return [Check("rdp.tcp", Status.SKIP, "not probed: the VM is not running")]
        host, port = address, ctx.port
    from azrdp.rdp import probe, rdp_checks

    if ctx.probe_result is None:   # a fleet job's second look at a VM reuses its probe
        ctx.say(f"Probing RDP on {host}:{port} ...")
        ctx.probe_result = probe(host, port, timeout=ctx.probe_timeout)
    return rdp_checks(ctx.probe_result)


def guest_stage(ctx: DiagnoseContext) -> list[Check]:
    """guest.* from ONE read-only Run Command payload, cross-checked with the wire probe.

    Skipped when Run Command cannot work (VM not running, agent not Ready): it would hang for up
    to 90 minutes. A failure to run it (permission, busy, timeout, unreadable output) is one
    ``guest.run`` error; the Azure and wire sides still stand."""
    if ctx.status("vm.power") is not Status.PASS:
        return [Check("guest.run", Status.SKIP, "guest not read: the VM is not running")]
    if ctx.status("vm.agent") is not Status.PASS:
        return [Check("guest.run", Status.SKIP, "guest not read: Run Command needs a Ready VM agent "
                      "(see vm.agent)")]
    from azrdp.guest import DEFAULT_TIMEOUT, diagnose_guest
    from azrdp.ui import waiting

    ctx.say("Reading the guest through Run Command (about 20-40 s) ...")
    try:
        with waiting(ctx.progress, f"Run Command (read the guest) on {ctx.target.name}", said="sent",
                     limit=DEFAULT_TIMEOUT) as wait:
            ctx.guest = diagnose_guest(
                ctx.session.vm(ctx.target), instance_view=ctx.inventory.vm_properties.get("instanceView"),
                probe_result=ctx.probe_result, rdp_port=ctx.port, on_wait=wait.update, on_conflict=wait.note)
            wait.end("finished")
    except AzrdpError as err:
        return [Check("guest.run", Status.ERROR, f"the guest diagnosis did not complete: {err.message}",
                      details={"error": type(err).__name__},
                      remedy=err.hint or f"Run `azrdp diagnose {ctx.target.name} -g {ctx.target.resource_group}` "
                                         "again, or `azrdp diagnose ... --no-guest` to see only the Azure and "
                                         "wire sides.")]
    run = ctx.guest.run.to_dict()
    return [Check("guest.run", Status.PASS, "the guest diagnosis ran through Run Command",
                  details={"attempts": run["attempts"], "seconds": run["seconds"]}),
            *ctx.guest.checks]


def boot_health_stage(ctx: DiagnoseContext) -> list[Check]:
    """boot.health: the serial log's VM Health Report (azrdp.azure.healthreport), read when boot
    diagnostics are on; a stage ``rescue`` adds (its verdict when Run Command cannot reach the guest)."""
    from datetime import datetime, timezone

    from azrdp.azure.healthreport import health_check, parse_health_report

    target = ctx.target
    hint = f"`azrdp rescue {target.name} -g {target.resource_group}` repairs the OS disk offline"
    if not (ctx.vm.get("boot_diagnostics") or {}).get("enabled"):
        return [Check("boot.health", Status.SKIP, "boot diagnostics are disabled: no serial log", {})]
    ctx.say("Reading the serial log's VM Health Report ...")
    now = datetime.now(timezone.utc)
    try:
        log = ctx.session.vm(target).serial_log()
    except AzrdpError as err:
        return [health_check(None, now=now, rescue_hint=hint, error=err.message[:80])]
    return [health_check(parse_health_report(log), now=now, rescue_hint=hint)]


BUILTIN_STAGES: tuple[Stage, ...] = (azure_stage, network_stage, azrdp_rules_stage, wire_stage)


def diagnose(session: Session, target: Target, *, port: int = DEFAULT_PORT, source_ip: str | None = None,
             host: str | None = None, probe: bool = True, probe_timeout: float = 5.0,
             stages: Sequence[Stage] = (), screenshot: str | Path | None = None,
             fetch: Callable[[str], bytes] | None = None, progress: Any = None,
             inventory: Any = None, probe_result: Any = None) -> Diagnosis:
    """Diagnose ``target`` through ``session`` (an AzureSession). Raises typed errors for what stops
    a diagnosis (sign-in, permissions, VM not found, a Linux VM); everything else is a check.

    A fleet job passes the ``inventory`` it built from its lists (azrdp.azure.fleet), and, when
    it diagnoses a VM a second time after reading its agent, the ``probe_result`` it already has."""
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
                          progress=progress, probe_result=probe_result)
    for stage in (*BUILTIN_STAGES, *stages):
        ctx.checks.extend(stage(ctx))
    diagnosis = Diagnosis(ctx.vm, ctx.checks, port=port, source=source_ip or "any Internet address",
                          round_trips=inventory.round_trips, requests=inventory.requests,
                          probe_result=ctx.probe_result, guest=ctx.guest)
    if screenshot is not None:
        diagnosis.screenshot = _screenshot(session, target, ctx.vm, screenshot, fetch, progress)
    if progress is not None:
        progress.done()
    return diagnosis


GUEST_STAGES: tuple[Stage, ...] = (guest_stage,)


def _screenshot(session: Session, target: Target, vm: dict[str, Any], path: str | Path,
                fetch: Callable[[str], bytes] | None, progress: Any) -> dict[str, Any]:
    if not vm["boot_diagnostics"]["enabled"]:
        return {"path": None, "error": "boot diagnostics are disabled, so there is no screenshot"}
    if progress is not None:
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


def render_text(diagnosis: Diagnosis, *, verbose: int = 0) -> str:
    """The compact checklist: a VM line, checks grouped by side with remedies, the verdict."""
    from azrdp.report import render_checks

    vm = diagnosis.vm
    facts = ", ".join(str(v) for v in (vm.get("os_type"), vm.get("power_state"), vm.get("location"),
                                        vm.get("size")) if v)
    lines = [f"VM {vm['name']} in {vm['resource_group']} (subscription {vm['subscription']}): {facts}",
             render_checks(diagnosis.checks, verbose=verbose)]
    if diagnosis.screenshot is not None:
        shot = diagnosis.screenshot
        lines.append(f"Screenshot: saved to {shot['path']}" if shot.get("path")
                     else f"Screenshot: not saved: {shot['error']}")
    lines.append(f"Verdict: {diagnosis.verdict.value}: {diagnosis.summary()}")
    return "\n".join(lines)

