"""The list operations a fleet job reads: ARM's pages (nextLink, one read token per page),
``statusOnly`` and ``$expand`` as Microsoft's specification gives them, the fleet builder's
subscriptions and resource groups."""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import HttpResponseError

from azrdp.clock import ManualClock
from azrdp.emulator import Emulator
from azrdp.emulator.responses import PAGE_SIZE
from azrdp.emulator.scenarios import FleetLayout
from azrdp.emulator.throttling import ReadLimit
from tests.support.emulator_support import session_for


def test_network_lists_page_with_next_link_and_every_page_is_a_read(start_emulator, fake_credential):
    emu = start_emulator(fleet={"healthy": PAGE_SIZE + 3})
    network = session_for(emu, fake_credential).network
    nics = list(network.network_interfaces.list_all())
    assert len(nics) == PAGE_SIZE + 3 and len({n.id for n in nics}) == PAGE_SIZE + 3
    assert emu.count("NetworkInterfaces_ListAll") == 2                       # two pages, two reads
    nsgs = list(network.network_security_groups.list("rg-azrdp-fleet"))
    assert len(nsgs) == PAGE_SIZE + 4 and emu.count("NetworkSecurityGroups_List") == 2
    assert len(list(network.public_ip_addresses.list_all())) == PAGE_SIZE + 3
    vnets = list(network.virtual_networks.list_all())
    assert [v.name for v in vnets] == ["vnet-azrdp"] and vnets[0].subnets[0].network_security_group is not None
    assert len(list(network.network_security_groups.list_all())) == PAGE_SIZE + 4
    assert len(list(network.public_ip_addresses.list("rg-azrdp-fleet"))) == PAGE_SIZE + 3
    assert len(list(network.virtual_networks.list("rg-azrdp-fleet"))) == 1


def test_status_only_lists_run_time_status_and_nothing_else(start_emulator, fake_credential):
    emu = start_emulator(fleet={"healthy": 2, "deallocated": 1})
    compute = session_for(emu, fake_credential).compute
    status = {vm.name: vm for vm in compute.virtual_machines.list_all(status_only="true")}
    assert [s.code for s in status["vm-deallocated-001"].properties.instance_view.statuses] == \
        ["ProvisioningState/succeeded", "PowerState/deallocated"]
    healthy = status["vm-healthy-001"]
    assert healthy.properties.instance_view.vm_agent is None          # the agent is not a run time status
    assert healthy.properties.storage_profile is None and healthy.properties.network_profile is None
    # on the resource group's list statusOnly is no parameter at all: the model comes back
    in_group = list(compute.virtual_machines.list("rg-azrdp-fleet", params={"statusOnly": "true"}))
    assert in_group[0].properties.storage_profile.os_disk.os_type == "Windows"
    assert in_group[0].properties.instance_view is None


def test_expand_instance_view_on_a_list_needs_a_filter(start_emulator, fake_credential):
    emu = start_emulator(fleet={"healthy": 1})
    compute = session_for(emu, fake_credential).compute
    with pytest.raises(HttpResponseError) as refused:
        list(compute.virtual_machines.list_all(expand="instanceView"))
    assert refused.value.status_code == 400 and refused.value.error.code == "InvalidParameter"
    vmss = (f"/subscriptions/{emu.subscription_id}/resourceGroups/rg-azrdp-fleet/providers/"
            "Microsoft.Compute/virtualMachineScaleSets/web")
    assert list(compute.virtual_machines.list("rg-azrdp-fleet", filter=f"'virtualMachineScaleSet/id' eq '{vmss}'",
                                              expand="instanceView")) == []    # no VM belongs to a scale set
    with pytest.raises(HttpResponseError):
        list(compute.virtual_machines.list_all(filter="name eq 'x'"))


def test_each_page_takes_a_token_from_the_read_bucket(fake_credential):
    with Emulator.start(fleet={"healthy": 2 * PAGE_SIZE + 1}, speed=1, clock=ManualClock(),
                        read_limit=ReadLimit(2, 0.001)) as emu:
        compute = session_for(emu, fake_credential).compute
        with pytest.raises(HttpResponseError) as caught:
            list(compute.virtual_machines.list_all())                       # three pages, two tokens
        assert caught.value.status_code == 429
        assert emu.count("VirtualMachines_ListAll", status=200) == 2


def test_a_fleet_spreads_over_subscriptions_and_resource_groups_in_seconds():
    started = time.monotonic()
    with Emulator.start(fleet={"healthy": 300, "nsg-blocked": 20}, speed=1000,
                        layout=FleetLayout(subscriptions=3, resource_groups=4)) as emu:
        built = time.monotonic() - started
        subs = emu.snapshot()["subscriptions"]
        assert len(subs) == 3 and len({s["name"] for s in subs}) == 3
        groups = {(vm.subscription, vm.resource_group) for vm in emu.state.all_vms()}
        assert len(groups) == 12 and len(emu.vm_names) == len(set(emu.vm_names)) == 320
        per_group = {g: sum(1 for vm in emu.state.all_vms() if (vm.subscription, vm.resource_group) == g)
                     for g in groups}
        assert set(per_group.values()) <= {26, 27}
    assert built < 30        # a loaded 2-core machine; about 1.5 ms per VM when quiet
