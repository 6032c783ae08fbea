"""The simulated guest follows repair.ps1 step by step: when each step changes something, when it
asks for a reboot, what it reports in before/after/info, and the sessions step's
LogOffOnlyWhenFull. Every answer goes through the real SDK and is checked with validate_result."""

from __future__ import annotations

import re

import pytest
from emulator_support import payload_answer, run_payload, session_for

from azrdp.payloads import payload
from azrdp.payloads.schema import REPAIR_STEPS


def repair(emu, fake_credential, steps, **values):
    result = payload_answer(session_for(emu, fake_credential), "repair", {"Steps": steps, **values})
    return result, {step["name"]: step for step in result["steps"]}


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
    assert step["before"] == step["after"] == {"total": 1, "disconnected": 1, "active": 0, "seat_limit": 2,
                                               "used": 1, "free": 1}
    assert step["info"] == {"logged_off": [], "logged_off_total": 0, "seats_freed": 0, "include_active": False}
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
    emu = start_emulator("seat-taken")
    result, steps = repair(emu, fake_credential, ["sessions"], LogOffOnlyWhenFull=only_when_full)
    step = steps["sessions"]
    assert step["status"] == "changed" and step["info"]["logged_off_total"] == 2
    assert step["before"]["free"] == 0 and step["after"] == {"total": 0, "disconnected": 0, "active": 0,
                                                             "seat_limit": 2, "used": 0, "free": 2}
    assert step["info"]["seats_freed"] == 2 and not step["reboot_required"] and not result["reboot_required"]


def test_only_when_full_with_log_off_active_needs_a_full_server(start_emulator, fake_credential):
    emu = start_emulator()
    emu.update(lambda backend: emu.guest().add_session("azureadmin", "Active", idle_min=0))
    _, steps = repair(emu, fake_credential, ["sessions"], LogOffActive=True, LogOffOnlyWhenFull=True)
    assert steps["sessions"]["status"] == "unchanged" and steps["sessions"]["info"]["include_active"]
    emu.update(lambda backend: emu.guest().add_session("opsadmin", "Disc"))
    _, steps = repair(emu, fake_credential, ["sessions"], LogOffActive=True, LogOffOnlyWhenFull=True)
    assert steps["sessions"]["info"]["logged_off_total"] == 2 and steps["sessions"]["after"]["free"] == 2


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
    # One backup folder per run: the ACLs and the exported certificate land in the same one.
    folders = emu.guest().backup_folders
    assert list(folders) == [steps["machinekeys-acl"]["info"]["backup"].replace("/", "\\")]
    assert sorted(folders[next(iter(folders))]) == sorted(
        ["run-id.txt", "machinekeys.acl", f"{steps['cert']['info']['removed'][0]}.cer"])


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
    assert step["info"] == {"backup": None, "acl_backup": None, "copied": 0, "skipped": [], "skipped_total": 0}
    assert emu.guest().machinekeys.backups == [] and emu.guest().machinekeys.rdp_key is not None


def test_rename_of_a_corrupt_key_requires_a_reboot_and_keeps_the_old_folder(start_emulator, fake_credential):
    emu = start_emulator("corrupt-key")
    result, steps = repair(emu, fake_credential, ["machinekeys-rename"])
    step = steps["machinekeys-rename"]
    assert step["status"] == "changed" and step["reboot_required"] and result["reboot_required"]
    assert step["before"]["rdp_key"]["present"] and not step["after"]["rdp_key"]["present"]
    assert step["after"]["files"] == step["info"]["copied"] == step["before"]["files"] - 1
    assert step["info"]["acl_backup"].startswith("C:/ProgramData/azrdp/backup/")


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
