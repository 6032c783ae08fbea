"""One handler per ARM operation, named after its REST operationId in snake_case
(``VirtualMachines_RunCommand`` -> :func:`virtual_machines_run_command`).

A handler reads the request, calls the backend (models.py), and returns a :class:`Reply`; it
holds no business rules. Errors are raised as :mod:`exceptions` and rendered by the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

from azrdp.emulator import exceptions as err
from azrdp.emulator.models import COMPUTE, NETWORK, ArmBackend, AsyncOperation

PAGE_SIZE = 50
"""Items per page of every list. Compute's VM lists answer 50 VMs per page with a nextLink (reported
against ARM many times: azure-sdk-for-node#4769, gbowerman/azurerm#6, apache/libcloud#1824,
azure-powershell#3227); Network's page size is not documented (docs/emulator.md, unverified)."""
T = TypeVar("T")
SAS_MINUTES_DEFAULT = 120


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    params: dict[str, str]          # named groups of the route
    body: Any
    base_url: str                    # http://127.0.0.1:PORT (as the client addressed us)
    headers: dict[str, str] = field(default_factory=dict)

    def p(self, name: str) -> str:
        return self.params[name]


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _accepted(op: AsyncOperation, req: Request, status: int = 202, body: Any = None) -> Reply:
    return Reply(status, body, op.headers(req.base_url))


def _blob_base(req: Request) -> str:
    return f"{req.base_url}/_emulator/blobs"


def _page(req: Request, items: Sequence[T], render: Callable[[T], dict[str, Any]]) -> Reply:
    """ARM paging: ``value`` (at most PAGE_SIZE items, rendered only for this page) plus a
    ``nextLink`` carrying ``$skiptoken`` while more remain. The nextLink keeps every other query
    parameter (api-version, statusOnly): the SDK sends it back verbatim. Each page is one GET, so
    ARM's read bucket charges a list one token per page (throttling.py)."""
    try:
        start = int(req.query.get("$skiptoken", "0"))
        if start < 0:
            raise ValueError
    except ValueError:
        raise err.ArmError(f"The value '{req.query['$skiptoken']}' of $skiptoken is invalid.",
                           code="InvalidSkipToken") from None
    body: dict[str, Any] = {"value": [render(item) for item in items[start:start + PAGE_SIZE]]}
    if start + PAGE_SIZE < len(items):
        query = {k: v for k, v in req.query.items() if k != "$skiptoken"}
        query["$skiptoken"] = str(start + PAGE_SIZE)
        body["nextLink"] = f"{req.base_url}{req.path}?{urlencode(query)}"
    return Reply(200, body)


def _listed(backend: ArmBackend, req: Request, collection: str, *, in_group: bool) -> list[Any]:
    """The models of one collection in the request's resource group, or in its whole
    subscription, in a stable order (so a $skiptoken means the same place on every page)."""
    sub = req.p("subscription")
    if in_group:
        groups = [backend.resource_group(sub, req.p("resource_group"))]
    else:
        groups = list(backend.subscription(sub).resource_groups.values())
    return sorted((item for group in groups for item in getattr(group, collection).values()),
                  key=lambda item: item.id.lower())


# -- Microsoft.Compute/virtualMachines -----------------------------------------------------------

def _vm(backend: ArmBackend, req: Request) -> Any:
    return backend.vm(req.p("subscription"), req.p("resource_group"), req.p("vm"))


def virtual_machines_get(backend: ArmBackend, req: Request) -> Reply:
    vm = _vm(backend, req)
    expand = req.query.get("$expand")
    return Reply(200, vm.to_arm(iso=backend.iso, blob_base=_blob_base(req),
                                expand_instance_view=(expand or "").lower() == "instanceview"))


def virtual_machines_instance_view(backend: ArmBackend, req: Request) -> Reply:
    return Reply(200, _vm(backend, req).instance_view(backend.iso, _blob_base(req)))


