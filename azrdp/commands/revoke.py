"""`azrdp revoke VM`: remove the temporary NSG rules `azrdp fix --allow-from` created (only those)."""

from __future__ import annotations

import click

from azrdp.cli import AzrdpCommand, settings, shared_options
from azrdp.commands.azure_options import AzureOptions, azure_options, vm_options


@click.command("revoke", cls=AzrdpCommand)
@vm_options
@azure_options
@click.option("--expired-only", is_flag=True, help="Remove only the rules whose expiry has passed.")
@click.option("--dry-run", is_flag=True, help="List the rules that would be removed; remove nothing.")
@click.option("--audit-log", type=click.Path(dir_okay=False), metavar="PATH",
              help="Append the removals here (default: the user's data directory, or AZRDP_AUDIT_LOG).")
@shared_options
def revoke_command(azure: AzureOptions, expired_only: bool, dry_run: bool, audit_log: str | None) -> None:
    """Remove every inbound rule azrdp created on the NSGs of this VM's NICs and subnets: rules
    named azrdp-allow-rdp-* whose description carries azrdp's marker. Other rules are never touched.

    \b
      azrdp revoke myvm -g myrg
      azrdp revoke myvm -g myrg --expired-only -o json

    \b
    Exit codes: 0 removed (or none to remove); 2 usage error; 3 sign-in or permission failure;
    4 VM not found; 5 a removal failed (the others were still removed).
    """
    from pathlib import Path

    from azrdp.audit import AuditLog, default_audit_path
    from azrdp.azure.nsg_rules import revoke
    from azrdp.report import to_json
    from azrdp.ui import Progress

    from azrdp.cli import emit

    target = azure.target()
    audit = AuditLog(None if dry_run else Path(audit_log) if audit_log else default_audit_path(),
                     context={"command": "revoke", "vm": str(target)})
    audit.open("--audit-log" if audit_log else "the audit log (set --audit-log or AZRDP_AUDIT_LOG)")
    progress = Progress()
    session = azure.session(target=target, progress=progress)
    result = revoke(session, target, audit=audit, progress=progress, expired_only=expired_only, dry_run=dry_run)
    ok = emit(to_json(result.to_dict()) if settings().output == "json" else result.render_text())
    click.get_current_context().exit(result.exit_code if ok else result.exit_code or 1)
