"""How the payloads read Windows, against a simulated guest that stores things the way Windows
does (desk review of the payloads, findings 3, 4, 5, 7): through the real `azrdp diagnose` and
`azrdp fix` CLIs, and the repair payload through the real SDK."""

from __future__ import annotations

from tests.support.emulator_support import checks, cli_json, diagnose, payload_answer, session_for


def fix(emu, monkeypatch) -> tuple[int, dict]:
    return cli_json(emu, monkeypatch, "fix", "--yes", "--wait-timeout", "5s", "--guest-first")


# -- finding 3 (review #17): a binding that is not a 20-byte REG_BINARY ----------------------------

def test_a_thumbprint_stored_as_text_is_reported_as_a_malformed_binding(start_emulator, monkeypatch):
    emu = start_emulator("binding-as-text")
    code, doc = diagnose(emu, monkeypatch)
    cert = checks(doc)["guest.cert"]
    assert code == 1 and cert["status"] == "fail"
    assert cert["details"]["bound"] == "MALFORMED" and cert["details"]["bound_cert"] is None
    assert "not a 20-byte binary thumbprint" in cert["summary"] and "`cert`" in cert["remedy"]


def test_the_cert_step_saves_the_malformed_binding_and_clears_it(start_emulator, fake_credential):
    emu = start_emulator("binding-as-text")
    result = payload_answer(session_for(emu, fake_credential), "repair", {"Steps": ["cert"]})
    step = result["steps"][0]
    assert step["before"]["bound"] == "MALFORMED" and step["after"]["bound"] is None
    assert step["status"] == "changed" and step["info"]["cleared_binding"] is True
    assert step["info"]["restarted"] == ["SessionEnv", "TermService"]
    guest = emu.guest()
    assert guest.bound_thumbprint is None and guest.binding() is None and guest.tls_usable()
    assert any("SSLCertificateSHA1Hash.txt" in files for files in guest.backup_folders.values())


def test_fix_repairs_a_binding_stored_as_text(start_emulator, monkeypatch):
    emu = start_emulator("binding-as-text")
    code, doc = fix(emu, monkeypatch)
    assert code == 0, doc.get("summary")
    assert [step["name"] for step in doc["plan"]["steps"]] == ["cert"]
    step = doc["repair"]["result"]["steps"][0]
    assert step["before"]["bound"] == "MALFORMED" and step["after"]["bound"] is None
    assert step["after"]["current"] is not None and step["info"]["cleared_binding"] is True


# -- finding 4 (review #18): a MachineKeys folder SYSTEM cannot list -------------------------------

def test_an_unlistable_machinekeys_folder_is_still_reported_and_the_acl_step_planned(start_emulator, monkeypatch):
    # The old diagnose listed the folder in the same expression as the SDDL: the whole machinekeys
    # section was lost (null), and plan.py planned no machinekeys-acl in the worst ACL break.
    emu = start_emulator("machinekeys-unlistable")
    code, doc = diagnose(emu, monkeypatch)
    keys = checks(doc)["guest.machinekeys"]
    assert code == 1 and keys["status"] == "fail"
    assert keys["details"]["files"] is None and keys["details"]["default"] is False
    assert keys["details"]["sddl"].startswith("O:SYG:SYD:PAI(A;;FA;;;S-1-5-21-")
    assert keys["details"]["rdp_key"]["present"] is True   # reached by its name, not by listing
    assert "SYSTEM cannot list the MachineKeys folder" in keys["summary"] and "`machinekeys-acl`" in keys["remedy"]


