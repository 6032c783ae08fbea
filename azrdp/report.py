"""Rendering results: text for people, JSON for scripts (always with schema_version).

Text is rendered from the same objects JSON is made of, so the two cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from azrdp.checks import SIDES, Check, Status
from azrdp.logsafe import printable, terminal_safe

SCHEMA_VERSION = 1

SIDE_TITLES = {"azure": "Azure", "network": "Network", "wire": "Wire (RDP port)", "guest": "Guest (Windows)"}

_MARK = {Status.PASS: "ok  ", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.ERROR: "ERR ", Status.SKIP: "skip"}


def to_json(document: dict[str, Any], *, line: bool = False) -> str:
    """Serialise a result document; ``schema_version`` always comes first. ``line``: on one line
    (one object of a JSON-lines stream, e.g. sweep's per-VM lines)."""
    body = {"schema_version": SCHEMA_VERSION}
    body.update({k: v for k, v in document.items() if k != "schema_version"})
    return json.dumps(body, indent=None if line else 2, default=_default, ensure_ascii=False)


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
            lines.append(f"  {_MARK[check.status]} {check.id:<18} {printable(check.summary)}")
            if check.remedy and check.status in (Status.FAIL, Status.ERROR, Status.WARN):
                lines.append(f"       {'':<18} -> {printable(check.remedy)}")
            if verbose and check.details:
                for key, value in check.details.items():
                    lines.append(f"       {'':<18}    {printable(key)}: {printable(value)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class JUnitCase:
    """One <testcase>: fail -> <failure>, error -> <error>, skip -> <skipped>; pass and warn pass
    and carry ``text`` in <system-out>."""

    classname: str
    name: str
    status: Status
    message: str
    text: str = ""
    seconds: float | None = None


def junit_document(suites: Iterable[tuple[str, Iterable[JUnitCase]]], *, name: str = "azrdp") -> str:
    """JUnit XML a CI system can read: one <testsuite> per (name, cases) pair."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name=name)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite_name, cases in suites:
        cases = list(cases)
        suite = ET.SubElement(root, "testsuite", name=printable(suite_name))
        counts = {"tests": len(cases), "failures": 0, "errors": 0, "skipped": 0}
        for item in cases:   # XML 1.0 cannot hold control characters at all: untrusted text is escaped
            item = JUnitCase(printable(item.classname), printable(item.name), item.status, printable(item.message),
                             terminal_safe(item.text), item.seconds)
            case = ET.SubElement(suite, "testcase", classname=item.classname, name=item.name)
            if item.seconds is not None:
                case.set("time", f"{item.seconds:.3f}")
            if item.status is Status.FAIL:
                ET.SubElement(case, "failure", message=item.message, type="fail").text = item.text
                counts["failures"] += 1
            elif item.status is Status.ERROR:
                ET.SubElement(case, "error", message=item.message, type="error").text = item.text
                counts["errors"] += 1
            elif item.status is Status.SKIP:
                ET.SubElement(case, "skipped", message=item.message)
                counts["skipped"] += 1
            else:
                ET.SubElement(case, "system-out").text = item.text
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def junit_xml(suites: Iterable[tuple[str, Iterable[Check]]], *, name: str = "azrdp") -> str:
    """JUnit XML with one <testsuite> per (name, checks) pair and one <testcase> per check;
    warnings pass and carry their summary in <system-out>."""
    def case(suite_name: str, check: Check) -> JUnitCase:
        if check.status in (Status.FAIL, Status.ERROR):
            text = check.summary + (f"\nRemedy: {check.remedy}" if check.remedy else "")
        else:
            text = f"{check.status.value}: {check.summary}"
        return JUnitCase(f"{suite_name}.{check.side}", check.id, check.status, check.summary, text)

    return junit_document([(suite_name, [case(suite_name, c) for c in checks]) for suite_name, checks in suites],
                          name=name)
