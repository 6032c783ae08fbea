"""Lines every job's text ends with (azrdp.job.JobResult: fix and rescue alike)."""

from __future__ import annotations

from typing import Any


def audit_line(result: Any, *, records: int | None = None) -> str | None:
    """Where the audit went, or that it could not be written (the records are then only in the
    report); None when the job kept no audit file. ``records``: how many were written, when known."""
    if result.audit_error:
        return (f"Audit: FAILED to write {result.audit_path}: {result.audit_error}; the records are only in "
                "this report (-o json keeps them all)")
    if result.audit_path:
        return f"Audit: {result.audit_path}" + (f" ({records} records)" if records is not None else "")
    return None
