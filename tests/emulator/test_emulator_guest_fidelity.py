"""The simulated guest follows repair.ps1 step by step: when each step changes something, when it
asks for a reboot, what it reports in before/after/info, and the sessions step's
LogOffOnlyWhenFull. Every answer goes through the real SDK and is checked with validate_result."""

from __future__ import annotations

import json
import re

import pytest

from azrdp.payloads import payload
from azrdp.payloads.schema import MACHINEKEYS_DEFAULT_SDDL, REPAIR_STEPS
from tests.support.emulator_support import payload_answer, repair, run_payload, session_for


def one_disconnected(emu) -> None:
    """One admin left a disconnected session: one of the two seats is still free."""
    emu.update(lambda backend: emu.guest().add_session("opsadmin", "Disc", idle_min=600))


# -- sessions: LogOffOnlyWhenFull -------------------------------------------------------------------

def test_only_when_full_logs_off_no_one_while_a_seat_is_free(start_emulator, fake_credential):
    emu = start_emulator()
    one_disconnected(emu)
    result, steps = repair(emu, fake_credential, ["sessions"], LogOffOnlyWhenFull=True)
    step = steps["sessions"]
    assert step["status"] == "unchanged" and step["error"] is None and not result["changed"]
    assert step["before"] == step["after"] == {"total": 1, "disconnected": 1, "active": 0, "mode": "admin",
                                               "seat_limit": 2, "used": 1, "free": 1}
    assert step["info"] == {"logged_off": [], "logged_off_total": 0, "seats_freed": 0, "include_active": False, "kept_recent": 0}
    assert [s.user for s in emu.guest().sessions if s.user] == ["opsadmin"]


def test_without_only_when_full_the_disconnected_session_is_logged_off(start_emulator, fake_credential):
    emu = start_emulator()
    one_disconnected(emu)
    _, steps = repair(emu, fake_credential, ["sessions"], LogOffOnlyWhenFull=False)
    step = steps["sessions"]
    assert step["status"] == "changed" and step["info"]["logged_off"] == [2]
    assert (step["before"]["free"], step["after"]["free"], step["info"]["seats_freed"]) == (1, 2, 1)


@pytest.mark.parametrize("only_when_full", [True, False])
def test_when_no_seat_is_free_both_settings_log_off_the_disconnected(start_emulator, fake_credential, only_when_full):
    # Review #8 (F7): with LogOffOnlyWhenFull only as many as free one seat, longest idle first
    # (the old step logged off every disconnected session); without it, every one (asked for).
    emu = start_emulator("seat-taken")
    emu.update(lambda backend: setattr(emu.guest().sessions[-1], "idle_min", 9_000))   # opsadmin idles longest
    result, steps = repair(emu, fake_credential, ["sessions"], LogOffOnlyWhenFull=only_when_full)
    step = steps["sessions"]
    freed = 1 if only_when_full else 2
    assert step["status"] == "changed" and step["info"]["logged_off_total"] == freed
    if only_when_full:
        assert step["info"]["logged_off"] == [3]
    assert step["before"]["free"] == 0 and step["after"] == {"total": 2 - freed, "disconnected": 2 - freed, "active": 0,
                                                             "mode": "admin", "seat_limit": 2, "used": 2 - freed,
                                                             "free": freed}
    assert step["info"]["seats_freed"] == freed and not step["reboot_required"] and not result["reboot_required"]


def test_only_when_full_with_log_off_active_needs_a_full_server(start_emulator, fake_credential):
    emu = start_emulator()
    emu.update(lambda backend: emu.guest().add_session("azureadmin", "Active", idle_min=0))
    _, steps = repair(emu, fake_credential, ["sessions"], LogOffActive=True, LogOffOnlyWhenFull=True)
    assert steps["sessions"]["status"] == "unchanged" and steps["sessions"]["info"]["include_active"]
    emu.update(lambda backend: emu.guest().add_session("opsadmin", "Disc"))
    _, steps = repair(emu, fake_credential, ["sessions"], LogOffActive=True, LogOffOnlyWhenFull=True)
    # Only one seat is needed (review #8): the longest idle (the disconnected one) goes, the active admin stays.
    assert steps["sessions"]["info"]["logged_off"] == [3] and steps["sessions"]["after"]["free"] == 1


def test_the_session_list_is_what_quser_shows(start_emulator, fake_credential):
    """Session 0 and an empty console are not user sessions: quser does not list them."""
    emu = start_emulator("seat-taken")
    facts = payload_answer(session_for(emu, fake_credential), "diagnose")
    assert [(s["user"], s["state"], s["name"]) for s in facts["sessions"]["list"]] == [
        ("azureadmin", "Disc", None), ("opsadmin", "Disc", None)]
    assert any(s.id == 0 for s in emu.guest().sessions)


# -- reboot_required, as each step of repair.ps1 sets it ------------------------------------------------

