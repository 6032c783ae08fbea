"""`azrdp sweep --fix` stops on Ctrl-C and SIGTERM: its workers wake through the interruptible clock,
send nothing new (no restart, no Run Command), record what is in flight, and the command ends at
once with 130 / 143. The real CLI in a subprocess against a served emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from azrdp.emulator import Emulator
from tests.support.sweep_support import emulator_env


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_every_worker_and_nothing_new_is_sent(tmp_path, sig, code):
    with Emulator.start("0x904", vms=3, speed=1000) as emu:
        emu.inject("run_command_hang", count=None)      # every worker waits on a Run Command in flight
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "AZRDP_"))}
        env.update(emulator_env(emu), HOME=str(tmp_path))
        audit = tmp_path / "audit.jsonl"
        process = subprocess.Popen([sys.executable, "-m", "azrdp", "sweep", "--fix", "--allow-step", "machinekeys-acl",
                                    "-o", "json", "--audit-log", str(audit), "--probe-timeout", "1"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and process.poll() is None:
                if emu.count("VirtualMachines_RunCommand", status=202) >= 3:
                    break
                time.sleep(0.05)
            assert process.poll() is None, process.communicate()
            time.sleep(0.5)
            sent = time.monotonic()
            calls_before = len(emu.calls)
            process.send_signal(sig)
            stdout, stderr = process.communicate(timeout=30)
            took = time.monotonic() - sent
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        later = [c.operation for c in emu.calls[calls_before:]]
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    assert took < 10, f"took {took:.1f} s to stop"
    assert not any(op in ("VirtualMachines_Restart", "VirtualMachines_RunCommand", "VirtualMachines_Start",
                          "SecurityRules_CreateOrUpdate") for op in later), later
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    interrupted = [r for r in records if r["action"] == "interrupted"]
    assert len(interrupted) == 3, [(r["action"], r.get("status")) for r in records]
    assert all("Run Command" in (r["in_flight"] or "") for r in interrupted)
    assert "interrupted" in stderr
