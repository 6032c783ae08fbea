"""`azrdp check`: PASS or FAIL with its reason, the checks that tell why, the notes."""

from __future__ import annotations

from azrdp.report import render_checks
from azrdp.smoke import SmokeResult


def render_check(result: SmokeResult, *, verbose: int = 0) -> str:
    return "\n".join([f"VM {result.target}: {'PASS' if result.ok else 'FAIL'}: {result.summary()}",
                      render_checks(result.checks, verbose=verbose),
                      *(f"Note: {note}" for note in result.notes)])