def test_a_machinekeys_acl_change_requires_a_reboot(start_emulator, fake_credential):
    emu = start_emulator("machinekeys-acl")
    result, steps = repair(emu, fake_credential, ["machinekeys-acl"])
    step = steps["machinekeys-acl"]
    assert step["status"] == "changed" and step["reboot_required"]
    assert step["info"]["actions"] == ["acl:folder-default", "acl:rdp-key"]
    assert re.fullmatch(r"C:/ProgramData/azrdp/backup/\d{8}T\d{6}Z", step["info"]["backup"])
    assert result["reboot_required"] and not result["reboot_pending"]
    again, steps = repair(emu, fake_credential, ["machinekeys-acl"])
    assert steps["machinekeys-acl"]["status"] == "unchanged" and not again["reboot_required"]
    assert steps["machinekeys-acl"]["info"] == {"backup": None, "actions": []}


def test_the_0x904_repair_requires_the_reboot_windows_would(start_emulator, fake_credential):
    emu = start_emulator("0x904")
    result, steps = repair(emu, fake_credential, ["machinekeys-acl", "cert", "sessions"], LogOffOnlyWhenFull=True)
    assert {name: (s["status"], s["reboot_required"]) for name, s in steps.items()} == {
        "machinekeys-acl": ("changed", True), "cert": ("changed", False), "sessions": ("changed", False)}
    assert steps["machinekeys-acl"]["info"]["actions"] == ["acl:folder-default"]
    assert result["reboot_required"]
    # One backup folder per run: the ACLs (owners too) and the undo notes land in the same one; the
    # certificate is not exported-and-deleted (review #4: a .cer loses the key link) but moved
    # into the store azrdp-backup, where it still is.
    folders = emu.guest().backup_folders
    assert list(folders) == [steps["machinekeys-acl"]["info"]["backup"].replace("/", "\\")]
    assert sorted(folders[next(iter(folders))]) == sorted(
        ["run-id.txt", "machinekeys.acl", "machinekeys.sddl.txt", "undo.txt"])
    moved = [c for c in emu.guest().certificates if c.store == "backup"]
    assert [c.thumbprint for c in moved] == steps["cert"]["info"]["removed"]


def test_steps_that_change_nothing_a_reboot_fixes_never_require_one(start_emulator, fake_credential):
    for scenario, name in (("rdp-disabled", "rdp-config"), ("expired-cert", "cert"), ("seat-taken", "sessions")):
        result, steps = repair(start_emulator(scenario), fake_credential, [name])
        assert steps[name]["status"] == "changed" and not steps[name]["reboot_required"], scenario
        assert not result["reboot_required"], scenario


def test_a_reboot_windows_already_had_pending_is_reported(start_emulator, fake_credential):
    emu = start_emulator()
    emu.update(lambda backend: emu.guest().reboot_reasons.append("windows_update"))
    result, _ = repair(emu, fake_credential, ["sessions"])
    assert result["reboot_pending"] and result["reboot_required"] and not result["changed"]


# -- machinekeys-rename ---------------------------------------------------------------------------------

def test_rename_leaves_a_healthy_machinekeys_alone(start_emulator, fake_credential):
    emu = start_emulator()
    _, steps = repair(emu, fake_credential, ["machinekeys-rename"])
    step = steps["machinekeys-rename"]
    assert step["status"] == "unchanged" and not step["reboot_required"]
    assert step["info"] == {"backup": None, "moved": 0, "failed": 0}
    assert emu.guest().machinekeys.backups == [] and emu.guest().machinekeys.rdp_key is not None


def test_rename_of_a_corrupt_key_moves_only_the_rdp_key_and_asks_for_no_reboot(start_emulator, fake_credential):
    # Review #7: the old step renamed the whole folder (every machine key gone for a while, copied
    # back file by file) and asked for a reboot; only the RDP key container moves now.
    emu = start_emulator("corrupt-key")
    result, steps = repair(emu, fake_credential, ["machinekeys-rename"])
    step = steps["machinekeys-rename"]
    assert step["status"] == "changed" and not step["reboot_required"] and not result["reboot_required"]
    assert step["before"]["rdp_key"]["present"] and not step["after"]["rdp_key"]["present"]
    assert step["after"]["files"] == step["before"]["files"] - 1 and step["info"]["moved"] == 1
    assert step["info"]["backup"].startswith("C:/ProgramData/azrdp/backup/") and step["info"]["backup"].endswith("/rdp-key")
    assert emu.guest().machinekeys.other_files == 6


def test_rename_does_nothing_when_the_key_could_not_be_tested(start_emulator, fake_credential):
    # Review #5/#21: "could not test" is not "broken": nothing is moved, the step says so.
    emu = start_emulator()

    def ecc_on_old_dotnet(backend):
        guest = emu.guest()
        guest.dotnet = (4, 5, 2)
        guest.rd_store()[0].key_alg = "ecdsa"
    emu.update(ecc_on_old_dotnet)
    _, steps = repair(emu, fake_credential, ["machinekeys-rename"])
    step = steps["machinekeys-rename"]
    assert step["status"] == "skipped" and step["error"] == "held back: the RDP key could not be tested"
    assert emu.guest().machinekeys.rdp_key is not None


