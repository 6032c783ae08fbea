"""How many ARM reads a sweep costs, counted from the emulator's call log: a regression in the
read budget fails here, not only in the benchmark (bench/sweep_scale.py)."""

from __future__ import annotations

import math

from azrdp.emulator import Emulator
from azrdp.emulator.responses import PAGE_SIZE
from azrdp.emulator.scenarios import FleetLayout
from azrdp.sweep import Selection, sweep
from tests.support.sweep_support import FAST, MIXED, tenant_session

PER_VM_READS = ("VirtualMachines_Get", "VirtualMachines_InstanceView", "NetworkInterfaces_Get", "Subnets_Get",
                "VirtualNetworks_Get", "NetworkSecurityGroups_Get", "PublicIPAddresses_Get")


def arm_reads(emu) -> list:
    return [c for c in emu.calls if c.method == "GET" and c.path.lower().startswith("/subscriptions/")]


def run(emu, selection=None, **kwargs):
    """The emulator's listeners and the probes share this process (and a loaded machine): a TLS
    handshake gets more time than PROBE_TIMEOUT, or a slow healthy VM would cost an agent read.
    The ARM lists' path (Resource Graph's: tests/sweep/test_sweep_graph.py)."""
    kwargs.setdefault("probe_timeout", 3.0)
    kwargs.setdefault("resource_graph", False)
    kwargs.setdefault("probe_parallel", 16)
    return sweep(tenant_session(emu), selection or Selection(), source_ip=emu.state.client_ip, **kwargs)


def test_the_usual_layout_never_reads_a_nic_by_itself():
    """Every NIC sits beside its VM (the az vm create layout): the lists answer for all of them,
    so no NetworkInterfaces_Get (the shared-read session once turned the first-page NIC listing
    into an AttributeError, swallowed, and a fourth read per VM)."""
    with Emulator.start(fleet=MIXED, speed=FAST) as emu:
        result = run(emu)
        assert len(result.results) == sum(MIXED.values())
        assert emu.count("NetworkInterfaces_Get") == 0
        # six lists of one page each; the agent of the two running VMs that fail a check, and the
        # serial log (a POST for its SAS URI, then the blob from storage) of the one whose RDP does
        # not answer
        assert len(arm_reads(emu)) == 6 + 2
        assert emu.count("VirtualMachines_RetrieveBootDiagnosticsData") == 1
        assert result.reads["per_vm_reads"] == 2 + 1


def test_a_fleet_costs_pages_and_only_its_broken_vms_cost_reads_of_their_own():
    """126 VMs (5% broken) over two subscriptions of two resource groups: per subscription six
    lists of ceil(items / page size) pages; per-VM reads only for the broken VMs (their agent,
    one read each, and, as their RDP does not answer, the serial log's health report: one POST
    for its SAS URI each), none for a healthy one."""
    mix = {"healthy": 120, "nsg-blocked": 6}
    with Emulator.start(fleet=mix, speed=FAST, layout=FleetLayout(subscriptions=2, resource_groups=2)) as emu:
        result = run(emu)
        assert result.counts()["healthy"] == 120 and result.counts()["unhealthy"] == 6
        per_subscription_vms = 63
        nsgs = per_subscription_vms + 2          # each VM's NIC NSG, one subnet NSG per resource group
        # VMs, their status, NICs and public IPs (one each per VM), NSGs, and the two VNets
        pages = 2 * (4 * math.ceil(per_subscription_vms / PAGE_SIZE) + math.ceil(nsgs / PAGE_SIZE) + 1)
        assert result.reads["list_pages"] == pages
        assert {op: emu.count(op) for op in PER_VM_READS} == {op: 6 if op == "VirtualMachines_InstanceView" else 0
                                                               for op in PER_VM_READS}
        assert emu.count("VirtualMachines_RetrieveBootDiagnosticsData") == 6
        assert len(arm_reads(emu)) + 6 == pages + 6 + 6 == result.reads["list_pages"] + result.reads["per_vm_reads"]


