"""The emulator's in-memory Azure: subscriptions, resource groups, VMs (with instance view, agent
and a simulated Windows guest), NICs, virtual networks and subnets, NSGs with their rules, public
IPs, application security groups, and asynchronous operations.

Like moto's ``models.py``: the state and the business rules (what ARM allows, what an operation
does and how long it takes) live here and raise :mod:`exceptions` errors; ``responses.py`` only
turns HTTP into calls and models into JSON. Every model renders its own ARM body with
``to_arm()``, shaped after Microsoft's examples (copies in ``tests/arm-examples``).

Everything runs under :attr:`ArmBackend.lock`.
"""

from __future__ import annotations

import ipaddress
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from azrdp.emulator import exceptions as err
from azrdp.emulator import timescale as ts
from azrdp.emulator.faults import FaultBook
from azrdp.emulator.guest import WindowsGuest
from azrdp.emulator.resource_graph import API_VERSIONS as RESOURCE_GRAPH_API_VERSIONS
from azrdp.emulator.resource_graph import RESOURCE_GRAPH_API
from azrdp.emulator.timescale import Scheduler, TimeScale

COMPUTE_API = "2026-04-01"
NETWORK_API = "2026-03-01"
SUBSCRIPTIONS_API = "2022-12-01"   # what AzureSession.list_subscriptions sends
# Real Azure accepts every supported api-version, not only the one the SDK sends
# (real-azure-behaviour.md, "Smaller differences"). These are published api-versions of each
# provider (azure-rest-api-specs); bodies are rendered in the current shape whatever the version.
SUPPORTED_API_VERSIONS = {
    COMPUTE_API: (COMPUTE_API, "2025-04-01", "2024-11-01", "2024-07-01", "2024-03-01", "2023-09-01", "2023-07-01",
                  "2023-03-01", "2022-11-01", "2022-08-01", "2022-03-01", "2021-11-01", "2021-07-01", "2021-03-01",
                  "2020-12-01"),
    NETWORK_API: (NETWORK_API, "2024-05-01", "2024-03-01", "2024-01-01", "2023-11-01", "2023-09-01", "2023-06-01",
                  "2023-05-01", "2023-04-01", "2023-02-01", "2022-11-01", "2022-09-01", "2022-07-01", "2022-05-01",
                  "2022-01-01", "2021-08-01", "2021-05-01", "2021-03-01", "2021-02-01", "2020-11-01"),
    SUBSCRIPTIONS_API: (SUBSCRIPTIONS_API, "2022-09-01", "2021-01-01", "2020-01-01", "2019-11-01", "2016-06-01"),
    RESOURCE_GRAPH_API: RESOURCE_GRAPH_API_VERSIONS,
}
COMPUTE = "Microsoft.Compute"
NETWORK = "Microsoft.Network"

DEFAULT_INBOUND = (
    ("AllowVnetInBound", "Allow inbound traffic from all VMs in VNET", "Allow", "VirtualNetwork", "VirtualNetwork", 65000),
    ("AllowAzureLoadBalancerInBound", "Allow inbound traffic from azure load balancer", "Allow", "AzureLoadBalancer", "*", 65001),
    ("DenyAllInBound", "Deny all inbound traffic", "Deny", "*", "*", 65500),
)
DEFAULT_OUTBOUND = (
    ("AllowVnetOutBound", "Allow outbound traffic from all VMs to all VMs in VNET", "Allow", "VirtualNetwork", "VirtualNetwork", 65000),
    ("AllowInternetOutBound", "Allow outbound traffic from all VMs to Internet", "Allow", "*", "Internet", 65001),
    ("DenyAllOutBound", "Deny all outbound traffic", "Deny", "*", "*", 65500),
)


def rg_prefix(subscription: str, resource_group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}"


def resource_id(subscription: str, resource_group: str, provider: str, kind: str, name: str) -> str:
    return f"{rg_prefix(subscription, resource_group)}/providers/{provider}/{kind}/{name}"


def ref(resource_id_: str | None) -> dict[str, str] | None:
    return {"id": resource_id_} if resource_id_ else None


def upper_ref(resource_id_: str | None) -> dict[str, str] | None:
    """A back-reference as real NIC, subnet, NSG and public IP bodies often carry it: the resource
    group and resource names upper-cased (``.../resourceGroups/CLI_TEST_.../virtualMachines/VRFVM``,
    real-azure-behaviour.md, "Smaller differences"). Clients must compare IDs case-insensitively."""
    if not resource_id_:
        return None
    parts = resource_id_.split("/")
    out = []
    for i, part in enumerate(parts):
        key = parts[i - 1].lower() if i else ""
        upper = i >= 2 and key not in ("subscriptions", "providers", "") and (i % 2 == 0) and \
            parts[1].lower() == "subscriptions"
        out.append(part.upper() if upper and key != "providers" and not part.startswith("Microsoft.") else part)
    return {"id": "/".join(out)}


def etag() -> str:
    return f'W/"{uuid.uuid4()}"'


PLURALS = (("sourcePortRange", "sourcePortRanges"), ("destinationPortRange", "destinationPortRanges"),
           ("sourceAddressPrefix", "sourceAddressPrefixes"), ("destinationAddressPrefix", "destinationAddressPrefixes"))


def parse_id(resource_id_: str) -> dict[str, str]:
    """``/subscriptions/s/resourceGroups/g/providers/P/type/name[/child/name]`` -> its parts
    (keys lower-cased: subscriptions, resourcegroups, and each type)."""
    parts = [p for p in resource_id_.strip("/").split("/") if p]
    out: dict[str, str] = {}
    i = 0
    while i + 1 < len(parts):
        key = parts[i].lower()
        if key == "providers":
            out["provider"] = parts[i + 1]
        else:
            out[key] = parts[i + 1]
        i += 2
    return out


# -- network ------------------------------------------------------------------------------------

@dataclass
class ArmResource:
    """A top-level ARM resource: where it lives and its ID."""

    subscription: str
    resource_group: str
    name: str
    location: str
    PROVIDER: ClassVar[str] = NETWORK
    KIND: ClassVar[str] = ""

    @property
    def id(self) -> str:
        return resource_id(self.subscription, self.resource_group, self.PROVIDER, self.KIND, self.name)


@dataclass
class SecurityRule:
    name: str
    properties: dict[str, Any]          # camelCase, as ARM stores them (provisioningState included)
    default: bool = False

    etag: str = field(default_factory=etag)

    def to_arm(self, nsg_id: str) -> dict[str, Any]:
        """As real rules come: ``type``, ``etag`` and the empty plural arrays beside the singular
        fields (real-azure-behaviour.md, "Smaller differences")."""
        kind = "defaultSecurityRules" if self.default else "securityRules"
        props = dict(self.properties)
        for _single, plural in PLURALS:
            props.setdefault(plural, [])
        return {"name": self.name, "id": f"{nsg_id}/{kind}/{self.name}", "etag": self.etag,
                "type": f"Microsoft.Network/networkSecurityGroups/{kind}", "properties": props}

    @property
    def applied(self) -> bool:
        """Rules being created are not enforced yet; rules being deleted still are."""
        return self.properties.get("provisioningState") in ("Succeeded", "Deleting")


