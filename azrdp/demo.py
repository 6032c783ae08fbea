"""`azrdp demo`: the real fix, end to end, against a local Azure stand-in.

    run_demo(scenario="0x904", speed=10, on_setup=print_setup, progress=Progress()) -> DemoResult

Starts the ARM emulator in this process (Azure Resource Manager on 127.0.0.1, a simulated Windows
guest behind the VM, a real RDP listener on the VM's own loopback address), then runs
:func:`azrdp.repair.fix` - the very code ``azrdp fix`` runs against Azure - with a session from
the same factory (:func:`azrdp.azure.session.open_session`). Only three things differ from a real
run: the ARM endpoint (the emulator's), the credential (a fixed local token, never a real one),
and the LRO polling interval, scaled with the emulator's time scale like every other latency.
NSG rules are evaluated for the emulator's client address, the address its NSGs allow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from azrdp.clock import SYSTEM_CLOCK, Clock
from azrdp.ui import SILENT, ProgressSink

DEFAULT_SCENARIO = "0x904"
DEFAULT_SPEED = 10.0
"""Simulated Azure runs 10x faster: a Run Command (20-40 s) takes 2-4 s, and the reboot after a
restart (its operation ends in 0.2-0.3 s; Windows then goes down in 3-10 s and boots for 15-30 s)
2-4 s, so each phase is visible and the 0x904 repair ends well within a minute."""
RESCUE_SCENARIOS = ("agent-not-ready", "no-boot-rdp-disabled")
"""Run Command cannot reach these guests: the demo runs `azrdp rescue` (offline, via a rescue VM)."""


@dataclass(frozen=True)
class DemoSetup:
    """What is simulated, in plain data (shown before the fix starts)."""

    scenario: str
    problem: str
    vm: str
    resource_group: str
    os: str
    arm_endpoint: str
    rdp: str
    client_ip: str
    speed: float
    polling_interval: float
    command: str = "fix"            # fix, or rescue for a VM Run Command cannot reach

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        def scaled(low: float, high: float) -> str:
            return f"{_seconds(low / self.speed)}-{_seconds(high / self.speed)}"

        return [
            f"azrdp demo: the real `azrdp {self.command}` against a simulated Azure VM (scenario {self.scenario}); "
            "nothing here reaches Azure.",
            f"  VM        {self.vm} in {self.resource_group} ({self.os})",
            f"  Problem   {self.problem}",
            f"  Azure     a local stand-in for Azure Resource Manager at {self.arm_endpoint}: the same SDK calls, "
            "a local token",
            "  Guest     simulated Windows: runs azrdp's PowerShell payloads (Run Command) and answers like the scripts",
            f"  RDP       a real listener on {self.rdp}: X.224 and TLS with the guest's certificate",
            f"  You       NSG rules see you as {self.client_ip}",
            f"  Time      Azure's latencies run {self.speed:g}x faster: Run Command (20-40 s) {scaled(20, 40)} s, "
            f"restart (0.2-0.3 s, then Windows goes down in 3-10 s) {scaled(3, 10)} s, boot (15-30 s) "
            f"{scaled(15, 30)} s",
        ]


@dataclass
class DemoResult:
    setup: DemoSetup
    fix: Any                       # azrdp.repair.RepairResult
    wall_seconds: float
    simulated_seconds: float

    @property
    def exit_code(self) -> int:
        return self.fix.exit_code

    def to_dict(self) -> dict[str, Any]:
        """The fix result, plus what the demo simulated and how long it took."""
        return {**self.fix.to_dict(), "demo": {**self.setup.to_dict(), "wall_seconds": round(self.wall_seconds, 3),
                                               "simulated_seconds": round(self.simulated_seconds, 3)}}


def run_demo(scenario: str = DEFAULT_SCENARIO, *, speed: float = DEFAULT_SPEED,
             on_setup: Callable[[DemoSetup], None] | None = None, progress: ProgressSink = SILENT, audit: Any = None,
             clock: Clock = SYSTEM_CLOCK, allow_from_me: bool = False, start: bool = False,
             windows: str = "2022", locale: str = "en-US") -> DemoResult:
    """Start the emulator with ``scenario`` on a guest running ``windows`` in display language
    ``locale`` (azrdp.emulator.profiles), run the real fix against its VM, stop the emulator.

    ``allow_from_me`` and ``start`` are ``fix --allow-from me --source-ip ...`` and ``fix --start``:
    the demo owns the VM and knows the address NSG rules see, so it may open the port to exactly
    that address or start the VM when asked to.

    ``on_setup(setup)`` is called once the emulator serves, before anything is diagnosed.
    ``audit`` is an :class:`azrdp.audit.AuditLog` (default: in memory only, so simulated changes
    never land in the user's real audit log)."""
    from azrdp.audit import AuditLog
    from azrdp.azure.lro import POLL_CAP
    from azrdp.azure.session import ArmEndpoint, StaticTokenCredential, open_session
    from azrdp.emulator import Emulator
    from azrdp.emulator.profiles import GuestProfile
    from azrdp.emulator.scenarios import scenario as preset
    from azrdp.repair import FixOptions, fix
    from azrdp.target import parse_target

    problem = preset(scenario).summary   # ValueError names the scenarios
    profile = GuestProfile(windows=windows, locale=locale)   # ValueError names the choices
    if not speed > 0:
        raise ValueError(f"speed must be more than 0, got {speed!r}")
    begun = clock.monotonic()
    with Emulator.start(scenario, speed=speed, profile=profile) as emu:
        vm = emu.vm()
        host, port = emu.rdp_endpoint()
        setup = DemoSetup(scenario=scenario, problem=problem, vm=vm.name, resource_group=vm.resource_group,
                          os=vm.guest.caption, arm_endpoint=emu.base_url, rdp=f"{host}:{port}",
                          client_ip=emu.state.client_ip, speed=speed, polling_interval=POLL_CAP / speed,
                          command="rescue" if scenario in RESCUE_SCENARIOS else "fix")
        if on_setup is not None:
            on_setup(setup)
        session = open_session(endpoint=ArmEndpoint(emu.base_url), credential=StaticTokenCredential(),
                               subscription=emu.subscription_id, environ={}, clock=clock,
                               polling_interval=setup.polling_interval,
                               on_wait=progress.info)
        target = parse_target(vm.name, resource_group=vm.resource_group)
        options = FixOptions(source_ip=emu.state.client_ip, allow_from="me" if allow_from_me else None,
                             start=start, advice="demo")
        audit = audit if audit is not None else AuditLog(None, context={"command": "demo", "vm": str(target)})

        def confirm(plan: Any) -> bool:
            progress.info("Plan: " + ", ".join(step.name for step in plan.steps))
            return True

        if setup.command == "rescue":
            from azrdp.rescue import RescueOptions, rescue

            def confirm_rescue(plan: Any) -> bool:
                progress.info("Plan: " + ", ".join(step["phase"] for step in plan.steps))
                return True

            result = rescue(session, target, RescueOptions(source_ip=emu.state.client_ip,
                                                           agent_poll_interval=max(0.05, 5.0 / speed)),
                            audit=audit, confirm=confirm_rescue, clock=clock, progress=progress)
        else:
            result = fix(session, target, options, audit=audit, confirm=confirm, clock=clock, progress=progress)
        simulated = emu.simulated_seconds()
    return DemoResult(setup, result, clock.monotonic() - begun, simulated)


# -- rendering ----------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:.2g}" if value < 10 else f"{value:.0f}"