def _vm_list(backend: ArmBackend, req: Request, *, in_group: bool) -> Reply:
    """VirtualMachines_List / _ListAll, with the query options Microsoft's specification gives them:

    * ``statusOnly=true`` (ListAll only): "enables fetching run time status of all Virtual
      Machines in the subscription". Each item carries its ``name``, ``id``, ``type``, ``location``
      and ``properties.instanceView.statuses`` (provisioning state and power state), as
      Microsoft's own SDK sample reads it (azure-sdk-for-js, listVMsStatus: ``item.instanceView
      .statuses``); neither the model nor the agent status (see docs/emulator.md, unverified).
    * ``$expand=instanceView``: "this can only be specified if a valid $filter option is
      specified" (the spec's parameter description); without ``$filter`` it is refused.
    * ``$filter``: the only allowed value is ``'virtualMachineScaleSet/id' eq '<id>'``; the
      emulator's VMs belong to no scale set, so that filter matches none of them.
    """
    expand = req.query.get("$expand")
    flt = req.query.get("$filter")
    if expand is not None and expand.lower() != "instanceview":
        raise err.ArmError(f"The value '{expand}' of parameter '$expand' is invalid.", code="InvalidParameter")
    if expand is not None and not flt:
        raise err.ArmError("The $expand=instanceView option can only be specified together with a valid $filter "
                           "option.", code="InvalidParameter")
    status_only = not in_group and (req.query.get("statusOnly") or "").lower() == "true"
    if flt:
        if not _VMSS_FILTER.match(flt):
            raise err.ArmError(f"The $filter '{flt}' is not supported. Allowed value is 'virtualMachineScaleSet/id' "
                               "eq '/subscriptions/{subId}/resourceGroups/{resourceGroupName}/providers/"
                               "Microsoft.Compute/virtualMachineScaleSets/{vmssName}'.", code="InvalidParameter")
        return _page(req, [], dict)
    vms = _listed(backend, req, "vms", in_group=in_group)
    iso, blobs = backend.iso, _blob_base(req)
    if status_only:
        return _page(req, vms, lambda vm: {
            "name": vm.name, "id": vm.id, "type": "Microsoft.Compute/virtualMachines", "location": vm.location,
            "properties": {"instanceView": {"statuses": vm.instance_view(iso, blobs)["statuses"]}}})
    return _page(req, vms, lambda vm: vm.to_arm(iso=iso, blob_base=blobs))


_VMSS_FILTER = re.compile(r"^\s*'?virtualMachineScaleSet/id'?\s+eq\s+'?/subscriptions/[^/]+/resourceGroups/[^/]+/"
                          r"providers/Microsoft\.Compute/virtualMachineScaleSets/[^/']+'?\s*$", re.IGNORECASE)


def virtual_machines_list(backend: ArmBackend, req: Request) -> Reply:
    return _vm_list(backend, req, in_group=True)


def virtual_machines_list_all(backend: ArmBackend, req: Request) -> Reply:
    return _vm_list(backend, req, in_group=False)


def virtual_machines_run_command(backend: ArmBackend, req: Request) -> Reply:
    if not isinstance(req.body, dict):
        raise err.InvalidRequestContent("The request content was invalid and could not be deserialized: "
                                        "'Required property 'commandId' not found in JSON.'")
    return _accepted(backend.run_command(_vm(backend, req), req.body), req)


def virtual_machines_restart(backend: ArmBackend, req: Request) -> Reply:
    return _accepted(backend.restart(_vm(backend, req)), req)


def virtual_machines_start(backend: ArmBackend, req: Request) -> Reply:
    return _accepted(backend.start(_vm(backend, req)), req)


def virtual_machines_retrieve_boot_diagnostics_data(backend: ArmBackend, req: Request) -> Reply:
    vm = _vm(backend, req)
    if not vm.boot_diagnostics:
        raise err.OperationNotAllowed(f"Boot diagnostics is not enabled for virtual machine '{vm.name}'.")
    raw = req.query.get("sasUriExpirationTimeInMinutes", str(SAS_MINUTES_DEFAULT))
    try:
        minutes = int(raw)
    except ValueError:
        raise err.ArmError(f"The value '{raw}' is not valid for sasUriExpirationTimeInMinutes.",
                           code="InvalidParameter") from None
    if not 1 <= minutes <= 1440:
        raise err.ArmError("The value of parameter sasUriExpirationTimeInMinutes is invalid. "
                           "It must be between 1 and 1440.", code="InvalidParameter")
    expiry = backend.timescale.wall(backend.timescale.now() + minutes * 60).strftime("%Y-%m-%dT%H:%M:%SZ")
    sas = f"?sv=2021-08-06&sr=b&sp=r&se={expiry}&sig=emulator"
    return Reply(200, vm.boot_diagnostics_uris(_blob_base(req), sas=sas))


