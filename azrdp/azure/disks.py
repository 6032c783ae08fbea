"""The ARM calls of ``azrdp rescue``: snapshot and copy a managed disk, a resource group of the
rescue's own, a rescue VM (no public IP) with the copy as a data disk, detach, power off, the
OS-disk swap, and deleting the rescue group. Everything returns ARM's wire dicts.

Each write is an ARM long-running operation waited on azrdp's clock (:func:`lro.run_lro`).
PUTs are idempotent (resending one after a dropped connection creates nothing twice), so they go
out with the SDK's retries; the power-off POST does not (see power.py). Shapes follow Microsoft's
REST examples: ``Snapshots_CreateOrUpdate``/``Disks_CreateOrUpdate`` with ``createOption: Copy``
and ``sourceResourceId``, ``VirtualMachines_CreateOrUpdate`` with ``createOption: Attach`` data
disks, and the OS-disk swap as a VM update of ``storageProfile.osDisk.managedDisk.id`` (what
``az vm update --os-disk`` sends; Learn "Change the OS disk used by an Azure VM").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from azrdp.azure import wire_dict
from azrdp.azure.lro import LroOutcome, run_lro
from azrdp.clock import SYSTEM_CLOCK, Clock
from azrdp.errors import AzureOperationError, OperationTimeout

if TYPE_CHECKING:
    from azrdp.azure.vm import Session

RESOURCES_API = "2021-04-01"
RESCUE_IMAGE = {"publisher": "MicrosoftWindowsServer", "offer": "WindowsServer",
                "sku": "2022-datacenter-smalldisk-g2", "version": "latest"}
"""az vm repair's default Windows repair image since 2.0.0 (2022-datacenter-smalldisk); the -g2
variant boots as Gen2 and still reads a Gen1 disk attached as data (only the boot differs)."""
RESCUE_IMAGE_GEN1 = dict(RESCUE_IMAGE, sku="2022-datacenter-smalldisk")
RESCUE_SIZE = "Standard_B2s"
RESCUE_PREFIX = "10.250.0.0/24"


class Arm:
    """One place that runs rescue's ARM calls with the same clock, timeout and polling."""

    def __init__(self, session: Session, *, clock: Clock = SYSTEM_CLOCK, timeout: float = 1800.0,
                 polling_interval: float | None = None):
        from azrdp.azure.lro import poll_interval

        self.session = session
        self.compute = session.compute
        self.network = session.network
        self.clock = clock
        self.timeout = timeout
        self.polling_interval = poll_interval(session) if polling_interval is None else polling_interval
        self.subscription = session.subscription_id

    def _lro(self, begin: Callable[..., Any], *, client: Any, action: str, doing: str,
             idempotent: bool = True) -> LroOutcome:
        return run_lro(begin, client=client, action=action, doing=doing, clock=self.clock, timeout=self.timeout,
                       polling_interval=self.polling_interval, subscription=self.subscription,
                       idempotent=idempotent)

    def _read(self, call: Callable[[], Any], doing: str) -> dict[str, Any] | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        from azrdp.azure.arm_errors import translate

        try:
            return wire_dict(call())
        except ResourceNotFoundError:
            return None
        except AzureError as err:
            raise translate(err, doing=doing, subscription=self.subscription) from None

    # -- reads ----------------------------------------------------------------------------------
    def vm(self, rg: str, name: str) -> dict[str, Any] | None:
        return self._read(lambda: self.compute.virtual_machines.get(rg, name), f"reading VM {rg}/{name}")

    def disk(self, rg: str, name: str) -> dict[str, Any] | None:
        return self._read(lambda: self.compute.disks.get(rg, name), f"reading disk {rg}/{name}")

    def snapshot(self, rg: str, name: str) -> dict[str, Any] | None:
        return self._read(lambda: self.compute.snapshots.get(rg, name), f"reading snapshot {rg}/{name}")

    def group(self, name: str) -> dict[str, Any] | None:
        response = self._raw("GET", f"/subscriptions/{self.subscription}/resourcegroups/{name}", None,
                             doing=f"reading resource group {name}", missing_ok=True)
        return None if response is None else response.json()

    # -- snapshots and disks ----------------------------------------------------------------------
    def snapshot_disk(self, rg: str, name: str, *, source_id: str, location: str, tags: dict[str, str]) -> dict[str, Any]:
        body = {"location": location, "tags": tags,
                "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": source_id}}}
        out = self._lro(lambda **kw: self.compute.snapshots.begin_create_or_update(rg, name, body, **kw),
                        client=self.compute, action="snapshot", doing=f"creating snapshot {rg}/{name}")
        return wire_dict(out.result)

    def copy_disk(self, rg: str, name: str, *, source_id: str, location: str, zones: list[str], sku: str | None,
                  tags: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = {"location": location, "tags": tags,
                                "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": source_id}}}
        if zones:
            body["zones"] = list(zones)
        if sku:
            body["sku"] = {"name": sku}
        out = self._lro(lambda **kw: self.compute.disks.begin_create_or_update(rg, name, body, **kw),
                        client=self.compute, action="disk copy", doing=f"creating disk {rg}/{name}")
        return wire_dict(out.result)

    def provisioned(self, read: Callable[[], dict[str, Any] | None], *, what: str) -> dict[str, Any]:
        """A resource an earlier, interrupted run already asked ARM for (its PUT was sent, its answer
        never read): polled with ``read`` until its provisioningState is Succeeded, within the
        operation timeout. Failed (or gone) is an AzureOperationError: it cannot be reused."""
        deadline = self.clock.monotonic() + self.timeout
        while True:
            body = read()
            state = ((body or {}).get("properties") or {}).get("provisioningState")
            if body is None or str(state).lower() == "failed":
                raise AzureOperationError(f"{what} from the interrupted run is {'gone' if body is None else 'Failed'}.",
                                          hint="`azrdp rescue VM --undo` reverses the rescue; then start a new one.")
            if str(state).lower() == "succeeded":
                return body
            pause = max(self.polling_interval or 0.0, 1.0)
            if self.clock.monotonic() + pause > deadline:
                raise OperationTimeout(f"{what} was still {state} after {self.timeout:g} s.",
                                       hint="`azrdp rescue VM --resume` continues once Azure has caught up.")
            self.clock.sleep(pause)

    # -- the rescue group and VM -----------------------------------------------------------------
    def create_group(self, name: str, *, location: str, tags: dict[str, str]) -> dict[str, Any]:
        response = self._raw("PUT", f"/subscriptions/{self.subscription}/resourcegroups/{name}",
                             {"location": location, "tags": tags}, doing=f"creating resource group {name}")
        return response.json()

    def delete_group(self, name: str) -> float:
        """Delete the rescue's resource group (and everything in it); wait for it. Seconds taken."""
        start = self.clock.monotonic()
        response = self._raw("DELETE", f"/subscriptions/{self.subscription}/resourcegroups/{name}", None,
                             doing=f"deleting resource group {name}", missing_ok=True)
        if response is None or response.status_code == 200:
            return self.clock.monotonic() - start
        location = response.headers.get("Location")
        deadline = start + self.timeout
        while location:
            pause = _retry_after(response.headers.get("Retry-After"), self.polling_interval)
            if self.clock.monotonic() + pause > deadline:
                raise OperationTimeout(f"deleting resource group {name} did not finish within {self.timeout:g} s.",
                                       hint=f"It may still complete in Azure: `az group show -n {name}`.")
            self.clock.sleep(pause)
            response = self._raw("GET", location, None, doing=f"waiting for resource group {name} to be deleted")
            if response.status_code != 202:
                break
            location = response.headers.get("Location") or location
        return self.clock.monotonic() - start

    def create_network(self, rg: str, *, location: str, name: str) -> str:
        """A VNet with one subnet and a NIC without public IP for the rescue VM; the NIC's ID."""
        vnet_body = {"location": location, "properties": {
            "addressSpace": {"addressPrefixes": [RESCUE_PREFIX]},
            "subnets": [{"name": "default", "properties": {"addressPrefix": RESCUE_PREFIX}}]}}
        out = self._lro(lambda **kw: self.network.virtual_networks.begin_create_or_update(rg, f"{name}-vnet", vnet_body, **kw),
                        client=self.network, action="vnet", doing=f"creating virtual network {rg}/{name}-vnet")
        subnet_id = wire_dict(out.result)["properties"]["subnets"][0]["id"]
        nic_body = {"location": location, "properties": {"ipConfigurations": [
            {"name": "ipconfig1", "properties": {"subnet": {"id": subnet_id},
                                                 "privateIPAllocationMethod": "Dynamic"}}]}}
        out = self._lro(lambda **kw: self.network.network_interfaces.begin_create_or_update(rg, f"{name}-nic", nic_body, **kw),
                        client=self.network, action="nic", doing=f"creating network interface {rg}/{name}-nic")
        return wire_dict(out.result)["id"]

    def create_rescue_vm(self, rg: str, name: str, *, location: str, zones: list[str], nic_id: str,
                         data_disk_id: str, password: str, generation: str, tags: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = {"location": location, "tags": tags, "properties": {
            "hardwareProfile": {"vmSize": RESCUE_SIZE},
            "storageProfile": {
                "imageReference": dict(RESCUE_IMAGE if generation == "V2" else RESCUE_IMAGE_GEN1),
                "osDisk": {"createOption": "FromImage", "deleteOption": "Delete",
                           "managedDisk": {"storageAccountType": "StandardSSD_LRS"}},
                "dataDisks": [{"lun": 0, "createOption": "Attach", "caching": "None",
                               "managedDisk": {"id": data_disk_id}}]},
            "osProfile": {"computerName": "azrdp-rescue", "adminUsername": "azrdprescue", "adminPassword": password,
                          "windowsConfiguration": {"provisionVMAgent": True}},
            "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"deleteOption": "Delete"}}]}}}
        if zones:
            body["zones"] = list(zones)
        out = self._lro(lambda **kw: self.compute.virtual_machines.begin_create_or_update(rg, name, body, **kw),
                        client=self.compute, action="rescue VM", doing=f"creating rescue VM {rg}/{name}")
        return wire_dict(out.result)

    def detach_data_disks(self, rg: str, name: str) -> None:
        body: dict[str, Any] = {"properties": {"storageProfile": {"dataDisks": []}}}
        self._lro(lambda **kw: self.compute.virtual_machines.begin_update(rg, name, body, **kw),
                  client=self.compute, action="detach", doing=f"detaching the data disks of VM {rg}/{name}")

    # -- the VM being rescued ---------------------------------------------------------------------
    def power_off(self, rg: str, name: str) -> float:
        out = self._lro(lambda **kw: self.compute.virtual_machines.begin_power_off(rg, name, **kw),
                        client=self.compute, action="stop", doing=f"stopping VM {rg}/{name}", idempotent=False)
        return out.seconds

    def swap_os_disk(self, rg: str, name: str, *, disk_id: str, disk_name: str) -> dict[str, Any]:
        body = {"properties": {"storageProfile": {"osDisk": {"name": disk_name, "managedDisk": {"id": disk_id}}}}}
        out = self._lro(lambda **kw: self.compute.virtual_machines.begin_update(rg, name, body, **kw),
                        client=self.compute, action="OS disk swap",
                        doing=f"swapping the OS disk of VM {rg}/{name} to {disk_name}")
        return wire_dict(out.result)

    # -- raw requests (resource groups: azure-mgmt-resource is not a dependency) -------------------
    def _raw(self, method: str, url: str, body: Any, *, doing: str, missing_ok: bool = False) -> Any:
        from azure.core.exceptions import AzureError
        from azure.core.rest import HttpRequest

        from azrdp.azure.arm_errors import translate

        if "api-version=" not in url:
            url = f"{url}?api-version={RESOURCES_API}"
        try:
            response = self.compute.send_request(HttpRequest(method, url, json=body))
            if missing_ok and response.status_code == 404:
                return None
            response.raise_for_status()
            return response
        except AzureError as err:
            raise translate(err, doing=doing, subscription=self.subscription) from None


def _retry_after(value: str | None, polling_interval: float | None) -> float:
    from azrdp.azure.throttle import retry_after_seconds

    seconds = retry_after_seconds(value)
    if polling_interval is not None:
        return max(0.0, min(seconds if seconds is not None else polling_interval, polling_interval))
    return seconds if seconds is not None else 15.0


def encryption_of(vm: dict[str, Any], os_disk: dict[str, Any] | None) -> str | None:
    """Why the OS disk is encrypted in a way an offline repair cannot read (ADE/BitLocker), or None.

    Azure Disk Encryption (BitLocker in the guest, keys in Key Vault) shows as the disk's
    ``encryptionSettingsCollection.enabled`` or the VM's ``osDisk.encryptionSettings.enabled``
    (Learn "Azure Disk Encryption for Windows VMs"); confidential VMs encrypt the OS disk with
    ``securityProfile.securityEncryptionType: DiskWithVMGuestState``. Server-side encryption
    (platform or customer keys) is transparent to a copy and is not a problem."""
    props = (os_disk or {}).get("properties") or {}
    if (props.get("encryptionSettingsCollection") or {}).get("enabled"):
        return "the OS disk is encrypted with Azure Disk Encryption (BitLocker; keys in Key Vault)"
    os_props = (((vm.get("properties") or {}).get("storageProfile") or {}).get("osDisk") or {})
    if (os_props.get("encryptionSettings") or {}).get("enabled"):
        return "the VM's OS disk has Azure Disk Encryption settings (BitLocker)"
    security = ((os_props.get("managedDisk") or {}).get("securityProfile") or {})
    if str(security.get("securityEncryptionType") or "").lower() == "diskwithvmgueststate":
        return "the VM is a confidential VM whose OS disk is encrypted with its guest state"
    return None


__all__ = ["Arm", "AzureOperationError", "encryption_of", "RESCUE_IMAGE"]
