"""Managed disks, snapshots, resource groups, and the VM operations that move disks around:
create a VM from an image with a data disk attached, attach/detach, power off, the OS-disk swap,
delete. The business rules live here (like models.py); responses.py only turns HTTP into calls.

**The guest's Windows lives on its OS disk.** A :class:`ManagedDisk` holds a
:class:`~azrdp.emulator.guest.WindowsGuest` (the Windows installation on it). The VM runs the guest
of its current OS disk; a snapshot and a disk made from it hold *copies* (taken at that moment,
offline: no running services, no sessions), so changing a copy changes nothing the VM boots from
until that copy is swapped in as the OS disk.

Sources for what is modelled (each also in docs/emulator.md):
- body shapes: Microsoft's REST examples, DiskRP 2024-03-02 ``Disk_Create_ByCopyingASnapshot``,
  ``Snapshot_Create_FromAnExistingSnapshot``, ``Disk_Get``, ``Disk_Delete`` (202 + Location), and
  ComputeRP ``VirtualMachines_CreateOrUpdate`` (201 + Azure-AsyncOperation);
- a disk copy: ``createOption: Copy`` with ``sourceResourceId`` of a disk or snapshot; the copy has
  the source's osType and hyperVGeneration; a zonal disk copy is made in the zone given
  (learn.microsoft.com "Create a snapshot of a virtual hard disk", "Availability zones for
  managed disks": a disk can attach only to a VM in its zone);
- the OS-disk swap: learn.microsoft.com "Change the OS disk used by an Azure VM" (``az vm update
  --os-disk``): the VM must be stopped or deallocated, the disk must be of the same OS type; az
  vm repair's SupportArticles #214 shows the generation check (``PropertyChangeNotAllowed`` ...
  HyperVisor Generation);
- deleting a VM keeps its disks unless their deleteOption says Delete (VirtualMachines_Delete).
Error codes/messages not taken from an example are listed as unverified in docs/emulator.md.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from azrdp.emulator import exceptions as err
from azrdp.emulator.models import (
    COMPUTE,
    ArmResource,
    AsyncOperation,
    IPConfiguration,
    NetworkInterface,
    Subnet,
    VirtualMachine,
    VirtualNetwork,
    parse_id,
    resource_id,
)

if TYPE_CHECKING:
    from azrdp.emulator.guest import WindowsGuest
    from azrdp.emulator.models import ArmBackend

DISK_API = "2026-03-02"          # what azure-mgmt-compute 39 sends for disks and snapshots
RESOURCES_API = "2021-04-01"     # Microsoft.Resources resource groups (azrdp sends it itself)

# Simulated latencies (simulated seconds).
SNAPSHOT_COPY = (10.0, 40.0)     # a full snapshot of a 127 GiB disk: "usually within minutes" [unverified]
DISK_COPY = (10.0, 30.0)
VM_CREATE = (60.0, 150.0)        # a Windows VM from a marketplace image until provisioning succeeds
VM_UPDATE = (5.0, 20.0)          # attach/detach/OS-disk swap
POWER_OFF = (20.0, 45.0)
VM_DELETE = (20.0, 60.0)
GROUP_DELETE = (30.0, 90.0)
NETWORK_PUT = (2.0, 6.0)


class PropertyChangeNotAllowed(err.ArmError):
    status, code = 409, "PropertyChangeNotAllowed"


class InvalidParameter(err.ArmError):
    status, code = 400, "InvalidParameter"


class OperationNotAllowedConflict(err.ArmError):
    status, code = 409, "OperationNotAllowed"


@dataclass
class ManagedDisk(ArmResource):
    PROVIDER: ClassVar[str] = COMPUTE
    KIND: ClassVar[str] = "disks"
    guest: WindowsGuest | None = None     # the Windows installation on this disk (None: no OS)
    os_type: str | None = "Windows"
    hyper_v_generation: str = "V2"
    size_gb: int = 127
    sku: str = "Premium_LRS"
    zones: list[str] = field(default_factory=list)
    creation: dict[str, Any] = field(default_factory=lambda: {"createOption": "FromImage"})
    managed_by: str | None = None            # the VM it is attached to
    provisioning_state: str = "Succeeded"
    encryption_settings: dict[str, Any] | None = None   # ADE: encryptionSettingsCollection
    security_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    time_created: str = "2026-01-05T09:14:38.3138469+00:00"
    unique_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def disk_state(self) -> str:
        return "Attached" if self.managed_by else "Unattached"

    def to_arm(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "creationData": dict(self.creation), "diskSizeGB": self.size_gb,
            "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
            "hyperVGeneration": self.hyper_v_generation, "provisioningState": self.provisioning_state,
            "diskState": self.disk_state, "timeCreated": self.time_created, "uniqueId": self.unique_id,
        }
        if self.os_type:
            props["osType"] = self.os_type
        if self.encryption_settings:
            props["encryptionSettingsCollection"] = dict(self.encryption_settings)
        if self.security_type:
            props["securityProfile"] = {"securityType": self.security_type}
        body: dict[str, Any] = {"name": self.name, "id": self.id, "type": "Microsoft.Compute/disks",
                                "location": self.location, "tags": dict(self.tags),
                                "sku": {"name": self.sku, "tier": self.sku.split("_")[0]}, "properties": props}
        if self.zones:
            body["zones"] = list(self.zones)
        if self.managed_by:
            body["managedBy"] = self.managed_by
        return body


@dataclass
class Snapshot(ArmResource):
    PROVIDER: ClassVar[str] = COMPUTE
    KIND: ClassVar[str] = "snapshots"
    guest: WindowsGuest | None = None
    os_type: str | None = "Windows"
    hyper_v_generation: str = "V2"
    size_gb: int = 127
    creation: dict[str, Any] = field(default_factory=dict)
    provisioning_state: str = "Succeeded"
    encryption_settings: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    time_created: str = "2026-01-05T09:14:38.3138469+00:00"
    unique_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_arm(self) -> dict[str, Any]:
        props: dict[str, Any] = {"creationData": dict(self.creation), "diskSizeGB": self.size_gb,
                                 "hyperVGeneration": self.hyper_v_generation, "incremental": False,
                                 "provisioningState": self.provisioning_state, "timeCreated": self.time_created,
                                 "uniqueId": self.unique_id}
        if self.os_type:
            props["osType"] = self.os_type
        if self.encryption_settings:
            props["encryptionSettingsCollection"] = dict(self.encryption_settings)
        return {"name": self.name, "id": self.id, "type": "Microsoft.Compute/snapshots", "location": self.location,
                "tags": dict(self.tags), "sku": {"name": "Standard_LRS", "tier": "Standard"}, "properties": props}


def offline_copy(guest: WindowsGuest | None) -> WindowsGuest | None:
    """A crash-consistent copy of the Windows on a disk: the files, not the running system."""
    if guest is None:
        return None
    # The clocks (and any other callable the guest holds) belong to the emulator, not the disk.
    shared = {id(v): v for v in vars(guest).values() if callable(v)}
    twin = copy.deepcopy(guest, memo=shared)
    twin.shut_down()
    twin.attached_volumes = []
    return twin


def _location(text: Any) -> str:
    return str(text or "").replace(" ", "").lower()


# -- the VM's disks --------------------------------------------------------------------------------

def os_disk_of(backend: ArmBackend, vm: VirtualMachine) -> ManagedDisk | None:
    return backend.by_id(vm.os_disk_id) if vm.os_disk_id else None


def give_os_disk(backend: ArmBackend, vm: VirtualMachine, *, name: str | None = None) -> ManagedDisk:
    """Put the VM's guest on a managed OS disk in the VM's resource group (scenarios and VM create)."""
    rg = backend.resource_group(vm.subscription, vm.resource_group)
    disk = ManagedDisk(vm.subscription, vm.resource_group, name or f"{vm.name}_OsDisk_1_{uuid.uuid4().hex[:12]}",
                       vm.location, guest=vm.guest, os_type=vm.os_type, hyper_v_generation=vm.hyper_v_generation,
                       zones=list(vm.zones), managed_by=vm.id, time_created=vm.time_created)
    rg.disks[disk.name.lower()] = disk
    vm.os_disk_id = disk.id
    return disk


def _sync_volumes(backend: ArmBackend, vm: VirtualMachine) -> None:
    """What the VM's Windows sees as attached disks: the guests on its data disks."""
    volumes = []
    for entry in vm.data_disks:
        disk = backend.by_id(entry["managedDisk"]["id"])
        if disk is not None and disk.guest is not None:
            volumes.append(disk.guest)
    vm.guest.attached_volumes = volumes


