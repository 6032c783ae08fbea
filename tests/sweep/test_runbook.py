"""The Azure Automation runbook end to end against the emulator, signed in with azure-identity's
real ManagedIdentityCredential through IDENTITY_ENDPOINT / IDENTITY_HEADER, as in an Automation job."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.sweep_support import PROBE_TIMEOUT

RUNBOOK = Path(__file__).resolve().parents[2] / "scripts" / "runbook" / "azrdp_sweep_runbook.py"
PREFIX = "AZRDP-SWEEP-RESULT:"


def load_runbook():
    from scripts.runbook import azrdp_sweep_runbook

    return azrdp_sweep_runbook


def result_of(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith(PREFIX)]
    assert len(lines) == 1, output
    return json.loads(lines[0][len(PREFIX):])


def test_runbook_fixes_what_its_policy_allows_reports_the_rest_and_fails(fleet, emu_env):
    emu_env(fleet, identity=True)
    out = io.StringIO()
    code = load_runbook().run(["--fix", "--allow-step", "machinekeys-acl", "--probe-timeout", str(PROBE_TIMEOUT),
                               "--source-ip", fleet.state.client_ip], out=out,
                              session_kwargs={"polling_interval": 0})
    text = out.getvalue()
    assert code == 1, text
    result = result_of(text)
    by_name = {r["vm"]: r for r in result["results"]}
    assert {name: r["outcome"] for name, r in by_name.items()} == {
        "vm-healthy-001": "healthy", "vm-healthy-002": "healthy", "vm-0x904-001": "fixed",
        "vm-nsg-blocked-001": "unhealthy", "vm-agent-not-ready-001": "healthy"}   # RDP answers: agent not read
    assert result["policy"] == {"fix": True, "steps": ["rdp-config", "cert", "sessions", "reboot", "machinekeys-acl"]}
    assert result["ok"] is False and result["counts"]["fixed"] == 1
    # the 0x904 VM really answers now, with a valid certificate and a free seat
    assert by_name["vm-0x904-001"]["answers"] is True
    snapshot = {vm["name"]: vm for vm in fleet.snapshot()["vms"]}
    assert snapshot["vm-0x904-001"]["guest"]["certificate"]["expired"] is False
    # what the policy may not do is reported, with nothing sent to those VMs
    nsg = by_name["vm-nsg-blocked-001"]
    assert nsg["repair"]["verdict"] == "not_attempted" and "never opens the port" in nsg["summary"]
    assert by_name["vm-agent-not-ready-001"]["repair"] is None          # RDP answers: nothing to repair
    touched = {c.path.split("/")[-2] for c in fleet.calls
               if c.operation in ("VirtualMachines_RunCommand", "VirtualMachines_Restart", "VirtualMachines_Start",
                                  "SecurityRules_CreateOrUpdate")}
    assert touched == {"vm-0x904-001"}
    assert fleet.count("SecurityRules_CreateOrUpdate") == 0 and fleet.count("VirtualMachines_Start") == 0
    # signed in through the managed-identity endpoint, for the ARM audience
    assert fleet.identity.issued and set(fleet.identity.issued) == {fleet.base_url}
    # a readable summary for the job's output
    assert "vm-0x904-001" in text and "5 VMs in" in text and "1 fixed" in text


def test_without_allow_step_the_gated_steps_are_never_run(fleet, emu_env):
    emu_env(fleet, identity=True)
    out = io.StringIO()
    code = load_runbook().run(["--fix", "--resource-group", "rg-azrdp-fleet", "--probe-timeout",
                               str(PROBE_TIMEOUT), "--source-ip", fleet.state.client_ip], out=out,
                              session_kwargs={"polling_interval": 0})
    assert code == 1
    steps = [p["value"] for c in fleet.calls if c.operation == "VirtualMachines_RunCommand"
             for p in c.body.get("parameters", []) if p["name"] == "Steps"]
    assert steps and not any("machinekeys" in value for value in steps)
    by_name = {r["vm"]: r for r in result_of(out.getvalue())["results"]}
    assert by_name["vm-0x904-001"]["outcome"] == "unhealthy"
    # without machinekeys-acl a new certificate cannot be made, so the guest holds the cert step
    # back and the old one is not replaced (RDP keeps answering with it); the seats are freed
    assert "guest step cert skipped: held back: MachineKeys ACL not default; run machinekeys-acl" \
        in by_name["vm-0x904-001"]["summary"]
    guest = {vm["name"]: vm for vm in fleet.snapshot()["vms"]}["vm-0x904-001"]["guest"]
    assert guest["certificate"] is not None and guest["tls_usable"]
    # one seat freed: only as many disconnected sessions as that needs are logged off (review #8)
    assert sum(1 for session in guest["sessions"] if session["user"] and session["state"] == "Disc") == 1


def test_user_assigned_identity_and_a_wrong_one(fleet, emu_env):
    emu_env(fleet, identity=True)
    runbook = load_runbook()
    out = io.StringIO()
    assert runbook.run(["--client-id", fleet.identity.client_id, "--tag", "azrdp-emulator=true", "--probe-timeout",
                        str(PROBE_TIMEOUT), "--source-ip", fleet.state.client_ip], out=out) == 1
    assert len(result_of(out.getvalue())["results"]) == 5
    wrong = io.StringIO()
    assert runbook.run(["--client-id", "00000000-0000-0000-0000-000000000000"], out=wrong) == 3
    assert result_of(wrong.getvalue())["error"]["type"] == "AuthError"
    assert "not signed in to Azure (--auth msi)" in wrong.getvalue()


def test_runbook_as_a_script_check_only(emu_env):
    """As Automation runs it: `python3 runbook.py ARGS`, the result on stdout, the job's exit status."""
    from azrdp.emulator import Emulator

    with Emulator.start(fleet={"healthy": 2}, speed=5000) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "AZRDP_"))}
        from tests.support.sweep_support import emulator_env

        env.update(emulator_env(emu, identity=True))
        done = subprocess.run([sys.executable, str(RUNBOOK), "--probe-timeout", str(PROBE_TIMEOUT)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert result_of(done.stdout)["counts"]["healthy"] == 2
        bad = subprocess.run([sys.executable, str(RUNBOOK), "--allow-step", "format-c"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "'format-c' is not a repair step" in bad.stdout


def test_installer_prints_every_step_in_a_dry_run():
    installer = RUNBOOK.parent / "install.sh"
    assert subprocess.run(["bash", "-n", str(installer)]).returncode == 0
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}   # no az on PATH: nothing is called
    done = subprocess.run(["bash", str(installer), "--account", "aa", "--resource-group", "rg", "--storage", "st",
                           "--runbook-args", "--fix --tag rdp=managed", "--dry-run"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for step in ("pip wheel", "pip download", "runtimeEnvironments/azrdp-python310", "runbooks/azrdp-sweep",
                 "az automation runbook publish", "az automation schedule create", "jobSchedules",
                 "az role definition create", "az role assignment create"):
        assert step in out, step
    assert "--role azrdp\\ operator --scope /subscriptions/SUBSCRIPTION_ID" in out
    missing = subprocess.run(["bash", str(installer), "--dry-run"], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "are required" in missing.stderr
