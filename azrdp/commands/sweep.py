"""`azrdp sweep`: check (and with --fix, repair) every Windows VM in a scope."""

from __future__ import annotations

from pathlib import Path

import click

from azrdp.commands.azure_options import AzureOptions, fleet_azure_options
from azrdp.commands.numbers import MAX_PROBE_TIMEOUT, Number
from azrdp.emit import as_json, echo, emit
from azrdp.options import AzrdpCommand, shared_options
from azrdp.sweep import DEFAULT_MAX_PARALLEL, GATED_STEPS, UNATTENDED_STEPS


@click.command("sweep", cls=AzrdpCommand)
@fleet_azure_options
@click.option("--subscription", "subscriptions", multiple=True, metavar="ID_OR_NAME",
              help="A subscription to sweep (repeatable; default: every subscription the sign-in sees).")
@click.option("-g", "--resource-group", "resource_groups", multiple=True, metavar="RG",
              help="Only VMs in this resource group (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="NAME=VALUE",
              help="Only VMs with this tag (repeatable, all must match; NAME alone: any value).")
@click.option("--guest", is_flag=True, help="Also read every guest through one read-only Run Command (20-40 s each).")
@click.option("--fix", is_flag=True,
              help=f"Repair unhealthy VMs unattended: {', '.join(UNATTENDED_STEPS)}. Never opens an NSG.")
@click.option("--allow-step", "allow_steps", multiple=True, metavar="STEP",
              help=f"Also allow this repair step with --fix ({', '.join(GATED_STEPS)}; repeatable).")
@click.option("--max-parallel", type=click.IntRange(1, 64), default=DEFAULT_MAX_PARALLEL, show_default=True,
              help="VMs that read the guest or repair at the same time (64 VMs are checked and probed at once).")
@click.option("--port", type=int, default=3389, show_default=True, help="The RDP port.")
@click.option("--source-ip", metavar="IP", help="Evaluate NSG rules for this client address.")
@click.option("--no-probe", is_flag=True, help="Do not probe RDP ports (VMs count as unverified).")
@click.option("--probe-timeout", type=Number(minimum=0.1, maximum=MAX_PROBE_TIMEOUT), default=5.0, show_default=True, metavar="SECONDS",
              help="Time limit for one wire probe.")
@click.option("--junit-xml", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Also write JUnit XML to PATH: one testcase per VM.")
@click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="With --fix: append every change to PATH (JSON lines; default: azrdp's audit log).")
@shared_options
def sweep_command(azure: AzureOptions, subscriptions: tuple[str, ...], resource_groups: tuple[str, ...],
                  tags: tuple[str, ...], guest: bool, fix: bool, allow_steps: tuple[str, ...], max_parallel: int,
                  port: int, source_ip: str | None, no_probe: bool, probe_timeout: float,
                  junit_xml: Path | None, audit_log: Path | None) -> None:
    """Check every Windows VM in the chosen subscriptions, resource groups and tags: the Azure
    side and the RDP wire (the guest too with --guest). With --fix, repair what the unattended
    policy allows. Azure is read by list pages per subscription, not per VM; 64 VMs are checked
    and probed at a time, --max-parallel of them read the guest or repair, each VM by one worker
    (never two Run Commands on one VM); a 429 from Azure pauses every worker of that subscription.

    \b
      azrdp sweep --subscription prod -g rg-web --tag rdp=managed
      azrdp sweep --fix --allow-step machinekeys-acl -o json --junit-xml sweep.xml

    \b
    Output: one line per VM as it finishes (-o json: one JSON object per line, then a summary
    object), then a summary table (on stderr with -o json).
    Exit codes: 0 every VM answers (healthy or fixed); 1 a VM is unhealthy, unverified, busy
    (another run is changing it) or could not be checked; 2 bad input; 3 sign-in or permission failure; 4 no VM matched; 5 Azure failed
    while listing the VMs; 130 interrupted.
    """
    from azrdp.render.sweep import junit_cases, render_line, render_table, summary_document, vm_document
    from azrdp.report import junit_document, to_json
    from azrdp.sweep import FixPolicy, Selection, sweep
    from azrdp.ui import Progress

    if allow_steps and not fix:
        from azrdp.errors import UsageError

        raise UsageError("--allow-step only applies with --fix.", hint="Add --fix, or drop --allow-step.")
    selection = Selection(tuple(subscriptions), tuple(resource_groups), tuple(Selection.parse_tag(t) for t in tags))
    policy = FixPolicy.unattended(allow_steps) if fix else FixPolicy()
    progress = Progress()
    lines = as_json()

    def finished(result) -> None:  # noqa: ANN001 - a VmResult
        if lines:
            echo(to_json(vm_document(result), line=True))
        else:
            progress.info(render_line(result))

    from azrdp.outfiles import check_output_path, open_private_append

    if junit_xml is not None:
        check_output_path(junit_xml, "--junit-xml")
    if fix:
        import os

        from azrdp.audit import default_audit_path

        option = "--audit-log" if audit_log is not None else "the audit log (set --audit-log or AZRDP_AUDIT_LOG)"
        audit_log = audit_log if audit_log is not None else default_audit_path()
        os.close(open_private_append(audit_log, option))   # checked now: every worker appends to it
    session = azure.tenant_session(progress=progress)
    result = sweep(session, selection, policy=policy, guest=guest, max_parallel=max_parallel, port=port,
                   source_ip=source_ip, probe=not no_probe, probe_timeout=probe_timeout, audit_path=audit_log,
                   on_result=finished, progress=progress)
    emit(result, render_table, document=summary_document, line=True, aside=render_table, junit=None if junit_xml is None
         else (junit_xml, lambda: junit_document([("azrdp sweep", junit_cases(result))], name="azrdp sweep")))