# -- snapshots and disks ---------------------------------------------------------------------------

def _source(backend: ArmBackend, creation: Any) -> ManagedDisk | Snapshot:
    if not isinstance(creation, dict) or str(creation.get("createOption", "")).lower() != "copy":
        raise InvalidParameter("azrdp's emulator creates disks and snapshots only with createOption Copy "
                               "(from a disk or a snapshot).", code="InvalidParameter")
    source_id = str(creation.get("sourceResourceId") or "")
    source = backend.by_id("/" + source_id.lstrip("/"))
    if not isinstance(source, (ManagedDisk, Snapshot)):
        raise err.ArmError(f"Resource {source_id} is not found.", code="NotFound", status=404)
    return source


def put_snapshot(backend: ArmBackend, sub: str, rg_name: str, name: str, body: Any) -> tuple[Snapshot, AsyncOperation]:
    rg = backend.resource_group(sub, rg_name)
    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        raise err.InvalidRequestContent("The request content was invalid and could not be deserialized.")
    if name.lower() in rg.snapshots:
        raise OperationNotAllowedConflict(f"Snapshot {name} already exists; azrdp's emulator does not update snapshots.")
    source = _source(backend, body["properties"].get("creationData"))
    if _location(body.get("location")) != _location(source.location):
        raise InvalidParameter("A copy must be made in the source's region (CopyStart copies across regions).")
    snap = Snapshot(sub, rg.name, name, source.location, guest=offline_copy(source.guest), os_type=source.os_type,
                    hyper_v_generation=source.hyper_v_generation, size_gb=source.size_gb,
                    creation={"createOption": "Copy", "sourceResourceId": source.id,
                              "sourceUniqueId": source.unique_id},
                    provisioning_state="Updating", encryption_settings=source.encryption_settings,
                    tags=dict(body.get("tags") or {}), time_created=backend.iso())
    rg.snapshots[name.lower()] = snap
    op = backend.new_operation(COMPUTE, sub, snap.location, "snapshot", snap.id)

    def done() -> None:
        snap.provisioning_state = "Succeeded"
        backend.finish(op, result=snap.to_arm())
    op.event = backend.later(SNAPSHOT_COPY, done)
    return snap, op


