"""`azrdp demo`: watch the real fix repair a simulated VM, end to end, on this machine."""

from __future__ import annotations

import click

from azrdp.commands.numbers import MAX_SPEED, Number
from azrdp.emit import as_json, echo, emit
from azrdp.errors import UsageError
from azrdp.options import AzrdpCommand, shared_options


@click.command("demo", cls=AzrdpCommand)
@click.option("--scenario", default="0x904", show_default=True, metavar="NAME",
              help="What is wrong with the simulated VM: 0x904, expired-cert, machinekeys-acl, corrupt-key, "
                   "seat-taken, rdp-disabled, firewall, nsg-blocked, agent-not-ready, deallocated, healthy.")
@click.option("--speed", type=Number(maximum=MAX_SPEED), default=10.0, show_default=True, metavar="N",
              help="Simulated Azure latencies (Run Command 20-40 s, restart 0.2-0.3 s then Windows down and boot) run N times faster.")
@click.option("--windows", "windows", default="2022", show_default=True, metavar="VERSION",
              help="Which Windows the simulated VM runs: 2012r2, 2016, 2019, 2022, 2025, win11, win11-multisession "
                   "(seat model, .NET and PowerShell versions as on that image).")
@click.option("--locale", default="en-US", show_default=True, metavar="LANG",
              help="Its display language: en-US, de-DE, fr-FR, ja-JP (what quser, qwinsta, icacls and service "
                   "names print).")
@click.option("--allow-from", type=click.Choice(["me"]), metavar="me",
              help="As `azrdp fix --allow-from me`: where an NSG blocks RDP, add a temporary rule for your address "
                   "(the demo knows it).")
@click.option("--start", is_flag=True, help="As `azrdp fix --start`: start the VM if it is deallocated.")
@click.option("--audit-log", type=click.Path(dir_okay=False), metavar="PATH",
              help="Also append the (simulated) change records here; by default they stay in memory.")
@shared_options
def demo_command(scenario: str, speed: float, windows: str, locale: str, allow_from: str | None, start: bool,
                 audit_log: str | None) -> None:
    """Run the real `azrdp fix` against a local Azure stand-in and show before -> after.

    \b
    Starts an ARM emulator on 127.0.0.1 with one Windows VM (simulated guest, real RDP listener on
    its own loopback address), plants the scenario's problems, then diagnoses, plans, repairs in
    one Run Command, restarts through ARM when a step needs it, waits until RDP answers and
    re-diagnoses - the same code as against Azure. Needs no Azure account and no network.

    \b
      azrdp demo                          # error 0x904, 10x faster than Azure
      azrdp demo --scenario rdp-disabled --speed 50
      azrdp demo --windows 2012r2 --locale de-DE
      azrdp demo -o json                  # the fix result as JSON
      azrdp demo --scenario nsg-blocked --allow-from me
      azrdp demo --scenario deallocated --start

    Exit codes as for `azrdp fix`: 0 RDP answers at the end, 1 it does not, 130 interrupted.
    """
    from pathlib import Path

    from azrdp.audit import AuditLog
    from azrdp.demo import run_demo
    from azrdp.emulator.profiles import LOCALES, WINDOWS
    from azrdp.emulator.scenarios import SCENARIOS
    from azrdp.render.demo import render_demo
    from azrdp.ui import Progress

    if scenario not in SCENARIOS:
        raise UsageError(f"unknown --scenario {scenario!r}.", hint=f"Choose one of {', '.join(SCENARIOS)}.")
    if windows not in WINDOWS:
        raise UsageError(f"unknown --windows {windows!r}.", hint=f"Choose one of {', '.join(WINDOWS)}.")
    if locale not in LOCALES:
        raise UsageError(f"unknown --locale {locale!r}.", hint=f"Choose one of {', '.join(LOCALES)}.")
    if not speed > 0:
        raise UsageError(f"--speed must be more than 0, got {speed:g}.", hint="10 shows every phase; 1000 is instant.")
    progress = Progress()
    audit = AuditLog(Path(audit_log) if audit_log else None, context={"command": "demo"}).open()

    def show_setup(setup) -> None:
        echo("\n".join(setup.lines()), err=as_json())

    demo = run_demo(scenario, speed=speed, on_setup=show_setup, progress=progress, audit=audit,
                    allow_from_me=allow_from == "me", start=start, windows=windows, locale=locale)
    emit(demo, render_demo)