@dataclass
class NetworkSecurityGroup(ArmResource):
    KIND: ClassVar[str] = "networkSecurityGroups"
    rules: dict[str, SecurityRule] = field(default_factory=dict)   # keyed by lower-case name
    resource_guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    etag: str = field(default_factory=etag)
    subnet_ids: list[str] = field(default_factory=list)      # back-references, filled by the backend
    nic_ids: list[str] = field(default_factory=list)


    def default_rules(self) -> list[SecurityRule]:
        rules = []
        for direction, table in (("Inbound", DEFAULT_INBOUND), ("Outbound", DEFAULT_OUTBOUND)):
            for name, description, access, source, destination, priority in table:
                rules.append(SecurityRule(name, {
                    "description": description, "access": access,
                    "destinationAddressPrefix": destination, "destinationPortRange": "*",
                    "direction": direction, "priority": priority, "provisioningState": "Succeeded",
                    "sourceAddressPrefix": source, "sourcePortRange": "*", "protocol": "*"}, default=True,
                    etag=self.etag))
        return rules

    def to_arm(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "defaultSecurityRules": [r.to_arm(self.id) for r in self.default_rules()],
            "provisioningState": "Succeeded",
            "resourceGuid": self.resource_guid,
            "securityRules": [r.to_arm(self.id) for r in self.rules.values()],
        }
        if self.nic_ids:
            props["networkInterfaces"] = [upper_ref(i) for i in self.nic_ids]
        if self.subnet_ids:
            props["subnets"] = [upper_ref(i) for i in self.subnet_ids]
        return {"name": self.name, "type": "Microsoft.Network/networkSecurityGroups", "id": self.id,
                "etag": self.etag, "location": self.location, "properties": props}

    def applied_body(self) -> dict[str, Any]:
        """This NSG as enforced right now (rules still being created left out)."""
        body = self.to_arm()
        body["properties"]["securityRules"] = [r.to_arm(self.id) for r in self.rules.values() if r.applied]
        return body


@dataclass
class ApplicationSecurityGroup(ArmResource):
    KIND: ClassVar[str] = "applicationSecurityGroups"
    resource_guid: str = field(default_factory=lambda: str(uuid.uuid4()))


    def to_arm(self) -> dict[str, Any]:
        return {"name": self.name, "type": "Microsoft.Network/applicationSecurityGroups", "id": self.id,
                "location": self.location,
                "properties": {"provisioningState": "Succeeded", "resourceGuid": self.resource_guid}}


@dataclass
class Subnet:
    name: str
    address_prefix: str
    nsg_id: str | None = None

    def to_arm(self, vnet_id: str) -> dict[str, Any]:
        props: dict[str, Any] = {"addressPrefix": self.address_prefix, "provisioningState": "Succeeded"}
        if self.nsg_id:
            props["networkSecurityGroup"] = ref(self.nsg_id)
        return {"name": self.name, "id": f"{vnet_id}/subnets/{self.name}", "properties": props}


@dataclass
class VirtualNetwork(ArmResource):
    KIND: ClassVar[str] = "virtualNetworks"
    address_prefixes: list[str]
    subnets: dict[str, Subnet] = field(default_factory=dict)
    resource_guid: str = field(default_factory=lambda: str(uuid.uuid4()))


    def to_arm(self) -> dict[str, Any]:
        return {"name": self.name, "type": "Microsoft.Network/virtualNetworks", "id": self.id,
                "location": self.location,
                "properties": {"addressSpace": {"addressPrefixes": list(self.address_prefixes)},
                               "provisioningState": "Succeeded", "resourceGuid": self.resource_guid,
                               "subnets": [s.to_arm(self.id) for s in self.subnets.values()]}}


@dataclass
class PublicIPAddress(ArmResource):
    KIND: ClassVar[str] = "publicIPAddresses"
    ip_address: str | None
    ip_configuration_id: str | None = None
    allocation: str = "Static"


    def to_arm(self) -> dict[str, Any]:
        props: dict[str, Any] = {"idleTimeoutInMinutes": 4, "provisioningState": "Succeeded",
                                 "publicIPAddressVersion": "IPv4", "publicIPAllocationMethod": self.allocation}
        if self.ip_configuration_id:
            props["ipConfiguration"] = upper_ref(self.ip_configuration_id)
        if self.ip_address:
            props["ipAddress"] = self.ip_address
        return {"name": self.name, "type": "Microsoft.Network/publicIPAddresses", "id": self.id,
                "location": self.location, "properties": props}


@dataclass
class IPConfiguration:
    name: str
    private_ip: str
    subnet_id: str
    public_ip_id: str | None = None
    asg_ids: list[str] = field(default_factory=list)
    primary: bool = True


@dataclass
class NetworkInterface(ArmResource):
    KIND: ClassVar[str] = "networkInterfaces"
    ip_configurations: list[IPConfiguration]
    nsg_id: str | None = None
    vm_id: str | None = None
    mac: str = "00-0D-3A-1B-C7-21"


    def to_arm(self) -> dict[str, Any]:
        configs = []
        for c in self.ip_configurations:
            props: dict[str, Any] = {"primary": c.primary, "privateIPAddress": c.private_ip,
                                     "privateIPAddressVersion": "IPv4", "privateIPAllocationMethod": "Dynamic",
                                     "provisioningState": "Succeeded", "subnet": ref(c.subnet_id)}
            if c.public_ip_id:
                props["publicIPAddress"] = ref(c.public_ip_id)
            if c.asg_ids:
                props["applicationSecurityGroups"] = [ref(a) for a in c.asg_ids]
            configs.append({"name": c.name, "id": f"{self.id}/ipConfigurations/{c.name}", "properties": props})
        props = {"dnsSettings": {"appliedDnsServers": [], "dnsServers": []},
                 "enableAcceleratedNetworking": False, "enableIPForwarding": False,
                 "ipConfigurations": configs, "macAddress": self.mac, "primary": True,
                 "provisioningState": "Succeeded"}
        if self.nsg_id:
            props["networkSecurityGroup"] = ref(self.nsg_id)
        if self.vm_id:
            props["virtualMachine"] = upper_ref(self.vm_id)
        return {"name": self.name, "type": "Microsoft.Network/networkInterfaces", "id": self.id,
                "location": self.location, "properties": props}


# -- compute ------------------------------------------------------------------------------------

