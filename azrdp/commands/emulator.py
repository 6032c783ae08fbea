"""`azrdp emulator serve`: a local Azure stand-in in the foreground, and what to export to use it."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from azrdp.commands.numbers import MAX_SPEED, Number
from azrdp.errors import UsageError
from azrdp.options import CONTEXT_SETTINGS, AzrdpCommand, settings, shared_options


@click.group("emulator", context_settings=CONTEXT_SETTINGS)
def emulator_group() -> None:
    """A local Azure stand-in: ARM over HTTP, simulated Windows guests, real RDP listeners."""


def _fleet(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    from azrdp.emulator.scenarios import SCENARIOS

    mix: dict[str, int] = {}
    for part in text.split(","):
        name, _, count = part.strip().partition("=")
        if name not in SCENARIOS or not count.isdigit() or int(count) < 1:
            raise UsageError(f"--fleet takes SCENARIO=COUNT pairs separated by commas, got {part.strip()!r}.",
                             hint=f"Scenarios: {', '.join(SCENARIOS)}.")
        mix[name] = mix.get(name, 0) + int(count)
    return mix


def _read_limit(text: str | None) -> Any:
    if not text:
        return None
    from azrdp.emulator.throttling import ReadLimit

    try:
        return ReadLimit.parse(text)
    except ValueError as err:
        raise UsageError(f"--read-limit: {err}.", hint="Azure's documented read limit is 250/25.") from None


@emulator_group.command("serve", cls=AzrdpCommand)
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 for the ARM endpoint (0: any free port).")
@click.option("--scenario", default="healthy", show_default=True, metavar="NAME",
              help="What is wrong with the VM(s): healthy, expired-cert, machinekeys-acl, corrupt-key, seat-taken, "
                   "rdp-disabled, firewall, nsg-blocked, agent-not-ready, deallocated, 0x904.")
@click.option("--vms", type=click.IntRange(1, 500), default=1, show_default=True, help="How many VMs in that scenario.")
@click.option("--fleet", metavar="SCENARIO=N,...", help="A mixed fleet instead, e.g. healthy=40,0x904=10.")
@click.option("--subscriptions", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Spread the --fleet over this many subscriptions.")
@click.option("--resource-groups", type=click.IntRange(1, 100), default=1, show_default=True,
              help="... and this many resource groups in each.")
@click.option("--speed", type=Number(minimum=0, maximum=MAX_SPEED, open_minimum=True), default=10.0, show_default=True, metavar="N",
              help="Simulated Azure latencies (Run Command 20-40 s, restart 0.2-0.3 s then Windows down and boot) run N times faster.")
@click.option("--seed", type=int, default=None, help="Make the simulated durations reproducible.")
@click.option("--read-limit", metavar="BUCKET/REFILL",
              help="Throttle reads like ARM: a token bucket per subscription, e.g. 250/25 (Azure's limit).")
@shared_options
def serve_command(port: int, scenario: str, vms: int, fleet: str | None, subscriptions: int, resource_groups: int,
                  speed: float, seed: int | None, read_limit: str | None) -> None:
    """Run the emulator in the foreground (Ctrl-C stops it) and print the environment that
    points azrdp, or an Azure Automation runbook, at it."""
    from azrdp.emulator.scenarios import SCENARIOS, FleetLayout
    from azrdp.emulator.server import serve

    if scenario not in SCENARIOS:
        raise UsageError(f"unknown --scenario {scenario!r}.", hint=f"Choose one of {', '.join(SCENARIOS)}.")
    if not speed > 0:
        raise UsageError(f"--speed must be more than 0, got {speed}.")
    mix = _fleet(fleet)
    if (subscriptions > 1 or resource_groups > 1) and not mix:
        raise UsageError("--subscriptions and --resource-groups spread a --fleet.",
                         hint="Add e.g. --fleet healthy=1000.")
    limit = _read_limit(read_limit)
    output = settings().output
    _open_files_for(sum(mix.values()) if mix else vms)
    try:
        serve(scenario, vms=vms, fleet=mix, speed=speed, port=port, seed=seed, read_limit=limit,
              layout=FleetLayout(subscriptions, resource_groups),
              on_ready=lambda emu: _announce(emu, output, scenario, mix))
    except OSError as err:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {err.strerror or err}.",
                         hint="Choose another --port, or 0 for any free port.") from None


FILES_PER_VM = 1        # its listening socket (a dropping port: 3), served by the one accept loop
FILES_SPARE = 512       # HTTP connections, the accept loop's connections, TLS material, Python itself


def _open_files_for(vms: int) -> None:
    """Raise this process's soft open-file limit up to its hard limit when the VMs need more
    (saying so on stderr); refuse, changing nothing, when even the hard limit is too low."""
    try:
        import resource
    except ImportError:        # not on Windows: its limits are not the POSIX ones
        return
    needed = vms * FILES_PER_VM + FILES_SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise UsageError(f"{vms} VMs need about {needed} open files, and this process may open at most {hard} "
                         "(the hard limit).", hint="Serve fewer VMs, or raise the hard limit (ulimit -Hn) first.")
    wanted = needed if hard == resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    click.echo(f"azrdp emulator: raised the open-file limit from {soft} to {wanted} for {vms} VMs.", err=True)


def _announce(emu: Any, output: str, scenario: str, fleet: dict[str, int] | None) -> None:
    from azrdp.emulator.scenarios import SCENARIOS

    environment = emu.environment()
    vms = [{"name": vm.name, "resource_group": vm.resource_group, "rdp": f"{vm.rdp_address}:{vm.guest.port}"}
           for vm in emu.state.all_vms()]
    if output == "json":
        click.echo(json.dumps({"base_url": emu.base_url, "speed": emu.speed, "scenario": None if fleet else scenario,
                               "fleet": fleet, "environment": environment, "client_ip": emu.state.client_ip,
                               "vms": vms}))
    else:
        what = f"fleet {', '.join(f'{k}={v}' for k, v in fleet.items())}" if fleet else \
            f"scenario {scenario}: {SCENARIOS[scenario].summary}"
        click.echo(f"azrdp ARM emulator on {emu.base_url}, {what} (latencies {emu.speed:g}x faster).")
        for vm in vms[:10]:
            click.echo(f"  VM {vm['name']} in {vm['resource_group']}, RDP listener {vm['rdp']}")
        if len(vms) > 10:
            click.echo(f"  ... and {len(vms) - 10} more VMs")
        click.echo("Point azrdp or a runbook at it (IDENTITY_* serve a managed identity, like Azure Automation):")
        for name, value in environment.items():
            click.echo(f"  export {name}={value}")
        click.echo(f"NSG rules see your connections as coming from {emu.state.client_ip} "
                   f"(azrdp diagnose --source-ip {emu.state.client_ip}).")
        first = vms[0]
        click.echo(f"Then, in another shell: azrdp diagnose {first['name']} -g {first['resource_group']}")
        click.echo("Ctrl-C stops the emulator.")
    sys.stdout.flush()