def test_rename_judges_only_the_live_container_not_a_stale_one_of_an_earlier_machine_guid(start_emulator, fake_credential):
    # Desk review of the rewrite, finding 2: an empty f686aace... file of an earlier MachineGuid (a
    # cloned image) made the step move every RDP container, the live healthy one included.
    from azrdp.emulator.guest import RDP_KEY_PREFIX, KeyFile

    emu = start_emulator()
    emu.update(lambda backend: emu.guest().machinekeys.stale_rdp_keys.append(
        KeyFile(f"{RDP_KEY_PREFIX}_00000000-1111-2222-3333-444444444444", size=0)))
    _, steps = repair(emu, fake_credential, ["machinekeys-rename", "cert"])
    assert steps["machinekeys-rename"]["status"] == "unchanged" and steps["machinekeys-rename"]["info"]["moved"] == 0
    assert steps["cert"]["status"] == "unchanged"
    keys = emu.guest().machinekeys
    assert keys.rdp_key is not None and not keys.rdp_key.corrupt and len(keys.stale_rdp_keys) == 1


def test_rename_holds_back_when_the_cert_step_could_not_replace_the_key(start_emulator, fake_credential):
    # Finding 2: the step moved the key without the cert step's preconditions; with CertPropSvc
    # disabled the cert step then held back and RDP kept a certificate whose key was gone.
    emu = start_emulator("corrupt-key")
    emu.update(lambda backend: setattr(emu.guest().services["CertPropSvc"], "start", "Disabled"))
    _, steps = repair(emu, fake_credential, ["machinekeys-rename", "cert"])
    rename = steps["machinekeys-rename"]
    assert rename["status"] == "skipped" and rename["error"] == "held back: CertPropSvc is disabled; run rdp-config"
    assert rename["info"] == {"backup": None, "moved": 0, "failed": 0}
    assert emu.guest().machinekeys.rdp_key is not None and emu.guest().machinekeys.backups == []


def test_a_key_system_is_refused_is_could_not_test_never_moved(start_emulator, fake_credential):
    # Finding 2: access denied is the key file's ACL (machinekeys-acl's to fix), not a broken key;
    # the old step counted it as broken and moved the container.
    emu = start_emulator()
    emu.update(lambda backend: setattr(emu.guest().machinekeys.rdp_key, "system_full", False))
    _, steps = repair(emu, fake_credential, ["machinekeys-rename"])
    step = steps["machinekeys-rename"]
    assert step["status"] == "skipped" and step["error"] == "held back: the RDP key could not be tested"
    assert emu.guest().machinekeys.rdp_key is not None


def test_a_key_test_with_keyiso_stopped_could_not_test(start_emulator, fake_credential):
    # Finding 2: with KeyIso not running a good key fails its test too: "could not test", and the
    # cert step keeps the certificate (it moved it before).
    emu = start_emulator()

    def admin_cert_failing_while_keyiso_stopped(backend):
        guest = emu.guest()
        guest.services["KeyIso"].state = "Stopped"
        guest.rd_store()[0].self_signed = False
        guest.rd_store()[0].key_ok = False
    emu.update(admin_cert_failing_while_keyiso_stopped)
    _, steps = repair(emu, fake_credential, ["cert"])
    assert steps["cert"]["before"]["bad"] == 0 and steps["cert"]["info"]["removed_total"] == 0
    assert len(emu.guest().rd_store()) == 1


# -- cert -----------------------------------------------------------------------------------------------

def test_a_binding_to_a_certificate_whose_key_is_unusable_is_cleared(start_emulator, fake_credential):
    emu = start_emulator("corrupt-key")

    def bind(backend):
        guest = emu.guest()
        guest.bound_thumbprint = guest.rd_store()[0].thumbprint
    emu.update(bind)
    _, steps = repair(emu, fake_credential, ["machinekeys-rename", "cert"])
    cert = steps["cert"]
    assert cert["before"]["bound"] and cert["before"]["current"] == cert["before"]["bound"]
    assert cert["info"]["cleared_binding"] and not cert["info"]["kept_bound"]
    assert cert["after"]["bound"] is None and cert["after"]["current"] not in (None, cert["before"]["current"])


def test_a_missing_certificate_makes_the_step_restart_the_services(start_emulator, fake_credential):
    emu = start_emulator()
    emu.update(lambda backend: setattr(emu.guest(), "certificates", []))
    _, steps = repair(emu, fake_credential, ["cert"])
    cert = steps["cert"]
    assert cert["before"]["current"] is None and cert["info"]["removed_total"] == 0
    assert cert["status"] == "changed" and cert["info"]["restarted"] == ["SessionEnv", "TermService"]
    assert cert["after"]["current"] is not None


# -- rdp-config -----------------------------------------------------------------------------------------

