"""Read a subscription's fleet by pages, not by VM.

ARM's read budget is a bucket per subscription (250 reads, refilled 25 per second), and every page
of a list is one read. So a fleet job lists, once per subscription (or per selected resource group):

* the VMs (``VirtualMachines_ListAll`` / ``_List``): the model, which says the OS, the tags, the
  NICs, boot diagnostics and the provisioning state;
* their run time status (``VirtualMachines_ListAll?statusOnly=true``: "enables fetching run time
  status of all Virtual Machines in the subscription"): provisioning and power state. It is the
  only list that carries the power state: ``$expand=instanceView`` on a list "can only be specified
  if a valid $filter option is specified" (Microsoft's specification), and the only filter is a
  scale set's ID. Neither list carries the VM agent's status; that is read per VM, only where it
  matters (:func:`azrdp.azure.inventory.read_agent`);
* the NICs, NSGs, public IPs and virtual networks (whose bodies hold their subnets).

Application security groups need no read: membership is on the NIC's IP configurations and NSG
rules name ASGs by ID. The six lists are read side by side, each page after the one before
(nextLink). Pages are read as raw JSON through the Compute client's pipeline (``send_request``:
the same credential, retry policy and shared back-off as every other call; an ARM pipeline serves
Network's URLs as well): the SDK's model deserialisation of each item would cost CPU only to be
turned back into ARM's wire JSON, and a healthy fleet never imports azure-mgmt-network (seconds).

These lists are the fallback of a sweep: it reads the fleet through Azure Resource Graph first
(azrdp.azure.resource_graph: one query for every subscription, 1,000 rows a page) and lists by
ARM only where Resource Graph is refused or unavailable.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from azrdp.target import id_key

if TYPE_CHECKING:
    from azrdp.azure.vm import Session

# What azure-mgmt-compute 39 and azure-mgmt-network 33 send (the emulator accepts only these).
COMPUTE_API = "2026-04-01"
NETWORK_API = "2026-03-01"

_NETWORK_LISTS = (("nic", "networkInterfaces"), ("nsg", "networkSecurityGroups"),
                  ("public_ip", "publicIPAddresses"), ("vnet", "virtualNetworks"))


class FleetView:
    """What the lists of one subscription said so far: VM bodies in the order they were listed
    (each with its run time status at ``properties.instanceView`` once the status list had it)
    and every listed network resource. Filled page by page from several threads; ``complete``
    once every list is read."""

    def __init__(self, subscription: str):
        self.subscription = subscription
        self.vms: list[dict[str, Any]] = []                             # append-only
        self.resources: dict[str, tuple[str, dict[str, Any]]] = {}     # id_key -> (kind, body)
        self.pages = 0                                                  # list reads made (one per page)
        self.complete = False
        self.eventual = False   # from Resource Graph: an index that may lag ARM (azrdp.azure.resource_graph)
        self._status: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, resource_id: str | None) -> tuple[str, dict[str, Any]] | None:
        return self.resources.get(id_key(resource_id)) if resource_id else None

    def has_status(self, vm_id: str) -> bool:
        """The VM's run time status is in (or will never come: every list is read)."""
        return self.complete or "instanceView" in ((self.get(vm_id) or ("", {}))[1].get("properties") or {})

    def add_page(self, kind: str, items: list[dict[str, Any]], *, count: bool = True) -> None:
        """One page of one list (``count``: it was a list read of this subscription's own)."""
        with self._lock:
            self.pages += 1 if count else 0
            for item in items:
                if kind == "status":
                    view = (item.get("properties") or {}).get("instanceView")
                    if item.get("id") and view is not None:
                        self._status[id_key(item["id"])] = view
                        listed = self.get(item["id"])
                        if listed is not None:
                            listed[1].setdefault("properties", {})["instanceView"] = view
                    continue
                if kind == "vm":
                    view = self._status.get(id_key(item.get("id")))
                    if view is not None:
                        item.setdefault("properties", {})["instanceView"] = view
                self._add(kind, item)
                if kind == "vm":
                    self.vms.append(item)

    def _add(self, kind: str, body: dict[str, Any]) -> None:
        if body.get("id"):
            self.resources[id_key(body["id"])] = (kind, body)
        if kind == "vnet":   # a virtual network's body holds its subnets in full
            for subnet in (body.get("properties") or {}).get("subnets") or []:
                if subnet.get("id"):
                    self.resources[id_key(subnet["id"])] = ("subnet", subnet)


