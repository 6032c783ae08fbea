"""The emulator's route table: method + path pattern -> ARM operationId -> handler.

The handler of operationId ``VirtualMachines_Get`` is ``responses.virtual_machines_get`` (moto's
convention). ``python -m azrdp.emulator.urls --write docs/emulator.md`` regenerates the list of
implemented operations in the docs; a test fails when it is stale.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from azrdp.emulator import responses
from azrdp.emulator.disks import DISK_API, RESOURCES_API
from azrdp.emulator.models import COMPUTE_API, NETWORK_API, SUBSCRIPTIONS_API
from azrdp.emulator.resource_graph import RESOURCE_GRAPH_API

SUB = r"/subscriptions/(?P<subscription>[^/]+)"
RG = SUB + r"/resourceGroups/(?P<resource_group>[^/]+)"
VMS = RG + r"/providers/Microsoft\.Compute/virtualMachines"
NET = RG + r"/providers/Microsoft\.Network"
NSG = NET + r"/networkSecurityGroups/(?P<nsg>[^/]+)"
DISKS = RG + r"/providers/Microsoft\.Compute/disks"
SNAPS = RG + r"/providers/Microsoft\.Compute/snapshots"
OPS = r"/providers/Microsoft\.{provider}/locations/(?P<location>[^/]+)/{kind}/(?P<operation>[^/]+)"


def snake(operation_id: str) -> str:
    """``VirtualMachines_RetrieveBootDiagnosticsData`` -> ``virtual_machines_retrieve_boot_diagnostics_data``."""
    return "_".join(re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", part).lower()
                    for part in operation_id.split("_"))


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    operation_id: str
    api_version: str
    sdk_call: str                       # how azure-mgmt calls it (for the docs)
    monitor: bool | None = None         # Compute's status and result URLs differ only by ?monitor=true

    @property
    def regex(self) -> re.Pattern[str]:
        return _compiled(self.pattern)

    @property
    def handler(self) -> Callable[..., responses.Reply]:
        return getattr(responses, snake(self.operation_id))

    def display_path(self) -> str:
        text = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: "{" + m.group(1) + "}", self.pattern)
        return text.replace("\\.", ".")


_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern not in _CACHE:
        _CACHE[pattern] = re.compile(pattern + "/?$", re.IGNORECASE)  # ARM paths are case-insensitive
    return _CACHE[pattern]


ROUTES: tuple[Route, ...] = (
    Route("GET", VMS + r"/(?P<vm>[^/]+)", "VirtualMachines_Get", COMPUTE_API,
          "compute.virtual_machines.get(rg, vm, expand='instanceView')"),
    Route("GET", VMS + r"/(?P<vm>[^/]+)/instanceView", "VirtualMachines_InstanceView", COMPUTE_API,
          "compute.virtual_machines.instance_view(rg, vm)"),
    Route("GET", VMS, "VirtualMachines_List", COMPUTE_API, "compute.virtual_machines.list(rg)"),
    Route("GET", SUB + r"/providers/Microsoft\.Compute/virtualMachines", "VirtualMachines_ListAll", COMPUTE_API,
          "compute.virtual_machines.list_all(status_only='true')"),
    Route("POST", VMS + r"/(?P<vm>[^/]+)/runCommand", "VirtualMachines_RunCommand", COMPUTE_API,
          "compute.virtual_machines.begin_run_command(rg, vm, body)"),
    Route("POST", VMS + r"/(?P<vm>[^/]+)/restart", "VirtualMachines_Restart", COMPUTE_API,
          "compute.virtual_machines.begin_restart(rg, vm)"),
    Route("POST", VMS + r"/(?P<vm>[^/]+)/start", "VirtualMachines_Start", COMPUTE_API,
          "compute.virtual_machines.begin_start(rg, vm)"),
    Route("POST", VMS + r"/(?P<vm>[^/]+)/retrieveBootDiagnosticsData", "VirtualMachines_RetrieveBootDiagnosticsData",
          COMPUTE_API, "compute.virtual_machines.retrieve_boot_diagnostics_data(rg, vm)"),
    Route("GET", SUB + OPS.format(provider="Compute", kind="operations"), "ComputeOperationResults_Get",
          COMPUTE_API, "(LRO poller: the Location URL, ?monitor=true)", monitor=True),
    Route("GET", SUB + OPS.format(provider="Compute", kind="operations"), "ComputeOperations_Get",
          COMPUTE_API, "(LRO poller: the Azure-AsyncOperation URL)", monitor=False),
    Route("GET", NET + r"/networkInterfaces/(?P<nic>[^/]+)", "NetworkInterfaces_Get", NETWORK_API,
          "network.network_interfaces.get(rg, nic)"),
    Route("GET", NET + r"/networkInterfaces", "NetworkInterfaces_List", NETWORK_API,
          "network.network_interfaces.list(rg)"),
    Route("GET", SUB + r"/providers/Microsoft\.Network/networkInterfaces", "NetworkInterfaces_ListAll", NETWORK_API,
          "network.network_interfaces.list_all()"),
    Route("POST", NET + r"/networkInterfaces/(?P<nic>[^/]+)/effectiveNetworkSecurityGroups",
          "NetworkInterfaces_ListEffectiveNetworkSecurityGroups", NETWORK_API,
          "network.network_interfaces.begin_list_effective_network_security_groups(rg, nic)"),
    Route("GET", NET + r"/virtualNetworks/(?P<vnet>[^/]+)", "VirtualNetworks_Get", NETWORK_API,
          "network.virtual_networks.get(rg, vnet)"),
    Route("GET", NET + r"/virtualNetworks", "VirtualNetworks_List", NETWORK_API, "network.virtual_networks.list(rg)"),
    Route("GET", SUB + r"/providers/Microsoft\.Network/virtualNetworks", "VirtualNetworks_ListAll", NETWORK_API,
          "network.virtual_networks.list_all()"),
    Route("GET", NET + r"/virtualNetworks/(?P<vnet>[^/]+)/subnets/(?P<subnet>[^/]+)", "Subnets_Get", NETWORK_API,
          "network.subnets.get(rg, vnet, subnet)"),
    Route("GET", NSG, "NetworkSecurityGroups_Get", NETWORK_API, "network.network_security_groups.get(rg, nsg)"),
    Route("GET", NET + r"/networkSecurityGroups", "NetworkSecurityGroups_List", NETWORK_API,
          "network.network_security_groups.list(rg)"),
    Route("GET", SUB + r"/providers/Microsoft\.Network/networkSecurityGroups", "NetworkSecurityGroups_ListAll",
          NETWORK_API, "network.network_security_groups.list_all()"),
    Route("GET", NSG + r"/securityRules/(?P<rule>[^/]+)", "SecurityRules_Get", NETWORK_API,
          "network.security_rules.get(rg, nsg, rule)"),
    Route("PUT", NSG + r"/securityRules/(?P<rule>[^/]+)", "SecurityRules_CreateOrUpdate", NETWORK_API,
          "network.security_rules.begin_create_or_update(rg, nsg, rule, body)"),
    Route("DELETE", NSG + r"/securityRules/(?P<rule>[^/]+)", "SecurityRules_Delete", NETWORK_API,
          "network.security_rules.begin_delete(rg, nsg, rule)"),
    Route("GET", NSG + r"/defaultSecurityRules/(?P<rule>[^/]+)", "DefaultSecurityRules_Get", NETWORK_API,
          "network.default_security_rules.get(rg, nsg, rule)"),
    Route("GET", NET + r"/publicIPAddresses/(?P<pip>[^/]+)", "PublicIPAddresses_Get", NETWORK_API,
          "network.public_ip_addresses.get(rg, pip)"),
    Route("GET", NET + r"/publicIPAddresses", "PublicIPAddresses_List", NETWORK_API,
          "network.public_ip_addresses.list(rg)"),
    Route("GET", SUB + r"/providers/Microsoft\.Network/publicIPAddresses", "PublicIPAddresses_ListAll", NETWORK_API,
          "network.public_ip_addresses.list_all()"),
    Route("GET", NET + r"/applicationSecurityGroups/(?P<asg>[^/]+)", "ApplicationSecurityGroups_Get", NETWORK_API,
          "network.application_security_groups.get(rg, asg)"),
    Route("GET", SUB + OPS.format(provider="Network", kind="operations"), "NetworkOperations_Get", NETWORK_API,
          "(LRO poller: the Azure-AsyncOperation URL)"),
    Route("GET", SUB + OPS.format(provider="Network", kind="operationResults"), "NetworkOperationResults_Get",
          NETWORK_API, "(LRO poller: the Location URL)"),
    Route("GET", r"/subscriptions", "Subscriptions_List", SUBSCRIPTIONS_API,
          "GET /subscriptions (AzureSession.list_subscriptions)"),
    Route("POST", r"/providers/Microsoft\.ResourceGraph/resources", "Resources", RESOURCE_GRAPH_API,
          "(Resource Graph query: azrdp.azure.resource_graph, through the Compute client's pipeline)"),
    # azrdp rescue: disks, snapshots, a rescue VM in its own resource group, the OS-disk swap
    Route("PUT", VMS + r"/(?P<vm>[^/]+)", "VirtualMachines_CreateOrUpdate", COMPUTE_API,
          "compute.virtual_machines.begin_create_or_update(rg, vm, body)"),
    Route("PATCH", VMS + r"/(?P<vm>[^/]+)", "VirtualMachines_Update", COMPUTE_API,
          "compute.virtual_machines.begin_update(rg, vm, body)"),
    Route("POST", VMS + r"/(?P<vm>[^/]+)/powerOff", "VirtualMachines_PowerOff", COMPUTE_API,
          "compute.virtual_machines.begin_power_off(rg, vm)"),
    Route("DELETE", VMS + r"/(?P<vm>[^/]+)", "VirtualMachines_Delete", COMPUTE_API,
          "compute.virtual_machines.begin_delete(rg, vm)"),
    Route("GET", DISKS + r"/(?P<disk>[^/]+)", "Disks_Get", DISK_API, "compute.disks.get(rg, disk)"),
    Route("PUT", DISKS + r"/(?P<disk>[^/]+)", "Disks_CreateOrUpdate", DISK_API,
          "compute.disks.begin_create_or_update(rg, disk, body)"),
    Route("DELETE", DISKS + r"/(?P<disk>[^/]+)", "Disks_Delete", DISK_API, "compute.disks.begin_delete(rg, disk)"),
    Route("GET", SNAPS + r"/(?P<snapshot>[^/]+)", "Snapshots_Get", DISK_API, "compute.snapshots.get(rg, snapshot)"),
    Route("PUT", SNAPS + r"/(?P<snapshot>[^/]+)", "Snapshots_CreateOrUpdate", DISK_API,
          "compute.snapshots.begin_create_or_update(rg, snapshot, body)"),
    Route("DELETE", SNAPS + r"/(?P<snapshot>[^/]+)", "Snapshots_Delete", DISK_API,
          "compute.snapshots.begin_delete(rg, snapshot)"),
    Route("PUT", NET + r"/virtualNetworks/(?P<vnet>[^/]+)", "VirtualNetworks_CreateOrUpdate", NETWORK_API,
          "network.virtual_networks.begin_create_or_update(rg, vnet, body)"),
    Route("PUT", NET + r"/networkInterfaces/(?P<nic>[^/]+)", "NetworkInterfaces_CreateOrUpdate", NETWORK_API,
          "network.network_interfaces.begin_create_or_update(rg, nic, body)"),
    Route("PUT", RG, "ResourceGroups_CreateOrUpdate", RESOURCES_API,
          "PUT /subscriptions/{s}/resourcegroups/{rg} (azrdp.azure.disks)"),
    Route("GET", RG, "ResourceGroups_Get", RESOURCES_API, "GET /subscriptions/{s}/resourcegroups/{rg} (azrdp.azure.disks)"),
    Route("DELETE", RG, "ResourceGroups_Delete", RESOURCES_API,
          "DELETE /subscriptions/{s}/resourcegroups/{rg} (azrdp.azure.disks)"),
    Route("GET", SUB + r"/operationresults/(?P<operation>[^/]+)", "ResourceOperationResults_Get", RESOURCES_API,
          "(the Location URL of a resource group delete)"),
)


def resolve(method: str, path: str, query: dict[str, str]) -> tuple[Route, dict[str, str]] | None:
    """The route for a request and its path parameters; None when nothing matches."""
    monitor = query.get("monitor", "").lower() == "true"
    for route in ROUTES:
        if route.method != method:
            continue
        match = route.regex.match(path)
        if match and (route.monitor is None or route.monitor == monitor):
            return route, match.groupdict()
    return None


DOC_BEGIN = "<!-- operations:begin (generated by `python -m azrdp.emulator.urls --write docs/emulator.md`) -->"
DOC_END = "<!-- operations:end -->"


def operations_markdown() -> str:
    lines = ["| operationId | method and path | api-version | SDK call |", "|---|---|---|---|"]
    for route in ROUTES:
        query = "?monitor=true" if route.monitor else ""
        lines.append(f"| `{route.operation_id}` | `{route.method} {route.display_path()}{query}` | "
                     f"{route.api_version} | `{route.sdk_call}` |")
    return "\n".join(lines)


def with_operations(document: str) -> str:
    """``document`` with the generated table between the markers replaced by the current one."""
    begin, end = document.index(DOC_BEGIN), document.index(DOC_END)
    return document[:begin] + DOC_BEGIN + "\n" + operations_markdown() + "\n" + document[end:]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write":
        path = Path(argv[1])
        path.write_text(with_operations(path.read_text()))
        return 0
    print(operations_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