def put_disk(backend: ArmBackend, sub: str, rg_name: str, name: str, body: Any) -> tuple[ManagedDisk, AsyncOperation]:
    rg = backend.resource_group(sub, rg_name)
    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        raise err.InvalidRequestContent("The request content was invalid and could not be deserialized.")
    if name.lower() in rg.disks:
        raise OperationNotAllowedConflict(f"Disk {name} already exists; azrdp's emulator does not update disks.")
    source = _source(backend, body["properties"].get("creationData"))
    if _location(body.get("location")) != _location(source.location):
        raise InvalidParameter("A copy must be made in the source's region.")
    zones = [str(z) for z in (body.get("zones") or [])]
    sku = ((body.get("sku") or {}).get("name")) or "Premium_LRS"
    disk = ManagedDisk(sub, rg.name, name, source.location, guest=offline_copy(source.guest), os_type=source.os_type,
                       hyper_v_generation=source.hyper_v_generation, size_gb=source.size_gb, sku=sku, zones=zones,
                       creation={"createOption": "Copy", "sourceResourceId": source.id,
                                 "sourceUniqueId": source.unique_id},
                       provisioning_state="Updating", encryption_settings=source.encryption_settings,
                       tags=dict(body.get("tags") or {}), time_created=backend.iso())
    rg.disks[name.lower()] = disk
    op = backend.new_operation(COMPUTE, sub, disk.location, "disk", disk.id)

    def done() -> None:
        disk.provisioning_state = "Succeeded"
        backend.finish(op, result=disk.to_arm())
    op.event = backend.later(DISK_COPY, done)
    return disk, op