def test_a_resource_group_selection_lists_only_those_groups():
    """-g lists the VMs and networks of the named groups (the status list is subscription-wide:
    statusOnly exists on VirtualMachines_ListAll only)."""
    with Emulator.start(fleet={"healthy": 8}, speed=FAST, layout=FleetLayout(resource_groups=2)) as emu:
        result = run(emu, Selection(resource_groups=("rg-azrdp-fleet-02",)))
        assert {r.vm.resource_group for r in result.results} == {"rg-azrdp-fleet-02"} and len(result.results) == 4
        assert emu.count("VirtualMachines_List") == 1 and emu.count("VirtualMachines_ListAll") == 1
        assert emu.count("NetworkInterfaces_List") == 1 and emu.count("NetworkInterfaces_ListAll") == 0
        assert sum(emu.count(op) for op in PER_VM_READS) == 0


def test_a_vm_can_start_as_soon_as_its_evidence_is_listed():
    """Once the first page of every list is in, the first VM's whole RDP path is known (its body,
    run time status, NIC, subnet, NSGs and public IP) while the last VM's is not: the sweep checks
    and probes a VM then, not after the last page. The pages are replayed in that order."""
    from azrdp.azure.fleet import FleetView, read_fleet
    from azrdp.azure.inventory import listed_gap
    from azrdp.target import Target

    class Recording(FleetView):
        def add_page(self, kind, items):
            self.log.append((kind, list(items)))
            super().add_page(kind, items)

    with Emulator.start(fleet={"healthy": 3 * PAGE_SIZE}, speed=FAST) as emu:
        session = tenant_session(emu).for_subscription(emu.subscription_id)
        recorded = Recording(emu.subscription_id)
        recorded.log = []
        read_fleet(session, view=recorded)
    first = Target("vm-healthy-001", "rg-azrdp-fleet", emu.subscription_id)
    last = Target("vm-healthy-150", "rg-azrdp-fleet", emu.subscription_id)
    replay = FleetView(emu.subscription_id)
    kinds = {kind for kind, _ in recorded.log}
    firsts = [next(page for page in recorded.log if page[0] == kind) for kind in sorted(kinds)]
    for kind, items in firsts:
        assert listed_gap(replay, first, want_vnet=True) is not None or not replay.has_status(first.resource_id(emu.subscription_id))
        replay.add_page(kind, items)
    assert replay.has_status(first.resource_id(emu.subscription_id)) and listed_gap(replay, first, want_vnet=True) is None
    assert listed_gap(replay, last, want_vnet=True) is not None and not replay.complete
    for page in recorded.log:
        if not any(page is f for f in firsts):
            replay.add_page(*page)
    assert listed_gap(replay, last, want_vnet=True) is None and replay.has_status(last.resource_id(emu.subscription_id))


def test_a_vm_that_could_not_be_probed_and_fails_nothing_costs_no_read():
    """--no-probe (or no public IP): 'unverified', and its agent is not read; the lists answer."""
    with Emulator.start(fleet={"healthy": 3}, speed=FAST) as emu:
        result = run(emu, probe=False)
        assert result.counts()["unverified"] == 3
        assert sum(emu.count(op) for op in PER_VM_READS) == 0 and result.reads["per_vm_reads"] == 0


def test_the_shared_read_session_reads_a_usual_layout_without_a_nic_get():
    """The path the fleet lists do not cover (a VM read by itself through the sweep's shared-read
    session, as a repair's second look does): the first-page NIC listing is answered by the shared
    reads as a plain list, and must be taken as it is (once, .by_page() on it raised, was swallowed,
    and every VM cost a NetworkInterfaces_Get and a fourth round trip). Two VMs of one resource
    group: one NIC list between them, no NIC read by itself, three round trips each."""
    from azrdp.azure.shared_reads import shared_reads
    from azrdp.diagnose import diagnose
    from azrdp.target import Target

    with Emulator.start(fleet={"healthy": 2}, speed=FAST) as emu:
        shared = shared_reads(tenant_session(emu).for_subscription(emu.subscription_id))
        diagnoses = [diagnose(shared, Target(f"vm-healthy-{n:03d}", "rg-azrdp-fleet"), probe=False) for n in (1, 2)]
        assert emu.count("NetworkInterfaces_Get") == 0
        assert emu.count("NetworkInterfaces_List") == 1
        assert [d.round_trips for d in diagnoses] == [3, 3]
        assert all(d.check("vm.power").status.value == "pass" for d in diagnoses)