def test_rdp_config_reports_a_policy_without_failing(start_emulator, fake_credential):
    emu = start_emulator("rdp-disabled")
    emu.update(lambda backend: emu.guest().registry.__setitem__("policy.fDenyTSConnections", 1))
    _, steps = repair(emu, fake_credential, ["rdp-config"])
    step = steps["rdp-config"]
    assert step["status"] == "changed" and step["error"] is None
    assert step["info"] == {"policy_forces_deny": True, "actions": ["deny=0"]}


def test_rdp_config_enables_a_disabled_service_and_adds_the_custom_port_rule(start_emulator, fake_credential):
    emu = start_emulator()

    def break_it(backend):
        guest = emu.guest()
        guest.services["TermService"].start, guest.services["TermService"].state = "Disabled", "Stopped"
        guest.registry["PortNumber"] = 3390
    emu.update(break_it)
    _, steps = repair(emu, fake_credential, ["rdp-config"])
    step = steps["rdp-config"]
    assert step["info"]["actions"] == ["demand:TermService", "start:TermService", "fw:custom-port"]
    assert step["before"]["custom_rule"] is False and step["after"]["custom_rule"] is True
    assert step["after"]["services"][0] == {"name": "TermService", "state": "Running", "start": "Manual"}


def test_a_missing_service_fails_the_step_as_the_script_throws(start_emulator, fake_credential):
    emu = start_emulator()
    emu.update(lambda backend: setattr(emu.guest().services["SessionEnv"], "state", "Missing"))
    _, steps = repair(emu, fake_credential, ["rdp-config"])
    step = steps["rdp-config"]
    assert step["status"] == "failed" and step["info"] is None and step["error"] == "service SessionEnv is missing"
    assert step["after"] is not None and not step["reboot_required"]


def test_every_action_the_guest_reports_is_one_repair_ps1_records():
    """The action names come from the script: a rename there must be made here too."""
    from pathlib import Path

    import azrdp.emulator.guest_payloads as guest_payloads

    script = payload("repair").script_text()
    recorded = set(re.findall(r"\$actions\.Add\('([^']+)'\)", script))
    prefixes = set(re.findall(r"\$actions\.Add\('([^']+:)' \+", script))
    source = Path(guest_payloads.__file__).read_text()
    emitted = set(re.findall(r'actions\.append\(f?"([^"{]+)', source))
    assert emitted and all(action in recorded or action in prefixes for action in emitted), (emitted, recorded, prefixes)


# -- parameters as the param() block binds them ---------------------------------------------------------

@pytest.mark.parametrize("name, value", [("LogOffOnlyWhenFull", "1"), ("LogOffActive", "yes"),
                                         ("Steps", "cert, sessions"), ("Steps", "cert,,sessions")])
def test_values_the_param_block_rejects_are_rejected(emu, fake_credential, name, value):
    azure = session_for(emu, fake_credential)
    shipped = payload("repair")
    params = [{"name": "Steps", "value": "sessions"}] if name != "Steps" else []
    body_params = params + [{"name": name, "value": value}]
    stdout, stderr = _raw_run(azure, shipped, body_params)
    assert stdout == "" and f"Cannot validate argument on parameter '{name}'" in stderr


def test_validate_set_and_pattern_ignore_case_as_powershell_does(emu, fake_credential):
    azure = session_for(emu, fake_credential)
    stdout, stderr = _raw_run(azure, payload("repair"), [{"name": "Steps", "value": "Sessions"},
                                                         {"name": "LogOffOnlyWhenFull", "value": "TRUE"}])
    assert stderr == "" and '"name":"sessions"' in stdout


def _raw_run(azure, shipped, parameters):
    body = {"commandId": "RunPowerShellScript", "script": shipped.script_lines(), "parameters": parameters}
    out, err = (s.message for s in azure.compute.virtual_machines.begin_run_command(
        "rg-azrdp-demo", "vm-web-01", body).result().value)
    return out, err


def test_every_step_on_a_healthy_vm_changes_nothing_and_needs_no_reboot(azure):
    result = payload_answer(azure, "repair", {"Steps": list(REPAIR_STEPS)})
    assert [(s["status"], s["reboot_required"], s["error"]) for s in result["steps"]] == \
        [("unchanged", False, None)] * len(REPAIR_STEPS)
    assert run_payload(azure, "diagnose")[1] == ""



# -- a VM that cannot listen on 3389 ---------------------------------------------------------------------

class _OnePortPool:
    """Where no loopback alias can take 3389 (another RDP server, or no 127/8 aliases), each VM
    listens on a port of its own."""

    def allocate(self):
        return "127.0.0.1", 43389


@pytest.mark.parametrize("scenario, mode", [("healthy", "open"), ("firewall", "drop")])
def test_a_vm_on_another_port_is_reachable_unless_its_firewall_rules_are_off(scenario, mode):
    from azrdp.emulator import scenarios
    from azrdp.emulator.models import ArmBackend
    from azrdp.emulator.timescale import TimeScale

    backend = ArmBackend(TimeScale(1000.0, seed=1))
    try:
        with backend.lock:
            (vm,) = scenarios.build(backend, _OnePortPool(), scenario)
            assert vm.guest.port == 43389 and backend.rdp_mode(vm) == mode
    finally:
        backend.scheduler.stop()


