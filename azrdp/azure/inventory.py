"""Read everything the Azure-side verdict needs, in as few sequential ARM round trips as possible.

Reads run in rounds; the reads of one round are independent and run in parallel:

1. the VM with its instance view, and the NICs of the VM's resource group (one list call: NICs
   almost always live beside their VM, so their IDs need not wait for the VM body);
2. for each NIC IP configuration: its subnet, its public IP, the NIC's NSG (and the virtual
   network when `--source-ip` makes the VirtualNetwork tag matter); a NIC outside the VM's
   resource group is read here;
3. the subnets' NSGs.

That is at most 3 sequential round trips when the NICs are in the VM's resource group (what the
portal and `az vm create` do); one more per level of indirection otherwise. Application security
group membership comes from the NIC's IP configurations, so ASGs need no read of their own.

A reference that points nowhere (a NIC whose NSG was deleted) is kept as a failed Resource and
becomes a check error later; it does not stop the inventory.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from azrdp.azure import wire_dict
from azrdp.errors import AzrdpError, NotFoundError
from azrdp.target import ResourceId, Target, id_key, parse_resource_id

if TYPE_CHECKING:
    from azure.core.exceptions import AzureError

    from azrdp.azure.vm import Session

_KINDS = {
    "microsoft.network/networkinterfaces": "nic",
    "microsoft.network/virtualnetworks/subnets": "subnet",
    "microsoft.network/virtualnetworks": "vnet",
    "microsoft.network/networksecuritygroups": "nsg",
    "microsoft.network/publicipaddresses": "public_ip",
}
_NOUNS = {"nic": "network interface", "subnet": "subnet", "vnet": "virtual network",
          "nsg": "network security group", "public_ip": "public IP address"}


@dataclass
class Resource:
    """One referenced resource: its ARM body, or the error that kept azrdp from reading it."""

    id: str
    kind: str
    body: dict[str, Any] | None = None
    error: AzrdpError | None = None

    @property
    def name(self) -> str:
        return self.id.rstrip("/").rsplit("/", 1)[-1]

    @property
    def properties(self) -> dict[str, Any]:
        return (self.body or {}).get("properties") or {}


@dataclass
class Inventory:
    target: Target
    subscription: str
    vm: dict[str, Any]
    resources: dict[str, Resource] = field(default_factory=dict)  # by id_key()
    round_trips: int = 0
    requests: int = 0
    agent_known: bool = True          # False: the VM came from a fleet list, its agent is not read yet

    def get(self, resource_id: str | None) -> Resource | None:
        return self.resources.get(id_key(resource_id)) if resource_id else None

    @property
    def vm_properties(self) -> dict[str, Any]:
        return self.vm.get("properties") or {}

    def nic_ids(self) -> list[str]:
        profile = self.vm_properties.get("networkProfile") or {}
        return [n["id"] for n in profile.get("networkInterfaces") or [] if n.get("id")]

    def primary_nic_id(self) -> str | None:
        refs = (self.vm_properties.get("networkProfile") or {}).get("networkInterfaces") or []
        for ref in refs:
            if (ref.get("properties") or {}).get("primary") and ref.get("id"):
                return ref["id"]
        return refs[0]["id"] if refs and refs[0].get("id") else None


class _Reader:
    """Issues one round of parallel reads and files the results."""

    def __init__(self, session: Session, inventory: Inventory, max_workers: int):
        self.session = session
        self.inventory = inventory
        self.max_workers = max_workers

    def read(self, rid: str) -> Callable[[], dict[str, Any]]:
        parsed = parse_resource_id(rid)
        kind = _KINDS[parsed.type]
        network = self.session.network
        rg = parsed.resource_group
        if kind == "nic":
            return lambda: wire_dict(network.network_interfaces.get(rg, parsed.name))
        if kind == "subnet":
            return lambda: wire_dict(network.subnets.get(rg, parsed.names[0], parsed.name))
        if kind == "vnet":
            return lambda: wire_dict(network.virtual_networks.get(rg, parsed.name))
        if kind == "nsg":
            return lambda: wire_dict(network.network_security_groups.get(rg, parsed.name))
        return lambda: wire_dict(network.public_ip_addresses.get(rg, parsed.name))

    def round(self, calls: dict[str, Callable[[], Any]]) -> dict[str, tuple[Any, BaseException | None]]:
        if not calls:
            return {}
        self.inventory.round_trips += 1
        self.inventory.requests += len(calls)
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(calls)),
                                thread_name_prefix="azrdp-arm") as pool:
            futures = {key: pool.submit(call) for key, call in calls.items()}
        results: dict[str, tuple[Any, BaseException | None]] = {}
        for key, future in futures.items():
            error = future.exception()
            results[key] = (None if error else future.result(), error)
        return results


def read_inventory(session: Session, target: Target, *, want_vnet: bool = False,
                   progress: Any = None, max_workers: int = 8, listed: Any = None) -> Inventory:
    """Read the VM and everything on its RDP path. Raises typed errors for the VM itself (not
    found, no permission); a broken reference further down is kept in the inventory.

    ``listed`` (an azrdp.azure.fleet.FleetView) answers from a fleet's lists instead: the VM's
    body and whatever the lists hold cost no read; only references the lists do not hold (a NIC
    in a resource group that was not listed, a reference that points nowhere) are read."""
    from azure.core.exceptions import AzureError

    subscription = session.subscription_id
    inventory = Inventory(target, subscription, vm={})
    reader = _Reader(session, inventory, max_workers)
    if listed is not None:
        found = listed.get(target.resource_id(subscription))
        if found is None:
            raise NotFoundError(f"VM '{target.name}' is not in the listed fleet of subscription {subscription}.")
        inventory.vm = found[1]
        inventory.agent_known = bool((inventory.vm_properties.get("instanceView") or {}).get("vmAgent"))
        _complete(inventory, reader, want_vnet, listed, progress, AzureError)
        return inventory
    compute, network = session.compute, session.network
    _say(progress, f"Reading VM {target} and its network interfaces ...")
    first = reader.round({
        "vm": lambda: wire_dict(compute.virtual_machines.get(target.resource_group, target.name, expand="instanceView")),
        "nics": lambda: _first_page(network.network_interfaces.list(target.resource_group)),
    })
    vm, vm_error = first["vm"]
    if vm_error is not None:
        raise _vm_error(vm_error, target, subscription) from vm_error
    inventory.vm = vm
    nics, list_error = first["nics"]
    if list_error is not None and not isinstance(list_error, AzureError):
        raise list_error  # our own fault, never a reason to read every NIC one by one
    # an ARM failure of the list only costs a round trip: the NICs are then read one by one
    listed_by_id = {id_key(n.get("id")): n for n in nics or []}
    for nic_id in inventory.nic_ids():
        if id_key(nic_id) in listed_by_id:
            inventory.resources[id_key(nic_id)] = Resource(nic_id, "nic", listed_by_id[id_key(nic_id)])

    _complete(inventory, reader, want_vnet, None, progress, AzureError)
    return inventory


def listed_gap(listed: Any, target: Target, *, want_vnet: bool = False) -> str | None:
    """The first resource on ``target``'s RDP path a fleet listing does not hold (yet): the VM
    itself, or a reference from its body down. None: the lists answer for the whole path."""
    vm = listed.get(target.resource_id(listed.subscription))
    if vm is None:
        return target.resource_id(listed.subscription)
    inventory = Inventory(target, listed.subscription, vm=vm[1])
    return _complete(inventory, None, want_vnet, listed, None, Exception)


def _complete(inventory: Inventory, reader: _Reader | None, want_vnet: bool, listed: Any, progress: Any,
              azure_error: type) -> str | None:
    """Follow the references from the VM down its RDP path: from ``listed`` where it holds them,
    else by parallel reads, one round per level. Without a ``reader``: read nothing, answer the
    first reference ``listed`` does not hold."""
    subscription = inventory.subscription
    while True:
        wanted = [rid for rid in _referenced(inventory, want_vnet) if id_key(rid) not in inventory.resources]
        from_list = [rid for rid in wanted if listed is not None and listed.get(rid) is not None]
        for rid in from_list:
            kind, body = listed.get(rid)
            inventory.resources[id_key(rid)] = Resource(rid, kind, body)
        if from_list:
            continue   # the bodies just filed may point further (a subnet to its NSG)
        if not wanted:
            return None
        if reader is None:
            return wanted[0]
        _say(progress, "Reading " + _count_nouns(wanted) + " ...")
        calls = {}
        for rid in wanted:
            try:
                calls[rid] = reader.read(rid)
            except (ValueError, KeyError):
                inventory.resources[id_key(rid)] = Resource(rid, "unknown", error=NotFoundError(
                    f"{rid!r} is not a resource ID azrdp can read"))
        for rid, (body, error) in reader.round(calls).items():
            inventory.resources[id_key(rid)] = _filed(rid, body, error, subscription, azure_error)


def read_agent(session: Session, inventory: Inventory) -> None:
    """One read (VirtualMachines_InstanceView) for a VM that came from a fleet list: the full
    instance view, VM agent included, replaces the listed run time status."""
    from azure.core.exceptions import AzureError

    if inventory.agent_known:
        return
    target = inventory.target
    inventory.round_trips += 1
    inventory.requests += 1
    try:
        view = wire_dict(session.compute.virtual_machines.instance_view(target.resource_group, target.name))
    except AzureError as err:
        raise _vm_error(err, target, inventory.subscription) from err
    inventory.vm.setdefault("properties", {})["instanceView"] = view
    inventory.agent_known = True


def _first_page(paged: Any) -> list[dict[str, Any]]:
    """Only the first page of a list: in a resource group with hundreds of NICs, following
    nextLink would cost one sequential round trip per page, while the VM's own NICs not on the
    first page cost just one parallel round of GETs. A list some other layer already read whole
    (azrdp.azure.shared_reads answers with a plain list) is taken as it is."""
    if isinstance(paged, (list, tuple)):
        return [wire_dict(item) for item in paged]
    for page in paged.by_page():
        return [wire_dict(item) for item in page]
    return []


def _referenced(inventory: Inventory, want_vnet: bool) -> list[str]:
    """IDs the known bodies point to and the verdict needs."""
    ids: list[str] = list(inventory.nic_ids())
    for nic_id in inventory.nic_ids():
        nic = inventory.get(nic_id)
        if nic is None or nic.body is None:
            continue
        if (nic.properties.get("networkSecurityGroup") or {}).get("id"):
            ids.append(nic.properties["networkSecurityGroup"]["id"])
        for ipconfig in nic.properties.get("ipConfigurations") or []:
            props = ipconfig.get("properties") or {}
            subnet_id = (props.get("subnet") or {}).get("id")
            if subnet_id:
                ids.append(subnet_id)
                if want_vnet:
                    ids.append(str(_parent(subnet_id)))
                subnet = inventory.get(subnet_id)
                if subnet is not None and (subnet.properties.get("networkSecurityGroup") or {}).get("id"):
                    ids.append(subnet.properties["networkSecurityGroup"]["id"])
            if (props.get("publicIPAddress") or {}).get("id"):
                ids.append(props["publicIPAddress"]["id"])
    seen: dict[str, str] = {}
    for rid in ids:
        seen.setdefault(id_key(rid), rid)
    return list(seen.values())


def _parent(resource_id: str) -> ResourceId | str:
    try:
        return parse_resource_id(resource_id).parent()
    except ValueError:
        return resource_id


def _filed(rid: str, body: Any, error: BaseException | None, subscription: str, azure_error: type) -> Resource:
    kind = _KINDS.get(_type_of(rid), "unknown")
    if error is None:
        return Resource(rid, kind, body)
    if isinstance(error, AzrdpError):
        raise error
    if not isinstance(error, azure_error):
        raise error
    from azrdp.azure.arm_errors import translate

    typed = translate(cast("AzureError", error), doing=f"reading {_NOUNS.get(kind, 'resource')} "
                      f"{rid.rsplit('/', 1)[-1]}", subscription=subscription)   # an azure_error, checked above
    if isinstance(typed, NotFoundError):
        return Resource(rid, kind, error=typed)  # a broken reference: a check error, not a crash
    raise typed from error


def _type_of(rid: str) -> str:
    try:
        return parse_resource_id(rid).type
    except ValueError:
        return ""


def _vm_error(err: BaseException, target: Target, subscription: str) -> BaseException:
    from azure.core.exceptions import AzureError, HttpResponseError

    from azrdp.azure.arm_errors import arm_error_code, translate

    if isinstance(err, AzrdpError) or not isinstance(err, AzureError):
        return err
    typed = translate(err, doing=f"reading VM {target}", subscription=subscription)
    if isinstance(typed, NotFoundError) and isinstance(err, HttpResponseError):
        if arm_error_code(err).lower() == "resourcegroupnotfound":
            return NotFoundError(f"resource group '{target.resource_group}' not found in subscription {subscription}.",
                                 hint="Check -g/--resource-group, or choose another subscription with --subscription.")
        return NotFoundError(f"VM '{target.name}' not found in resource group '{target.resource_group}' "
                             f"(subscription {subscription}).",
                             hint=f"List the VMs there with `az vm list -g {target.resource_group} -o table`, "
                                  "or choose another subscription with --subscription.")
    return typed


def _count_nouns(ids: list[str]) -> str:
    counts: dict[str, int] = {}
    for rid in ids:
        noun = _NOUNS.get(_KINDS.get(_type_of(rid), ""), "resource")
        counts[noun] = counts.get(noun, 0) + 1
    return ", ".join(f"{n} {noun}{'s' if n > 1 else ''}" for noun, n in counts.items())


def _say(progress: Any, text: str) -> None:
    if progress is not None:
        progress.status(text)