def read_fleet(session: Session, resource_groups: Iterable[str] = (), *, view: FleetView | None = None,
               on_page: Callable[[FleetView], None] | None = None) -> FleetView:
    """List the VMs (with their run time status) and the network resources of the session's
    subscription, or only of ``resource_groups`` (a group that does not exist in this
    subscription is skipped: it may live in another of the swept subscriptions). ``on_page``
    hears the view (``view``, or a new one) after every page, from the reading threads, so a
    caller can start on the VMs whose evidence is in while the rest is still being listed. Raises typed errors
    (permission, throttling past the back-off, Azure failures)."""
    sub = session.subscription_id
    groups = list(dict.fromkeys(resource_groups))
    prefixes = [f"/subscriptions/{sub}/resourceGroups/{g}/providers" for g in groups] if groups \
        else [f"/subscriptions/{sub}/providers"]
    jobs: list[tuple[str, Any, str]] = [
        ("vm", session.compute, f"{p}/Microsoft.Compute/virtualMachines?api-version={COMPUTE_API}") for p in prefixes]
    # statusOnly exists on ListAll only: with resource groups selected it still lists the subscription
    jobs.append(("status", session.compute,
                 f"/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines"
                 f"?api-version={COMPUTE_API}&statusOnly=true"))
    for kind, collection in _NETWORK_LISTS:   # any ARM client's pipeline serves any ARM URL
        jobs += [(kind, session.compute, f"{p}/Microsoft.Network/{collection}?api-version={NETWORK_API}")
                 for p in prefixes]
    view = view if view is not None else FleetView(sub)

    def page(kind: str, items: list[dict[str, Any]]) -> None:
        view.add_page(kind, items)
        if on_page is not None:
            on_page(view)

    with ThreadPoolExecutor(max_workers=min(len(jobs), 16), thread_name_prefix="azrdp-list") as pool:
        futures = [pool.submit(_read_pages, client, url, sub, functools.partial(page, kind))
                   for kind, client, url in jobs]
    for future in futures:
        future.result()
    view.complete = True
    return view


def _read_pages(client: Any, url: str, subscription: str, on_items: Callable[[list[dict[str, Any]]], None]) -> None:
    """Every page of one list, following nextLink, each handed to ``on_items`` as it arrives. A
    list in a resource group that does not exist answers no items."""
    from azure.core.exceptions import AzureError, HttpResponseError
    from azure.core.rest import HttpRequest

    from azrdp.azure.arm_errors import translate

    next_url: str | None = url
    while next_url:
        try:
            response = client.send_request(HttpRequest("GET", next_url))
            if response.status_code == 404 and "/resourceGroups/" in url:
                on_items([])
                return   # the group lives in another of the swept subscriptions
            response.raise_for_status()
            body = response.json()
        except HttpResponseError as err:
            raise translate(err, doing=f"listing {_what(url)}", subscription=subscription) from err
        except AzureError as err:
            raise translate(err, doing=f"listing {_what(url)}", subscription=subscription) from err
        on_items(body.get("value") or [])
        next_url = body.get("nextLink") or None


def _what(url: str) -> str:
    path = url.split("?", 1)[0].rstrip("/")
    return {"virtualMachines": "virtual machines", "networkInterfaces": "network interfaces",
            "networkSecurityGroups": "network security groups", "publicIPAddresses": "public IP addresses",
            "virtualNetworks": "virtual networks"}.get(path.rsplit("/", 1)[-1], path.rsplit("/", 1)[-1])
