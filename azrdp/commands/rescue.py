"""`azrdp rescue VM`: repair Remote Desktop offline on a copy of the OS disk, through a rescue VM."""

from __future__ import annotations

import sys

import click

from azrdp.commands.azure_options import AzureOptions, azure_options, vm_options
from azrdp.commands.numbers import MAX_PROBE_TIMEOUT, MAX_WAIT, Number, parse_duration
from azrdp.emit import emit
from azrdp.errors import UsageError
from azrdp.options import AzrdpCommand, shared_options


@click.command("rescue", cls=AzrdpCommand)
@vm_options
@azure_options
@click.option("--yes", "-y", is_flag=True, help="Do it without asking (runbooks, pipelines).")
@click.option("--dry-run", is_flag=True, help="Show the plan (resources, cost); change nothing.")
@click.option("--resume", is_flag=True, help="Continue the last interrupted or failed rescue of this VM (from the audit log).")
@click.option("--undo", is_flag=True, help="Swap the VM's original OS disk back and delete the rescue group "
                                           "(from the audit log); the snapshot and the copy are kept.")
@click.option("--keep-rescue", is_flag=True, help="Keep the rescue VM's resource group at the end.")
@click.option("--force", is_flag=True, help="Rescue even though the VM agent is Ready (azrdp fix is usually the way).")
@click.option("--wait-timeout", default="15m", show_default=True, metavar="DURATION",
              help="How long to wait for an agent or for RDP to answer.")
@click.option("--timeout", "operation_timeout", default="30m", show_default=True, metavar="DURATION",
              help="How long to wait for one Azure operation (a disk copy, the rescue VM).")
@click.option("--port", type=int, default=3389, show_default=True, help="The RDP port.")
@click.option("--source-ip", metavar="IP", help="Your public address: NSG rules are evaluated for it.")
@click.option("--host", metavar="HOST[:PORT]", help="Verify RDP on this address instead of the VM's public IP.")
@click.option("--probe-timeout", type=Number(minimum=0.1, maximum=MAX_PROBE_TIMEOUT), default=5.0, show_default=True, metavar="SECONDS",
              help="Time limit for one wire probe.")
@click.option("--audit-log", type=click.Path(dir_okay=False), metavar="PATH",
              help="Append the change records here (default: the user's data directory, or AZRDP_AUDIT_LOG); "
                   "--resume and --undo read them from here.")
@shared_options
def rescue_command(azure: AzureOptions, yes: bool, dry_run: bool, resume: bool, undo: bool, keep_rescue: bool,
                   force: bool, wait_timeout: str, operation_timeout: str, port: int, source_ip: str | None,
                   host: str | None, probe_timeout: float, audit_log: str | None) -> None:
    """Repair Remote Desktop when Run Command cannot reach the guest (VM agent not Ready, Windows not
    at the logon screen): snapshot the OS disk (kept), copy it, attach the copy to a temporary rescue
    VM (own resource group, no public IP), repair the copy offline in ONE Run Command on the rescue
    VM, swap it in as the VM's OS disk (the VM is stopped for it), start, wait until RDP answers,
    re-diagnose, delete the rescue group.

    \b
    Nothing of yours is deleted: the original OS disk stays (unattached) and the snapshot stays;
    the report and the audit name every resource with how to remove it. Refused up front for
    BitLocker/ADE-encrypted and unmanaged OS disks. Takes about 10-30 minutes and a temporary VM.

    \b
      azrdp rescue myvm -g myrg                # shows the plan and asks
      azrdp rescue myvm -g myrg --yes -o json
      azrdp rescue myvm -g myrg --resume       # after Ctrl-C or a failure
      azrdp rescue myvm -g myrg --undo         # the original OS disk back

    \b
    Exit codes: 0 RDP answers (or undone); 1 refused, or RDP still does not answer; 2 usage error;
    3 sign-in or permission failure; 4 VM not found; 5 an Azure operation failed or timed out
    (--resume continues); 130 interrupted (the audit says what exists; --resume or --undo).
    """
    from pathlib import Path

    from azrdp.audit import AuditLog, default_audit_path, read_audit
    from azrdp.render.rescue import render_rescue, render_rescue_plan
    from azrdp.rescue import RescueOptions, rescue
    from azrdp.rescue import resume as resume_job
    from azrdp.rescue import undo as undo_job
    from azrdp.ui import Progress

    if resume and undo:
        raise UsageError("--resume and --undo exclude each other.", hint="Continue the rescue, or reverse it.")
    if dry_run and (resume or undo):
        raise UsageError("--dry-run shows a new rescue's plan; it does not combine with --resume or --undo.")
    if not (yes or dry_run or resume or undo) and not sys.stdin.isatty():
        raise UsageError("no terminal to confirm the plan in, and no --yes.",
                         hint="A runbook must say what it wants: add --yes to rescue, or --dry-run to see the plan.")
    options = RescueOptions(port=port, host=host, source_ip=source_ip, probe_timeout=probe_timeout,
                            wait_timeout=parse_duration(wait_timeout, "--wait-timeout", maximum=MAX_WAIT),
                            operation_timeout=parse_duration(operation_timeout, "--timeout", maximum=MAX_WAIT),
                            keep_rescue=keep_rescue, dry_run=dry_run, force=force)
    target = azure.target()
    progress = Progress()
    path = Path(audit_log) if audit_log else default_audit_path()
    records = read_audit(path) if (resume or undo) else []
    audit = AuditLog(None if dry_run else path, context={"command": "rescue", "vm": str(target)})

    def confirm(plan) -> bool:
        if yes:
            progress.info("Plan: " + ", ".join(step["phase"] for step in plan.steps))
            return True
        click.echo(render_rescue_plan(plan), err=True)
        try:
            return click.confirm("Go ahead?", default=False, err=True)
        except click.Abort as stop:
            if isinstance(stop.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            return False

    session = azure.session(target=target, progress=progress)
    if undo:
        result = undo_job(session, target, options, audit=audit, records=records, progress=progress)
    elif resume:
        result = resume_job(session, target, options, audit=audit, records=records, progress=progress)
    else:
        result = rescue(session, target, options, audit=audit, confirm=confirm, progress=progress)
    emit(result, render_rescue)
