"""Every ARM operation the emulator serves, through the real azure-mgmt clients; every body
round-trips through the SDK models and is shaped like Microsoft's example for that operation."""

from __future__ import annotations

import urllib.request

import pytest

from tests.support.emulator_shapes import NSG_REAL, RULE_REAL, VM_REAL, check_round_trip, paths
from tests.support.emulator_support import example, raw_and_model, session_for

RG = "rg-azrdp-demo"
VM = "vm-web-01"


def body(name: str, status: str = "200") -> dict:
    return example(name)["responses"][status]["body"]


def test_vm_get_round_trips_like_the_example(azure):
    raw, vm = azure.compute.virtual_machines.get(RG, VM, cls=raw_and_model)
    check_round_trip(raw, vm, body("compute/VirtualMachines_Get"), extras=VM_REAL)
    assert vm.properties.storage_profile.os_disk.os_type == "Windows"
    assert vm.properties.network_profile.network_interfaces[0].id.endswith("/networkInterfaces/vm-web-01-nic")


def test_vm_get_with_instance_view_nests_it_under_properties(azure):
    raw, vm = azure.compute.virtual_machines.get(RG, VM, expand="instanceView", cls=raw_and_model)
    instance_view = raw["properties"].pop("instanceView")
    check_round_trip(instance_view, vm.properties.instance_view, body("compute/VirtualMachines_InstanceView"))
    codes = [s.code for s in vm.properties.instance_view.statuses]
    assert codes == ["ProvisioningState/succeeded", "PowerState/running"]
    assert vm.properties.instance_view.vm_agent.statuses[0].display_status == "Ready"


def test_instance_view(azure):
    raw, view = azure.compute.virtual_machines.instance_view(RG, VM, cls=raw_and_model)
    check_round_trip(raw, view, body("compute/VirtualMachines_InstanceView"))
    assert view.computer_name == "VM-WEB-01"


def test_list_and_list_all_follow_next_link(start_emulator, fake_credential):
    emu = start_emulator(fleet={"healthy": 52, "deallocated": 3})
    azure = session_for(emu, fake_credential)
    in_group = list(azure.compute.virtual_machines.list("rg-azrdp-fleet"))
    everywhere = list(azure.compute.virtual_machines.list_all())
    assert len(in_group) == len(everywhere) == 55
    assert emu.count("VirtualMachines_List") == 2 and emu.count("VirtualMachines_ListAll") == 2  # two pages each
    page = body("compute/VirtualMachines_List")["value"][0]
    assert set(paths(page)) <= set(paths(in_group[0].as_dict()))
    status = list(azure.compute.virtual_machines.list_all(status_only="true"))
    powers = {vm.name: vm.properties.instance_view.statuses[1].code for vm in status}
    assert powers["vm-deallocated-001"] == "PowerState/deallocated"


def test_run_command_result_is_the_final_location_get(azure):
    raw, result = azure.compute.virtual_machines.begin_run_command(
        RG, VM, {"commandId": "RunPowerShellScript", "script": ["Write-Output hi"]}, cls=raw_and_model).result()
    check_round_trip(raw, result, body("compute/VirtualMachines_RunCommand"))
    assert [s.code for s in result.value] == ["ComponentStatus/StdOut/succeeded", "ComponentStatus/StdErr/succeeded"]


def test_restart_and_start(start_emulator, fake_credential):
    emu = start_emulator("deallocated")
    azure = session_for(emu, fake_credential)
    assert azure.compute.virtual_machines.begin_start(RG, VM).result() is None
    view = azure.compute.virtual_machines.instance_view(RG, VM)
    assert view.statuses[1].code == "PowerState/running"
    assert azure.compute.virtual_machines.begin_restart(RG, VM).result() is None
    assert emu.count("VirtualMachines_Start", status=202) == emu.count("VirtualMachines_Restart", status=202) == 1


def test_retrieve_boot_diagnostics_data_points_at_real_blobs(azure):
    raw, data = azure.compute.virtual_machines.retrieve_boot_diagnostics_data(
        RG, VM, sas_uri_expiration_time_in_minutes=60, cls=raw_and_model)
    check_round_trip(raw, data, body("compute/VirtualMachines_RetrieveBootDiagnosticsData"))
    with urllib.request.urlopen(data.console_screenshot_blob_uri) as response:
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"
    with urllib.request.urlopen(data.serial_console_log_blob_uri) as response:
        assert "VM-WEB-01 is up" in response.read().decode()


def test_network_interface(azure):
    raw, nic = azure.network.network_interfaces.get(RG, "vm-web-01-nic", cls=raw_and_model)
    check_round_trip(raw, nic, body("network/NetworkInterfaces_Get"),
                     extras=("$.properties.ipConfigurations[].properties.applicationSecurityGroups",))
    config = nic.properties.ip_configurations[0].properties
    assert config.public_ip_address.id.endswith("/publicIPAddresses/vm-web-01-ip")


def test_effective_network_security_groups(azure):
    raw, groups = azure.network.network_interfaces.begin_list_effective_network_security_groups(
        RG, "vm-web-01-nic", cls=raw_and_model).result()
    check_round_trip(raw, groups, body("network/NetworkInterfaces_ListEffectiveNetworkSecurityGroups"))
    levels = [next(iter(entry["association"])) for entry in raw["value"]]
    assert levels == ["subnet", "networkInterface"]
    nic_rules = {r.name: r for r in groups.value[1].effective_security_rules}
    assert nic_rules["securityRules/AllowRDP-Admin"].destination_port_range == "3389-3389"
    assert nic_rules["defaultSecurityRules/DenyAllInBound"].protocol == "All"


