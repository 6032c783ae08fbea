"""`azrdp demo` as a newcomer runs it: a subprocess, no Azure, no emulator of its own to point at."""

from __future__ import annotations

import pytest

from tests.support.e2e_support import finished


@pytest.mark.parametrize("e2e_case", ["demo"])
def test_demo_repairs_0x904_and_shows_before_and_after(e2e, e2e_case):
    outcome = finished(e2e, e2e_case, 0)
    out = outcome.stdout
    assert "scenario 0x904" in out and "nothing here reaches Azure" in out and "NSG rules see you as" in out
    assert "Before:" in out and "Before -> after:" in out
    assert "rdp.cert           FAIL -> ok" in out
    assert "machinekeys-acl    changed, needs a reboot  MachineKeys default ACL no -> yes" in out
    assert "free seats 0 -> 1 of 2" in out   # one seat is all RDP needs (review #8)
    assert "Azure: 1 repair Run Command(s), 1 diagnose Run Command(s), 1 restart(s)" in out
    assert "Verdict: verified" in out
    assert "Restarting VM rg-azrdp-demo/vm-web-01 through ARM" in outcome.stderr   # progress, on stderr


@pytest.mark.parametrize("e2e_case", ["demo-json"])
def test_demo_json_is_the_fix_result(e2e, e2e_case):
    outcome = finished(e2e, e2e_case, 0)
    doc = outcome.doc
    assert doc["schema_version"] == 1 and doc["verdict"] == "verified" and doc["exit_code"] == 0
    assert doc["demo"]["scenario"] == "rdp-disabled" and doc["demo"]["speed"] == 1000
    assert doc["counts"]["repair_run_commands"] == 1 and doc["counts"]["restarts"] == 0
    assert [c["id"] for c in doc["changes"]][:1] == ["rdp.tcp"]
    assert doc["audit"]["path"] is None and [r["action"] for r in doc["audit"]["records"]][-1] == "result"
    assert "azrdp demo: the real `azrdp fix`" in outcome.stderr   # what is simulated: stderr, stdout stays JSON


@pytest.mark.parametrize("e2e_case", ["demo-rescue"])
def test_demo_of_a_vm_run_command_cannot_reach_ends_with_rdp_answering_through_rescue(e2e, e2e_case):
    outcome = finished(e2e, e2e_case, 0)
    doc = outcome.doc
    assert doc["verdict"] == "verified" and doc["demo"]["command"] == "rescue"
    assert doc["verification"]["ok"] and doc["verification"]["agent_ready"]
    original = doc["state"]["original_disk"]["name"]
    assert f"the original OS disk {original} is kept" in doc["summary"]
    assert any(r["name"] == original and "az disk delete" in r["remove"] for r in doc["resources"])
    assert "azrdp demo: the real `azrdp rescue`" in outcome.stderr
