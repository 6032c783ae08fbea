"""The live status line, as a person at a terminal sees it: the real CLI in a subprocess whose
stderr is a pseudo-terminal, against the emulator, repairing 0x904 (one Run Command, one restart).

The emulator runs Azure 5x faster, so the Run Command (20-40 s on Azure) lasts 4-8 s. The restart
operation itself ends in 0.2-0.3 s as on Azure; the long wait after it is for RDP while Windows goes
down and boots (18-40 s on Azure, 3.6-8 s here): both long enough for the line to show (after 2 s)
and to update."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time

import pytest

from azrdp.emulator import Emulator
from tests.support.e2e_support import cli_environment

SPEED = 5.0
LIMIT = 150.0


def _read_all(fd: int, proc: subprocess.Popen, deadline: float) -> bytes:
    out = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:          # EIO: the child closed its end
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_terminal_sees_the_status_line_update_during_the_run_command_and_the_restart(tmp_path):
    with Emulator.start("0x904", speed=SPEED, seed=13) as emu:
        vm = emu.vm()
        env = {k: v for k, v in cli_environment(emu, tmp_path).items() if k != "CI"}
        env.update(TERM="xterm", COLUMNS="200")
        master, slave = os.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "azrdp", "fix", vm.name, "-g", vm.resource_group, "--yes",
             "--source-ip", emu.state.client_ip, "--audit-log", str(tmp_path / "audit.jsonl")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        try:
            shown = _read_all(master, proc, time.monotonic() + LIMIT).decode("utf-8", "replace")
            stdout = proc.communicate(timeout=30)[0].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
    assert proc.returncode == 0, shown + stdout
    renders = [part for part in shown.replace("\x1b[K", "").replace("\n", "\r").split("\r") if part]

    def elapsed(pattern: str) -> list[str]:
        return [m.group(1) for r in renders for m in [re.search(pattern, r)] if m]

    run_command = elapsed(rf"Run Command on {vm.name}: running, (\d+:\d\d) of up to 15:00")
    rdp = elapsed(r"RDP on [0-9.]+:\d+: [a-z_]+, (\d+:\d\d) of up to 15:00")
    # the line appears once a wait has lasted 2 s, and its clock moves while Azure works
    assert run_command and run_command[0] == "0:02" and len(set(run_command)) >= 2, renders
    assert rdp and rdp[0] == "0:02" and len(set(rdp)) >= 2, renders
    assert run_command == sorted(run_command) and rdp == sorted(rdp)
    assert "Verdict: verified" in stdout
