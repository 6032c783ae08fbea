"""The report of `azrdp fix` as the operator reads it: every check that failed before and its status
after (the guest's too), a verdict that is one sentence, and what is still in flight or pending.
The real CLI in process, the real SDK, the emulator (100x faster than Azure)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from azrdp.cli import cli
from azrdp.emulator import Emulator


def fix(scenario: str, tmp_path, *args: str, faults=()) -> tuple[int, str, str]:
    with Emulator.start(scenario, speed=1000) as emu:
        for fault in faults:
            emu.inject(**fault)
        vm = emu.vm()
        env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"), "CI": "true", **emu.environment()}
        result = CliRunner().invoke(cli, ["fix", vm.name, "-g", vm.resource_group, "--yes", "--probe-timeout", "1",
                                          "--audit-log", str(tmp_path / "audit.jsonl"), *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def verdict(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("Verdict: "))


def test_an_nsg_blocked_vm_whose_guest_is_healthy_says_so_in_one_sentence(tmp_path):
    code, out, _ = fix("nsg-blocked", tmp_path)
    assert code == 1
    assert verdict(out) == ("Verdict: not_verified: RDP could not be checked from outside: the NSG blocks the RDP "
                            "port (see nsg.effective); the guest side is healthy (listener up, certificate valid).")
    assert "not healthy" not in out and "not verified" not in out
    failed = out[out.index("Before -> after:"):].splitlines()
    assert any(line.split()[:4] == ["nsg.effective", "FAIL", "->", "FAIL"] for line in failed)


def test_a_fix_shows_each_check_that_failed_before_and_the_guests_status_after(tmp_path):
    code, out, _ = fix("0x904", tmp_path, "--guest-first")
    assert code == 0, out
    section = out[out.index("Before -> after:"):out.index("Phases:")]
    rows = {line.split()[0]: line.split()[1:4] for line in section.splitlines()[1:] if not line.startswith("Guest")
            and line.startswith("  ") and not line.startswith("    ")}
    assert rows["rdp.cert"] == ["FAIL", "->", "ok"]
    assert rows["guest.cert"] == ["FAIL", "->", "repaired"] and rows["guest.machinekeys"] == ["FAIL", "->", "repaired"]
    assert rows["guest.sessions"] == ["FAIL", "->", "repaired"]
    assert "Guest before -> after (the repair payload's own re-checks):" in section
    assert "free seats 0 -> 1 of 2" in section
    line = verdict(out)
    assert line.startswith("Verdict: verified: RDP answers on ") and line.count("verified") == 1


def test_when_arm_is_lost_mid_run_command_the_report_says_the_script_may_still_run(tmp_path):
    code, out, _ = fix("0x904", tmp_path, faults=({"kind": "connection_reset", "count": None},))
    assert code == 5, out
    assert "Pending: the repair Run Command (it cannot be cancelled: it finishes inside the guest" in out
    assert "may still be under way: azrdp stopped waiting before Azure said it had ended" in out
    assert verdict(out).count("failed") <= 1 and "failed: failed" not in out


def test_a_failed_restart_says_the_guest_changes_still_need_one(tmp_path):
    code, out, _ = fix("0x904", tmp_path, faults=({"kind": "restart_failure"},))
    assert code == 5, out
    assert ("Pending: machinekeys-acl changed the guest and takes full effect only after a restart, which did not "
            "happen: `az vm restart -g ") in out
    assert "failed: failed" not in out


def test_verdicts_never_repeat_themselves(tmp_path):
    code, out, _ = fix("healthy", tmp_path, "--dry-run")
    assert verdict(out) == "Verdict: dry_run: nothing was changed; the plan above is what azrdp would do."
    code, out, _ = fix("healthy", tmp_path, "-o", "json")
    doc = json.loads(out)
    assert not doc["summary"].lower().startswith(doc["verdict"].replace("_", " "))


def _result(verdict: str, **fields):
    from azrdp.repair_result import RepairResult
    from azrdp.target import parse_target

    result = RepairResult(parse_target("vm1", resource_group="rg1"), verdict=verdict)
    for key, value in fields.items():
        setattr(result, key, value)
    return result


def test_an_rdp_that_answers_with_an_expired_certificate_is_not_called_silent():
    result = _result("not_verified", verification={"method": "wire", "where": "10.0.0.4:3389", "ok": False,
                                                   "answered": True, "outcome": "cert_expired"})
    assert result.summary() == "RDP answers on 10.0.0.4:3389, but a client cannot connect: its certificate has expired"


def test_an_interrupted_or_failed_verdict_is_a_sentence_not_its_own_name_again():
    from azrdp.errors import AzureOperationError

    interrupted = _result("interrupted", interrupted={"done": [], "in_flight": None})
    assert interrupted.summary() == "Ctrl-C stopped azrdp; nothing was changed"
    failed = _result("failed", error=AzureOperationError("restart ended Failed while restarting VM rg1/vm1."))
    assert failed.summary() == "restart ended Failed while restarting VM rg1/vm1."