def delete_disk(backend: ArmBackend, sub: str, rg_name: str, name: str) -> AsyncOperation | None:
    rg = backend.resource_group(sub, rg_name)
    disk = rg.disks.get(name.lower())
    if disk is None:
        return None
    if disk.managed_by:
        raise OperationNotAllowedConflict(f"Disk {disk.name} is attached to VM {disk.managed_by}.")
    op = backend.new_operation(COMPUTE, sub, disk.location, "diskDelete", disk.id)

    def done() -> None:
        rg.disks.pop(name.lower(), None)
        backend.finish(op)
    op.event = backend.later(DISK_COPY, done)
    return op


def delete_snapshot(backend: ArmBackend, sub: str, rg_name: str, name: str) -> AsyncOperation | None:
    rg = backend.resource_group(sub, rg_name)
    snap = rg.snapshots.get(name.lower())
    if snap is None:
        return None
    op = backend.new_operation(COMPUTE, sub, snap.location, "snapshotDelete", snap.id)

    def done() -> None:
        rg.snapshots.pop(name.lower(), None)
        backend.finish(op)
    op.event = backend.later(DISK_COPY, done)
    return op


# -- VM create / update ------------------------------------------------------------------------------

def _data_disk_entries(backend: ArmBackend, vm_location: str, vm_zones: list[str], given: Any,
                       vm_id: str) -> list[dict[str, Any]]:
    entries = []
    luns: set[int] = set()
    for item in given or []:
        if not isinstance(item, dict) or item.get("toBeDetached") is True:
            continue
        disk_id = ((item.get("managedDisk") or {}).get("id")) or ""
        disk = backend.by_id(disk_id)
        if not isinstance(disk, ManagedDisk):
            raise err.ArmError(f"Disk {disk_id} is not found.", code="NotFound", status=404)
        lun = item.get("lun")
        if not isinstance(lun, int) or lun in luns or not 0 <= lun <= 63:
            raise InvalidParameter("Each data disk needs a distinct lun between 0 and 63.")
        luns.add(lun)
        if disk.managed_by and disk.managed_by.lower() != vm_id.lower():
            raise OperationNotAllowedConflict(f"Disk {disk.name} is already attached to VM {disk.managed_by}.")
        if _location(disk.location) != _location(vm_location):
            raise InvalidParameter(f"Disk {disk.name} is in {disk.location}; the VM is in {vm_location}.")
        if sorted(disk.zones) != sorted(vm_zones):
            raise InvalidParameter(f"Disk {disk.name} cannot be attached to the VM because it is not in the same "
                                   "zone as the VM.", code="BadRequest")
        entries.append({"lun": lun, "name": disk.name, "createOption": "Attach",
                        "caching": item.get("caching") or "None", "managedDisk": {"id": disk.id}})
    return entries


