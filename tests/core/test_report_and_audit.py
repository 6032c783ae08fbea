import json
import xml.etree.ElementTree as ET

from azrdp.audit import AuditLog, default_audit_path, read_audit
from azrdp.checks import Check, Status, verdict
from azrdp.clock import ManualClock
from azrdp.report import junit_xml, render_checks, to_json

CHECKS = [
    Check("vm.power", Status.PASS, "VM is running"),
    Check("nsg.nic", Status.FAIL, "rule DenyRDP (100, Deny) blocks TCP 3389", remedy="use --allow-from"),
    Check("rdp.tls", Status.SKIP, "not reached"),
    Check("guest.events", Status.WARN, "3 certificate errors in 24 h"),
    Check("rdp.cert", Status.ERROR, "could not read certificate"),
]


def test_verdict_is_the_worst_status_skip_never_decides():
    assert verdict(CHECKS) is Status.FAIL
    assert verdict([Check("rdp.tls", Status.SKIP, "x")]) is Status.PASS
    assert verdict([Check("vm.power", Status.PASS, "x"), Check("guest.events", Status.WARN, "y")]) is Status.WARN


def test_json_has_schema_version_first():
    doc = json.loads(to_json({"checks": CHECKS[:1], "schema_version": 99}))
    assert list(doc)[0] == "schema_version" and doc["schema_version"] == 1
    assert doc["checks"][0] == {"id": "vm.power", "side": "azure", "status": "pass", "summary": "VM is running",
                                "details": {}, "remedy": None}


def test_text_groups_by_side_and_shows_remedies():
    text = render_checks(CHECKS)
    assert text.splitlines()[0] == "Azure"
    assert "FAIL nsg.nic" in text and "-> use --allow-from" in text
    assert text.index("Network") < text.index("Wire (RDP port)") < text.index("Guest (Windows)")


def test_junit_counts_and_elements():
    root = ET.fromstring(junit_xml([("before", CHECKS), ("after", CHECKS[:1])]))
    assert root.get("tests") == "6" and root.get("failures") == "1" and root.get("errors") == "1"
    assert root.get("skipped") == "1"
    before = root.find("testsuite[@name='before']")
    case = before.find("testcase[@name='nsg.nic']")
    assert case.get("classname") == "before.network"
    assert case.find("failure").text == "rule DenyRDP (100, Deny) blocks TCP 3389\nRemedy: use --allow-from"


def test_audit_appends_json_lines_as_it_goes(tmp_path):
    path = tmp_path / "sub" / "audit.jsonl"
    log = AuditLog(path, context={"vm": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"},
                   clock=ManualClock())
    log.record("restart", result="succeeded")
    assert read_audit(path) == [{"time": "2026-01-01T00:00:00+00:00", "action": "restart",
                                 "vm": log.context["vm"], "result": "succeeded"}]
    log.record("nsg.rule.create", rule="azrdp-allow-rdp-20260101T000000Z")
    assert [r["action"] for r in read_audit(path)] == ["restart", "nsg.rule.create"]
    assert log.records == read_audit(path)


def test_default_audit_path_per_platform():
    assert default_audit_path({"HOME": "/h"}, "linux").as_posix() == "/h/.local/share/azrdp/audit.jsonl"
    assert default_audit_path({"HOME": "/h", "XDG_DATA_HOME": "/x"}, "linux").as_posix() == "/x/azrdp/audit.jsonl"
    assert default_audit_path({"HOME": "/h"}, "darwin").as_posix() == "/h/Library/Application Support/azrdp/audit.jsonl"
    assert default_audit_path({"HOME": "/h", "AZRDP_AUDIT_LOG": "/a.jsonl"}, "linux").as_posix() == "/a.jsonl"