AGENT_VERSION = "2.7.41491.1102"
POWER_DISPLAY = {"running": "VM running", "deallocated": "VM deallocated", "stopped": "VM stopped",
                 "starting": "VM starting", "deallocating": "VM deallocating", "stopping": "VM stopping"}


@dataclass
class VirtualMachine(ArmResource):
    KIND: ClassVar[str] = "virtualMachines"
    PROVIDER: ClassVar[str] = COMPUTE
    guest: WindowsGuest
    nic_ids: list[str]
    rdp_address: str                   # the loopback address the VM's RDP listener binds
    size: str = "Standard_B2s"
    admin_username: str = "azureadmin"
    boot_diagnostics: bool = True
    power: str = "running"             # running | starting | deallocated | stopped
    provisioning_state: str = "Succeeded"
    booting: bool = False              # the platform says running; Windows is still starting
    rdp_suppressed: bool = False       # fault: RDP never comes back after the next restart
    vm_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time_created: str = "2026-01-05T09:14:38.3138469+00:00"
    running_command: AsyncOperation | None = None
    power_operation: AsyncOperation | None = None
    tags: dict[str, str] = field(default_factory=lambda: {"azrdp-emulator": "true"})
    os_type: str = "Windows"           # the OS disk's osType; Linux VMs exist to be left alone
    # Disks (azrdp/emulator/disks.py): the guest above is the Windows on the OS disk.
    os_disk_id: str | None = None
    data_disks: list[dict[str, Any]] = field(default_factory=list)   # ARM's dataDisks entries
    zones: list[str] = field(default_factory=list)
    hyper_v_generation: str = "V2"
    image_reference: dict[str, str] = field(default_factory=lambda: {
        "publisher": "MicrosoftWindowsServer", "offer": "WindowsServer",
        "sku": "2022-datacenter-azure-edition", "version": "latest"})


    agent_frozen: dict[str, Any] | None = None   # the agent's last report, kept once it stopped reporting
    last_operation_at: float | None = None       # simulated second the last power operation ended
    run_command_started: float | None = None     # simulated second the latest Run Command began
    power_generation: int = 0                    # bumped by each power change: stale transitions do nothing
    run_command_ended: float | None = None

    @property
    def allocated(self) -> bool:
        return self.power not in ("deallocated", "stopped")

    # The VM agent reports its status on a heartbeat; ARM shows the latest report with its time. A
    # guest going down (restart, stop) stops the reports: the instance view keeps the last one, stale
    # ("Ready" with a time older than the restart's startTime, real-azure-behaviour.md, "Timing and
    # state around power operations"), until the agent reports again after the boot.
    def _live_report(self, iso: Callable[[float | None], str]) -> dict[str, Any]:
        now = self.guest.sim_now()
        if self.guest.up and self.guest.agent_ready:
            booted = self.guest.booted_at
            beat = booted + ((now - booted) // ts.AGENT_HEARTBEAT) * ts.AGENT_HEARTBEAT
            return {"vmAgentVersion": AGENT_VERSION, "statuses": [
                {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready",
                 "message": "GuestAgent is running and accepting new configurations.", "time": iso(beat)}],
                "extensionHandlers": [{"type": "Microsoft.CPlat.Core.RunCommandWindows", "typeHandlerVersion": "1.1.18",
                                       "status": {"code": "ProvisioningState/succeeded", "level": "Info",
                                                  "displayStatus": "Ready"}}]}
        # The platform's own verdict on an agent that stopped reporting (a "matched" shape).
        return {"vmAgentVersion": "Unknown", "statuses": [
            {"code": "ProvisioningState/Unavailable", "level": "Warning", "displayStatus": "Not Ready",
             "message": "VM status blob is found but not yet populated.", "time": iso(now)}]}

    def freeze_agent(self, iso: Callable[[float | None], str]) -> None:
        """The guest is going down: its agent's last report is what ARM keeps showing."""
        if self.agent_frozen is None:
            self.agent_frozen = self._live_report(iso)

    def agent_status(self, iso: Callable[[float | None], str]) -> dict[str, Any] | None:
        if self.power == "deallocated":
            return None
        if self.agent_frozen is not None:
            return self.agent_frozen
        return self._live_report(iso)

    def instance_view(self, iso: Callable[[float | None], str], blob_base: str) -> dict[str, Any]:
        if self.power_operation is not None:
            provisioning = ("ProvisioningState/updating", "Updating", iso(self.power_operation.started))
        else:
            provisioning = ("ProvisioningState/succeeded", "Provisioning succeeded",
                            iso(self.last_operation_at) if self.last_operation_at is not None else self.time_created)
        statuses = [
            {"code": provisioning[0], "level": "Info", "displayStatus": provisioning[1], "time": provisioning[2]},
            {"code": f"PowerState/{self.power}", "level": "Info", "displayStatus": POWER_DISPLAY[self.power]},
        ]
        disks = [{"name": self.os_disk_name, "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info",
             "displayStatus": "Provisioning succeeded", "time": self.time_created}]}]
        if self.power == "deallocated":
            # A deallocated VM's instance view: no computerName, osName, osVersion or vmAgent.
            return {"disks": disks, "hyperVGeneration": self.hyper_v_generation, "statuses": statuses}
        view: dict[str, Any] = {
            "computerName": self.guest.computer_name,
            "osName": "Windows Server 2022 Datacenter",
            "osVersion": "Microsoft Windows NT 10.0.20348.0",
            "disks": disks,
            "hyperVGeneration": self.hyper_v_generation,
            "isVMInStandbyPool": False,
            "statuses": statuses,
            "platformUpdateDomain": 0,
            "platformFaultDomain": 0,
            "vmAgent": self.agent_status(iso),
        }
        extension = self.run_command_extension(iso)
        if extension is not None:
            view["extensions"] = [extension]
        # Boot diagnostics URIs appear in the instance view only for a storage-account VM; these VMs
        # use managed storage, so they come from retrieveBootDiagnosticsData alone.
        return view

    def run_command_extension(self, iso: Callable[[float | None], str]) -> dict[str, Any] | None:
        """Action Run Command runs through the RunCommandWindows extension; its instance view says
        whether a command is in progress (Transitioning) and when the last one started and ended."""
        if self.run_command_started is None:
            return None
        if self.running_command is not None:
            status = {"code": "ProvisioningState/transitioning", "level": "Info", "displayStatus": "Transitioning",
                      "message": "Run command is in progress.", "time": iso(self.run_command_started)}
        else:
            status = {"code": "ProvisioningState/succeeded", "level": "Info",
                      "displayStatus": "Provisioning succeeded", "message": "Finished executing command",
                      "time": iso(self.run_command_ended if self.run_command_ended is not None
                                  else self.run_command_started)}
        return {"name": "RunCommandWindows", "type": "Microsoft.CPlat.Core.RunCommandWindows",
                "typeHandlerVersion": "1.1.18", "statuses": [status]}

    def boot_diagnostics_uris(self, blob_base: str, *, sas: str) -> dict[str, str]:
        base = f"{blob_base}/{self.subscription}/{self.resource_group}/{self.name}"
        return {"consoleScreenshotBlobUri": f"{base}/{self.name}.screenshot.bmp{sas}",
                "serialConsoleLogBlobUri": f"{base}/{self.name}.serialconsole.log{sas}"}

    def to_arm(self, *, iso: Callable[[float | None], str], blob_base: str, expand_instance_view: bool = False) -> dict[str, Any]:
        props: dict[str, Any] = {
            "vmId": self.vm_id,
            "hardwareProfile": {"vmSize": self.size},
            "storageProfile": {
                "imageReference": dict(self.image_reference),
                "osDisk": {"osType": self.os_type, "name": self.os_disk_name, "createOption": "FromImage",
                           "caching": "ReadWrite",
                           "managedDisk": {"storageAccountType": "Premium_LRS",
                                           "id": self.os_disk_id or resource_id(
                                               self.subscription, self.resource_group, COMPUTE, "disks",
                                               self.os_disk_name)},
                           "diskSizeGB": 127},
                "dataDisks": [dict(d, managedDisk=dict(d["managedDisk"])) for d in self.data_disks],
            },
            "osProfile": {"computerName": self.guest.computer_name, "adminUsername": self.admin_username,
                          "windowsConfiguration": {"provisionVMAgent": True, "enableAutomaticUpdates": True},
                          "secrets": []},
            # real VMs carry each NIC's primary flag (real-azure-behaviour.md, "Smaller differences")
            "networkProfile": {"networkInterfaces": [{"id": nic, "properties": {"primary": i == 0}}
                                                     for i, nic in enumerate(self.nic_ids)]},
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": self.boot_diagnostics}},
            "provisioningState": self.provisioning_state if self.provisioning_state in ("Creating", "Deleting")
            else "Updating" if self.power_operation else self.provisioning_state,
            "timeCreated": self.time_created,
        }
        if expand_instance_view:
            props["instanceView"] = self.instance_view(iso, blob_base)
        body = {"name": self.name, "id": self.id, "type": "Microsoft.Compute/virtualMachines",
                "location": self.location, "tags": dict(self.tags), "properties": props}
        if self.zones:
            body["zones"] = list(self.zones)
        return body

    @property
    def os_disk_name(self) -> str:
        return self.os_disk_id.rsplit("/", 1)[-1] if self.os_disk_id else f"{self.name}_OsDisk_1"


