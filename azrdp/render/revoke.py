"""`azrdp revoke`: what was (or would be) removed, what was kept and why, what failed."""

from __future__ import annotations

from azrdp.azure.nsg_rules import TIME_FORMAT
from azrdp.logsafe import printable
from azrdp.revoke import RevokeResult


def render_revoke(result: RevokeResult, *, verbose: int = 0) -> str:
    """What `azrdp revoke` prints: what was (or would be) removed, kept and why, what failed."""
    where = f"in {result.vm}" if result.scope else f"on the NSGs of VM {result.vm}"
    if not result.found and not result.others:
        return f"No azrdp rules {where}: nothing to remove."
    verb = "Would remove" if result.dry_run else "Removed"
    lines = [f"{verb} {len(result.removed)} of {len(result.found)} azrdp rule(s) {where}:"]
    for rule in result.removed:
        lines.append(f"  {rule.name} on {rule.nsg_name} (from {rule.source}, priority {rule.priority})")
    for rule in result.kept:
        lines.append(f"  kept {rule.name} on {rule.nsg_name}: " + (f"not expired (until {rule.expires:{TIME_FORMAT}})"
                                                                  if rule.expires else "its description gives no expiry"))
    for rule in result.others:
        lines.append(f"  kept {rule.name} on {rule.nsg_name}: made for VM {rule.vm or '(not named)'} "
                     "(--all removes every azrdp rule on these NSGs)")
    for rule, error in result.failed:
        lines.append(f"  FAILED {rule.name} on {rule.nsg_name}: {error}")
    if result.audit_error:
        lines.append(f"Audit: FAILED: {result.audit_error}")
    return "\n".join(printable(line) for line in lines)