# -- Windows as it misbehaves (review section 5); each test fails against the old payload logic -------

def test_a_termservice_restart_disconnects_working_users_and_the_sessions_step_keeps_them(start_emulator, fake_credential):
    # Review #1 / 5.1: a TermService restart turns Active sessions into Disc (the sessions stay).
    emu = start_emulator("active-users")
    result, steps = repair(emu, fake_credential, ["cert", "sessions"], LogOffOnlyWhenFull=True)
    assert steps["cert"]["info"]["restarted"] == ["SessionEnv", "TermService"]
    users = [(s.user, s.state) for s in emu.guest().sessions if s.user]
    assert users == [("azureadmin", "Disc"), ("opsadmin", "Disc")]
    assert steps["sessions"]["info"]["logged_off_total"] == 0 and steps["sessions"]["before"]["free"] == 0
    assert result["termservice"] == "Running"


def test_a_later_run_keeps_the_users_an_earlier_restart_disconnected_for_24_hours(start_emulator, fake_credential):
    # RECHECK new H-1: the Disc-at-start snapshot protected them within one run only; the next
    # run's sessions step saw both admins disconnected at its start and logged the longest idle off.
    emu = start_emulator("active-users")
    _, steps = repair(emu, fake_credential, ["cert", "sessions"], LogOffOnlyWhenFull=True)
    assert steps["cert"]["info"]["restarted"] == ["SessionEnv", "TermService"]
    record = emu.guest().backup_root.disconnected
    assert sorted(key[1] for key, _ in record) == ["azureadmin", "opsadmin"]   # written before the restart
    _, steps = repair(emu, fake_credential, ["sessions"], LogOffOnlyWhenFull=True)
    sessions = steps["sessions"]
    assert sessions["status"] == "skipped" and sessions["info"]["kept_recent"] == 2
    assert sessions["info"]["logged_off_total"] == 0 and sessions["after"]["disconnected"] == 2
    # LogOffActive true: asked for, the record does not hold them back
    _, asked = repair(emu, fake_credential, ["sessions"], LogOffOnlyWhenFull=True, LogOffActive=True)
    assert asked["sessions"]["info"]["logged_off_total"] == 1 and asked["sessions"]["info"]["kept_recent"] == 0
    # written 24 h ago: they are disconnected sessions like any other
    def a_day_ago(backend):
        root = emu.guest().backup_root
        root.disconnected = [(key, at - 24 * 3600 - 60) for key, at in root.disconnected]
        emu.guest().add_session("opsadmin2", "Disc")
    emu.update(a_day_ago)
    _, later = repair(emu, fake_credential, ["sessions"], LogOffOnlyWhenFull=True)
    assert later["sessions"]["status"] == "changed" and later["sessions"]["info"]["kept_recent"] == 0


def test_a_new_sign_in_in_a_reused_session_id_is_not_kept_by_an_old_record(start_emulator, fake_credential):
    # Desk finding 14: keyed by session id alone, a record (or snapshot) of one sign-in would cover a
    # different sign-in that later got the same id. Id, user and logon time are one sign-in.
    emu = start_emulator("active-users")
    repair(emu, fake_credential, ["cert", "sessions"], LogOffOnlyWhenFull=True)

    def sign_in_again(backend):
        guest = emu.guest()
        (first,) = [s for s in guest.sessions if s.user == "azureadmin"]
        guest.sessions.remove(first)                       # signed out ...
        again = guest.add_session("azureadmin", "Disc", idle_min=3_000)
        again.id = first.id                                # ... and in again, into the same id
    emu.update(sign_in_again)
    _, steps = repair(emu, fake_credential, ["sessions"], LogOffOnlyWhenFull=True)
    assert steps["sessions"]["info"]["kept_recent"] == 1      # opsadmin, whom the restart disconnected
    assert steps["sessions"]["info"]["logged_off_total"] == 1  # the new sign-in, idle longest


def test_the_cert_steps_restart_is_held_back_on_a_session_host_unless_asked(start_emulator, fake_credential):
    # RECHECK #8: the restart disconnects every user of an RD Session Host; the sessions step
    # refused there, the cert step did not. Held back before any change.
    emu = start_emulator("active-users")
    emu.update(lambda backend: setattr(emu.guest(), "seat_mode", "rdsh"))
    store = [c.thumbprint for c in emu.guest().rd_store()]
    _, steps = repair(emu, fake_credential, ["cert"])
    assert steps["cert"]["status"] == "skipped"
    assert steps["cert"]["error"] == "held back: rdsh host; restarts only with MultiSession"
    assert [c.thumbprint for c in emu.guest().rd_store()] == store                     # nothing moved
    assert [s.state for s in emu.guest().sessions if s.user] == ["Active", "Active"]   # nobody disconnected
    _, asked = repair(emu, fake_credential, ["cert"], MultiSession=True)
    assert asked["cert"]["status"] == "changed" and asked["cert"]["info"]["restarted"] == ["SessionEnv", "TermService"]


