"""`azrdp check VM`: the CI smoke check. Does RDP answer? Details only when it does not."""

from __future__ import annotations

from pathlib import Path

import click

from azrdp.commands.azure_options import AzureOptions, azure_options, vm_options
from azrdp.commands.numbers import MAX_PROBE_TIMEOUT, MAX_WAIT, Number
from azrdp.emit import emit
from azrdp.errors import UsageError
from azrdp.options import AzrdpCommand, shared_options

INTERACTIVE = ("device-code", "browser")


@click.command("check", cls=AzrdpCommand)
@vm_options
@azure_options
@click.option("--host", metavar="HOST[:PORT]",
              help="Probe this address (e.g. the IP your deployment output): a passing check then needs no sign-in.")
@click.option("--port", type=int, default=3389, show_default=True, help="The RDP port.")
@click.option("--wait", type=Number(minimum=0, maximum=MAX_WAIT), default=0.0, show_default=True, metavar="SECONDS",
              help="Keep probing up to SECONDS while RDP does not answer yet (a VM that is still booting).")
@click.option("--probe-timeout", type=Number(minimum=0.1, maximum=MAX_PROBE_TIMEOUT), default=5.0, show_default=True, metavar="SECONDS",
              help="Time limit for one wire probe.")
@click.option("--source-ip", metavar="IP", help="Evaluate NSG rules for this client address when RDP fails.")
@click.option("--no-guest", is_flag=True, help="When RDP fails, do not read the guest through Run Command.")
@click.option("--junit-xml", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Also write the result as JUnit XML to PATH (one testcase per check).")
@shared_options
def check_command(azure: AzureOptions, host: str | None, port: int, wait: float, probe_timeout: float,
                  source_ip: str | None, no_guest: bool, junit_xml: Path | None) -> None:
    """CI smoke check: exit 0 when the VM answers Remote Desktop (TCP, X.224, TLS, a valid
    certificate). The wire is probed first; only when RDP does not answer are the Azure side and
    the guest read, so the log says why. Sign-in is never interactive (--auth auto, cli, msi,
    env or workload, e.g. the workload identity of a GitHub Actions or Azure Pipelines job).

    \b
      azrdp check vm-web-01 -g rg-app --host 20.1.2.3 --wait 300 --junit-xml rdp.xml
      azrdp check /subscriptions/SUB/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-web-01

    \b
    Exit codes: 0 RDP answers; 1 RDP does not answer (the report says why); 2 bad input;
    3 sign-in or permission failure; 4 VM or resource group not found; 5 Azure failed or timed out.
    """
    from azrdp.render.check import render_check
    from azrdp.report import junit_xml as render_junit
    from azrdp.smoke import smoke_check
    from azrdp.ui import Progress

    if azure.auth in INTERACTIVE:
        raise UsageError(f"--auth {azure.auth} needs a person; azrdp check signs in non-interactively only.",
                         hint="Use --auth workload, env, msi or cli (after `az login` / azure/login).")
    from azrdp.diagnose import validate_options
    from azrdp.outfiles import check_output_path

    validate_options(port, source_ip, probe_timeout, host=host)
    target = azure.target()
    if junit_xml is not None:
        check_output_path(junit_xml, "--junit-xml")
    progress = Progress()
    result = smoke_check(lambda: azure.session(target=target, progress=progress), target, host=host, port=port,
                         probe_timeout=probe_timeout, wait=wait, guest=not no_guest, source_ip=source_ip,
                         progress=progress)
    progress.done()
    emit(result, render_check, junit=None if junit_xml is None else
         (junit_xml, lambda: render_junit([(f"azrdp check {target.name}", result.checks)], name="azrdp check")))
