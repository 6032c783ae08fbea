"""Windows Firewall as Windows judges it (review #11): an enabled Block rule for the RDP port beats
every Allow rule, and a rule only applies in its profiles. Through the real `azrdp diagnose` CLI."""

from __future__ import annotations

from azrdp.emulator.guest import FirewallRule
from tests.support.emulator_support import checks, diagnose


def test_a_block_rule_beats_the_allow_rules_and_no_step_is_planned_that_cannot_fix_it(start_emulator, monkeypatch):
    emu = start_emulator()
    emu.update(lambda backend: emu.guest().firewall_rules.append(
        FirewallRule("Hardening-Block-RDP", port=emu.guest().port, group="", action="Block")))
    code, doc = diagnose(emu, monkeypatch)
    found = checks(doc)
    assert code == 1 and found["rdp.tcp"]["status"] == "fail"
    fw = found["guest.firewall"]
    assert fw["status"] == "fail" and "Block rule" in fw["summary"] and fw["details"]["blocked"] is True
    assert fw["details"]["port_allowed"] is False


def test_an_allow_rule_for_another_profile_does_not_let_rdp_in(start_emulator, monkeypatch):
    emu = start_emulator()

    def domain_only(backend):
        for rule in emu.guest().firewall_rules:
            rule.profile = "Domain"
    emu.update(domain_only)
    code, doc = diagnose(emu, monkeypatch)
    fw = checks(doc)["guest.firewall"]
    assert code == 1 and fw["status"] == "fail" and fw["details"]["port_allowed"] is False
    assert fw["details"]["blocked"] is False
