"""A sweep reads its fleet through Azure Resource Graph: one query for every subscription, read
counts asserted from the emulator's call log (the ARM lists' path: test_sweep_reads.py); the
fallback to the lists when Resource Graph is refused; and Resource Graph's lag never makes a
wrong verdict (a VM whose indexed power state is stale is judged from ARM)."""

from __future__ import annotations

import math
import time

import pytest

from azrdp.emulator import Emulator
from azrdp.emulator.scenarios import FleetLayout
from azrdp.sweep import Selection, sweep
from tests.support.sweep_support import FAST, MIXED, tenant_session

LIST_OPERATIONS = ("VirtualMachines_List", "VirtualMachines_ListAll", "NetworkInterfaces_ListAll",
                   "NetworkSecurityGroups_List", "NetworkSecurityGroups_ListAll", "PublicIPAddresses_List",
                   "PublicIPAddresses_ListAll", "VirtualNetworks_List", "VirtualNetworks_ListAll")
"""The fleet's lists (a broken VM's own read, the per-VM path, lists the first page of its resource
group's NICs: NetworkInterfaces_List)."""


class Progress:
    def __init__(self) -> None:
        self.said: list[str] = []

    def info(self, message: str) -> None:
        self.said.append(message)

    def status(self, message: str) -> None:
        pass

    def done(self) -> None:
        pass


def run(emu, selection=None, **kwargs):
    kwargs.setdefault("probe_timeout", 3.0)
    kwargs.setdefault("probe_parallel", 16)
    return sweep(tenant_session(emu), selection or Selection(), source_ip=emu.state.client_ip, **kwargs)


def reads(emu) -> list:
    return [c for c in emu.calls if c.read]


def vm_of(path: str) -> str | None:
    tail = path.lower().split("/providers/microsoft.compute/virtualmachines/", 1)
    return tail[1].split("/")[0] if len(tail) == 2 else None


def test_a_fleet_costs_query_pages_and_only_its_broken_vms_cost_reads_of_their_own():
    """266 VMs over two subscriptions of two resource groups, 16 of them broken: one query for
    both subscriptions, ceil(rows / 1000) pages (a VM, its NIC, its NSG and its public IP are
    four rows; a subnet NSG and a VNet per group), no ARM list; each broken VM is read once from
    ARM (Resource Graph lags it), healthy VMs never."""
    mix = {"healthy": 250, "nsg-blocked": 8, "deallocated": 8}
    with Emulator.start(fleet=mix, speed=FAST, layout=FleetLayout(subscriptions=2, resource_groups=2)) as emu:
        result = run(emu)
        assert result.counts()["healthy"] == 250 and result.counts()["unhealthy"] == 16
        rows = 4 * sum(mix.values()) + 2 * 2 * 2
        assert result.reads["source"] == "resource-graph" and result.reads["list_pages"] == 0
        assert result.reads["graph_pages"] == math.ceil(rows / 1000) == emu.count("Resources") == 2
        assert sum(emu.count(op) for op in LIST_OPERATIONS) == 0
        broken = {r.vm.name.lower() for r in result.results if r.outcome != "healthy"}
        vm_reads = [vm_of(c.path) for c in emu.calls if c.operation == "VirtualMachines_Get"]
        assert sorted(vm_reads) == sorted(broken)                  # once each, and only the broken
        assert emu.count("VirtualMachines_InstanceView") == 0      # the VM read carries the agent
        assert not [c.path for c in reads(emu) if "vm-healthy-" in c.path.lower()]


def test_a_healthy_fleet_costs_one_page_and_nothing_else():
    with Emulator.start(fleet={"healthy": 20}, speed=FAST) as emu:
        result = run(emu)
        assert result.counts()["healthy"] == 20
        assert [c.operation for c in reads(emu)] == ["Resources"]
        assert result.reads["graph_pages"] == 1 and result.reads["per_vm_reads"] == 0
        query = emu.calls[-1].body if emu.calls[-1].operation == "Resources" else \
            next(c.body for c in emu.calls if c.operation == "Resources")
        assert query["subscriptions"] == [emu.subscription_id] and query["options"]["$top"] == 1000


@pytest.mark.parametrize("status, code", [(403, "AuthorizationFailed"), (409, "MissingSubscriptionRegistration"),
                                          (400, "InvalidQuery")])
def test_a_refused_query_falls_back_to_the_lists_and_says_so_once(status, code):
    """The lists then cost exactly what they cost without Resource Graph (test_sweep_reads.py),
    plus the one refused query."""
    with Emulator.start(fleet=MIXED, speed=FAST) as emu:
        emu.inject("refuse", operation="Resources", status=status, code=code, count=None)
        progress = Progress()
        result = run(emu, progress=progress)
        assert result.reads["source"] == "arm-lists" and result.reads["graph_pages"] == 0
        said = [line for line in progress.said if "Resource Graph" in line]
        assert len(said) == 1 and f"{status} {code}" in said[0] and "listing the fleet through ARM" in said[0]
        assert emu.count("Resources") == 1
        assert len([c for c in reads(emu) if c.operation != "Resources"]) == 6 + 2   # as without Resource Graph
        # the agent of the two running VMs that fail a check, and the serial log's SAS URI of the one
        # whose RDP does not answer (boot.health), as test_sweep_reads counts them
        assert emu.count("VirtualMachines_RetrieveBootDiagnosticsData") == 1
        assert result.reads["list_pages"] == 6 and result.reads["per_vm_reads"] == 2 + 1
        assert sorted(r.outcome for r in result.results) == ["healthy"] * 3 + ["unhealthy"] * 2


