"""Rendering results: text for people, JSON for scripts (always with schema_version).

Text is rendered from the same objects JSON is made of, so the two cannot disagree.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from azrdp.checks import SIDES, Check, Status

SCHEMA_VERSION = 1

SIDE_TITLES = {"azure": "Azure", "network": "Network", "wire": "Wire (RDP port)", "guest": "Guest (Windows)"}

_MARK = {Status.PASS: "ok  ", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.ERROR: "ERR ", Status.SKIP: "skip"}


def to_json(document: dict[str, Any]) -> str:
    """Serialise a result document; ``schema_version`` always comes first."""
    body = {"schema_version": SCHEMA_VERSION}
    body.update({k: v for k, v in document.items() if k != "schema_version"})
    return json.dumps(body, indent=2, default=_default, ensure_ascii=False)


def _default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def render_checks(checks: Iterable[Check], *, verbose: int = 0) -> str:
    """A compact checklist grouped by side; every check that did not pass shows its remedy."""
    by_side: dict[str, list[Check]] = {}
    for check in checks:
        by_side.setdefault(check.side, []).append(check)
    lines: list[str] = []
    for side in SIDES:
        if side not in by_side:
            continue
        lines.append(SIDE_TITLES[side])
        for check in by_side[side]:
            lines.append(f"  {_MARK[check.status]} {check.id:<18} {check.summary}")
            if check.remedy and check.status in (Status.FAIL, Status.ERROR, Status.WARN):
                lines.append(f"       {'':<18} -> {check.remedy}")
            if verbose and check.details:
                for key, value in check.details.items():
                    lines.append(f"       {'':<18}    {key}: {value}")
    return "\n".join(lines)