def create_vm(backend: ArmBackend, sub: str, rg_name: str, name: str, body: dict[str, Any]) -> tuple[VirtualMachine, AsyncOperation]:
    """A new Windows VM from a marketplace image, with existing NICs and data disks attached."""
    rg = backend.resource_group(sub, rg_name)
    props = body.get("properties") or {}
    storage = props.get("storageProfile") or {}
    image = storage.get("imageReference") or {}
    if str(image.get("publisher", "")).lower() != "microsoftwindowsserver":
        raise InvalidParameter("azrdp's emulator creates only Windows Server VMs from MicrosoftWindowsServer images.")
    os_profile = props.get("osProfile") or {}
    if not os_profile.get("adminUsername") or not os_profile.get("adminPassword"):
        raise InvalidParameter("Required parameter 'adminPassword' is missing (null).", code="InvalidParameter")
    nic_ids = [str(n.get("id")) for n in ((props.get("networkProfile") or {}).get("networkInterfaces") or [])
               if isinstance(n, dict)]
    nics = [backend.by_id(n) for n in nic_ids]
    if not nic_ids or any(not isinstance(nic, NetworkInterface) for nic in nics):
        raise InvalidParameter("The VM needs an existing network interface (networkProfile.networkInterfaces).")
    location = str(body.get("location") or "")
    vm_id = resource_id(sub, rg.name, COMPUTE, "virtualMachines", name)
    for nic in nics:
        if nic.vm_id and nic.vm_id.lower() != vm_id.lower():
            raise err.ArmError(f"Network interface {nic.id} is used by existing VM {nic.vm_id}.",
                               code="NicInUse", status=400)
    zones = [str(z) for z in (body.get("zones") or [])]
    data_disks = _data_disk_entries(backend, location, zones, storage.get("dataDisks"), vm_id)
    computer_name = str(os_profile.get("computerName") or name)[:15]
    guest = backend.new_guest(computer_name.upper())
    pool = backend.address_pool
    address, port = pool.allocate() if pool is not None else ("127.0.0.1", 3389)
    guest.registry["PortNumber"] = port
    for rule in guest.firewall_rules:
        rule.port = port
    sku = str(image.get("sku") or "")
    vm = VirtualMachine(sub, rg.name, name, location, guest, nic_ids, address,
                        size=str((props.get("hardwareProfile") or {}).get("vmSize") or "Standard_B2s"),
                        admin_username=str(os_profile["adminUsername"]), power="starting",
                        provisioning_state="Creating", tags=dict(body.get("tags") or {}),
                        time_created=backend.iso())
    vm.zones = zones
    vm.hyper_v_generation = "V1" if sku and not sku.endswith(("-g2", "-azure-edition", "-smalldisk-g2")) \
        and "gen2" not in sku else "V2"
    vm.image_reference = {k: image[k] for k in ("publisher", "offer", "sku", "version") if k in image}
    rg.vms[name.lower()] = vm
    give_os_disk(backend, vm)
    for nic in nics:
        nic.vm_id = vm.id
    vm.data_disks = data_disks
    for entry in data_disks:
        backend.by_id(entry["managedDisk"]["id"]).managed_by = vm.id
    _sync_volumes(backend, vm)
    op = backend.new_operation(COMPUTE, sub, location, "vmCreate", vm.id)
    vm.power_operation = op
    guest.shut_down()
    backend.changed(vm)

    def provisioned() -> None:
        vm.power_operation = None
        vm.provisioning_state = "Succeeded"
        vm.power, vm.booting = "running", True
        backend.finish(op)
        backend.changed(vm)
        backend.later((15.0, 30.0), windows_up)

    def windows_up() -> None:
        if vm.power == "running" and vm.power_operation is None:
            vm.guest.boot()
            vm.booting = False
            backend.changed(vm)

    op.event = backend.later(VM_CREATE, provisioned)
    return vm, op


