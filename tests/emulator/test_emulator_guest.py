"""The simulated Windows guest answers the payloads azrdp ships, in their result schema, and
applies the repair's effects. Every answer here is checked with ``validate_result``, so the
stand-in cannot drift from the real scripts' contract."""

from __future__ import annotations

import pytest

from azrdp.emulator import SCENARIOS
from azrdp.payloads import payload
from azrdp.payloads.schema import REPAIR_STEPS
from azrdp.rdp import probe
from tests.support.emulator_support import payload_answer, run_payload, session_for

RG, VM = "rg-azrdp-demo", "vm-web-01"


run = run_payload
answer = payload_answer


@pytest.mark.parametrize("scenario", [name for name in SCENARIOS
                                      if name not in ("deallocated", "stopped", "agent-not-ready", "no-boot-rdp-disabled")])
def test_every_scenario_diagnoses_repairs_and_diagnoses_again_in_schema(start_emulator, fake_credential, scenario):
    emu = start_emulator(scenario)
    azure = session_for(emu, fake_credential)
    before = answer(azure, "diagnose", {"RunId": "before-1", "EventHours": 24})
    assert before["run_id"] == "before-1" and before["version"] == payload("diagnose").version
    repaired = answer(azure, "repair", {"Steps": list(REPAIR_STEPS), "RunId": "fix-1"})
    assert [step["name"] for step in repaired["steps"]] == list(REPAIR_STEPS)
    answer(azure, "diagnose", {"RunId": "after-1"})
    assert emu.state.run_commands[0]["payload"] == "diagnose" and emu.state.run_commands[1]["payload"] == "repair"


def test_0x904_diagnosis_repair_and_a_fresh_certificate_on_the_wire(start_emulator, fake_credential):
    emu = start_emulator("0x904")
    azure = session_for(emu, fake_credential)
    assert probe(*emu.rdp_endpoint(), timeout=1).outcome == "cert_expired"
    facts = answer(azure, "diagnose")
    assert facts["cert"]["certs"][0]["expired"] and not facts["machinekeys"]["default"]
    assert facts["events"]["rcm_1058"] >= 1 and facts["sessions"]["free"] == 0 and facts["sessions"]["used"] == 2

    result = answer(azure, "repair", {"Steps": ["machinekeys-acl", "cert", "sessions"]})
    steps = {step["name"]: step for step in result["steps"]}
    assert {name: step["status"] for name, step in steps.items()} == {
        "machinekeys-acl": "changed", "cert": "changed", "sessions": "changed"}
    assert steps["cert"]["info"]["restarted"] == ["SessionEnv", "TermService"]
    assert steps["sessions"]["info"]["seats_freed"] == 2 and result["changed"]

    wire = probe(*emu.rdp_endpoint(), timeout=1)
    assert wire.outcome == "answers" and wire.certificate.thumbprint == steps["cert"]["after"]["current"]
    after = answer(azure, "diagnose")
    assert after["machinekeys"]["default"] and after["sessions"]["free"] == 2


def test_a_cert_repair_without_the_acl_repair_holds_back_as_repair_ps1_does(start_emulator, fake_credential):
    emu = start_emulator("0x904")
    azure = session_for(emu, fake_credential)
    step = answer(azure, "repair", {"Steps": ["cert"]})["steps"][0]
    # Removing the expired certificate while MachineKeys cannot take a new key would leave RDP with
    # none: repair.ps1 holds the step back and says why; nothing changes, the old one still serves.
    assert step["status"] == "skipped" and step["error"].startswith("held back: MachineKeys ACL")
    assert step["info"] is None and step["before"] == step["after"]
    assert probe(*emu.rdp_endpoint(), timeout=1).outcome == "cert_expired"


def test_repair_is_idempotent_on_a_healthy_vm(azure):
    result = answer(azure, "repair", {"Steps": list(REPAIR_STEPS[:1]) + list(REPAIR_STEPS[3:])})
    assert [step["status"] for step in result["steps"]] == ["unchanged", "unchanged", "unchanged"]
    assert not result["changed"] and not result["reboot_required"]


def test_machinekeys_rename_moves_the_rdp_key_aside_and_keeps_the_other_keys(start_emulator, fake_credential):
    # Review #7: only the RDP key container moves (kept in the run's backup folder); the other
    # machine keys never leave MachineKeys, and no reboot is needed: the cert step makes a new key.
    emu = start_emulator("corrupt-key")
    azure = session_for(emu, fake_credential)
    result = answer(azure, "repair", {"Steps": ["machinekeys-rename", "cert"]})
    rename, cert = result["steps"]
    assert rename["status"] == "changed" and rename["info"]["moved"] == 1 and rename["info"]["failed"] == 0
    backups = [path.replace("\\", "/") for path in emu.guest().machinekeys.backups]
    assert len(backups) == 1 and backups[0].startswith(rename["info"]["backup"] + "/f686aace6942fb7f7ceb231212eef4a4_")
    assert rename["info"]["backup"].startswith("C:/ProgramData/azrdp/backup/")
    assert emu.guest().machinekeys.other_files == 6
    assert not rename["reboot_required"] and not result["reboot_required"]
    assert cert["status"] == "changed"
    assert probe(*emu.rdp_endpoint(), timeout=1).outcome == "answers"


def test_rdp_config_enables_rdp_and_the_firewall_group(start_emulator, fake_credential):
    for scenario, action in (("rdp-disabled", "deny=0"), ("firewall", "fw:group")):
        emu = start_emulator(scenario)
        step = answer(session_for(emu, fake_credential), "repair", {"Steps": ["rdp-config"]})["steps"][0]
        assert step["status"] == "changed" and step["info"]["actions"] == [action]
        assert probe(*emu.rdp_endpoint(), timeout=1).outcome == "answers"


def test_a_script_that_is_not_shipped_is_not_run(emu, azure):
    changed = payload("repair").script_lines()
    changed[-1] = changed[-1] + " "
    stdout, stderr = run(azure, "repair", {"Steps": ["cert"]}, script=changed)
    assert stdout == "" and "runs only the payloads azrdp ships" in stderr
    assert emu.state.run_commands[-1]["payload"] is None


def test_parameters_are_validated_like_the_param_block(azure):
    shipped = payload("diagnose")
    body = {"commandId": "RunPowerShellScript", "script": shipped.script_lines(),
            "parameters": [{"name": "EventHours", "value": "9999"}]}
    stdout, stderr = (s.message for s in azure.compute.virtual_machines.begin_run_command(RG, VM, body).result().value)
    assert stdout == "" and "Cannot validate argument on parameter 'EventHours'" in stderr