def test_a_service_hung_in_stop_pending_bounds_the_restart_and_reports_it(start_emulator, fake_credential):
    # Review #2 / 5.2: the restart gives up after its bounded wait; the result line still comes.
    emu = start_emulator("hung-termservice")
    result, steps = repair(emu, fake_credential, ["cert"])
    cert = steps["cert"]
    assert cert["status"] == "changed" and cert["info"]["restarted"] == ["SessionEnv"]
    assert cert["error"] == "TermService could not be restarted: stuck in StopPending"
    assert result["termservice"] == "StopPending" and emu.guest().services["TermService"].state == "StopPending"
    assert emu.guest().payload_elapsed <= 480   # inside the payload-wide deadline


def test_renewal_reuses_a_broken_key_container_and_fails_with_1057(start_emulator, fake_credential):
    # Review #3 / 5.3: Windows reuses TSSecKeySet1; the emulator used to make a fresh key whatever
    # the container held. With an empty container and the certificate gone, Windows logs 1057 and
    # RDP has none; the cert step therefore holds back and points at machinekeys-rename.
    emu = start_emulator("corrupt-key")
    _, steps = repair(emu, fake_credential, ["cert"])
    assert steps["cert"]["status"] == "skipped"
    assert steps["cert"]["error"] == "held back: RDP key unusable; run machinekeys-rename"
    guest = emu.guest()
    assert guest.rd_store() and guest.machinekeys.rdp_key.corrupt   # nothing was touched

    def windows_itself(backend):
        guest.certificates = []
        guest.restart_service("TermService")
    before = guest.event_counts(1)["rcm_1057"]
    emu.update(windows_itself)
    assert guest.rd_store() == [] and guest.event_counts(1)["rcm_1057"] == before + 1


def test_restoring_the_folder_acl_propagates_and_no_key_file_is_left_without_a_dacl(start_emulator, fake_credential):
    # Review #9 / 5.7: after a bad `icacls MachineKeys /grant Everyone:(OI)(CI)F` + `/reset /t` every key
    # file's ACEs are inherited only; Set-Acl on the folder re-propagates and would empty them.
    emu = start_emulator()

    def inherited(backend):
        keys = emu.guest().machinekeys
        keys.sddl = "O:SYG:SYD:AI(A;OICI;FA;;;WD)(A;OICI;FA;;;BA)"
        keys.inherited_only_files = keys.other_files
        keys.rdp_key.inherited_only = True
    emu.update(inherited)
    _, steps = repair(emu, fake_credential, ["machinekeys-acl"])
    step = steps["machinekeys-acl"]
    # Finding 12: the inherited Everyone:F is not kept as an explicit ACE (every key would stay
    # readable by any local user); NETWORK SERVICE, which read the RDP key only through it, gets
    # its own grant back (acl:rdp-key).
    assert step["info"]["actions"] == ["acl:explicit", "acl:folder-default", "acl:rdp-key"]
    keys = emu.guest().machinekeys
    assert keys.default and keys.empty_dacl_files == 0 and keys.exposed_files == 0
    assert step["after"]["rdp_key"] == {"present": True, "network_service_read": True, "system_full": True}
    # the model itself: without the explicit step, the same folder change empties them
    emu.update(inherited)
    emu.update(lambda backend: emu.guest().machinekeys.set_folder_sddl(MACHINEKEYS_DEFAULT_SDDL))
    assert emu.guest().machinekeys.empty_dacl_files == 6


def test_a_folder_with_windows_dacl_but_another_owner_is_default(start_emulator, fake_credential):
    # Finding 9 (#19): owner+group+DACL were compared; an owner change alone made the step rewrite
    # a working ACL and ask for a reboot.
    emu = start_emulator()
    emu.update(lambda backend: setattr(emu.guest().machinekeys, "sddl", "O:BAG:SYD:PAI(A;;0x12019f;;;WD)(A;;FA;;;BA)"))
    result, steps = repair(emu, fake_credential, ["machinekeys-acl"])
    assert steps["machinekeys-acl"]["status"] == "unchanged" and not result["reboot_required"]


@pytest.mark.parametrize("dacl, rewritten", [
    ("D:PAI(A;;FA;;;SY)(A;;FA;;;BA)", False),                    # Microsoft's measured hardening: works, kept
    ("D:PAI(A;;0x12019f;;;WD)(A;;FA;;;BA)(A;;FA;;;SY)(A;;FA;;;BU)", True),   # Users:F on every machine key: rewritten
    ("D:PAI(A;;FA;;;BA)", True),                                 # no new key can be made: rewritten
])
def test_machinekeys_acl_rewrites_only_a_folder_that_cannot_take_keys_or_gives_every_user_more(
        start_emulator, fake_credential, dacl, rewritten):
    # RECHECK #19: any non-default DACL was rewritten, the SYSTEM + Administrators hardening too
    # (into the Everyone-create default, followed by a reboot).
    emu = start_emulator()
    emu.update(lambda backend: setattr(emu.guest().machinekeys, "sddl", "O:SYG:SY" + dacl))
    result, steps = repair(emu, fake_credential, ["machinekeys-acl"])
    step = steps["machinekeys-acl"]
    assert ("acl:folder-default" in step["info"]["actions"]) is rewritten
    assert (emu.guest().machinekeys.sddl == MACHINEKEYS_DEFAULT_SDDL) is rewritten
    assert result["reboot_required"] is rewritten