def update_vm(backend: ArmBackend, vm: VirtualMachine, body: dict[str, Any]) -> AsyncOperation:
    """PUT (whole body) or PATCH on an existing VM: data disks attached/detached, the OS disk
    swapped, tags. Anything else in the body is accepted and left as it is."""
    props = body.get("properties") or {}
    storage = props.get("storageProfile")
    new_os: ManagedDisk | None = None
    new_guest: WindowsGuest | None = None   # the Windows on new_os (a swap needs one)
    entries = None
    if isinstance(storage, dict):
        os_disk = storage.get("osDisk") or {}
        wanted = ((os_disk.get("managedDisk") or {}).get("id")) if isinstance(os_disk, dict) else None
        if wanted and wanted.lower() != (vm.os_disk_id or "").lower():
            new_os, new_guest = _check_swap(backend, vm, wanted)
        if "dataDisks" in storage:
            entries = _data_disk_entries(backend, vm.location, vm.zones, storage.get("dataDisks"), vm.id)
            if new_os is not None and any(e["managedDisk"]["id"].lower() == new_os.id.lower() for e in entries):
                raise InvalidParameter(f"Disk {new_os.name} cannot be both the OS disk and a data disk.")
    if vm.power_operation is not None:
        raise OperationNotAllowedConflict("Operation 'Update' is not allowed since the virtual machine is being "
                                          "started, stopped or updated.")
    if isinstance(body.get("tags"), dict):
        vm.tags = {str(k): str(v) for k, v in body["tags"].items()}
    if entries is not None:
        kept = {e["managedDisk"]["id"].lower() for e in entries}
        for old in vm.data_disks:
            if old["managedDisk"]["id"].lower() not in kept:
                disk = backend.by_id(old["managedDisk"]["id"])
                if disk is not None:
                    disk.managed_by = None
        for entry in entries:
            backend.by_id(entry["managedDisk"]["id"]).managed_by = vm.id
        vm.data_disks = entries
        _sync_volumes(backend, vm)
    if new_os is not None and new_guest is not None:
        old_os = os_disk_of(backend, vm)
        if old_os is not None:
            old_os.managed_by = None
        new_os.managed_by = vm.id
        vm.os_disk_id = new_os.id
        vm.guest = new_guest
        vm.guest.attached_volumes = []
    op = backend.new_operation(COMPUTE, vm.subscription, vm.location, "vmUpdate", vm.id)
    vm.power_operation = op

    def done() -> None:
        vm.power_operation = None
        backend.finish(op)
        backend.changed(vm)
    op.event = backend.later(VM_UPDATE, done)
    backend.changed(vm)
    return op


def _check_swap(backend: ArmBackend, vm: VirtualMachine, wanted: str) -> tuple[ManagedDisk, WindowsGuest]:
    """The disk to swap in as the VM's OS disk and the Windows on it, or the ARM error that refuses it."""
    disk = backend.by_id(wanted)
    if not isinstance(disk, ManagedDisk):
        raise err.ArmError(f"Disk {wanted} is not found.", code="NotFound", status=404)
    if vm.power not in ("stopped", "deallocated"):
        raise PropertyChangeNotAllowed("Changing property 'osDisk.managedDisk.id' is not allowed. The VM must be "
                                       "stopped or deallocated to swap its OS disk.", code="PropertyChangeNotAllowed")
    if disk.managed_by and disk.managed_by.lower() != vm.id.lower():
        raise OperationNotAllowedConflict(f"Disk {disk.name} is already attached to VM {disk.managed_by}.")
    if (disk.os_type or "").lower() != vm.os_type.lower():
        raise InvalidParameter(f"The OS type of disk {disk.name} ({disk.os_type}) differs from the VM's ({vm.os_type}).",
                               code="OSDiskTypeMismatch")
    if disk.hyper_v_generation != vm.hyper_v_generation:
        raise PropertyChangeNotAllowed(f"Changing property 'osDisk.managedDisk.id' is not allowed: the disk's "
                                       f"HyperVisor Generation '{disk.hyper_v_generation}' differs from the VM's "
                                       f"'{vm.hyper_v_generation}'.")
    if _location(disk.location) != _location(vm.location) or sorted(disk.zones) != sorted(vm.zones):
        raise InvalidParameter(f"Disk {disk.name} is not in the VM's region and zone.")
    if disk.guest is None:
        raise InvalidParameter(f"Disk {disk.name} holds no operating system.")
    return disk, disk.guest


