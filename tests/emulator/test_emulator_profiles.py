"""Guest profiles (`--windows`, `--locale`, roles): what each changes in the simulated guest, and
that `azrdp demo --scenario 0x904` repairs the VM on every one of them, through the real CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from azrdp.cli import cli
from azrdp.emulator.profiles import LOCALES, WINDOWS, GuestProfile, quser_text
from tests.support.emulator_support import payload_answer, repair, session_for


@pytest.mark.parametrize("windows, locale", [(w, "en-US") for w in WINDOWS] + [("2022", loc) for loc in LOCALES if loc != "en-US"])
def test_the_0x904_demo_exits_0_on_every_windows_and_locale(windows, locale):
    result = CliRunner().invoke(cli, ["demo", "--scenario", "0x904", "--speed", "5000", "--windows", windows,
                                      "--locale", locale, "-o", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "verified"
    assert doc["demo"]["os"] == WINDOWS[windows].caption


def test_unknown_windows_or_locale_is_a_usage_error():
    for option, value in (("--windows", "xp"), ("--locale", "tlh-KL")):
        result = CliRunner().invoke(cli, ["demo", option, value])
        assert result.exit_code == 2 and f"unknown {option} '{value}'" in result.output


@pytest.mark.parametrize("windows, mode, seats", [("2022", "admin", 2), ("win11", "client", 1),
                                                   ("win11-multisession", "multi", 4294967295)])
def test_the_seat_model_follows_the_sku(start_emulator, fake_credential, windows, mode, seats):
    emu = start_emulator()
    emu.update(lambda backend: GuestProfile(windows=windows).apply(emu.guest()))
    facts = payload_answer(session_for(emu, fake_credential), "diagnose")
    assert (facts["sessions"]["server_mode"], facts["sessions"]["seat_limit"]) == (mode, seats)
    assert facts["os"]["caption"] == WINDOWS[windows].caption


def test_an_avd_session_host_refuses_to_log_anyone_off_unless_asked(start_emulator, fake_credential):
    # Review #8: on multi-session / AVD hosts every user is someone's working day.

    emu = start_emulator("seat-taken")
    emu.update(lambda backend: GuestProfile(windows="win11-multisession", role="avd").apply(emu.guest()))
    emu.update(lambda backend: emu.guest().registry.__setitem__("MaxInstanceCount", 2))
    _, steps = repair(emu, fake_credential, ["sessions"])
    assert steps["sessions"]["status"] == "skipped" and steps["sessions"]["error"].startswith("held back: avd host")
    assert len([s for s in emu.guest().sessions if s.user]) == 2
    _, steps = repair(emu, fake_credential, ["sessions"], MultiSession=True)
    assert steps["sessions"]["info"]["logged_off_total"] == 2


def test_a_domain_controller_keeps_its_machine_keys_when_the_rdp_key_moves(start_emulator, fake_credential):
    # Review #7: LDAPS/KDC keys live in MachineKeys too; only the RDP container may move.

    emu = start_emulator("corrupt-key")
    emu.update(lambda backend: GuestProfile(role="dc").apply(emu.guest()))
    before = emu.guest().machinekeys.other_files
    _, steps = repair(emu, fake_credential, ["machinekeys-rename", "cert"])
    assert steps["machinekeys-rename"]["info"]["moved"] == 1 and emu.guest().machinekeys.other_files == before == 15


@pytest.mark.parametrize("locale", list(LOCALES))
def test_the_listener_and_sessions_read_the_same_in_every_display_language(start_emulator, fake_credential, locale):
    # Review #6: quser/qwinsta words are localized; the WTS API's state numbers are not.
    emu = start_emulator("seat-taken")
    emu.update(lambda backend: GuestProfile(locale=locale).apply(emu.guest()))
    facts = payload_answer(session_for(emu, fake_credential), "diagnose")
    assert facts["listener"]["state"] == "Listen"
    assert [s["state"] for s in facts["sessions"]["list"]] == ["Disc", "Disc"]


@pytest.mark.parametrize("locale", list(LOCALES))
def test_the_quser_fallback_reads_localized_output_with_the_scripts_own_patterns(start_emulator, fake_credential, locale):
    # When the WTS API cannot be used, the payload parses quser: its state patterns (read from the
    # shipped common.ps1) must understand the guest's display language.
    emu = start_emulator("seat-taken")

    def localized(backend):
        guest = emu.guest()
        GuestProfile(locale=locale).apply(guest)
        guest.wts_api = False
        guest.add_session("John Smith", "Active", idle_min=75)
    emu.update(localized)
    assert LOCALES[locale].quser_header in quser_text(emu.guest())
    facts = payload_answer(session_for(emu, fake_credential), "diagnose")
    assert [(s["user"], s["state"]) for s in facts["sessions"]["list"]] == [
        ("azureadmin", "Disc"), ("opsadmin", "Disc"), ("John Smith", "Active")]
    assert facts["sessions"]["list"][2]["idle_min"] == 75


def test_a_session_host_whose_ts_provider_does_not_answer_is_not_read_as_a_two_seat_server(start_emulator,
                                                                                         fake_credential):
    # Desk review 2, row 1: with -OperationTimeoutSec and SilentlyContinue a Win32_TerminalServiceSetting
    # that timed out read as 'admin' (two seats): the rdsh guard fell away and LogOffOnlyWhenFull logged
    # off the disconnected users of an RD Session Host. Fail closed: the section and the step say why.

    emu = start_emulator("seat-taken")

    def hang(backend):
        emu.guest().seat_mode = "rdsh"               # an RD Session Host (TerminalServerMode 1)
        emu.guest().ts_settings_answer = False

    emu.update(hang)
    users = len([s for s in emu.guest().sessions if s.user])
    facts = payload_answer(session_for(emu, fake_credential), "diagnose")
    assert facts["sessions"] is None and facts["rds"]["lic_mode"] is None
    assert any(e["section"] == "sessions" for e in facts["errors"])
    _, steps = repair(emu, fake_credential, ["sessions"], LogOffOnlyWhenFull=True)
    assert steps["sessions"]["status"] == "skipped" and steps["sessions"]["error"].startswith("cannot read state")
    assert len([s for s in emu.guest().sessions if s.user]) == users          # nobody was logged off