# -- asynchronous operations ---------------------------------------------------------------------

@dataclass
class AsyncOperation:
    """One ARM long-running operation, as its Azure-AsyncOperation and Location URLs report it."""

    id: str
    provider: str                        # Microsoft.Compute | Microsoft.Network
    subscription: str
    location: str
    kind: str                            # runCommand | restart | start | securityRule | ...
    started: float                       # simulated seconds
    resource_id: str
    status: str = "InProgress"           # InProgress | Succeeded | Failed | Canceled
    ended: float | None = None
    result: Any = None                   # the body the Location URL returns once done
    error: err.ArmError | None = None
    event: Any = None                    # the scheduled completion (so it can be cancelled)
    hung: bool = False

    @property
    def done(self) -> bool:
        return self.status != "InProgress"

    def path(self) -> str:
        return f"/subscriptions/{self.subscription}/providers/{self.provider}/locations/{self.location}/operations/{self.id}"

    def result_path(self) -> str:
        if self.provider == NETWORK:
            return f"/subscriptions/{self.subscription}/providers/{self.provider}/locations/{self.location}/operationResults/{self.id}"
        return self.path()

    def api_version(self) -> str:
        return COMPUTE_API if self.provider == COMPUTE else NETWORK_API

    def headers(self, base_url: str) -> dict[str, str]:
        """Azure-AsyncOperation (status) and Location (result) for the initial 202/201."""
        if self.provider == COMPUTE:
            query = f"p={self.id}&api-version={COMPUTE_API}"
            return {"Azure-AsyncOperation": f"{base_url}{self.path()}?{query}",
                    "Location": f"{base_url}{self.result_path()}?p={self.id}&monitor=true&api-version={COMPUTE_API}"}
        query = f"api-version={NETWORK_API}"
        return {"Azure-AsyncOperation": f"{base_url}{self.path()}?{query}",
                "Location": f"{base_url}{self.result_path()}?{query}"}

    def status_body(self, iso: Callable[[float | None], str]) -> dict[str, Any]:
        if self.provider == NETWORK:
            body: dict[str, Any] = {"status": self.status}
        else:
            body = {"startTime": iso(self.started), "status": self.status, "name": self.id}
            if self.ended is not None:
                body["endTime"] = iso(self.ended)
            if self.status == "Succeeded" and self.kind == "runCommand":
                body["properties"] = {"output": self.result}
        if self.error is not None:
            body["error"] = self.error.error()
        return body


# -- the backend --------------------------------------------------------------------------------

@dataclass
class ResourceGroup:
    name: str
    location: str
    vms: dict[str, VirtualMachine] = field(default_factory=dict)
    nics: dict[str, NetworkInterface] = field(default_factory=dict)
    vnets: dict[str, VirtualNetwork] = field(default_factory=dict)
    nsgs: dict[str, NetworkSecurityGroup] = field(default_factory=dict)
    public_ips: dict[str, PublicIPAddress] = field(default_factory=dict)
    asgs: dict[str, ApplicationSecurityGroup] = field(default_factory=dict)
    disks: dict[str, Any] = field(default_factory=dict)        # disks.ManagedDisk
    snapshots: dict[str, Any] = field(default_factory=dict)    # disks.Snapshot
    tags: dict[str, str] = field(default_factory=dict)
    deleting: bool = False


@dataclass
class Subscription:
    id: str
    display_name: str
    resource_groups: dict[str, ResourceGroup] = field(default_factory=dict)
    tenant_id: str = "72f988bf-86f1-41af-91ab-2d7cd011db47"

    def to_arm(self) -> dict[str, Any]:
        return {"id": f"/subscriptions/{self.id}", "authorizationSource": "RoleBased", "managedByTenants": [],
                "subscriptionId": self.id, "tenantId": self.tenant_id, "displayName": self.display_name,
                "state": "Enabled", "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01",
                                                             "quotaId": "PayAsYouGo_2014-09-01",
                                                             "spendingLimit": "Off"}}


