"""How many ARM reads a sweep costs, counted from the emulator's call log: a regression in the
read budget fails here, not only in the benchmark."""

from __future__ import annotations

from sweep_support import FAST, MIXED, PROBE_TIMEOUT, tenant_session

from azrdp.emulator import Emulator
from azrdp.sweep import sweep


def arm_reads(emu) -> list:
    return [c for c in emu.calls if c.method == "GET" and c.path.lower().startswith("/subscriptions/")]


def test_the_usual_layout_never_reads_a_nic_by_itself():
    """Every NIC sits beside its VM (the az vm create layout): the resource group's NIC list
    answers for all of them, so no NetworkInterfaces_Get (the shared-read session used to turn
    the first-page listing into an AttributeError, swallowed, and a fourth read per VM)."""
    with Emulator.start(fleet=MIXED, speed=FAST) as emu:
        result = sweep(tenant_session(emu), probe_timeout=PROBE_TIMEOUT, source_ip=emu.state.client_ip)
        assert len(result.results) == sum(MIXED.values())
        assert emu.count("NetworkInterfaces_Get") == 0
        assert emu.count("NetworkInterfaces_List") == 1
        vms = len(result.results)
        # per VM: itself with its instance view, its public IP, its NIC's NSG; shared: the VM and
        # NIC lists, the subnet, its NSG and (for --source-ip) the virtual network
        assert len(arm_reads(emu)) == 3 * vms + 5