@pytest.mark.parametrize("options", [{"probe": False}, {"guest": True}], ids=["no-probe", "guest"])
def test_without_the_wire_to_confirm_its_rows_a_sweep_lists_through_arm(options):
    """--no-probe: every VM would be read again from ARM (nothing confirms the index); --guest:
    each VM is read from ARM before its Run Command anyway. The lists cost less then."""
    with Emulator.start(fleet={"healthy": 3}, speed=FAST) as emu:
        result = run(emu, **options)
        assert result.reads["source"] == "arm-lists" and emu.count("Resources") == 0


def test_a_query_given_up_half_way_falls_back_without_sweeping_a_vm_twice():
    """The first page's resource group starts from Resource Graph's rows; the second page is
    refused: the lists are read and every VM is handled exactly once."""
    with Emulator.start(fleet={"healthy": 264}, speed=FAST, layout=FleetLayout(resource_groups=2)) as emu:
        emu.inject("refuse", operation="Resources", status=403, after=1, count=None)
        progress = Progress()
        result = run(emu, progress=progress)
        names = [r.vm.name for r in result.results]
        assert len(names) == len(set(names)) == 264 and result.counts()["healthy"] == 264
        assert result.reads["source"] == "arm-lists" and result.reads["graph_pages"] == 1
        assert emu.count("Resources") == 2 and len([s for s in progress.said if "Resource Graph" in s]) == 1


def test_the_query_quota_is_waited_out_not_failed():
    """Resource Graph's quota (15 queries per 5 s per user): a page that finds it spent is
    answered 429 and waited out for x-ms-user-quota-resets-after on the session's clock."""
    from datetime import datetime, timezone

    from azrdp.clock import ManualClock

    clock = ManualClock(wall=datetime.now(timezone.utc))   # one clock: the client's wait moves Azure's time
    with Emulator.start(fleet={"healthy": 3}, speed=1, clock=clock) as emu:
        for _ in range(15):
            assert emu.state.graph.take_quota()[0]
        result = sweep(tenant_session(emu, clock=clock), Selection(), source_ip=emu.state.client_ip,
                       probe_timeout=3.0)
        assert result.reads["source"] == "resource-graph" and result.counts()["healthy"] == 3
        assert emu.count("Resources", status=429) == 1 and emu.count("Resources", status=200) == 1
        # the wait is x-ms-user-quota-resets-after (the rest of the 5 s window), not a guess
        assert [s for s in clock.sleeps if s > 1.0] and all(4.0 < s <= 5.0 for s in clock.sleeps if s > 1.0)


def _wait_until(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the emulator did not get there in time"
        time.sleep(0.01)


def test_a_stale_power_state_does_not_make_a_wrong_verdict():
    """Resource Graph still says 'running' for a VM stopped over ARM since, and 'deallocated' for
    one started since: each is read from ARM and judged like the lists judge it."""
    from azrdp.emulator.resource_graph import answer

    with Emulator.start(fleet={"healthy": 2, "deallocated": 1}, speed=FAST) as emu:
        emu.state.graph.lag = 10 ** 9        # Resource Graph never catches up in this test
        stopped, started = emu.vm("vm-healthy-002"), emu.vm("vm-deallocated-001")
        emu.update(lambda backend: (backend.stop(stopped), backend.start(started)), indexed=False)
        _wait_until(lambda: started.power == "running" and not started.booting and started.guest.up)
        emu.refresh()
        query = {"subscriptions": [emu.subscription_id], "query": "Resources | where type in~ "
                 "('microsoft.compute/virtualmachines') | project id, name, properties | order by id asc"}
        with emu.state.lock:
            indexed = {r["name"]: r["properties"]["extended"]["instanceView"]["powerState"]["code"]
                       for r in answer(emu.state, emu.state.graph, query)["data"]}
        assert indexed["vm-healthy-002"] == "PowerState/running"         # stale, both
        assert indexed["vm-deallocated-001"] == "PowerState/deallocated"
        by_graph = run(emu)
        by_lists = run(emu, resource_graph=False)
    graph = {r.vm.name: r for r in by_graph.results}
    lists = {r.vm.name: r for r in by_lists.results}
    assert {n: r.outcome for n, r in graph.items()} == {n: r.outcome for n, r in lists.items()} == {
        "vm-healthy-001": "healthy", "vm-healthy-002": "unhealthy", "vm-deallocated-001": "healthy"}
    for name in graph:   # the power state as ARM says it, not as Resource Graph indexed it
        power = [next(c.to_dict() for c in r.checks if c.id == "vm.power") for r in (graph[name], lists[name])]
        assert power[0] == power[1]
    assert "stopped" in graph["vm-healthy-002"].summary