def test_machinekeys_acl_holds_back_on_a_subfolder_or_reparse_point_and_diagnose_says_so(start_emulator, fake_credential):
    # RECHECK new H-2: every user may add a folder to MachineKeys (0x12019f holds FILE_ADD_SUBDIRECTORY);
    # the folder ACL write's re-propagation could follow a junction planted there into a tree the
    # user chose. Held back before any change; diagnose reports it, the plan says what to do.
    emu = start_emulator("machinekeys-acl")
    emu.update(lambda backend: setattr(emu.guest().machinekeys, "subfolders", 1))   # a junction, say
    diagnosis = payload_answer(session_for(emu, fake_credential), "diagnose", {})
    assert diagnosis["machinekeys"]["nested"] is True and diagnosis["machinekeys"]["default"] is False
    before = emu.guest().machinekeys.sddl
    result, steps = repair(emu, fake_credential, ["machinekeys-acl"])
    step = steps["machinekeys-acl"]
    assert step["status"] == "skipped" and step["error"] == "held back: MachineKeys holds a subfolder"
    keys = emu.guest().machinekeys
    assert keys.sddl == before and keys.propagated_into == 0 and not result["reboot_required"]
    # the model: the old step's folder write reached the junction
    emu.update(lambda backend: emu.guest().machinekeys.set_folder_sddl(MACHINEKEYS_DEFAULT_SDDL))
    assert emu.guest().machinekeys.propagated_into == 1


def test_a_damaged_rdp_key_container_is_moved_aside_and_windows_makes_a_new_certificate(start_emulator, fake_credential):
    # RECHECK #7: a non-empty live container SYSTEM can open, whose key reads "keyset does not
    # exist" (NTE_BAD_KEYSET), was judged usable; the cert step then moved its certificate, and
    # Windows, reusing the damaged container, made none (RCM 1057): RDP was left with no certificate.
    emu = start_emulator()
    emu.update(lambda backend: setattr(emu.guest().machinekeys.rdp_key, "damaged", True))
    assert not emu.guest().tls_usable()
    result, steps = repair(emu, fake_credential, ["machinekeys-rename", "cert"])
    assert steps["machinekeys-rename"]["status"] == "changed" and steps["machinekeys-rename"]["info"]["moved"] == 1
    cert = steps["cert"]
    assert cert["status"] == "changed" and cert["error"] is None and cert["after"]["current"] is not None
    assert emu.guest().tls_usable() and emu.guest().machinekeys.backups   # the old container kept


def test_an_admin_certificate_whose_key_refuses_system_is_could_not_test_and_stays_bound(start_emulator, fake_credential):
    # RECHECK #5: CNG's NTE_PERM (and CAPI's NTE_BAD_KEYSET on a container whose ACL refuses) counted
    # as "broken": the binding to a CA certificate in My whose key SYSTEM cannot open was cleared.
    emu = start_emulator("ecc-cert")
    emu.update(lambda backend: setattr(emu.guest().find(emu.guest().bound_thumbprint), "key_denied", True))
    bound = emu.guest().bound_thumbprint
    diagnosis = payload_answer(session_for(emu, fake_credential), "diagnose", {})
    assert diagnosis["cert"]["bound_cert"]["key_readable"] is None
    _, steps = repair(emu, fake_credential, ["cert"])
    assert steps["cert"]["info"]["cleared_binding"] is False and emu.guest().bound_thumbprint == bound


def test_rdp_config_repairs_deny_and_the_services_when_the_firewall_cannot_be_read(start_emulator, fake_credential):
    # RECHECK #12: with MpsSvc stopped the firewall read threw and the whole step was "cannot read
    # state": fDenyTSConnections=1 and a Disabled TermService stayed (RDP down).
    emu = start_emulator("rdp-disabled")

    def firewall_down(backend):
        guest = emu.guest()
        guest.services["MpsSvc"].state = "Stopped"
        guest.firewall_readable = False
        guest.services["SessionEnv"].start, guest.services["SessionEnv"].state = "Disabled", "Stopped"
    emu.update(firewall_down)
    _, steps = repair(emu, fake_credential, ["rdp-config"])
    step = steps["rdp-config"]
    assert step["status"] == "changed" and step["error"] == "firewall not readable: Access denied"
    assert step["info"]["actions"] == ["deny=0", "demand:SessionEnv", "start:SessionEnv"]
    assert step["before"]["fw_rules"] is None and step["after"]["deny"] == 0
    assert emu.guest().registry["fDenyTSConnections"] == 0 and emu.guest().running("SessionEnv")


