"""Triage from boot diagnostics: the "Microsoft Azure VM Health Report" in the serial log.

Windows VMs in Azure write a health report to the serial port (COM1) when the Special
Administrative Console is not enabled: a line ``======== Microsoft Azure VM Health Report - Start
<time> ========``, one line of JSON, and a matching ``- End`` line (MicrosoftDocs/SupportArticles
"serial console shows VM health information but does not respond"; Azure/azure-support-scripts
``Get-AzureRmVMHealth.ps1`` reads the JSON line next to the marker). The fields azrdp reads are the
ones Microsoft's own support script (azure-support-scripts, ``Get-VMHealth``) reads from the same
report: ``reportTime``, ``services[]`` (``name``, ``state``) and ``remoteAccess.windows``
(``rdpEnabled``, ``rdpFirewallAccess``, ``rdpPort``). The report comes from inside the guest, so it
can be stale: its ``reportTime`` is shown, and an old report is a warning, not a verdict.

The serial log is fetched through the SAS URI ``retrieveBootDiagnosticsData`` hands out (never
printed or logged); its text is untrusted guest output: only the parsed, typed fields reach a
report, each bounded and stripped of control characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from azrdp.checks import Check, Status

if TYPE_CHECKING:
    from azrdp.azure.vm import Session

START = re.compile(r"=+\s*Microsoft Azure VM Health Report - Start\b[^\n]*")
END = re.compile(r"=+\s*Microsoft Azure VM Health Report - End\b")
MAX_LOG_BYTES = 4 * 1024 * 1024
STALE_HOURS = 24.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _text(value: Any, limit: int = 64) -> str | None:
    if value is None:
        return None
    return _CONTROL.sub("?", str(value))[:limit]


def parse_health_report(log: str) -> dict[str, Any] | None:
    """The newest complete health report in a serial log, as plain typed facts; None when absent."""
    found = None
    for start in START.finditer(log):
        rest = log[start.end():]
        end = END.search(rest)
        body = (rest[:end.start()] if end else rest).strip().splitlines()
        if not body:
            continue
        try:
            data = json.loads(body[0])
        except ValueError:
            continue
        if isinstance(data, dict):
            found = data
    if found is None:
        return None
    windows = ((found.get("remoteAccess") or {}).get("windows") or {}) if isinstance(found.get("remoteAccess"), dict) else {}
    services = {}
    for item in found.get("services") or []:
        if isinstance(item, dict) and item.get("name"):
            services[_text(item["name"], 40)] = _text(item.get("state"), 20)
    port = windows.get("rdpPort")
    return {
        "report_time": _text(found.get("reportTime"), 40),
        "rdp_enabled": windows.get("rdpEnabled") if isinstance(windows.get("rdpEnabled"), bool) else None,
        "rdp_firewall_access": _text(windows.get("rdpFirewallAccess"), 20),
        "rdp_port": port if isinstance(port, int) and not isinstance(port, bool) else None,
        "termservice": services.get("TermService"),
    }


def _age_hours(report_time: str | None, now: datetime) -> float | None:
    if not report_time:
        return None
    try:
        moment = datetime.fromisoformat(report_time.replace("Z", "+00:00")[:32])
    except ValueError:
        match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z?$", report_time)
        if not match:
            return None
        moment = datetime.fromisoformat(match.group(1) + "+00:00")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (now - moment).total_seconds() / 3600)


def health_check(report: dict[str, Any] | None, *, now: datetime, rescue_hint: str, error: str | None = None) -> Check:
    """``boot.health``: what the guest's own health report says about Remote Desktop."""
    if error is not None:
        return Check("boot.health", Status.SKIP, f"serial log not read: {error}", {})
    if report is None:
        return Check("boot.health", Status.SKIP, "no Microsoft Azure VM Health Report in the serial log", {})
    facts = dict(report)
    age = _age_hours(report["report_time"], now)
    facts["age_hours"] = round(age, 1) if age is not None else None
    problems = []
    if report["rdp_enabled"] is False:
        problems.append("Remote Desktop is disabled")
    if report["termservice"] not in (None, "Running"):
        problems.append(f"TermService is {report['termservice']}")
    if report["rdp_firewall_access"] not in (None, "Allowed"):
        problems.append(f"Windows Firewall: RDP {report['rdp_firewall_access']}")
    when = f" (reported {report['report_time']})" if report["report_time"] else ""
    if problems:
        stale = age is not None and age > STALE_HOURS
        return Check("boot.health", Status.WARN if stale else Status.FAIL,
                     f"the guest's health report says: {'; '.join(problems)}{when}", facts,
                     f"When Run Command cannot reach the guest, {rescue_hint}.")
    if report["rdp_port"] not in (None, 3389):
        return Check("boot.health", Status.WARN, f"the guest's health report says RDP listens on port "
                     f"{report['rdp_port']}{when}", facts, "Probe that port (--port), or set it back to 3389.")
    return Check("boot.health", Status.PASS, f"the guest's health report shows Remote Desktop enabled and running{when}",
                 facts)


def read_serial_log(session: Session, resource_group: str, vm_name: str, *, fetch: Callable[[str], bytes] | None = None) -> str:
    """The serial log's text (at most MAX_LOG_BYTES, decoded leniently)."""
    from azrdp.azure.screenshot import boot_diagnostics_blob

    data = boot_diagnostics_blob(session, resource_group, vm_name, uri_attribute="serial_console_log_blob_uri",
                                 what="the serial log", missing="Azure returned no serial log for this VM.",
                                 fetch=fetch)
    return data[-MAX_LOG_BYTES:].decode("utf-8", errors="replace")