def power_off(backend: ArmBackend, vm: VirtualMachine) -> AsyncOperation:
    """Stop the VM (it stays allocated): Windows shuts down, the platform reports stopped."""
    if vm.power in ("stopped", "deallocated"):
        op = backend.new_operation(COMPUTE, vm.subscription, vm.location, "powerOff", vm.id)
        op.event = backend.later((1.0, 3.0), lambda: backend.finish(op))
        return op
    if vm.power_operation is not None:
        backend.finish(vm.power_operation, error=err.OperationPreempted())
        backend.scheduler.cancel(vm.power_operation.event)
    if vm.running_command is not None:
        backend.scheduler.cancel(vm.running_command.event)
        backend.finish(vm.running_command, error=err.OperationPreempted())
        vm.running_command = None
    op = backend.new_operation(COMPUTE, vm.subscription, vm.location, "powerOff", vm.id)
    vm.power_operation = op
    vm.guest.shut_down()
    vm.power, vm.booting = "stopping", False
    backend.changed(vm)

    def done() -> None:
        vm.power_operation = None
        vm.power = "stopped"
        backend.finish(op)
        backend.changed(vm)
    op.event = backend.later(POWER_OFF, done)
    return op


def _remove_vm(backend: ArmBackend, vm: VirtualMachine) -> None:
    rg = backend.resource_group(vm.subscription, vm.resource_group)
    vm.guest.shut_down()
    vm.power = "deallocated"
    backend.changed(vm)               # its listener closes
    for entry in vm.data_disks:
        disk = backend.by_id(entry["managedDisk"]["id"])
        if disk is not None:
            disk.managed_by = None
    vm.data_disks = []
    disk = os_disk_of(backend, vm)
    if disk is not None:
        disk.managed_by = None
    for nic_id in vm.nic_ids:
        nic = backend.by_id(nic_id)
        if nic is not None:
            nic.vm_id = None
    rg.vms.pop(vm.name.lower(), None)


def delete_vm(backend: ArmBackend, vm: VirtualMachine) -> AsyncOperation:
    if vm.power_operation is not None:
        backend.scheduler.cancel(vm.power_operation.event)
        backend.finish(vm.power_operation, error=err.OperationPreempted())
    op = backend.new_operation(COMPUTE, vm.subscription, vm.location, "vmDelete", vm.id)
    vm.power_operation = op
    vm.provisioning_state = "Deleting"

    def done() -> None:
        _remove_vm(backend, vm)
        backend.finish(op)
    op.event = backend.later(VM_DELETE, done)
    return op


# -- network for a new VM ----------------------------------------------------------------------------

def put_vnet(backend: ArmBackend, sub: str, rg_name: str, name: str, body: Any) -> tuple[VirtualNetwork, bool, AsyncOperation]:
    rg = backend.resource_group(sub, rg_name)
    props = (body or {}).get("properties") or {}
    prefixes = [str(p) for p in ((props.get("addressSpace") or {}).get("addressPrefixes") or [])]
    if not prefixes:
        raise InvalidParameter("addressSpace.addressPrefixes is required.", code="InvalidAddressPrefixFormat")
    created = name.lower() not in rg.vnets
    vnet = VirtualNetwork(sub, rg.name, name, str(body.get("location") or rg.location), prefixes)
    for item in props.get("subnets") or []:
        subnet_props = item.get("properties") or {}
        nsg = (subnet_props.get("networkSecurityGroup") or {}).get("id")
        vnet.subnets[str(item["name"]).lower()] = Subnet(str(item["name"]), str(subnet_props.get("addressPrefix")), nsg)
    rg.vnets[name.lower()] = vnet
    from azrdp.emulator.models import NETWORK

    op = backend.new_operation(NETWORK, sub, vnet.location, "vnet", vnet.id)
    op.event = backend.later(NETWORK_PUT, lambda: backend.finish(op))
    return vnet, created, op