def test_a_folder_hardened_to_system_and_administrators_does_not_hold_the_cert_step_back(start_emulator, fake_credential):
    # Finding 9: Microsoft measured that such a folder keeps RDP working and renews the
    # certificate (Azure/repair-script-library win-fix-rdp-certificate.ps1); the old step held back.
    emu = start_emulator("expired-cert")
    emu.update(lambda backend: setattr(emu.guest().machinekeys, "sddl", "O:SYG:SYD:PAI(A;;FA;;;SY)(A;;FA;;;BA)"))
    _, steps = repair(emu, fake_credential, ["cert"])
    cert = steps["cert"]
    assert cert["status"] == "changed" and cert["error"] is None
    assert cert["after"]["current"] not in (None, cert["before"]["current"]) and cert["after"]["bad"] == 0


def test_no_new_certificate_after_the_restart_is_an_error(start_emulator, fake_credential):
    # Finding 11: Windows making no certificate within 60 s of the restart was a silent "changed".
    emu = start_emulator()
    guest = emu.guest()

    def renewal_fails_unseen(backend):
        guest.certificates = []                              # none: the step restarts the services
        guest.services["UmRdpService"].state = "Stopped"
        guest._renew_self_signed = lambda: guest.log("rcm_1057")   # Windows makes none (no precondition shows why)
    emu.update(renewal_fails_unseen)
    result, steps = repair(emu, fake_credential, ["cert"])
    cert = steps["cert"]
    assert cert["status"] == "changed" and cert["error"] == "no new self-signed certificate after 60 s (RCM 1057/1058)"
    assert cert["info"]["restarted"] == ["SessionEnv", "TermService"] and cert["after"]["current"] is None
    # Finding 13: SessionEnv and UmRdpService run again whatever happened.
    assert guest.services["SessionEnv"].state == guest.services["UmRdpService"].state == "Running"
    assert result["termservice"] == "Running"


def test_logoff_is_asynchronous_and_the_step_waits_for_the_seats_it_freed(start_emulator, fake_credential):
    # Review #28 / 5.12: logoff.exe returns before the session is gone; read at once, seats_freed was 0.
    emu = start_emulator("seat-taken")
    _, steps = repair(emu, fake_credential, ["sessions"])
    step = steps["sessions"]
    assert step["info"]["logged_off_total"] == 2 and step["info"]["seats_freed"] == 2
    assert emu.guest().payload_elapsed >= 2   # it waited for Windows to finish the logoffs


def test_a_key_test_that_cannot_run_changes_nothing(start_emulator, fake_credential):
    # Review #5 / 5.4: on .NET 4.5 an ECDSA key cannot be tested; "could not test" is not "broken".
    emu = start_emulator("ecc-cert")
    emu.update(lambda backend: setattr(emu.guest(), "dotnet", (4, 5, 2)))
    facts = payload_answer(session_for(emu, fake_credential), "diagnose")
    assert facts["cert"]["bound_cert"]["key_readable"] is None
    result, steps = repair(emu, fake_credential, ["cert"])
    assert steps["cert"]["status"] == "unchanged" and not steps["cert"]["info"]["cleared_binding"]
    assert emu.guest().bound_thumbprint == steps["cert"]["before"]["bound"]


def test_a_backup_root_someone_else_made_is_refused_before_any_change(start_emulator, fake_credential):
    # Review #10 / 5.16: any local user can create C:\ProgramData\azrdp first (a junction or their own ACL).
    for attribute, value, message in (("owner", "S-1-5-21-1004336348-1177238915-682003330-1001", "has a foreign owner"),
                                      ("reparse_point", True, "is a reparse point")):
        emu = start_emulator("machinekeys-acl")
        emu.update(lambda backend, emu=emu, attribute=attribute, value=value: setattr(emu.guest().backup_root, attribute, value))
        _, steps = repair(emu, fake_credential, ["machinekeys-acl"])
        step = steps["machinekeys-acl"]
        assert step["status"] == "failed" and message in step["error"] and "nothing was changed" in step["error"]
        assert not emu.guest().machinekeys.default and emu.guest().backup_folders == {}


def test_steps_given_as_nothing_answer_with_an_error_never_a_prompt(start_emulator, fake_credential):
    # Review #14 / 5.13: a Mandatory -Steps prompted when missing (90 minutes under Run Command).
    emu = start_emulator()
    azure = session_for(emu, fake_credential)
    body = {"commandId": "RunPowerShellScript", "script": payload("repair").script_lines(), "parameters": []}
    out, err = (s.message for s in azure.compute.virtual_machines.begin_run_command("rg-azrdp-demo", "vm-web-01", body).result().value)
    assert err == "" and out.startswith("AZRDP-RESULT:")
    result = json.loads(out.splitlines()[0][len("AZRDP-RESULT:"):])
    assert result["steps"] == [] and result["error"].startswith("no steps given") and not result["changed"]
