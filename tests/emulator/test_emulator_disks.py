"""Disks, snapshots, a VM created with a data disk, attach/detach, power off, the OS-disk swap and
resource-group deletion, all through the real azure-mgmt-compute clients. The guest's Windows
lives on its OS disk: a copy changes what the VM boots from only once it is swapped in."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

RG = "rg-azrdp-demo"
VM = "vm-web-01"


def _sub(emu) -> str:
    return emu.subscription_id


def _copy_os_disk(azure, emu, *, zones=None):
    compute = azure.compute
    vm = compute.virtual_machines.get(RG, VM)
    os_id = vm.storage_profile.os_disk.managed_disk.id
    snap = compute.snapshots.begin_create_or_update(RG, "snap-1", {
        "location": vm.location, "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": os_id}}}
    ).result()
    body = {"location": vm.location, "properties": {"creationData": {"createOption": "Copy",
                                                                       "sourceResourceId": snap.id}}}
    if zones:
        body["zones"] = zones
    disk = compute.disks.begin_create_or_update(RG, "copy-1", body).result()
    return vm, snap, disk


def _rescue_vm(azure, emu, disk_id: str, *, rg: str = "rg-rescue", zones=None):
    from azure.core.rest import HttpRequest

    compute, network = azure.compute, azure.network
    response = compute.send_request(HttpRequest(
        "PUT", f"/subscriptions/{_sub(emu)}/resourcegroups/{rg}?api-version=2021-04-01",
        json={"location": "westeurope", "tags": {"azrdp-rescue-of": VM}}))
    assert response.status_code == 201
    vnet = network.virtual_networks.begin_create_or_update(rg, "vnet-rescue", {
        "location": "westeurope", "properties": {"addressSpace": {"addressPrefixes": ["10.99.0.0/24"]},
                                                 "subnets": [{"name": "default",
                                                              "properties": {"addressPrefix": "10.99.0.0/24"}}]}}).result()
    nic = network.network_interfaces.begin_create_or_update(rg, "nic-rescue", {
        "location": "westeurope", "properties": {"ipConfigurations": [
            {"name": "ipconfig1", "properties": {"subnet": {"id": vnet.subnets[0].id}}}]}}).result()
    body = {"location": "westeurope", "properties": {
        "hardwareProfile": {"vmSize": "Standard_B2s"},
        "storageProfile": {"imageReference": {"publisher": "MicrosoftWindowsServer", "offer": "WindowsServer",
                                              "sku": "2022-datacenter-smalldisk-g2", "version": "latest"},
                           "osDisk": {"createOption": "FromImage", "managedDisk": {"storageAccountType": "StandardSSD_LRS"}},
                           "dataDisks": [{"lun": 0, "createOption": "Attach", "managedDisk": {"id": disk_id}}]},
        "osProfile": {"computerName": "rescue", "adminUsername": "azrdp", "adminPassword": "Pa55-word-Only-Here"},
        "networkProfile": {"networkInterfaces": [{"id": nic.id}]}}}
    if zones:
        body["zones"] = zones
    return compute.virtual_machines.begin_create_or_update(rg, "vm-rescue", body).result()


def test_a_copy_of_the_os_disk_changes_nothing_until_it_is_swapped_in(emu, azure):
    compute = azure.compute
    vm, snap, disk = _copy_os_disk(azure, emu)
    assert snap.os_type == "Windows" and snap.hyper_v_generation == "V2" and snap.provisioning_state == "Succeeded"
    assert disk.creation_data.source_resource_id == snap.id and disk.disk_state == "Unattached"
    original = compute.disks.get(RG, vm.storage_profile.os_disk.name)
    assert original.managed_by == vm.id and original.disk_state == "Attached"

    rescue = _rescue_vm(azure, emu, disk.id)
    assert rescue.provisioning_state == "Succeeded" and rescue.storage_profile.data_disks[0].lun == 0
    assert compute.disks.get(RG, "copy-1").managed_by.lower() == rescue.id.lower()
    with emu.state.lock:
        rescue_guest = emu.vm("vm-rescue").guest
        (volume,) = rescue_guest.attached_volumes
        assert volume is not emu.guest(VM) and not volume.up
        volume.registry["fDenyTSConnections"] = 1      # a change on the copy ...
    assert emu.guest(VM).registry["fDenyTSConnections"] == 0   # ... is not on the VM's disk

    with pytest.raises(HttpResponseError) as running:   # the swap needs a stopped VM
        vm_body = compute.virtual_machines.get(RG, VM)
        vm_body.storage_profile.os_disk.managed_disk.id = disk.id
        compute.virtual_machines.begin_create_or_update(RG, VM, vm_body).result()
    assert running.value.status_code == 409 and running.value.error.code == "PropertyChangeNotAllowed"
    with pytest.raises(HttpResponseError) as attached:  # still attached to the rescue VM
        compute.virtual_machines.begin_power_off(RG, VM).result()
        vm_body = compute.virtual_machines.get(RG, VM)
        vm_body.storage_profile.os_disk.managed_disk.id = disk.id
        compute.virtual_machines.begin_create_or_update(RG, VM, vm_body).result()
    assert attached.value.status_code == 409

    rescue_body = compute.virtual_machines.get("rg-rescue", "vm-rescue")
    rescue_body.storage_profile.data_disks = []          # detach
    compute.virtual_machines.begin_create_or_update("rg-rescue", "vm-rescue", rescue_body).result()
    assert compute.disks.get(RG, "copy-1").disk_state == "Unattached"
    assert emu.vm("vm-rescue").guest.attached_volumes == []

    assert compute.virtual_machines.instance_view(RG, VM).statuses[1].code == "PowerState/stopped"
    vm_body = compute.virtual_machines.get(RG, VM)
    vm_body.storage_profile.os_disk.managed_disk.id = disk.id
    vm_body.storage_profile.os_disk.name = disk.name
    swapped = compute.virtual_machines.begin_create_or_update(RG, VM, vm_body).result()
    assert swapped.storage_profile.os_disk.managed_disk.id == disk.id and swapped.storage_profile.os_disk.name == "copy-1"
    assert compute.disks.get(RG, original.name).disk_state == "Unattached"   # kept, not deleted
    compute.virtual_machines.begin_start(RG, VM).result()
    with emu.state.lock:
        assert emu.guest(VM) is volume                    # the VM now runs what is on the copy
    assert emu.guest(VM).registry["fDenyTSConnections"] == 1


def test_swap_refuses_another_generation_and_an_empty_disk_name(emu, azure):
    compute = azure.compute
    vm, snap, disk = _copy_os_disk(azure, emu)
    with emu.state.lock:
        emu.state.by_id(disk.id).hyper_v_generation = "V1"
    compute.virtual_machines.begin_power_off(RG, VM).result()
    body = compute.virtual_machines.get(RG, VM)
    body.storage_profile.os_disk.managed_disk.id = disk.id
    with pytest.raises(HttpResponseError) as wrong:
        compute.virtual_machines.begin_create_or_update(RG, VM, body).result()
    assert wrong.value.error.code == "PropertyChangeNotAllowed" and "Generation" in wrong.value.error.message


def test_a_zonal_disk_attaches_only_to_a_vm_in_its_zone(emu, azure):
    vm, snap, disk = _copy_os_disk(azure, emu, zones=["2"])
    assert azure.compute.disks.get(RG, "copy-1").zones == ["2"]
    with pytest.raises(HttpResponseError) as other:
        _rescue_vm(azure, emu, disk.id)
    assert "same zone" in other.value.error.message
    rescue = _rescue_vm(azure, emu, disk.id, rg="rg-rescue-2", zones=["2"])
    assert rescue.zones == ["2"]


def test_deleting_the_rescue_group_removes_its_vm_and_keeps_the_disks_elsewhere(emu, azure):
    from azure.core.rest import HttpRequest

    vm, snap, disk = _copy_os_disk(azure, emu)
    _rescue_vm(azure, emu, disk.id)
    response = azure.compute.send_request(HttpRequest(
        "DELETE", f"/subscriptions/{_sub(emu)}/resourcegroups/rg-rescue?api-version=2021-04-01"))
    assert response.status_code == 202 and "/operationresults/" in response.headers["Location"]
    emu.backend.scheduler.run_due()
    for _ in range(200):
        done = azure.compute.send_request(HttpRequest("GET", response.headers["Location"]))
        if done.status_code == 200:
            break
    assert done.status_code == 200
    with pytest.raises(ResourceNotFoundError):
        azure.compute.virtual_machines.get("rg-rescue", "vm-rescue")
    assert azure.compute.disks.get(RG, "copy-1").disk_state == "Unattached"
    assert azure.compute.snapshots.get(RG, "snap-1").provisioning_state == "Succeeded"
    azure.compute.snapshots.begin_delete(RG, "snap-1").result()
    with pytest.raises(ResourceNotFoundError):
        azure.compute.snapshots.get(RG, "snap-1")