# -- asynchronous operations -----------------------------------------------------------------------

def _operation(backend: ArmBackend, req: Request, provider: str) -> AsyncOperation:
    return backend.operation(req.p("subscription"), provider, req.p("operation"))


def _status(backend: ArmBackend, op: AsyncOperation) -> Reply:
    return Reply(200, op.status_body(backend.iso))


def _result(op: AsyncOperation, req: Request) -> Reply:
    """The Location URL: 202 while running; then the result (or the operation's error)."""
    if not op.done:
        location = f"{req.base_url}{req.path}?{urlencode(req.query)}"
        return Reply(202, None, {"Location": location})
    if op.error is not None:
        raise op.error
    if op.result is None:
        return Reply(204 if op.provider == NETWORK else 200, None)
    return Reply(200, op.result)


def compute_operations_get(backend: ArmBackend, req: Request) -> Reply:
    return _status(backend, _operation(backend, req, COMPUTE))


def compute_operation_results_get(backend: ArmBackend, req: Request) -> Reply:
    return _result(_operation(backend, req, COMPUTE), req)


def network_operations_get(backend: ArmBackend, req: Request) -> Reply:
    return _status(backend, _operation(backend, req, NETWORK))


def network_operation_results_get(backend: ArmBackend, req: Request) -> Reply:
    return _result(_operation(backend, req, NETWORK), req)


# -- Microsoft.Resources/subscriptions (tenant level) --------------------------------------------

def subscriptions_list(backend: ArmBackend, req: Request) -> Reply:
    """Every subscription of the emulated tenant (the caller sees all of them)."""
    return Reply(200, {"value": [sub.to_arm() for sub in backend.subscriptions.values()],
                       "count": {"type": "Total", "value": len(backend.subscriptions)}})


# -- Microsoft.Network ---------------------------------------------------------------------------

def _sub_rg(req: Request) -> tuple[str, str]:
    return req.p("subscription"), req.p("resource_group")


def network_interfaces_get(backend: ArmBackend, req: Request) -> Reply:
    return Reply(200, backend.nic(*_sub_rg(req), req.p("nic")).to_arm())


def _to_arm(model: Any) -> dict[str, Any]:
    return model.to_arm()


def resources(backend: ArmBackend, req: Request) -> Reply:
    """Resource Graph's ``Resources`` (the quota is the server's: it applies before any query)."""
    from azrdp.emulator import resource_graph

    return Reply(200, resource_graph.answer(backend, backend.graph, req.body))


def network_interfaces_list(backend: ArmBackend, req: Request) -> Reply:
    return _page(req, _listed(backend, req, "nics", in_group=True), _to_arm)


def network_interfaces_list_all(backend: ArmBackend, req: Request) -> Reply:
    return _page(req, _listed(backend, req, "nics", in_group=False), _to_arm)


def network_security_groups_list(backend: ArmBackend, req: Request) -> Reply:
    return _page(req, _listed(backend, req, "nsgs", in_group=True), _to_arm)


def network_security_groups_list_all(backend: ArmBackend, req: Request) -> Reply:
    return _page(req, _listed(backend, req, "nsgs", in_group=False), _to_arm)


def public_ip_addresses_list(backend: ArmBackend, req: Request) -> Reply:
    return _page(req, _listed(backend, req, "public_ips", in_group=True), _to_arm)


def public_ip_addresses_list_all(backend: ArmBackend, req: Request) -> Reply:
    return _page(req, _listed(backend, req, "public_ips", in_group=False), _to_arm)


def virtual_networks_list(backend: ArmBackend, req: Request) -> Reply:
    return _page(req, _listed(backend, req, "vnets", in_group=True), _to_arm)


def virtual_networks_list_all(backend: ArmBackend, req: Request) -> Reply:
    return _page(req, _listed(backend, req, "vnets", in_group=False), _to_arm)


def network_interfaces_list_effective_network_security_groups(backend: ArmBackend, req: Request) -> Reply:
    op = backend.effective_nsgs(backend.nic(*_sub_rg(req), req.p("nic")))
    return Reply(202, None, {"Location": op.headers(req.base_url)["Location"]})   # Location only, as Azure