def put_nic(backend: ArmBackend, sub: str, rg_name: str, name: str, body: Any) -> tuple[NetworkInterface, bool, AsyncOperation]:
    from azrdp.emulator.models import NETWORK

    rg = backend.resource_group(sub, rg_name)
    props = (body or {}).get("properties") or {}
    configs = []
    for index, item in enumerate(props.get("ipConfigurations") or []):
        cp = item.get("properties") or {}
        subnet_id = str((cp.get("subnet") or {}).get("id") or "")
        if backend.by_id(subnet_id) is None:
            raise err.ArmError(f"Subnet {subnet_id} is not found.", code="InvalidResourceReference", status=400)
        if cp.get("publicIPAddress"):
            raise InvalidParameter("azrdp's emulator makes rescue NICs without public IPs.")
        vnet = backend.by_id(subnet_id.rsplit("/subnets/", 1)[0])
        taken = sum(len(n.ip_configurations) for r in backend.subscription(sub).resource_groups.values()
                    for n in r.nics.values())
        prefix = vnet.subnets[parse_id(subnet_id)["subnets"].lower()].address_prefix.split("/")[0].rsplit(".", 1)[0]
        configs.append(IPConfiguration(str(item.get("name") or f"ipconfig{index + 1}"), f"{prefix}.{taken % 250 + 4}",
                                       subnet_id, primary=index == 0))
    if not configs:
        raise InvalidParameter("A network interface needs an IP configuration.")
    created = name.lower() not in rg.nics
    nic = NetworkInterface(sub, rg.name, name, str(body.get("location") or rg.location), configs)
    rg.nics[name.lower()] = nic
    op = backend.new_operation(NETWORK, sub, nic.location, "nic", nic.id)
    op.event = backend.later(NETWORK_PUT, lambda: backend.finish(op))
    return nic, created, op


# -- resource groups ---------------------------------------------------------------------------------

def put_resource_group(backend: ArmBackend, sub: str, name: str, body: Any) -> tuple[Any, bool]:
    backend.subscription(sub)
    location = str((body or {}).get("location") or "")
    if not location:
        raise InvalidParameter("The 'location' property is required.", code="LocationRequired")
    existing = backend.subscription(sub).resource_groups.get(name.lower())
    rg = backend.add_resource_group(sub, name, location)
    if isinstance((body or {}).get("tags"), dict):
        rg.tags = {str(k): str(v) for k, v in body["tags"].items()}
    return rg, existing is None


def resource_group_body(sub: str, rg: Any, state: str = "Succeeded") -> dict[str, Any]:
    return {"id": f"/subscriptions/{sub}/resourceGroups/{rg.name}", "name": rg.name,
            "type": "Microsoft.Resources/resourceGroups", "location": rg.location,
            "tags": dict(rg.tags), "properties": {"provisioningState": state}}


def delete_resource_group(backend: ArmBackend, sub: str, name: str) -> AsyncOperation:
    """Deletes the group and everything in it (VMs first, then disks, NICs, networks)."""
    rg = backend.resource_group(sub, name)
    rg.deleting = True
    op = backend.new_operation("Microsoft.Resources", sub, rg.location, "groupDelete", f"/subscriptions/{sub}/resourceGroups/{rg.name}")
    for vm in list(rg.vms.values()):
        if vm.power_operation is not None:
            backend.scheduler.cancel(vm.power_operation.event)
            backend.finish(vm.power_operation, error=err.OperationPreempted())
            vm.power_operation = None

    def done() -> None:
        for vm in list(rg.vms.values()):
            _remove_vm(backend, vm)
        # disks of this group attached to VMs elsewhere would block a real delete; azrdp never does that
        backend.subscription(sub).resource_groups.pop(rg.name.lower(), None)
        backend.finish(op)
    op.event = backend.later(GROUP_DELETE, done)
    return op
