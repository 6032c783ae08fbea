"""`azrdp diagnose`: the compact checklist of one Diagnosis."""

from __future__ import annotations

from azrdp.diagnose import Diagnosis
from azrdp.report import render_checks


def render_diagnosis(diagnosis: Diagnosis, *, verbose: int = 0) -> str:
    """The compact checklist: a VM line, checks grouped by side with remedies, the verdict."""
    vm = diagnosis.vm
    facts = ", ".join(str(v) for v in (vm.get("os_type"), vm.get("power_state"), vm.get("location"),
                                        vm.get("size")) if v)
    lines = [f"VM {vm['name']} in {vm['resource_group']} (subscription {vm['subscription']}): {facts}",
             render_checks(diagnosis.checks, verbose=verbose)]
    if diagnosis.screenshot is not None:
        shot = diagnosis.screenshot
        lines.append(f"Screenshot: saved to {shot['path']}" if shot.get("path")
                     else f"Screenshot: not saved: {shot['error']}")
    lines.append(f"Verdict: {diagnosis.verdict.value}: {diagnosis.summary()}")
    return "\n".join(lines)
