"""The end-to-end harness: the real CLI in a subprocess against an emulator served from the test
process, pointed at it only by the environment ``Emulator.environment()`` gives.

Each :class:`Case` gets its own emulator (port 0, its own 127.A.B.x addresses), so cases never
share state and can run side by side: the CLI polls Azure's long-running operations at its
production interval (5 s), so the suite runs every case at once and is as long as its slowest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azrdp.audit import read_audit
from azrdp.emulator import Emulator

SPEED = 1000.0          # a 30 s Run Command takes 30 ms, a restart 60-120 ms
PROBE_TIMEOUT = "2"     # a probe into dropped packets gives up after 2 s (default 5)
RUN_LIMIT = 120.0       # a CLI still running after this is killed (and the case fails)


@dataclass(frozen=True)
class Case:
    name: str
    scenario: str
    args: tuple[str, ...] = ()                      # after `fix VM -g RG --yes -o json ...`
    faults: tuple[dict[str, Any], ...] = ()         # Emulator.inject(**fault)
    during: Callable[[Emulator, subprocess.Popen], None] | None = None
    command: str = "fix"
    runs: int = 1     # the same command again against the same emulator (calls and guest_run_commands count all runs)


@dataclass
class Outcome:
    case: Case
    code: int
    stdout: str
    stderr: str
    audit: list[dict[str, Any]]
    calls: Counter = field(default_factory=Counter)     # (operationId, status) -> requests
    faults: list[dict[str, Any]] = field(default_factory=list)
    guest_run_commands: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    earlier: list[Outcome] = field(default_factory=list)   # the runs before this one (Case.runs > 1)

    @property
    def doc(self) -> dict[str, Any]:
        return json.loads(self.stdout)

    def count(self, operation: str, status: int | None = None) -> int:
        return sum(n for (op, st), n in self.calls.items() if op == operation and (status is None or st == status))

    def checks(self, side: str) -> dict[str, str]:
        """check id -> status, of the `before` or `after` diagnosis."""
        diagnosis = self.doc[side] or {"checks": []}
        return {c["id"]: c["status"] for c in diagnosis["checks"]}

    def actions(self) -> list[tuple[str, Any]]:
        """(action, status or step) of every audit record, in order."""
        return [(r["action"], r.get("step") or r.get("status") or r.get("verdict")) for r in self.audit]

    def describe(self) -> str:
        return (f"{self.case.name}: exit {self.code} after {self.seconds:.1f} s\n--- stdout\n{self.stdout[-3000:]}\n"
                f"--- stderr\n{self.stderr[-3000:]}")


def cli_environment(emu: Emulator | None, home: Path) -> dict[str, str]:
    """The caller's environment without Azure sign-in variables, plus the emulator's."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("AZURE_", "AZRDP_", "IDENTITY_", "MSI_"))}
    return {**keep, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
            **(emu.environment() if emu is not None else {})}


def run_case(case: Case, folder: Path) -> Outcome:
    """Serve the case's emulator, run the CLI against it, and collect what both saw. `azrdp demo`
    serves its own emulator: it gets none from here, and an environment without one."""
    folder.mkdir(parents=True, exist_ok=True)
    if case.command != "fix":
        return _run(case, folder, [case.command, *case.args], None)
    with Emulator.start(case.scenario, speed=SPEED) as emu:
        for fault in case.faults:
            emu.inject(**fault)
        vm = emu.vm()
        earlier: list[Outcome] = []
        for run in range(case.runs):
            audit = "audit.jsonl" if run == case.runs - 1 else f"audit-{run + 1}.jsonl"
            argv = ["fix", vm.name, "-g", vm.resource_group, "--yes", "-o", "json", "--audit-log",
                    str(folder / audit), "--source-ip", emu.state.client_ip, "--probe-timeout", PROBE_TIMEOUT,
                    *case.args]
            outcome = _run(case, folder, argv, emu, audit=audit)
            outcome.earlier = list(earlier)
            earlier.append(outcome)
        return outcome


def _run(case: Case, folder: Path, argv: list[str], emu: Emulator | None, *, audit: str = "audit.jsonl") -> Outcome:
    begun = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "azrdp", *argv], env=cli_environment(emu, folder),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder)
    try:
        if case.during is not None and emu is not None:
            case.during(emu, process)
        stdout, stderr = process.communicate(timeout=RUN_LIMIT)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    outcome = Outcome(case, process.returncode, stdout, stderr, read_audit(folder / audit),
                      seconds=time.monotonic() - begun)
    if emu is not None:
        outcome.calls = Counter((c.operation, c.status) for c in emu.calls)
        outcome.faults = emu.state.faults.to_list()
        outcome.guest_run_commands = list(emu.state.run_commands)
    return outcome


def interrupt_once_run_command_polls(emu: Emulator, process: subprocess.Popen, *, sig: int = signal.SIGINT) -> None:
    """Ctrl-C (or ``sig``) while azrdp waits on a Run Command that never finishes (once it has polled it).
    Watches as long as the case may run: on a loaded machine the Run Command may come late."""
    deadline = time.monotonic() + RUN_LIMIT - 5
    while time.monotonic() < deadline and process.poll() is None:
        if emu.count("VirtualMachines_RunCommand", status=202) and emu.count("ComputeOperations_Get"):
            time.sleep(0.5)   # inside the poller's wait, not in the middle of a request
            process.send_signal(sig)
            return
        time.sleep(0.05)


def terminate_once_run_command_polls(emu: Emulator, process: subprocess.Popen) -> None:
    """SIGTERM (how CI systems and Azure Automation cancel a job) while a Run Command is in flight."""
    interrupt_once_run_command_polls(emu, process, sig=signal.SIGTERM)


MAX_PARALLEL = 8


class Runner:
    """Runs every case the session asks for at once; each test waits for its own."""

    def __init__(self, folder: Path, cases: list[Case]):
        self.folder = folder
        # At most MAX_PARALLEL at once: on a loaded 2-core machine thirty subprocesses and their
        # emulators at once starved each other past RUN_LIMIT (every case timed out together).
        workers = max(1, min(len(cases), MAX_PARALLEL))
        self._waves = -(-max(1, len(cases)) // workers) * max([c.runs for c in cases] or [1])
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="e2e")
        self._futures: dict[str, Future] = {c.name: self._pool.submit(run_case, c, folder / c.name) for c in cases}

    def outcome(self, name: str) -> Outcome:
        return self._futures[name].result(timeout=(RUN_LIMIT + 60) * self._waves)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def finished(runner: Runner, name: str, code: int) -> Outcome:
    """The case's outcome, which must have ended with exit ``code`` and no traceback on stderr."""
    outcome = runner.outcome(name)
    assert "Traceback" not in outcome.stderr, outcome.describe()
    assert outcome.code == code, outcome.describe()
    return outcome
