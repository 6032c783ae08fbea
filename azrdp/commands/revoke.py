"""`azrdp revoke VM`: remove the temporary NSG rules `azrdp fix --allow-from` made for this VM
(only those); `azrdp revoke --expired -g RG` removes every expired azrdp rule in a scope."""

from __future__ import annotations

import click

from azrdp.cli import AzrdpCommand, emit, settings, shared_options
from azrdp.commands.azure_options import AzureOptions, azure_options, vm_options
from azrdp.errors import UsageError


@click.command("revoke", cls=AzrdpCommand)
@vm_options
@azure_options
@click.option("--expired", "--expired-only", "expired", is_flag=True,
              help="Remove only the rules whose expiry has passed. Without a VM: every expired azrdp rule on "
                   "every NSG of -g RG, or of the whole subscription (for an Automation schedule).")
@click.option("--all", "every_vm", is_flag=True,
              help="Also the azrdp rules on these NSGs made for other VMs (a shared subnet NSG); they are listed.")
@click.option("--dry-run", is_flag=True, help="List the rules that would be removed; remove nothing.")
@click.option("--audit-log", type=click.Path(dir_okay=False), metavar="PATH",
              help="Append the removals here (default: the user's data directory, or AZRDP_AUDIT_LOG).")
@shared_options
def revoke_command(azure: AzureOptions, expired: bool, every_vm: bool, dry_run: bool, audit_log: str | None) -> None:
    """Remove the inbound rules azrdp made for this VM on the NSGs of its NICs and subnets: rules
    named azrdp-allow-rdp-* whose description carries azrdp's marker and names this VM (and whose
    destination is its private address). Rules made for other VMs on a shared NSG are kept unless
    --all; rules named like azrdp's but wider than azrdp makes are never touched (diagnose flags
    them). Other rules are never touched.

    \b
      azrdp revoke myvm -g myrg
      azrdp revoke myvm -g myrg --expired -o json
      azrdp revoke --expired -g myrg            # every expired azrdp rule in the resource group
      azrdp revoke --expired                    # ... in the whole subscription

    \b
    Exit codes: 0 removed (or none to remove); 1 the audit log could not be written (nothing more was
    removed); 2 usage error; 3 sign-in or permission failure; 4 VM not found; 5 a removal failed
    (the others were still removed); 130 interrupted (143 SIGTERM).
    """
    from pathlib import Path

    from azrdp.audit import AuditLog, default_audit_path
    from azrdp.report import to_json
    from azrdp.revoke import render_text, revoke, revoke_expired
    from azrdp.ui import Progress

    scope = azure.vm is None and azure.ids is None
    if scope and not expired:
        raise UsageError("revoke needs a VM, or --expired to remove the expired azrdp rules of a resource group or "
                         "subscription.", hint="Use `azrdp revoke VM -g RG` or `azrdp revoke --expired [-g RG]`.")
    if scope and every_vm:
        raise UsageError("--all applies to the NSGs of one VM.", hint="Name the VM, or drop --all.")
    target = None if scope else azure.target()
    where = f"scope {azure.resource_group or 'subscription'}" if scope else str(target)
    audit = AuditLog(None if dry_run else Path(audit_log) if audit_log else default_audit_path(),
                     context={"command": "revoke", ("scope" if scope else "vm"): where})
    audit.open("--audit-log" if audit_log else "the audit log (set --audit-log or AZRDP_AUDIT_LOG)")
    progress = Progress()
    session = azure.session(target=target, progress=progress)
    if scope:
        result = revoke_expired(session, audit=audit, resource_group=azure.resource_group, progress=progress,
                                dry_run=dry_run)
    else:
        assert target is not None   # a VM was named: azure.target() above
        result = revoke(session, target, audit=audit, progress=progress, expired_only=expired, dry_run=dry_run,
                        every_vm=every_vm)
    ok = emit(to_json(result.to_dict()) if settings().output == "json" else render_text(result))
    click.get_current_context().exit(result.exit_code if ok else result.exit_code or 1)