def virtual_networks_get(backend: ArmBackend, req: Request) -> Reply:
    return Reply(200, backend.vnet(*_sub_rg(req), req.p("vnet")).to_arm())


def subnets_get(backend: ArmBackend, req: Request) -> Reply:
    vnet, subnet = backend.subnet(*_sub_rg(req), req.p("vnet"), req.p("subnet"))
    return Reply(200, subnet.to_arm(vnet.id))


def network_security_groups_get(backend: ArmBackend, req: Request) -> Reply:
    return Reply(200, backend.back_references(backend.nsg(*_sub_rg(req), req.p("nsg"))).to_arm())


def _rule(backend: ArmBackend, req: Request, default: bool = False) -> Reply:
    nsg = backend.nsg(*_sub_rg(req), req.p("nsg"))
    name = req.p("rule")
    rules = {r.name.lower(): r for r in nsg.default_rules()} if default else nsg.rules
    rule = rules.get(name.lower())
    if rule is None:
        kind = "defaultSecurityRules" if default else "securityRules"
        raise err.ChildResourceNotFound(f"{nsg.id}/{kind}/{name}")
    return Reply(200, rule.to_arm(nsg.id))


def security_rules_get(backend: ArmBackend, req: Request) -> Reply:
    return _rule(backend, req)


def default_security_rules_get(backend: ArmBackend, req: Request) -> Reply:
    return _rule(backend, req, default=True)


def security_rules_create_or_update(backend: ArmBackend, req: Request) -> Reply:
    nsg = backend.nsg(*_sub_rg(req), req.p("nsg"))
    rule, created, op = backend.put_security_rule(nsg, req.p("rule"), req.body)
    return Reply(201 if created else 200, rule.to_arm(nsg.id),
                 {"Azure-AsyncOperation": op.headers(req.base_url)["Azure-AsyncOperation"]})


def security_rules_delete(backend: ArmBackend, req: Request) -> Reply:
    nsg = backend.nsg(*_sub_rg(req), req.p("nsg"))
    op = backend.delete_security_rule(nsg, req.p("rule"))
    if op is None:
        return Reply(204)
    return _accepted(op, req)


def public_ip_addresses_get(backend: ArmBackend, req: Request) -> Reply:
    return Reply(200, backend.public_ip(*_sub_rg(req), req.p("pip")).to_arm())


def application_security_groups_get(backend: ArmBackend, req: Request) -> Reply:
    return Reply(200, backend.asg(*_sub_rg(req), req.p("asg")).to_arm())


# -- Microsoft.Compute disks and snapshots, VM create/update/power off/delete, resource groups -----
# The rules are in disks.py; shapes after Microsoft's DiskRP and ComputeRP examples (see there).

def _disks() -> Any:
    from azrdp.emulator import disks

    return disks


def _compute_child(backend: ArmBackend, req: Request, collection: str, kind: str, key: str) -> Any:
    return backend._get(req.p("subscription"), req.p("resource_group"), collection, kind, req.p(key))


def disks_get(backend: ArmBackend, req: Request) -> Reply:
    return Reply(200, _compute_child(backend, req, "disks", "Microsoft.Compute/disks", "disk").to_arm())


def disks_create_or_update(backend: ArmBackend, req: Request) -> Reply:
    disk, op = _disks().put_disk(backend, *_sub_rg(req), req.p("disk"), req.body)
    return _accepted(op, req, 202, disk.to_arm())


def disks_delete(backend: ArmBackend, req: Request) -> Reply:
    op = _disks().delete_disk(backend, *_sub_rg(req), req.p("disk"))
    return Reply(204) if op is None else _accepted(op, req)


def snapshots_get(backend: ArmBackend, req: Request) -> Reply:
    return Reply(200, _compute_child(backend, req, "snapshots", "Microsoft.Compute/snapshots", "snapshot").to_arm())


def snapshots_create_or_update(backend: ArmBackend, req: Request) -> Reply:
    snap, op = _disks().put_snapshot(backend, *_sub_rg(req), req.p("snapshot"), req.body)
    return _accepted(op, req, 202, snap.to_arm())


