"""One repair at a time per VM (issue 12, item 5), beyond a Run Command in flight: a restart
another run made that Windows has not answered yet, and an ARM operation still in flight, both
refuse a repair with exit 2 before anything changes. Real SDK against the emulator on a manual
clock shared with azrdp (real Azure: a restart operation ends in 0.2-0.3 s, then Windows reboots
while the instance view keeps the agent's stale Ready; a start runs 3.3-4.1 s with
ProvisioningState/updating: ../shared/reference/real-azure-behaviour.md)."""

from __future__ import annotations

import datetime as dt

import pytest

from azrdp.audit import AuditLog
from azrdp.azure.activity import run_in_progress
from azrdp.azure.power import restart_vm
from azrdp.checks import Check, Status
from azrdp.clock import ManualClock
from azrdp.errors import UsageError
from azrdp.repair import FixOptions, fix
from azrdp.target import Target
from tests.support.emulator_support import session_for

RG, VM = "rg-azrdp-demo", "vm-web-01"


def _manual(start_emulator, fake_credential, scenario):
    clock = ManualClock()
    emu = start_emulator(scenario, speed=1.0, clock=clock)
    return emu, session_for(emu, fake_credential, clock=clock), clock


def _fix(azure, clock, tmp_path, **options):
    return fix(azure, Target(VM, RG), FixOptions(probe_timeout=0.5, **options),
               audit=AuditLog(tmp_path / "audit.jsonl", clock=clock), clock=clock)


def test_right_after_another_runs_restart_a_fix_waits_for_windows_instead_of_acting(start_emulator, fake_credential,
                                                                                      tmp_path):
    emu, azure, clock = _manual(start_emulator, fake_credential, "expired-cert")
    restart_vm(azure.compute, RG, VM, clock=clock, polling_interval=0)      # another run's restart
    sent = {op: emu.count(op) for op in ("VirtualMachines_RunCommand", "VirtualMachines_Restart")}

    result = _fix(azure, clock, tmp_path, fused=True)
    blockers = result.plans[0].blockers
    assert result.plans[0].empty and len(blockers) == 1
    assert blockers[0].startswith("the VM may still be rebooting") and "wait a few minutes" in blockers[0]
    assert "rescue" not in blockers[0]                # a booting VM is not a broken agent: no offline repair

    with pytest.raises(UsageError) as refused:        # a restart of its own would restart a booting VM again
        _fix(azure, clock, tmp_path, fused=True, reboot=True)
    assert refused.value.message.startswith(f"a restart Windows has not answered yet is in progress on VM {RG}/{VM} since ")
    assert "--force" in refused.value.hint
    assert {op: emu.count(op) for op in sent} == sent                       # nothing was sent


def test_a_fix_during_an_arm_operation_is_refused(start_emulator, fake_credential, tmp_path):
    emu, azure, clock = _manual(start_emulator, fake_credential, "expired-cert")
    azure.compute.virtual_machines.begin_restart(RG, VM, polling=False)      # another run's restart, in flight
    with pytest.raises(UsageError) as refused:
        _fix(azure, clock, tmp_path, fused=True, reboot=True)
    assert refused.value.message.startswith("an Azure operation (restart, start or update) is in progress on VM")
    assert emu.count("VirtualMachines_Restart") == 1


def _rebooting(minutes_ago: float, now: dt.datetime) -> Check:
    when = now - dt.timedelta(minutes=minutes_ago)
    return Check("vm.agent", Status.WARN, "the VM may still be rebooting", {"last_operation": when.isoformat()})


def test_a_restart_long_ago_whose_agent_never_came_back_is_broken_not_busy():
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    assert run_in_progress({}, [_rebooting(5, now)], now) is not None
    assert run_in_progress({}, [_rebooting(16, now)], now) is None         # azrdp's own wait bound is 15 min
    assert run_in_progress({}, [Check("vm.agent", Status.PASS, "Ready")], now) is None
