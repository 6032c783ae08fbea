"""The inventory through the real azure-mgmt clients: round trips, case-insensitive IDs, broken references."""

from __future__ import annotations

import pytest

from azrdp.azure.checks import nsg_checks, rdp_path
from azrdp.azure.inventory import read_inventory
from azrdp.checks import Status
from azrdp.diagnose import diagnose
from azrdp.errors import AuthError, NotFoundError
from azrdp.target import Target
from tests.support.arm_api import COMPUTE_API, NETWORK_API
from tests.support.fake_arm import VmSpec, rule
from tests.support.recording import WaveTransport

TARGET = Target("vm1", "rg1")


def test_reads_everything_in_three_sequential_round_trips(arm, make_session):
    arm.add_vm(VmSpec(subnet_nsg_rules=[rule("DenyRDP", 200, "Deny")]))
    transport = WaveTransport()
    diagnosis = diagnose(make_session(transport=transport), TARGET, probe=False)
    assert len(transport.waves) == 3, transport.waves
    assert diagnosis.round_trips == 3 and diagnosis.requests == 6
    assert [len(w) for w in transport.waves] == [2, 3, 1]  # VM + NIC list | NSG, subnet, IP | subnet NSG
    effective = diagnosis.check("nsg.effective")
    assert effective.status is Status.FAIL
    assert effective.details["subnet"]["rule"] == {"name": "DenyRDP", "priority": 200, "access": "Deny",
                                                   "default": False}


def test_every_request_uses_the_sdk_api_versions(arm, session):
    arm.add_vm(VmSpec(subnet_nsg_rules=[]))
    read_inventory(session, TARGET)
    versions = {("compute" if "Microsoft.Compute" in c.path else "network", c.query["api-version"]) for c in arm.calls}
    assert versions == {("compute", COMPUTE_API), ("network", NETWORK_API)}
    vm_reads = [c for c in arm.calls if "Microsoft.Compute" in c.path]  # the first round runs in parallel
    assert [c.query["$expand"] for c in vm_reads] == ["instanceView"]


def test_ids_with_other_casing_are_the_same_resource(arm, session):
    arm.add_vm(VmSpec())  # the NIC names its subnet and NSG with the group upper-cased (RG1)
    inventory = read_inventory(session, TARGET)
    path = rdp_path(inventory)
    assert path.subnet is not None and path.subnet.body is not None
    assert [c.status for c in nsg_checks(inventory, path, port=3389, source_ip=None)] == [Status.PASS] * 3
    paths = [c.path.lower() for c in arm.calls]
    assert len(paths) == len(set(paths)), "a resource was read twice under two casings"


def test_a_nic_in_another_resource_group_is_read_by_id(arm, session):
    spec = arm.add_vm(VmSpec(nic_rg="network-rg"))
    inventory = read_inventory(session, TARGET)
    assert inventory.get(spec.nic_id).body["name"] == "vm1VMNic"
    assert inventory.round_trips == 3  # VM (+ empty list) | NIC | NSG, subnet, public IP


def test_a_crowded_resource_group_costs_one_list_page_not_one_round_trip_per_page(arm, session):
    for n in range(12):  # NICs of other VMs in the same group, listed before ours
        arm.add_vm(VmSpec(name=f"a{n:02d}"))
    spec = arm.add_vm(VmSpec(name="vm1"))
    arm.page_size = 5
    inventory = read_inventory(session, TARGET)
    assert inventory.get(spec.nic_id).body["name"] == "vm1VMNic"
    lists = [c for c in arm.calls if c.path.lower().endswith("/networkinterfaces")]
    assert len(lists) == 1  # the first page only; our NIC, not on it, is read by id
    assert inventory.round_trips == 3  # VM + first page | NIC | NSG, subnet, public IP


def test_a_deleted_nsg_becomes_a_check_error(arm, session):
    spec = arm.add_vm(VmSpec())
    arm.delete(spec.nic_nsg_id)
    diagnosis = diagnose(session, TARGET, probe=False)
    nic, effective = diagnosis.check("nsg.nic"), diagnosis.check("nsg.effective")
    assert nic.status is Status.ERROR and effective.status is Status.ERROR
    assert nic.summary == "the NIC vm1VMNic references NSG vm1NSG, which does not exist (deleted?)"
    assert "'Microsoft.Network/networkSecurityGroups/vm1NSG' under resource group 'RG1' was not found" \
        in nic.details["error"]
    assert "az network nic update -g rg1 -n vm1VMNic --network-security-group NSG" in nic.remedy
    assert diagnosis.exit_code == 1


def test_a_vm_that_does_not_exist(arm, session):
    arm.add_vm(VmSpec())
    with pytest.raises(NotFoundError) as caught:
        read_inventory(session, Target("nope", "rg1"))
    assert caught.value.message == "VM 'nope' not found in resource group 'rg1' (subscription 00000000-0000-0000-0000-0000000000aa)."


def test_permission_denied_on_an_nsg_names_the_action(arm, session):
    spec = arm.add_vm(VmSpec())
    arm.fail(spec.nic_nsg_id, 403, "AuthorizationFailed",
             "The client 'ops@contoso.com' with object id '1111' does not have authorization to perform action "
             f"'Microsoft.Network/networkSecurityGroups/read' over scope '{spec.nic_nsg_id}' or the scope is invalid.")
    with pytest.raises(AuthError) as caught:
        read_inventory(session, TARGET)
    assert "lacks 'Microsoft.Network/networkSecurityGroups/read'" in caught.value.message
