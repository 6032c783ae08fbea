"""`azrdp diagnose VM`: why does this Azure Windows VM refuse Remote Desktop? Changes nothing."""

from __future__ import annotations

import click

from azrdp.commands.azure_options import AzureOptions, azure_options, vm_options
from azrdp.commands.numbers import MAX_PROBE_TIMEOUT, Number
from azrdp.emit import emit
from azrdp.options import AzrdpCommand, shared_options


@click.command("diagnose", cls=AzrdpCommand)
@vm_options
@azure_options
@click.option("--port", type=int, default=3389, show_default=True,
              help="The RDP port the NSG rules are evaluated for (and probed).")
@click.option("--source-ip", metavar="IP",
              help="Evaluate NSG rules for this client address (default: any Internet address).")
@click.option("--host", metavar="HOST[:PORT]",
              help="Probe this address instead of the VM's public IP (e.g. its private IP from inside the VNet).")
@click.option("--no-probe", is_flag=True, help="Do not probe the RDP port; report only what Azure says.")
@click.option("--no-guest", is_flag=True,
              help="Do not read the guest through Run Command (saves 20-40 s; needs no runCommand permission).")
@click.option("--probe-timeout", type=Number(maximum=MAX_PROBE_TIMEOUT), default=5.0, show_default=True, metavar="SECONDS",
              help="Time limit for the wire probe.")
@click.option("--screenshot", type=click.Path(dir_okay=False), metavar="PATH",
              help="Save the boot-diagnostics console screenshot as a PNG at PATH.")
@shared_options
def diagnose_command(azure: AzureOptions, port: int, source_ip: str | None, host: str | None, no_probe: bool,
                     no_guest: bool, probe_timeout: float, screenshot: str | None) -> None:
    """Diagnose why an Azure Windows VM refuses Remote Desktop, from the Azure side (power, VM
    agent, boot diagnostics, public IP, subnet and NIC NSG rules with the deciding rule named), on
    the wire (TCP, X.224, TLS, certificate) and inside Windows (one read-only Run Command payload:
    services, RDP settings, certificate, MachineKeys, firewall, sessions). Changes nothing.

    \b
    VM is NAME with -g RG, or a full resource ID (positional or --ids):
      azrdp diagnose myvm -g myrg
      azrdp diagnose /subscriptions/SUB/resourceGroups/myrg/providers/Microsoft.Compute/virtualMachines/myvm -o json

    \b
    Exit codes: 0 no check failed; 1 a problem was found; 2 bad input or a Linux VM;
    3 sign-in or permission failure; 4 VM or resource group not found; 5 Azure failed or timed out.
    """
    from azrdp.diagnose import diagnose, validate_options
    from azrdp.errors import UsageError
    from azrdp.render.diagnosis import render_diagnosis
    from azrdp.ui import Progress

    if host is not None and no_probe:
        raise UsageError("--host names where to probe, and --no-probe says not to probe.",
                         hint="Drop one of them.")
    validate_options(port, source_ip, probe_timeout, host=host)
    target = azure.target()
    if screenshot:
        from azrdp.outfiles import check_output_path

        check_output_path(screenshot, "--screenshot")
    progress = Progress()
    session = azure.session(target=target, progress=progress)
    result = diagnose(session, target, port=port, source_ip=source_ip, host=host, probe=not no_probe,
                      probe_timeout=probe_timeout, guest=not no_guest,
                      screenshot=screenshot, progress=progress)
    emit(result, render_diagnosis)
