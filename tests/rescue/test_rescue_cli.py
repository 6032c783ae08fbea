"""`azrdp rescue` on the command line, against the emulator (its environment exported as a user would)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from azrdp.audit import read_audit
from azrdp.cli import cli
from azrdp.emulator import Emulator


@pytest.fixture
def emu():
    emulator = Emulator.start("no-boot-rdp-disabled", speed=5000.0, seed=5)
    yield emulator
    emulator.stop()


def run(emu, *args, audit=None):
    env = {k: v for k, v in emu.environment().items() if not k.startswith("IDENTITY_")}
    extra = ["--audit-log", str(audit)] if audit else []
    return CliRunner().invoke(cli, ["-o", "json", "rescue", "vm-web-01", "-g", "rg-azrdp-demo", "--source-ip",
                                    emu.state.client_ip, "--probe-timeout", "0.5", *extra, *args], env=env)


def writes(emu):
    return [c for c in emu.calls if c.method in ("PUT", "PATCH", "DELETE") or c.operation == "VirtualMachines_PowerOff"]


def test_dry_run_shows_the_plan_and_changes_nothing(emu, tmp_path):
    result = run(emu, "--dry-run", audit=tmp_path / "a.jsonl")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "dry_run" and [s["phase"] for s in doc["plan"]["steps"]][:2] == ["snapshot", "copy"]
    assert "temporary" in doc["plan"]["cost"] and "password" not in json.dumps(doc["plan"]["state"])
    assert writes(emu) == [] and not (tmp_path / "a.jsonl").exists()


def test_without_yes_or_terminal_and_bad_combinations_are_usage_errors(emu, tmp_path):
    for args in ((), ("--resume", "--undo"), ("--dry-run", "--undo")):
        result = run(emu, *args)
        assert result.exit_code == 2 and "Traceback" not in result.output, args
    result = run(emu, "--resume", audit=tmp_path / "none.jsonl")
    assert result.exit_code == 2 and "no rescue of" in result.stderr
    assert writes(emu) == []


def test_yes_rescues_then_undo_restores_the_original_disk(emu, tmp_path):
    audit = tmp_path / "audit.jsonl"
    with emu.state.lock:
        original = emu.vm().os_disk_name
    done = run(emu, "--yes", audit=audit)
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["verdict"] == "verified" and original in doc["summary"]
    assert [r["phase"] for r in read_audit(audit)][-1] == "finished"
    undone = run(emu, "--undo", audit=audit)
    assert undone.exit_code == 0, undone.output
    with emu.state.lock:
        assert emu.vm().os_disk_name == original


@pytest.mark.parametrize("phase", ["swap", "verify"])
def test_resume_on_the_command_line_finishes_a_rescue_interrupted_at_a_phase(emu, tmp_path, phase):
    """A rescue stopped by Ctrl-C (the library run, as the CLI runs it) leaves its record in the audit
    log; `azrdp rescue VM --resume --audit-log PATH` continues from the first phase not done."""
    from azrdp.audit import AuditLog
    from azrdp.rescue import rescue
    from tests.support.rescue_support import TARGET, StopAt, options, session_for

    audit = tmp_path / "audit.jsonl"
    first = rescue(session_for(emu), TARGET, options(emu), audit=AuditLog(audit), progress=StopAt(phase))
    assert first.verdict == "interrupted" and read_audit(audit)[-1]["phase"] == "interrupted"

    resumed = run(emu, "--resume", audit=audit)

    assert resumed.exit_code == 0, resumed.output
    doc = json.loads(resumed.stdout)
    assert doc["verdict"] == "verified" and doc["state"]["done"][-1] == "cleanup"
    with emu.state.lock:
        assert emu.vm().os_disk_name == first.state["copy"] and emu.guest().registry["fDenyTSConnections"] == 0
    assert read_audit(audit)[-1]["phase"] == "finished"
    again = run(emu, "--resume", audit=audit)
    assert again.exit_code == 2 and "has ended; nothing to resume" in again.stderr