def test_virtual_network_and_subnet(azure):
    raw, subnet = azure.network.subnets.get(RG, "vnet-azrdp", "default", cls=raw_and_model)
    check_round_trip(raw, subnet, body("network/Subnets_Get"), extras=("$.properties.networkSecurityGroup",))
    vnet = azure.network.virtual_networks.get(RG, "vnet-azrdp")
    assert vnet.properties.subnets[0].properties.network_security_group.id == subnet.properties.network_security_group.id
    assert vnet.properties.address_space.address_prefixes == ["10.42.0.0/16"]


def test_network_security_group_and_default_rule(azure):
    raw, nsg = azure.network.network_security_groups.get(RG, "vm-web-01-nsg", cls=raw_and_model)
    check_round_trip(raw, nsg, body("network/NetworkSecurityGroups_Get"),
                     extras=("$.properties.securityRules[].properties.description", *NSG_REAL))
    assert [ref.id for ref in nsg.properties.network_interfaces] == [
        f"/subscriptions/{azure.subscription_id}/resourceGroups/RG-AZRDP-DEMO/providers/Microsoft.Network/"
        "networkInterfaces/VM-WEB-01-NIC"]                          # upper-cased, as real back-references come
    assert [r.name for r in nsg.properties.default_security_rules][:3] == [
        "AllowVnetInBound", "AllowAzureLoadBalancerInBound", "DenyAllInBound"]
    raw, rule = azure.network.default_security_rules.get(RG, "vm-web-01-nsg", "DenyAllInBound", cls=raw_and_model)
    check_round_trip(raw, rule, body("network/DefaultSecurityRules_Get"), extras=RULE_REAL)
    assert rule.properties.priority == 65500


def test_security_rule_get_create_update_delete(emu, azure):
    raw, rule = azure.network.security_rules.get(RG, "vm-web-01-nsg", "AllowRDP-Admin", cls=raw_and_model)
    check_round_trip(raw, rule, body("network/SecurityRules_Get"), extras=("$.properties.description", *RULE_REAL))
    assert raw["type"] == "Microsoft.Network/networkSecurityGroups/securityRules" and raw["etag"].startswith('W/"')
    assert raw["properties"]["sourcePortRanges"] == [] and raw["properties"]["sourcePortRange"] == "*"
    new = {"properties": {"protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 150,
                          "sourceAddressPrefix": "198.51.100.7/32", "sourcePortRange": "*",
                          "destinationAddressPrefix": "*", "destinationPortRange": "3389"}}
    raw, created = azure.network.security_rules.begin_create_or_update(
        RG, "vm-web-01-nsg", "azrdp-temp", new, cls=raw_and_model).result()
    check_round_trip(raw, created, body("network/SecurityRules_CreateOrUpdate", "201"), extras=RULE_REAL)
    assert created.properties.provisioning_state == "Succeeded"
    assert emu.count("SecurityRules_CreateOrUpdate", status=201) == 1
    new["properties"]["priority"] = 160
    updated = azure.network.security_rules.begin_create_or_update(RG, "vm-web-01-nsg", "azrdp-temp", new).result()
    assert updated.properties.priority == 160 and emu.count("SecurityRules_CreateOrUpdate", status=200) == 1
    assert azure.network.security_rules.begin_delete(RG, "vm-web-01-nsg", "azrdp-temp").result() is None
    names = [r.name for r in azure.network.network_security_groups.get(RG, "vm-web-01-nsg").properties.security_rules]
    assert names == ["AllowRDP-Admin"]
    assert azure.network.security_rules.begin_delete(RG, "vm-web-01-nsg", "azrdp-temp").result() is None
    assert emu.count("SecurityRules_Delete", status=204) == 1  # ARM: deleting what is gone is a success


def test_public_ip_is_the_vms_rdp_address(emu, azure):
    raw, pip = azure.network.public_ip_addresses.get(RG, "vm-web-01-ip", cls=raw_and_model)
    check_round_trip(raw, pip, body("network/PublicIPAddresses_Get"), extras=("$.properties.ipAddress",))
    assert (pip.properties.ip_address, 3389) == emu.rdp_endpoint(VM) or pip.properties.ip_address == "127.0.0.1"


def test_application_security_group(azure):
    raw, asg = azure.network.application_security_groups.get(RG, "asg-rdp-hosts", cls=raw_and_model)
    check_round_trip(raw, asg, body("network/ApplicationSecurityGroups_Get"))


@pytest.mark.parametrize("scenario", ["healthy", "agent-not-ready", "deallocated"])
def test_instance_view_per_power_and_agent_state(start_emulator, fake_credential, scenario):
    emu = start_emulator(scenario)
    view = session_for(emu, fake_credential).compute.virtual_machines.instance_view(RG, VM)
    expected = {"healthy": ("PowerState/running", "Ready"), "agent-not-ready": ("PowerState/running", "Not Ready"),
                "deallocated": ("PowerState/deallocated", None)}[scenario]
    agent = view.vm_agent.statuses[0].display_status if view.vm_agent else None
    assert (view.statuses[1].code, agent) == expected