def test_the_acl_step_on_an_unlistable_folder_adds_one_list_ace_first_then_repairs(start_emulator, fake_credential):
    # Finding 4, repair side (review #18): the step used to fail here ("Access to the path ... is
    # denied": Save-MachineKeysAcl lists the folder), in exactly the worst ACL break. Now SYSTEM
    # gets one non-inheritable list ACE first (saved and its undo written before), then the usual
    # backup, explicit ACEs and default DACL.
    emu = start_emulator("machinekeys-unlistable")
    result = payload_answer(session_for(emu, fake_credential), "repair", {"Steps": ["machinekeys-acl"]})
    step = result["steps"][0]
    assert step["before"]["files"] is None and step["status"] == "changed" and step["error"] is None
    assert step["info"]["actions"] == ["acl:list", "acl:folder-default", "acl:rdp-key"]
    assert step["after"]["files"] is not None and step["after"]["default"] and step["reboot_required"]
    keys = emu.guest().machinekeys
    assert keys.default and keys.listable and keys.rdp_key.network_service_read
    folder = next(iter(emu.guest().backup_folders.values()))
    assert {"machinekeys.folder.sddl.txt", "undo.txt", "machinekeys.acl"} <= set(folder)


# -- finding 7 (review #2, the rest): no session query into a TermService that is not running ------

def test_sessions_are_not_queried_while_termservice_is_stopped(start_emulator, monkeypatch):
    # WTSEnumerateSessions and quser are RPC to TermService: the old payload called them anyway
    # (a hung TermService could block the payload before any step). Now the table is empty.
    emu = start_emulator()

    def stopped(backend):
        emu.guest().add_session("opsadmin", "Disc", idle_min=600)
        emu.guest().services["TermService"].state = "Stopped"
    emu.update(stopped)
    code, doc = diagnose(emu, monkeypatch)
    found = checks(doc)
    assert code == 1 and found["guest.termservice"]["status"] == "fail"
    assert found["guest.sessions"]["details"]["total"] == 0 and found["guest.sessions"]["details"]["list"] == []
    assert found["guest.listener"]["details"]["state"] is None


# -- finding 5 (review #11, the rest): the firewall section keeps MpsSvc's state -------------------

def test_when_the_firewall_rules_cannot_be_read_the_service_state_still_stands(start_emulator, monkeypatch):
    # The old Read-Firewall read everything in one try: a refused NetSecurity query lost the whole
    # section, MpsSvc's state included; and plan.py read a missing port_allowed as "no rule allows".
    emu = start_emulator()
    emu.update(lambda backend: setattr(emu.guest(), "firewall_readable", False))
    code, doc = diagnose(emu, monkeypatch)
    fw = checks(doc)["guest.firewall"]
    assert fw["status"] == "error" and fw["details"]["service"] == "Running"
    assert fw["details"]["port_allowed"] is None and "could not read the firewall rules" in fw["summary"]


def test_a_block_rule_scoped_to_other_addresses_does_not_count_as_blocking_rdp(start_emulator, monkeypatch):
    # Review #11 remote-address scope: the old analysis counted any Block rule for the port, so a
    # hardening rule against one bad range read as "a Block rule beats every Allow" (and its remedy
    # said to disable it) while the admin connected fine.
    from azrdp.emulator.guest import FirewallRule

    emu = start_emulator()
    emu.update(lambda backend: emu.guest().firewall_rules.append(
        FirewallRule("Block-Bad-Range", port=emu.guest().port, group="", action="Block", remote="198.51.100.0/24")))
    code, doc = diagnose(emu, monkeypatch)
    found = checks(doc)
    assert code == 0 and found["rdp.tcp"]["status"] == "pass"
    fw = found["guest.firewall"]
    assert fw["status"] == "pass" and fw["details"]["blocked"] is False and fw["details"]["port_allowed"] is True


def test_a_block_rule_scoped_to_the_callers_address_drops_rdp_on_the_wire(start_emulator, monkeypatch):
    # What the guest cannot judge (it does not know the caller's address) the wire shows.
    from azrdp.emulator.guest import FirewallRule

    emu = start_emulator()
    emu.update(lambda backend: emu.guest().firewall_rules.append(
        FirewallRule("Block-Admin", port=emu.guest().port, group="", action="Block", remote="203.0.113.0/24")))
    code, doc = diagnose(emu, monkeypatch)
    found = checks(doc)
    assert code == 1 and found["rdp.tcp"]["status"] == "fail"
    assert found["guest.firewall"]["details"]["blocked"] is False
