"""The emulated responses tests/emulator does not already round-trip item by item: the pages of the
VM and NIC lists. Each item goes through the SDK model (every field typed, ``as_dict()`` equal to
the wire, nothing lost) and is shaped like Microsoft's example for that operation; the virtual
network, for which the examples hold none, round-trips through its model."""

from __future__ import annotations

import pytest
from azure.core.rest import HttpRequest

from azrdp.azure.session import StaticTokenCredential
from azrdp.emulator import Emulator
from tests.support.arm_api import COMPUTE_API, NETWORK_API
from tests.support.emulator_shapes import VM_REAL, check_round_trip, paths, undeclared
from tests.support.emulator_support import example, session_for

RG = "rg-azrdp-demo"
NIC_EXTRAS = ("$.properties.ipConfigurations[].properties.applicationSecurityGroups",)


@pytest.fixture(scope="module")
def azure():
    with Emulator.start("0x904", vms=3, speed=1000, seed=3) as emu:
        yield emu, session_for(emu, StaticTokenCredential())   # the token azrdp sends an emulator


def page(client, path: str, api_version: str) -> dict:
    response = client.send_request(HttpRequest("GET", f"{path}?api-version={api_version}"))
    response.raise_for_status()
    return response.json()


@pytest.mark.parametrize("operation, path", [
    ("VirtualMachines_List", f"/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines"),
    ("VirtualMachines_ListAll", "/providers/Microsoft.Compute/virtualMachines"),
])
def test_vm_list_items_round_trip_like_the_example(azure, operation, path):
    from azure.mgmt.compute.models import VirtualMachine

    emu, session = azure
    raw = page(session.compute, f"/subscriptions/{emu.subscription_id}{path}", COMPUTE_API)
    listed_example = example(f"compute/{operation}")["responses"]["200"]["body"]["value"][0]
    vm_example = example("compute/VirtualMachines_Get")["responses"]["200"]["body"]
    assert len(raw["value"]) == 3
    for item in raw["value"]:
        model = VirtualMachine(item)
        check_round_trip(item, model, vm_example, extras=VM_REAL)   # a list item is a VM, as GET gives it
        assert set(paths(listed_example)) <= set(paths(model.as_dict()))   # nothing the example lists is lost
    # The SDK's own pager yields the same VMs, with nothing dropped on the way.
    listed = session.compute.virtual_machines.list(RG) if operation.endswith("_List") else \
        session.compute.virtual_machines.list_all()
    assert [vm.as_dict() for vm in listed] == raw["value"]


def test_nic_list_items_round_trip_like_a_nic(azure):
    from azure.mgmt.network.models import NetworkInterface

    emu, session = azure
    raw = page(session.network, f"/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers/"
                                "Microsoft.Network/networkInterfaces", NETWORK_API)
    sample = example("network/NetworkInterfaces_Get")["responses"]["200"]["body"]
    assert len(raw["value"]) == 3
    for item in raw["value"]:
        check_round_trip(item, NetworkInterface(item), sample, extras=NIC_EXTRAS)
    assert [nic.as_dict() for nic in session.network.network_interfaces.list(RG)] == raw["value"]


def test_virtual_network_round_trips_through_its_model(azure):
    emu, session = azure
    raw = page(session.network, f"/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers/"
                                "Microsoft.Network/virtualNetworks/vnet-azrdp", NETWORK_API)
    vnet = session.network.virtual_networks.get(RG, "vnet-azrdp")
    assert undeclared(vnet, raw) == [] and vnet.as_dict() == raw
