"""RD Licensing and drain mode (review #20): the wire probe passes while users are refused, so
only the guest can say why. Through the real `azrdp diagnose` CLI against the emulator."""

from __future__ import annotations

import pytest

from azrdp.checks import Status
from azrdp.guest.checks import check_drain, check_licensing
from tests.support.emulator_support import checks, diagnose


def test_an_rd_session_host_past_its_grace_period_fails_guest_licensing_while_the_wire_passes(start_emulator, monkeypatch):
    emu = start_emulator("licensing-expired")
    code, doc = diagnose(emu, monkeypatch)
    found = checks(doc)
    assert code == 1
    assert found["rdp.tls"]["status"] == "pass" and found["rdp.cert"]["status"] == "pass"
    assert found["guest.licensing"]["status"] == "fail"
    assert "grace period is over" in found["guest.licensing"]["summary"]
    assert "No azrdp step changes licensing" in found["guest.licensing"]["remedy"]
    assert found["guest.drain"]["status"] == "pass"


def test_a_healthy_server_passes_both(start_emulator, monkeypatch):
    code, doc = diagnose(start_emulator(), monkeypatch)
    found = checks(doc)
    assert code == 0 and found["guest.licensing"]["status"] == "pass" and found["guest.drain"]["status"] == "pass"


def test_drain_mode_is_reported(start_emulator, monkeypatch):
    emu = start_emulator()
    emu.update(lambda backend: emu.guest().registry.__setitem__("TSServerDrainMode", 1))
    code, doc = diagnose(emu, monkeypatch)
    drain = checks(doc)["guest.drain"]
    assert code == 1 and drain["status"] == "fail" and "change logon /enable" in drain["remedy"]


@pytest.mark.parametrize("rds, mode, status", [
    ({"lic_mode": 5, "grace_days": 0, "drain": None}, "rdsh", Status.FAIL),
    ({"lic_mode": 5, "grace_days": 9, "drain": None}, "rdsh", Status.WARN),
    ({"lic_mode": 5, "grace_days": 90, "drain": None}, "rdsh", Status.WARN),
    ({"lic_mode": 4, "grace_days": 0, "drain": None}, "rdsh", Status.PASS),
    ({"lic_mode": 5, "grace_days": None, "drain": None}, "admin", Status.PASS),
])
def test_licensing_verdicts(rds, mode, status):
    assert check_licensing({"rds": rds, "sessions": {"server_mode": mode}}).status is status


def test_an_unreadable_rds_section_is_an_error_not_a_pass():
    result = {"rds": None, "errors": [{"section": "rds", "message": "Invalid namespace"}]}
    assert check_licensing(result).status is Status.ERROR and check_drain(result).status is Status.ERROR