class ArmBackend:
    """All state of one emulator instance, and ARM's rules for changing it."""

    def __init__(self, timescale: TimeScale, *, on_change: Callable[[VirtualMachine], None] | None = None):
        self.lock = threading.RLock()
        self.timescale = timescale
        self.scheduler = Scheduler(timescale, on_error=self._transition_failed)
        self.faults = FaultBook()
        self.subscriptions: dict[str, Subscription] = {}
        self.operations: dict[str, AsyncOperation] = {}
        self.transition_errors: list[str] = []
        self.client_ip = "203.0.113.10"      # the caller's Internet address, as NSGs see it
        self.on_change = on_change or (lambda vm: None)
        self.run_commands: list[dict[str, Any]] = []   # every Run Command the guests received
        self.address_pool: Any = None                  # rdp_listener.AddressPool for VMs created over ARM
        self._parsed_nsgs: dict[str, Any] | None = None  # within every_vm_changed(): NSG id -> parsed rules
        self.graph: Any = None                         # resource_graph.ResourceGraphIndex (the emulator sets it)

    def _transition_failed(self, error: BaseException) -> None:
        self.transition_errors.append(f"{type(error).__name__}: {error}")

    # -- clock helpers -----------------------------------------------------------------------------
    def iso(self, at: float | None = None) -> str:
        return self.timescale.iso(at)

    def later(self, span: ts.Span, action: Callable[[], None]) -> Any:
        return self.scheduler.at(self.timescale.draw(span), self._locked(action))

    def _locked(self, action: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with self.lock:
                action()
        return run

    # -- building (scenarios) ---------------------------------------------------------------------
    def add_subscription(self, subscription_id: str, display_name: str) -> Subscription:
        sub = Subscription(subscription_id, display_name)
        self.subscriptions[subscription_id.lower()] = sub
        return sub

    def add_resource_group(self, subscription_id: str, name: str, location: str) -> ResourceGroup:
        sub = self.subscriptions[subscription_id.lower()]
        return sub.resource_groups.setdefault(name.lower(), ResourceGroup(name, location))

    def new_guest(self, computer_name: str) -> WindowsGuest:
        return WindowsGuest(computer_name, now=self.timescale.now,
                            wall=lambda: datetime.now(timezone.utc), machine_guid=str(uuid.uuid4()))

    # -- lookups (raise ARM's 404s) ---------------------------------------------------------------
    def subscription(self, subscription_id: str) -> Subscription:
        sub = self.subscriptions.get(subscription_id.lower())
        if sub is None:
            raise err.SubscriptionNotFound(subscription_id)
        return sub

    def resource_group(self, subscription_id: str, name: str) -> ResourceGroup:
        rg = self.subscription(subscription_id).resource_groups.get(name.lower())
        if rg is None:
            raise err.ResourceGroupNotFound(name)
        return rg

    def _get(self, subscription_id: str, resource_group: str, collection: str, kind: str, name: str) -> Any:
        rg = self.resource_group(subscription_id, resource_group)
        item = getattr(rg, collection).get(name.lower())
        if item is None:
            raise err.ResourceNotFound(kind, name, resource_group)
        return item

    def vm(self, sub: str, rg: str, name: str) -> VirtualMachine:
        vm = self._get(sub, rg, "vms", "Microsoft.Compute/virtualMachines", name)
        if self.faults.take("vm_being_deleted", vm=vm.name):
            raise err.ComputeNotFound()   # Compute's own 404 (no gateway header: Compute answered)
        return vm

    def nic(self, sub: str, rg: str, name: str) -> NetworkInterface:
        return self._get(sub, rg, "nics", "Microsoft.Network/networkInterfaces", name)

    def vnet(self, sub: str, rg: str, name: str) -> VirtualNetwork:
        return self._get(sub, rg, "vnets", "Microsoft.Network/virtualNetworks", name)

    def subnet(self, sub: str, rg: str, vnet_name: str, name: str) -> tuple[VirtualNetwork, Subnet]:
        vnet = self.vnet(sub, rg, vnet_name)
        subnet = vnet.subnets.get(name.lower())
        if subnet is None:
            raise err.ChildResourceNotFound(f"{vnet.id}/subnets/{name}")
        return vnet, subnet

    def nsg(self, sub: str, rg: str, name: str) -> NetworkSecurityGroup:
        return self._get(sub, rg, "nsgs", "Microsoft.Network/networkSecurityGroups", name)

    def public_ip(self, sub: str, rg: str, name: str) -> PublicIPAddress:
        return self._get(sub, rg, "public_ips", "Microsoft.Network/publicIPAddresses", name)

    def asg(self, sub: str, rg: str, name: str) -> ApplicationSecurityGroup:
        return self._get(sub, rg, "asgs", "Microsoft.Network/applicationSecurityGroups", name)

    def by_id(self, resource_id_: str | None) -> Any:
        """The model an ARM ID points to, or None."""
        if not resource_id_:
            return None
        parts = parse_id(resource_id_)
        try:
            rg = self.resource_group(parts["subscriptions"], parts["resourcegroups"])
        except (KeyError, err.ArmError):
            return None
        for collection, key in (("vms", "virtualmachines"), ("nics", "networkinterfaces"),
                                ("nsgs", "networksecuritygroups"), ("public_ips", "publicipaddresses"),
                                ("asgs", "applicationsecuritygroups"), ("vnets", "virtualnetworks"),
                                ("disks", "disks"), ("snapshots", "snapshots")):
            if key in parts:
                found = getattr(rg, collection).get(parts[key].lower())
                if key == "virtualnetworks" and found is not None and "subnets" in parts:
                    return found.subnets.get(parts["subnets"].lower())
                return found
        return None

    def back_references(self, nsg: NetworkSecurityGroup) -> NetworkSecurityGroup:
        """Fill the NSG's ``subnets[]`` and ``networkInterfaces[]`` (what real NSG bodies carry)."""
        from azrdp.target import id_key

        sub = self.subscriptions.get(nsg.subscription.lower())
        groups = list(sub.resource_groups.values()) if sub else []
        nsg.nic_ids = sorted(nic.id for rg in groups for nic in rg.nics.values() if id_key(nic.nsg_id) == id_key(nsg.id))
        nsg.subnet_ids = sorted(f"{vnet.id}/subnets/{subnet.name}" for rg in groups for vnet in rg.vnets.values()
                                for subnet in vnet.subnets.values() if id_key(subnet.nsg_id) == id_key(nsg.id))
        return nsg

    def all_vms(self) -> list[VirtualMachine]:
        return [vm for sub in self.subscriptions.values() for rg in sub.resource_groups.values()
                for vm in rg.vms.values()]

    def vms_in(self, sub: str, rg: str | None = None) -> list[VirtualMachine]:
        subscription = self.subscription(sub)
        groups = [self.resource_group(sub, rg)] if rg else list(subscription.resource_groups.values())
        return [vm for group in groups for vm in group.vms.values()]

    # -- network evaluation -------------------------------------------------------------------------
    def primary_ip_configuration(self, vm: VirtualMachine) -> tuple[NetworkInterface | None, IPConfiguration | None]:
        for nic_id in vm.nic_ids:
            nic = self.by_id(nic_id)
            if nic is None:
                continue
            for config in nic.ip_configurations:
                if config.primary:
                    return nic, config
        return None, None

    def nsg_allows_rdp(self, vm: VirtualMachine) -> bool:
        """Do the subnet's and the NIC's NSGs (as enforced now) let the caller reach the RDP port?
        Uses azrdp's own evaluator, so the emulator and the diagnosis share one reading of the rules."""
        from azrdp.azure import nsg as evaluator
        from azrdp.target import id_key

        nic, config = self.primary_ip_configuration(vm)
        if nic is None or config is None:
            return False
        subnet = self.by_id(config.subnet_id)
        vnet = self.by_id(config.subnet_id.rsplit("/subnets/", 1)[0])

        def group(nsg_id: str | None) -> Any:
            memo, key = self._parsed_nsgs, nsg_id or ""
            if memo is not None and key in memo:
                return memo[key]
            model = self.by_id(nsg_id)
            parsed = evaluator.SecurityGroup.from_arm(model.applied_body()) if model else None
            if memo is not None:
                memo[key] = parsed
            return parsed

        flow = evaluator.Flow(destination_ip=config.private_ip, port=vm.guest.port, source_ip=self.client_ip,
                              destination_asgs=frozenset(id_key(a) for a in config.asg_ids),
                              virtual_network=tuple(vnet.address_prefixes) if vnet else ())
        return evaluator.evaluate_inbound(group(subnet.nsg_id if subnet else None), group(nic.nsg_id), flow).allowed

    def rdp_mode(self, vm: VirtualMachine) -> str:
        """What the VM's RDP port does now: ``closed`` (connection refused), ``drop`` (packets
        silently dropped: NSG or Windows Firewall) or ``open``."""
        if vm.power != "running" or vm.booting or vm.rdp_suppressed or not vm.guest.rdp_listening():
            return "closed"
        if not self.nsg_allows_rdp(vm) or not vm.guest.firewall_allows_rdp(self.client_ip):
            return "drop"
        return "open"

    def changed(self, vm: VirtualMachine) -> None:
        if self.graph is not None and self.graph.baselined:   # Resource Graph hears of it, and shows it later
            from azrdp.emulator.resource_graph import vm_row

            self.graph.observe([vm_row(vm, self.iso)])
        self.on_change(vm)

    def changed_network(self) -> None:
        self.every_vm_changed()

    def every_vm_changed(self) -> None:
        """``on_change`` for every VM, in one pass under the lock: nothing changes meanwhile, so
        each NSG is parsed once for the pass (a subnet's NSG serves every VM of the subnet)."""
        self._parsed_nsgs = {}
        try:
            for vm in self.all_vms():
                self.on_change(vm)
        finally:
            self._parsed_nsgs = None

    # -- operations --------------------------------------------------------------------------------
    def new_operation(self, provider: str, subscription: str, location: str, kind: str, resource: str) -> AsyncOperation:
        op = AsyncOperation(str(uuid.uuid4()), provider, subscription, location.replace(" ", "").lower(), kind,
                            self.scheduler.now(), resource)
        self.operations[op.id.lower()] = op
        return op

    def finish(self, op: AsyncOperation, *, result: Any = None, error: err.ArmError | None = None,
               status: str | None = None) -> None:
        if op.done:
            return
        op.ended = self.scheduler.now()
        op.result = result
        op.error = error
        op.status = status or ("Failed" if error else "Succeeded")

    def operation(self, subscription: str, provider: str, operation_id: str) -> AsyncOperation:
        self.subscription(subscription)
        op = self.operations.get(operation_id.lower())
        if op is None or op.provider.lower() != provider.lower():
            raise err.OperationNotFound(operation_id)
        return op

    # -- VM actions --------------------------------------------------------------------------------
    def run_command(self, vm: VirtualMachine, body: dict[str, Any]) -> AsyncOperation:
        from azrdp.emulator import guest_payloads as payloads

        command_id = body.get("commandId")
        if not isinstance(command_id, str) or not command_id:
            raise err.InvalidRequestContent("The request content was invalid and could not be deserialized: "
                                            "'Required property 'commandId' not found in JSON.'")
        if command_id != "RunPowerShellScript":
            raise err.RunCommandNotFound()
        if not vm.allocated or vm.power != "running":
            raise err.VmNotRunning()
        if self.faults.take("run_command_conflict", vm=vm.name) or vm.running_command is not None:
            raise err.RunCommandConflict()
        script = body.get("script") or []
        parameters = body.get("parameters") or []
        op = self.new_operation(COMPUTE, vm.subscription, vm.location, "runCommand", vm.id)
        vm.running_command = op
        vm.run_command_started, vm.run_command_ended = op.started, None
        self.run_commands.append({"vm": vm.name, "operation": op.id, "payload": payloads.identify(script),
                                  "parameters": {p.get("name"): p.get("value") for p in parameters
                                                 if isinstance(p, dict)}})
        if self.faults.take("run_command_hang", vm=vm.name):
            op.hung = True
            return op
        agent_ready = vm.agent_frozen is None and not vm.booting and vm.guest.agent_ready

        def complete() -> None:
            vm.running_command = None
            vm.run_command_ended = self.scheduler.now()
            if not agent_ready or not vm.guest.agent_ready or vm.power != "running":
                self.finish(op, error=err.VmAgentNotResponding(vm.name))
                return
            stdout, stderr = payloads.execute(vm.guest, script, parameters)
            self.finish(op, result={"value": [
                {"code": "ComponentStatus/StdOut/succeeded", "level": "Info",
                 "displayStatus": "Provisioning succeeded", "message": stdout[-4096:]},
                {"code": "ComponentStatus/StdErr/succeeded", "level": "Info",
                 "displayStatus": "Provisioning succeeded", "message": stderr[-4096:]}]})
            self.changed(vm)

        op.event = self.later(ts.RUN_COMMAND if agent_ready else ts.AGENT_TIMEOUT, complete)
        return op

    def restart(self, vm: VirtualMachine) -> AsyncOperation:
        if not vm.allocated:
            raise err.VmNotRunning()
        return self._power_cycle(vm, "restart", ts.RESTART)

    def start(self, vm: VirtualMachine) -> AsyncOperation:
        if vm.allocated and vm.power == "running":
            op = self.new_operation(COMPUTE, vm.subscription, vm.location, "start", vm.id)
            op.event = self.later((1.0, 3.0), lambda: self.finish(op))
            return op
        return self._power_cycle(vm, "start", ts.START)

    def stop(self, vm: VirtualMachine, *, deallocate: bool = False) -> None:
        """Power the VM off (``stopped``: still allocated) or deallocate it. The guest goes down;
        ARM keeps the agent's last report (shown while stopped, hidden while deallocated)."""
        vm.freeze_agent(self.iso)
        self._preempt_run_command(vm)
        vm.guest.shut_down()
        vm.power, vm.booting = ("deallocated" if deallocate else "stopped"), False
        vm.last_operation_at = self.scheduler.now()
        vm.power_generation += 1
        for pip in self.public_ips_of(vm):
            if deallocate and pip.allocation == "Dynamic":
                pip.ip_address = None   # a Dynamic public IP is released with the VM
        self.changed(vm)

    def public_ips_of(self, vm: VirtualMachine) -> list[PublicIPAddress]:
        out = []
        for nic_id in vm.nic_ids:
            nic = self.by_id(nic_id)
            for config in (nic.ip_configurations if nic else []):
                pip = self.by_id(config.public_ip_id)
                if pip is not None:
                    out.append(pip)
        return out

    def _preempt_run_command(self, vm: VirtualMachine) -> None:
        """The running Run Command (if any) ends OperationPreempted: the guest went down under it."""
        op = vm.running_command
        if op is None:
            return
        self.scheduler.cancel(op.event)
        self.finish(op, error=err.OperationPreempted())
        vm.running_command = None
        vm.run_command_ended = self.scheduler.now()

    def _power_cycle(self, vm: VirtualMachine, kind: str, span: ts.Span) -> AsyncOperation:
        """restart and start as real Azure runs them (real-azure-behaviour.md, "Timing and state
        around power operations"): the operation itself is short (restart 0.2-0.3 s, start 3.3-4.1 s)
        and Windows goes down and boots *after* it has succeeded. The agent stops reporting when the
        operation begins, so its last report (Ready, with a time older than the operation's
        startTime) stays in the instance view until the agent reports again after the boot."""
        if vm.power_operation is not None:
            self.finish(vm.power_operation, error=err.OperationPreempted())
            self.scheduler.cancel(vm.power_operation.event)
        op = self.new_operation(COMPUTE, vm.subscription, vm.location, kind, vm.id)
        vm.power_operation = op
        vm.power_generation += 1
        generation = vm.power_generation
        fail = self.faults.take("restart_failure", vm=vm.name) is not None
        if self.faults.take("rdp_never_returns", vm=vm.name):
            vm.rdp_suppressed = True
        was_down = not vm.guest.up
        vm.freeze_agent(self.iso)
        if kind == "start":
            vm.power = "starting"
        self.changed(vm)

        def current() -> bool:
            return vm.power_generation == generation

        def platform_done() -> None:
            if not current():
                return
            vm.power_operation = None
            vm.last_operation_at = self.scheduler.now()
            if fail:
                if kind == "start":
                    vm.power = "stopped" if was_down else "running"
                if not was_down:
                    vm.agent_frozen = None   # nothing happened to the guest: the agent goes on reporting
                self.finish(op, error=err.InternalExecutionError())
                self.changed(vm)
                return
            vm.power = "running"
            self.finish(op)
            if was_down:
                for pip in self.public_ips_of(vm):   # a released Dynamic address comes back on start
                    pip.ip_address = pip.ip_address or vm.rdp_address
                vm.booting = True
                self.later(ts.BOOT, windows_up)
            else:
                self.later(ts.SHUTDOWN, guest_down)
            self.changed(vm)

        def guest_down() -> None:
            if not current():
                return
            self._preempt_run_command(vm)   # the guest goes down under the running script
            vm.guest.shut_down()
            vm.booting = True
            self.changed(vm)
            self.later(ts.BOOT, windows_up)

        def windows_up() -> None:
            if not current() or vm.power != "running":
                return
            vm.guest.boot()
            vm.booting = False
            vm.agent_frozen = None   # the agent's first report after the boot
            self.changed(vm)

        op.event = self.later(span, platform_done)
        return op

    # -- network actions ---------------------------------------------------------------------------
    def put_security_rule(self, nsg: NetworkSecurityGroup, name: str, body: Any) -> tuple[SecurityRule, bool, AsyncOperation]:
        props = validate_security_rule(nsg, name, body)
        created = name.lower() not in nsg.rules
        rule = SecurityRule(name, {**props, "provisioningState": "Updating"})
        previous = nsg.rules.get(name.lower())
        nsg.rules[name.lower()] = rule
        op = self.new_operation(NETWORK, nsg.subscription, nsg.location, "securityRule", f"{nsg.id}/securityRules/{name}")

        def applied() -> None:
            if nsg.rules.get(name.lower()) is rule:
                rule.properties["provisioningState"] = "Succeeded"
            self.finish(op)
            self.changed_network()

        if previous is not None:
            previous.properties["provisioningState"] = "Updating"
        op.event = self.later(ts.NSG_UPDATE, applied)
        return rule, created, op

    def delete_security_rule(self, nsg: NetworkSecurityGroup, name: str) -> AsyncOperation | None:
        rule = nsg.rules.get(name.lower())
        if rule is None:
            return None
        rule.properties["provisioningState"] = "Deleting"
        op = self.new_operation(NETWORK, nsg.subscription, nsg.location, "securityRuleDelete", f"{nsg.id}/securityRules/{name}")

        def removed() -> None:
            if nsg.rules.get(name.lower()) is rule:
                del nsg.rules[name.lower()]
            self.finish(op)
            self.changed_network()

        op.event = self.later(ts.NSG_UPDATE, removed)
        return op

    def effective_nsgs(self, nic: NetworkInterface) -> AsyncOperation:
        vm = self.by_id(nic.vm_id)
        if vm is None or vm.power != "running":
            raise err.ArmError(f"Network interface {nic.id} must be attached to a running VM to get effective "
                               "security groups.", code="NicMustBeAttachedToRunningVmToGetEffectiveSecurityGroups")
        # Real Azure answers 202 with Location only, and the first Location GET already returns 200
        # with the result (real-azure-behaviour.md, "Smaller differences"): the work is done by then.
        op = self.new_operation(NETWORK, nic.subscription, nic.location, "effectiveNetworkSecurityGroups", nic.id)
        self.finish(op, result=self._effective_body(nic))
        return op

    def _effective_body(self, nic: NetworkInterface) -> dict[str, Any]:
        entries = []
        config = next((c for c in nic.ip_configurations if c.primary), None)
        subnet = self.by_id(config.subnet_id) if config else None
        for association, nsg_id in ((("subnet", config.subnet_id) if config else None, subnet.nsg_id if subnet else None),
                                    (("networkInterface", nic.id), nic.nsg_id)):
            nsg = self.by_id(nsg_id)
            if nsg is None or association is None:
                continue
            rules = [effective_rule(r) for r in [*nsg.rules.values(), *nsg.default_rules()] if r.applied]
            entries.append({"association": {association[0]: ref(association[1])},
                            "effectiveSecurityRules": rules, "networkSecurityGroup": ref(nsg.id)})
        return {"value": entries}


def effective_rule(rule: SecurityRule) -> dict[str, Any]:
    """A rule as listEffectiveNetworkSecurityGroups shows it: prefixed name, expanded ranges."""
    p = rule.properties

    def port(single: str, plural: str) -> dict[str, Any]:
        values = p.get(plural) or ([p[single]] if p.get(single) else ["*"])
        expanded = ["0-65535" if v == "*" else (v if "-" in v else f"{v}-{v}") for v in map(str, values)]
        return {single: expanded[0]} if len(expanded) == 1 else {plural: expanded}

    def prefix(single: str, plural: str) -> dict[str, Any]:
        values = p.get(plural) or ([p[single]] if p.get(single) else ["*"])
        expanded = ["0.0.0.0/0" if v == "*" else v for v in map(str, values)]
        return {single: expanded[0]} if len(expanded) == 1 else {plural: expanded}

    body = {"name": f"{'defaultSecurityRules' if rule.default else 'securityRules'}/{rule.name}",
            "access": p["access"], "direction": p["direction"], "priority": p["priority"],
            "protocol": "All" if p["protocol"] == "*" else p["protocol"]}
    body.update(prefix("destinationAddressPrefix", "destinationAddressPrefixes"))
    body.update(port("destinationPortRange", "destinationPortRanges"))
    body.update(prefix("sourceAddressPrefix", "sourceAddressPrefixes"))
    body.update(port("sourcePortRange", "sourcePortRanges"))
    return body


_RULE_KEYS = {"description", "protocol", "sourcePortRange", "destinationPortRange", "sourceAddressPrefix",
              "sourceAddressPrefixes", "sourceApplicationSecurityGroups", "destinationAddressPrefix",
              "destinationAddressPrefixes", "destinationApplicationSecurityGroups", "sourcePortRanges",
              "destinationPortRanges", "access", "priority", "direction"}
_PROTOCOLS = {"tcp": "Tcp", "udp": "Udp", "icmp": "Icmp", "esp": "Esp", "*": "*", "ah": "Ah"}


def validate_security_rule(nsg: NetworkSecurityGroup, name: str, body: Any) -> dict[str, Any]:
    """The network RP's checks for a security rule PUT; returns the properties to store."""
    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        raise err.ArmError("Cannot parse the request.", code="InvalidRequestFormat",
                           details=[{"code": "MissingJsonReference", "message": "Required property 'properties' is missing."}])
    given = body["properties"]
    props = {k: v for k, v in given.items() if k in _RULE_KEYS}
    rule_id = f"{nsg.id}/securityRules/{name}"
    for required in ("protocol", "access", "direction", "priority"):
        if props.get(required) in (None, ""):
            raise err.SecurityRuleInvalid(f"Security rule {rule_id} has invalid or missing {required}.",
                                          code=f"SecurityRuleInvalid{required.capitalize()}" if required != "priority"
                                          else "SecurityRuleInvalidPriority")
    protocol = _PROTOCOLS.get(str(props["protocol"]).lower())
    if protocol is None:
        raise err.SecurityRuleInvalid(f"Security rule {rule_id} has invalid Protocol. Value provided: {props['protocol']}.",
                                      code="SecurityRuleInvalidProtocol")
    props["protocol"] = protocol
    for key, allowed in (("access", ("Allow", "Deny")), ("direction", ("Inbound", "Outbound"))):
        match = next((a for a in allowed if a.lower() == str(props[key]).lower()), None)
        if match is None:
            raise err.SecurityRuleInvalid(f"Security rule {rule_id} has invalid {key.capitalize()}. Value provided: {props[key]}.",
                                          code=f"SecurityRuleInvalid{key.capitalize()}")
        props[key] = match
    priority = props["priority"]
    if isinstance(priority, bool) or not isinstance(priority, int) or not 100 <= priority <= 4096:
        raise err.SecurityRuleInvalid(f"Security rule has invalid Priority. Value provided: {priority} Allowed range 100-4096.",
                                      code="SecurityRuleInvalidPriority")
    if not (props.get("sourceAddressPrefix") or props.get("sourceAddressPrefixes") or props.get("sourceApplicationSecurityGroups")):
        raise err.SecurityRuleInvalid(f"Security rule {rule_id} has invalid source address prefix.",
                                      code="SecurityRuleInvalidSourcePrefix")
    if not (props.get("destinationAddressPrefix") or props.get("destinationAddressPrefixes")
            or props.get("destinationApplicationSecurityGroups")):
        raise err.SecurityRuleInvalid(f"Security rule {rule_id} has invalid destination address prefix.",
                                      code="SecurityRuleInvalidDestinationPrefix")
    for single, plural in (("sourcePortRange", "sourcePortRanges"), ("destinationPortRange", "destinationPortRanges")):
        if not (props.get(single) or props.get(plural)):
            raise err.SecurityRuleInvalid(f"Security rule {rule_id} has invalid {single}.",
                                          code="SecurityRuleInvalidPortRange")
        for value in props.get(plural) or [props[single]]:
            if not _valid_port_range(str(value)):
                raise err.SecurityRuleInvalid(f"Security rule {rule_id} has invalid Port range. Value provided: {value}. "
                                              "Value should be an integer OR integer range with '-' delimiter. "
                                              "Valid range 0-65535.", code="SecurityRuleInvalidPortRange")
    for prefix in props.get("sourceAddressPrefixes") or [props.get("sourceAddressPrefix")]:
        if prefix and "/" in str(prefix):
            try:
                ipaddress.ip_network(str(prefix), strict=False)
            except ValueError:
                raise err.SecurityRuleInvalid(f"Security rule {rule_id} has invalid Address prefix. Value provided: {prefix}.",
                                              code="SecurityRuleInvalidAddressPrefix") from None
    for other in nsg.rules.values():
        if other.name.lower() != name.lower() and other.properties.get("priority") == priority \
                and other.properties.get("direction") == props["direction"] and other.properties.get("provisioningState") != "Deleting":
            raise err.SecurityRuleInvalid(
                f"Security rule {name} conflicts with rule {other.name}. Rules cannot have the same Priority and "
                "Direction. To learn more, see aka.ms/nsgrules.", code="SecurityRuleConflict")
    return props


def _valid_port_range(text: str) -> bool:
    if text == "*":
        return True
    low, _, high = text.partition("-")
    try:
        lo, hi = int(low), int(high or low)
    except ValueError:
        return False
    return 0 <= lo <= hi <= 65535