def snapshots_delete(backend: ArmBackend, req: Request) -> Reply:
    op = _disks().delete_snapshot(backend, *_sub_rg(req), req.p("snapshot"))
    return Reply(204) if op is None else _accepted(op, req)


def _vm_body(backend: ArmBackend, req: Request, vm: Any, status: int, op: AsyncOperation) -> Reply:
    body = vm.to_arm(iso=backend.iso(), blob_base=_blob_base(req))
    return Reply(status, body, {"Azure-AsyncOperation": op.headers(req.base_url)["Azure-AsyncOperation"]})


def virtual_machines_create_or_update(backend: ArmBackend, req: Request) -> Reply:
    if not isinstance(req.body, dict):
        raise err.InvalidRequestContent("The request content was invalid and could not be deserialized.")
    sub, rg = _sub_rg(req)
    existing = backend.resource_group(sub, rg).vms.get(req.p("vm").lower())
    if existing is not None:
        return _vm_body(backend, req, existing, 200, _disks().update_vm(backend, existing, req.body))
    vm, op = _disks().create_vm(backend, sub, rg, req.p("vm"), req.body)
    return _vm_body(backend, req, vm, 201, op)


def virtual_machines_update(backend: ArmBackend, req: Request) -> Reply:
    if not isinstance(req.body, dict):
        raise err.InvalidRequestContent("The request content was invalid and could not be deserialized.")
    vm = _vm(backend, req)
    return _vm_body(backend, req, vm, 200, _disks().update_vm(backend, vm, req.body))


def virtual_machines_power_off(backend: ArmBackend, req: Request) -> Reply:
    return _accepted(_disks().power_off(backend, _vm(backend, req)), req)


def virtual_machines_delete(backend: ArmBackend, req: Request) -> Reply:
    sub, rg = _sub_rg(req)
    vm = backend.resource_group(sub, rg).vms.get(req.p("vm").lower())
    return Reply(204) if vm is None else _accepted(_disks().delete_vm(backend, vm), req)


def virtual_networks_create_or_update(backend: ArmBackend, req: Request) -> Reply:
    vnet, created, op = _disks().put_vnet(backend, *_sub_rg(req), req.p("vnet"), req.body)
    return Reply(201 if created else 200, vnet.to_arm(),
                 {"Azure-AsyncOperation": op.headers(req.base_url)["Azure-AsyncOperation"]})


def network_interfaces_create_or_update(backend: ArmBackend, req: Request) -> Reply:
    nic, created, op = _disks().put_nic(backend, *_sub_rg(req), req.p("nic"), req.body)
    return Reply(201 if created else 200, nic.to_arm(),
                 {"Azure-AsyncOperation": op.headers(req.base_url)["Azure-AsyncOperation"]})


def resource_groups_create_or_update(backend: ArmBackend, req: Request) -> Reply:
    rg, created = _disks().put_resource_group(backend, req.p("subscription"), req.p("resource_group"), req.body)
    return Reply(201 if created else 200, _disks().resource_group_body(req.p("subscription"), rg))


def resource_groups_get(backend: ArmBackend, req: Request) -> Reply:
    rg = backend.resource_group(req.p("subscription"), req.p("resource_group"))
    state = "Deleting" if rg.deleting else "Succeeded"
    return Reply(200, _disks().resource_group_body(req.p("subscription"), rg, state))


def resource_groups_delete(backend: ArmBackend, req: Request) -> Reply:
    sub = req.p("subscription")
    op = _disks().delete_resource_group(backend, sub, req.p("resource_group"))
    api = _disks().RESOURCES_API
    location = f"{req.base_url}/subscriptions/{sub}/operationresults/{op.id}?api-version={api}"
    return Reply(202, None, {"Location": location, "Retry-After": "15"})


def resource_operation_results_get(backend: ArmBackend, req: Request) -> Reply:
    """ARM's Location URL for a resource group delete: 202 while running, then 200."""
    op = backend.operation(req.p("subscription"), "Microsoft.Resources", req.p("operation"))
    if not op.done:
        return Reply(202, None, {"Location": f"{req.base_url}{req.path}?{urlencode(req.query)}", "Retry-After": "15"})
    if op.error is not None:
        raise op.error
    return Reply(200, None)
