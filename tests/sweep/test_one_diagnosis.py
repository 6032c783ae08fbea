"""`sweep --fix` and `check` diagnose each VM once (issue 14 item 2), counted from the emulator's
call log: the VM's own reads (VirtualMachines_Get, VirtualMachines_InstanceView) before the repair
Run Command, and the VM reads of a check. The sweep once diagnosed, planned, then let fix()
diagnose the VM again; the check read the Azure side again for the report it had just read."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from azrdp.clock import ManualClock
from azrdp.emulator import Emulator
from azrdp.smoke import smoke_check
from azrdp.sweep import FixPolicy, Selection, sweep
from azrdp.target import Target
from tests.support.sweep_support import FAST, tenant_session

VM_READS = ("VirtualMachines_Get", "VirtualMachines_InstanceView")
PROBE_TIMEOUT = 3.0   # a loaded machine: a healthy VM's TLS handshake must not time out into an agent read


def session_of(emu):
    """Waits on a ManualClock; certificates are judged by real time."""
    return tenant_session(emu, clock=ManualClock(wall=datetime.now(timezone.utc)))


def calls_of(emu, name: str) -> list:
    """The calls about VM ``name`` (its own resource and what is below it), in order."""
    def vm_of(path: str) -> str | None:
        tail = path.lower().split("/providers/microsoft.compute/virtualmachines/", 1)
        return tail[1].split("/")[0] if len(tail) == 2 else None

    return [c for c in emu.calls if vm_of(c.path) == name.lower()]


def reads_before_the_repair(emu, name: str) -> list[str]:
    calls = calls_of(emu, name)
    sent = next(i for i, c in enumerate(calls) if c.operation == "VirtualMachines_RunCommand")
    return [c.operation for c in calls[:sent] if c.operation in VM_READS]


@pytest.mark.parametrize("resource_graph, vm_reads", [
    (False, ["VirtualMachines_InstanceView"]),   # from the ARM lists: its agent, once (it failed a check)
    (True, ["VirtualMachines_Get"]),             # from Resource Graph (which lags): the VM from ARM, once
], ids=["arm-lists", "resource-graph"])
def test_sweep_fix_repairs_from_the_diagnosis_it_made(tmp_path, resource_graph, vm_reads):
    with Emulator.start(fleet={"healthy": 1, "rdp-disabled": 1}, speed=FAST, seed=3) as emu:
        result = sweep(session_of(emu), Selection(), policy=FixPolicy.unattended(), source_ip=emu.state.client_ip,
                       probe_timeout=PROBE_TIMEOUT, audit_path=tmp_path / "audit.jsonl", resource_graph=resource_graph)
        by_name = {r.vm.name: r for r in result.results}
        assert by_name["vm-rdp-disabled-001"].outcome == "fixed", by_name["vm-rdp-disabled-001"].summary
        # the VM was read once before its repair (its one diagnosis); nothing more
        assert reads_before_the_repair(emu, "vm-rdp-disabled-001") == vm_reads
        assert [c.operation for c in calls_of(emu, "vm-healthy-001") if c.operation in VM_READS] == []


def test_check_completes_the_diagnosis_it_read_once():
    with Emulator.start("rdp-disabled", speed=FAST, seed=3) as emu:
        session = session_of(emu).for_subscription(emu.subscription_id)
        result = smoke_check(lambda: session, Target("vm-web-01", emu.resource_group), probe_timeout=PROBE_TIMEOUT,
                             source_ip=emu.state.client_ip)
        assert not result.ok and result.diagnosis is not None
        assert result.diagnosis.check("guest.rdp_enabled").status.value == "fail"   # the guest was read, once
        operations = [c.operation for c in calls_of(emu, "vm-web-01")]
        assert operations.count("VirtualMachines_Get") == 1 and "VirtualMachines_InstanceView" not in operations
        assert operations.count("VirtualMachines_RunCommand") == 1


def test_sweep_fix_reads_a_broken_vms_serial_log_once():
    """A VM whose RDP does not answer has its serial log's health report read once (boot.health),
    by the sweep's diagnosis; the repair that reads its guest before repairing (no wire evidence
    from the firewall's silent drop: no fused mode) keeps that reading instead of asking again. The
    healthy VM costs none."""
    with Emulator.start(fleet={"healthy": 1, "firewall": 1}, speed=FAST, seed=3) as emu:
        result = sweep(session_of(emu), Selection(), policy=FixPolicy.unattended(), source_ip=emu.state.client_ip,
                       probe_timeout=PROBE_TIMEOUT)
        by_name = {r.vm.name: r for r in result.results}
        assert by_name["vm-firewall-001"].outcome == "fixed", by_name["vm-firewall-001"].summary
        assert [r["payload"] for r in emu.state.run_commands] == ["diagnose", "repair"]   # guest read, repair
        boot = [c for c in calls_of(emu, "vm-firewall-001") if c.operation == "VirtualMachines_RetrieveBootDiagnosticsData"]
        assert len(boot) == 1
        assert not [c for c in calls_of(emu, "vm-healthy-001")
                    if c.operation == "VirtualMachines_RetrieveBootDiagnosticsData"]
