"""`azrdp sweep`: a line per VM as it finishes, the summary table, the JSON lines, the JUnit cases."""

from __future__ import annotations

from typing import Any

from azrdp.checks import Status
from azrdp.logsafe import printable
from azrdp.report import JUnitCase, render_checks
from azrdp.sweep import SweepResult, VmResult


def render_line(result: VmResult) -> str:
    """One line per VM as it finishes (progress in text mode)."""
    return f"{result.vm.name} ({result.vm.resource_group}): {result.outcome}: {result.summary}"


def render_table(result: SweepResult, *, verbose: int = 0) -> str:
    """The summary table: one row per VM (worst first), then the tally and ARM's throttling."""
    # one row per VM: a summary quotes guest, ARM and certificate text, whose newlines must not make rows
    rows = [tuple(printable(cell) for cell in (r.vm.name, r.vm.resource_group, r.outcome, f"{r.seconds:.1f}", r.summary))
            for r in result.sorted_results()]
    header = ("VM", "RESOURCE GROUP", "OUTCOME", "SECONDS", "SUMMARY")
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(4)]
    lines = ["  ".join(h.ljust(w) if i != 3 else h.rjust(w) for i, (h, w) in enumerate(zip(header[:4], widths, strict=False)))
             + "  " + header[4]]
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i != 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row[:4], widths, strict=False)))
                     + "  " + row[4])
    counts = result.counts()
    tally = ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)
    throttled = result.throttling
    lines.append(f"{len(result.results)} VM{'s' if len(result.results) != 1 else ''} in {result.seconds:.1f} s: "
                 f"{tally}. ARM throttling: {throttled.get('throttled', 0)} x 429, "
                 f"{throttled.get('paused_seconds', 0):g} s paused.")
    return "\n".join(lines)


def junit_cases(result: SweepResult) -> list[Any]:
    """One JUnit testcase per VM (azrdp.report.junit_document renders them)."""
    cases = []
    for r in result.sorted_results():
        status = Status.PASS if r.ok else Status.ERROR if r.outcome == "error" else Status.FAIL
        text = render_checks(r.checks) if r.checks else ""
        if r.repair:
            text += f"\nRepair: {r.repair.get('summary', '')}"
        cases.append(JUnitCase(classname=f"azrdp.sweep.{r.vm.subscription}.{r.vm.resource_group}", name=r.vm.name,
                               status=status, message=f"{r.outcome}: {r.summary}", text=text.strip(),
                               seconds=r.seconds))
    return cases


def vm_document(result: VmResult) -> dict[str, Any]:
    """One VM's line of the -o json stream."""
    return {"type": "vm", **result.to_dict()}


def summary_document(result: SweepResult) -> dict[str, Any]:
    """The stream's last line: the sweep without its per-VM results (each had its own line)."""
    return {"type": "summary", **{k: v for k, v in result.to_dict().items() if k != "results"}}
