"""The serial log's "Microsoft Azure VM Health Report" (boot.health): parsed as Microsoft's support
scripts read it, judged, and served by the emulator when SAC is off."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from azrdp.azure.healthreport import health_check, parse_health_report
from azrdp.checks import Status

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
HINT = "`azrdp rescue vm1 -g rg1` repairs the OS disk offline"


def log_with(*reports: dict, noise: str = "Windows Boot Manager\n") -> str:
    out = noise
    for report in reports:
        out += (f"======== Microsoft Azure VM Health Report - Start {report['reportTime']} ========\n"
                f"{json.dumps(report)}\n"
                f"======== Microsoft Azure VM Health Report - End {report['reportTime']} ========\n")
    return out


def report(at: datetime, *, rdp: bool = True, termservice: str = "Running", firewall: str = "Allowed", port: int = 3389):
    return {"reportTime": at.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
            "networkAdapters": [{"name": "Ethernet 2", "status": "Up"}],
            "services": [{"name": "TermService", "state": termservice}],
            "remoteAccess": {"windows": {"rdpEnabled": rdp, "rdpFirewallAccess": firewall, "rdpPort": port}}}


def test_the_newest_complete_report_is_read_and_judged():
    log = log_with(report(NOW - timedelta(hours=5)), report(NOW - timedelta(hours=1), rdp=False, termservice="Stopped"))
    facts = parse_health_report(log)
    assert facts["rdp_enabled"] is False and facts["termservice"] == "Stopped" and facts["rdp_port"] == 3389
    check = health_check(facts, now=NOW, rescue_hint=HINT)
    assert check.status is Status.FAIL and "Remote Desktop is disabled; TermService is Stopped" in check.summary
    assert "azrdp rescue vm1 -g rg1" in check.remedy and check.details["age_hours"] == 1.0


def test_a_stale_report_warns_and_a_healthy_one_passes():
    stale = health_check(parse_health_report(log_with(report(NOW - timedelta(days=3), firewall="Blocked"))),
                         now=NOW, rescue_hint=HINT)
    assert stale.status is Status.WARN and "Windows Firewall: RDP Blocked" in stale.summary
    ok = health_check(parse_health_report(log_with(report(NOW))), now=NOW, rescue_hint=HINT)
    assert ok.status is Status.PASS
    port = health_check(parse_health_report(log_with(report(NOW, port=3390))), now=NOW, rescue_hint=HINT)
    assert port.status is Status.WARN and "3390" in port.summary


def test_no_report_a_cut_report_and_hostile_text_are_harmless():
    assert parse_health_report("Windows Boot Manager\nSAC started\n") is None
    cut = "======== Microsoft Azure VM Health Report - Start x ========\n{\"reportTime\": \"2026-"
    assert parse_health_report(cut) is None
    assert health_check(None, now=NOW, rescue_hint=HINT).status is Status.SKIP
    evil = report(NOW)
    evil["services"] = [{"name": "TermService", "state": "\x1b[31mRunning\x1b]0;pwned\x07"}]
    facts = parse_health_report(log_with(evil))
    assert "\x1b" not in facts["termservice"] and "\x07" not in facts["termservice"]


def test_the_emulator_writes_the_report_only_without_sac_and_rescue_reads_it():
    from azrdp.audit import AuditLog
    from azrdp.emulator import Emulator
    from azrdp.rescue import RescueOptions, rescue
    from azrdp.target import Target
    from tests.support.rescue_support import session_for

    with Emulator.start("agent-not-ready", speed=5000.0, seed=11) as emu:
        dry = rescue(session_for(emu), Target("vm-web-01", "rg-azrdp-demo"), RescueOptions(
            source_ip=emu.state.client_ip, probe_timeout=0.5, dry_run=True), audit=AuditLog(None))
        assert dry.before.check("boot.health").status is Status.SKIP      # SAC on: no report
        emu.update(lambda backend: setattr(backend.all_vms()[0].guest, "sac_enabled", False))
        dry = rescue(session_for(emu), Target("vm-web-01", "rg-azrdp-demo"), RescueOptions(
            source_ip=emu.state.client_ip, probe_timeout=0.5, dry_run=True), audit=AuditLog(None))
        check = dry.before.check("boot.health")
        # the agent stopped after the boot 3 days ago: its last report is old, and RDP looked fine
        assert check.status is Status.PASS and check.details["age_hours"] >= 70
