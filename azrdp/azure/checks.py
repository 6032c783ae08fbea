"""The Azure-side and network-side checks, built from an Inventory: pure, no I/O.

vm.os, vm.power, vm.provisioning, vm.agent, boot.diagnostics, net.public_ip, and the NSG
verdict for the RDP port (nsg.subnet, nsg.nic, nsg.effective) on the IP configuration RDP
reaches: the one holding a public IP, else the primary NIC's primary IP configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from azrdp.azure.inventory import Inventory, Resource
from azrdp.azure.nsg import Decision, Flow, SecurityGroup, evaluate_inbound, free_priority
from azrdp.checks import Check, Status
from azrdp.errors import NotFoundError
from azrdp.target import id_key, parse_resource_id

OS_WINDOWS, OS_LINUX = "Windows", "Linux"
_LEVEL = {"subnet": "subnet", "nic": "NIC"}


@dataclass
class RdpPath:
    """The NIC IP configuration RDP traffic reaches, and what is attached to it."""

    nic: Resource | None = None
    ipconfig: dict[str, Any] = field(default_factory=dict)
    subnet: Resource | None = None
    public_ip: Resource | None = None
    vnet: Resource | None = None

    @property
    def ipconfig_properties(self) -> dict[str, Any]:
        return self.ipconfig.get("properties") or {}

    @property
    def private_ip(self) -> str | None:
        return self.ipconfig_properties.get("privateIPAddress", "").split("/")[0] or None

    @property
    def public_address(self) -> str | None:
        return self.public_ip.properties.get("ipAddress") if self.public_ip and self.public_ip.body else None

    def asgs(self) -> frozenset[str]:
        return frozenset(id_key(a.get("id")) for a in self.ipconfig_properties.get("applicationSecurityGroups") or []
                         if a.get("id"))


def rdp_path(inventory: Inventory) -> RdpPath:
    primary = inventory.primary_nic_id()
    nic_ids = sorted(inventory.nic_ids(), key=lambda i: id_key(i) != id_key(primary))
    candidates: list[RdpPath] = []
    for nic_id in nic_ids:
        nic = inventory.get(nic_id)
        if nic is None or nic.body is None:
            candidates.append(RdpPath(nic=nic or Resource(nic_id, "nic")))
            continue
        configs = sorted(nic.properties.get("ipConfigurations") or [],
                         key=lambda c: not (c.get("properties") or {}).get("primary"))
        for config in configs:
            props = config.get("properties") or {}
            subnet_id = (props.get("subnet") or {}).get("id")
            path = RdpPath(nic, config, inventory.get(subnet_id),
                           inventory.get((props.get("publicIPAddress") or {}).get("id")))
            if subnet_id:
                try:
                    path.vnet = inventory.get(str(parse_resource_id(subnet_id).parent()))
                except ValueError:
                    pass
            candidates.append(path)
    with_public = [p for p in candidates if p.public_ip is not None]
    return (with_public or candidates or [RdpPath()])[0]


# --- facts ------------------------------------------------------------------------------------------

def _statuses(inventory: Inventory) -> list[dict[str, Any]]:
    return (inventory.vm_properties.get("instanceView") or {}).get("statuses") or []


def power_state(inventory: Inventory) -> str | None:
    for status in _statuses(inventory):
        code = str(status.get("code") or "")
        if code.lower().startswith("powerstate/"):
            return code.split("/", 1)[1].lower()
    return None


def os_type(inventory: Inventory) -> str | None:
    props = inventory.vm_properties
    declared = ((props.get("storageProfile") or {}).get("osDisk") or {}).get("osType")
    if declared:
        return OS_WINDOWS if str(declared).lower() == "windows" else OS_LINUX
    profile = props.get("osProfile") or {}
    if profile.get("windowsConfiguration"):
        return OS_WINDOWS
    if profile.get("linuxConfiguration"):
        return OS_LINUX
    name = str((props.get("instanceView") or {}).get("osName") or "").lower()
    if "windows" in name:
        return OS_WINDOWS
    return OS_LINUX if name else None


def agent(inventory: Inventory) -> dict[str, Any]:
    view = (inventory.vm_properties.get("instanceView") or {}).get("vmAgent") or {}
    statuses = view.get("statuses") or []
    first = statuses[0] if statuses else {}
    return {"status": first.get("displayStatus"), "version": view.get("vmAgentVersion"),
            "message": first.get("message"), "time": first.get("time")}


def boot_diagnostics(inventory: Inventory) -> dict[str, Any]:
    settings = (inventory.vm_properties.get("diagnosticsProfile") or {}).get("bootDiagnostics") or {}
    enabled = bool(settings.get("enabled"))
    storage = settings.get("storageUri") if enabled else None
    return {"enabled": enabled, "storage": "managed" if enabled and not storage else storage}


def vm_facts(inventory: Inventory, path: RdpPath) -> dict[str, Any]:
    vm, props = inventory.vm, inventory.vm_properties
    view = props.get("instanceView") or {}
    return {
        "id": vm.get("id") or inventory.target.resource_id(inventory.subscription),
        "name": vm.get("name") or inventory.target.name,
        "resource_group": inventory.target.resource_group,
        "subscription": inventory.subscription,
        "location": vm.get("location"),
        "size": (props.get("hardwareProfile") or {}).get("vmSize"),
        "os_type": os_type(inventory),
        "os_name": view.get("osName"),
        "computer_name": view.get("computerName") or (props.get("osProfile") or {}).get("computerName"),
        "power_state": power_state(inventory),
        "provisioning_state": props.get("provisioningState"),
        "agent": agent(inventory),
        "boot_diagnostics": boot_diagnostics(inventory),
        "nic": path.nic.name if path.nic else None,
        "ip_configuration": path.ipconfig.get("name"),
        "private_ip": path.private_ip,
        "public_ip": path.public_address,
    }


# --- checks -----------------------------------------------------------------------------------------

def _az(inventory: Inventory) -> str:
    return f"-g {inventory.target.resource_group} -n {inventory.target.name}"


def check_os(inventory: Inventory) -> Check:
    kind = os_type(inventory)
    name = (inventory.vm_properties.get("instanceView") or {}).get("osName")
    if kind == OS_WINDOWS:
        return Check("vm.os", Status.PASS, f"Windows{f' ({name})' if name else ''}", {"os_type": kind, "os_name": name})
    if kind is None:
        return Check("vm.os", Status.WARN, "the VM does not say which OS it runs", {"os_type": None},
                     remedy="azrdp checks Remote Desktop on Windows VMs; confirm the VM runs Windows.")
    return Check("vm.os", Status.FAIL, f"{kind}: Remote Desktop applies to Windows VMs", {"os_type": kind},
                 remedy="For a Linux VM use SSH (`az ssh vm`) instead.")


def check_power(inventory: Inventory) -> Check:
    state = power_state(inventory)
    details = {"power_state": state}
    start = f"Start it with `az vm start {_az(inventory)}` (`azrdp fix --start` will do this)."
    if state == "running":
        return Check("vm.power", Status.PASS, "running", details)
    if state in ("deallocated", "deallocating"):
        return Check("vm.power", Status.FAIL, f"{state}: nothing answers RDP until the VM runs", details, start)
    if state in ("stopped", "stopping"):
        return Check("vm.power", Status.FAIL, f"{state} (still allocated and billed): nothing answers RDP",
                     details, start)
    if state == "starting":
        return Check("vm.power", Status.WARN, "starting", details, "Wait a minute for Windows to boot, then retry.")
    return Check("vm.power", Status.WARN, f"power state {state or 'not reported'}", details,
                 f"Check the VM in the portal or with `az vm get-instance-view {_az(inventory)}`.")


def check_provisioning(inventory: Inventory) -> Check:
    state = inventory.vm_properties.get("provisioningState")
    details = {"provisioning_state": state}
    if str(state).lower() == "succeeded":
        return Check("vm.provisioning", Status.PASS, "Succeeded", details)
    if str(state).lower() == "failed":
        return Check("vm.provisioning", Status.FAIL, "Failed: the last operation on the VM did not complete",
                     details, f"Reapply the VM's state with `az vm reapply {_az(inventory)}`, or redeploy it "
                              f"(`az vm redeploy {_az(inventory)}`).")
    return Check("vm.provisioning", Status.WARN, f"{state or 'not reported'}: an operation is in progress",
                 details, "Wait for the running operation to finish, then retry.")


def last_operation_time(inventory: Inventory) -> Any:
    """When ARM last changed the VM (the instance view's ProvisioningState status time: the time
    of the last operation, stable), as a datetime; None when not given."""
    from azrdp.azure.lro import arm_time

    for status in _statuses(inventory):
        if str(status.get("code") or "").lower().startswith("provisioningstate/"):
            return arm_time(status.get("time"))
    return None


def check_agent(inventory: Inventory) -> Check:
    """Power state decides first: a stopped VM keeps its agent's last report (Ready) and a
    deallocated one has none, and neither says anything about now. On a running VM a Ready older
    than the VM's last operation is the agent's word from before a restart: still rebooting
    (real-azure-behaviour.md, "Timing and state around power operations")."""
    from azrdp.azure.lro import arm_time

    facts = agent(inventory)
    details = {k: v for k, v in facts.items() if v is not None}
    state = power_state(inventory)
    version = f" (version {facts['version']})" if facts["version"] else ""
    if state != "running":
        details["power_state"] = state
        if not facts["status"]:
            return Check("vm.agent", Status.SKIP, "not reported while the VM is not running", details)
        when = f" from {facts['time']}" if facts["time"] else ""
        return Check("vm.agent", Status.SKIP, f"not judged while the VM is {state or 'not running'}: its last "
                     f"report ({facts['status']}{when}) says nothing about now", details)
    if str(facts["status"]).lower() == "ready":
        reported, changed = arm_time(facts["time"]), last_operation_time(inventory)
        if reported is not None and changed is not None and reported < changed:
            details["last_operation"] = changed.isoformat()
            return Check("vm.agent", Status.WARN, f"the VM may still be rebooting: the agent's last report (Ready "
                         f"at {reported:%H:%M:%S} UTC) is older than the VM's last operation "
                         f"({changed:%H:%M:%S} UTC)", details,
                         "Wait a minute for Windows to boot and the agent to report, then run azrdp again.")
        return Check("vm.agent", Status.PASS, f"Ready{version}", details)
    if not inventory.agent_known:
        return Check("vm.agent", Status.SKIP, "not read: a fleet listing reports the power state only (azrdp "
                     "reads the agent of a VM whose RDP does not answer, or before a guest read)", details)
    windows_config = (inventory.vm_properties.get("osProfile") or {}).get("windowsConfiguration") or {}
    if windows_config.get("provisionVMAgent") is False:
        return Check("vm.agent", Status.FAIL, "the VM was deployed without the VM agent: Run Command cannot work",
                     details, "Install the Azure VM agent in the guest (serial console or `az vm repair`).")
    status = facts["status"] or "no status reported"
    return Check("vm.agent", Status.FAIL, f"{status}{version}: Run Command cannot reach the guest", details,
                 f"Restart the VM (`az vm restart {_az(inventory)}`); if the agent stays Not Ready, repair it "
                 f"offline with `azrdp rescue {inventory.target.name} -g {inventory.target.resource_group}` "
                 f"(a temporary rescue VM, about 10-30 minutes), with `az vm repair` and the win-GA-fix script, "
                 f"or through the serial console.")


def check_boot_diagnostics(inventory: Inventory) -> Check:
    facts = boot_diagnostics(inventory)
    if facts["enabled"]:
        where = "managed storage" if facts["storage"] == "managed" else f"storage account {facts['storage']}"
        return Check("boot.diagnostics", Status.PASS, f"enabled ({where})", facts)
    return Check("boot.diagnostics", Status.WARN, "disabled: no console screenshot or serial log", facts,
                 f"Enable them with `az vm boot-diagnostics enable {_az(inventory)}`.")


def check_public_ip(inventory: Inventory, path: RdpPath) -> Check:
    target = inventory.target
    no_public = (f"From a machine inside the virtual network run `azrdp diagnose {target.name} -g "
                 f"{target.resource_group} --host PRIVATE_IP`, or connect through Azure Bastion.")
    if path.public_ip is None:
        return Check("net.public_ip", Status.WARN,
                     "none: the wire probe must run from inside the network", {"private_ip": path.private_ip},
                     no_public)
    if path.public_ip.error is not None:
        return Check("net.public_ip", Status.ERROR, f"public IP {path.public_ip.name} could not be read: "
                     f"{path.public_ip.error.message}", {"id": path.public_ip.id},
                     "Check that the public IP resource still exists and is attached to the NIC.")
    address = path.public_address
    details = {"address": address, "name": path.public_ip.name, "private_ip": path.private_ip,
               "allocation": path.public_ip.properties.get("publicIPAllocationMethod")}
    if not address:
        if power_state(inventory) != "running":   # a Dynamic address is released while deallocated
            return Check("net.public_ip", Status.WARN, f"{path.public_ip.name} has no address while the VM is "
                         f"{power_state(inventory) or 'not running'} (a dynamic address is assigned when it starts)",
                         details, f"Start the VM (`az vm start {_az(inventory)}`); its address may differ from "
                                  "the one it had before.")
        return Check("net.public_ip", Status.WARN, f"{path.public_ip.name} has no address yet "
                     "(a dynamic address is assigned when the VM runs)", details, no_public)
    return Check("net.public_ip", Status.PASS, f"{address} ({path.public_ip.name})", details)


def _vnet_prefixes(path: RdpPath) -> tuple[str, ...]:
    prefixes: list[str] = []
    if path.vnet is not None and path.vnet.body is not None:
        props = path.vnet.properties
        prefixes += (props.get("addressSpace") or {}).get("addressPrefixes") or []
        for peering in props.get("virtualNetworkPeerings") or []:
            remote = ((peering.get("properties") or {}).get("remoteAddressSpace") or {})
            prefixes += remote.get("addressPrefixes") or []
    elif path.subnet is not None and path.subnet.body is not None:
        props = path.subnet.properties
        prefixes += props.get("addressPrefixes") or ([props["addressPrefix"]] if props.get("addressPrefix") else [])
    return tuple(prefixes)


def nsg_checks(inventory: Inventory, path: RdpPath, *, port: int, source_ip: str | None) -> list[Check]:
    """nsg.subnet, nsg.nic and nsg.effective for TCP ``port`` from ``source_ip``."""
    ids = ("nsg.subnet", "nsg.nic", "nsg.effective")
    if path.nic is None or path.nic.body is None:
        reason = (f"network interface {path.nic.name} could not be read: {path.nic.error.message}"
                  if path.nic is not None and path.nic.error else "the VM has no network interface")
        return [Check(i, Status.ERROR, f"cannot evaluate: {reason}", {}) for i in ids]
    subnet_nsg, subnet_problem = _attached_nsg(inventory, path.subnet, "subnet",
                                               (path.ipconfig_properties.get("subnet") or {}).get("id"))
    nic_nsg, nic_problem = _attached_nsg(inventory, path.nic, "NIC", path.nic.id)
    private_ip = path.private_ip or "0.0.0.0"
    flow = Flow(private_ip, port=port, source_ip=source_ip, destination_asgs=path.asgs(),
                virtual_network=_vnet_prefixes(path))
    effective = evaluate_inbound(subnet_nsg, nic_nsg, flow)
    where = {"nic": path.nic.name, "ip_configuration": path.ipconfig.get("name"), "private_ip": path.private_ip,
             "port": port, "source": flow.source}
    checks = [
        subnet_problem or _level_check("nsg.subnet", effective.subnet, flow, where),
        nic_problem or _level_check("nsg.nic", effective.nic, flow, where),
    ]
    problem = subnet_problem or nic_problem
    if problem is not None:
        checks.append(Check("nsg.effective", Status.ERROR, "cannot evaluate: " + problem.summary, where))
    else:
        checks.append(_effective_check(effective, flow, where))
    return checks


def _attached_nsg(inventory: Inventory, holder: Resource | None, level: str,
                  holder_id: str | None) -> tuple[SecurityGroup | None, Check | None]:
    check_id = "nsg.subnet" if level == "subnet" else "nsg.nic"
    if holder is None or holder.body is None:
        error = holder.error.message if holder is not None and holder.error else "it was not returned"
        return None, Check(check_id, Status.ERROR, f"the {level} {_name(holder_id)} could not be read: {error}",
                           {"id": holder_id})
    ref = (holder.properties.get("networkSecurityGroup") or {}).get("id")
    if not ref:
        return None, None
    nsg = inventory.get(ref)
    if nsg is None or nsg.body is None:
        nsg_error = nsg.error if nsg is not None else None
        why = "which does not exist (deleted?)" if isinstance(nsg_error, NotFoundError) else \
            f"which could not be read: {nsg_error.message if nsg_error else 'it was not returned'}"
        try:
            rg = parse_resource_id(holder.id).resource_group
        except ValueError:
            rg = inventory.target.resource_group
        if level == "subnet":
            fix = (f"Attach an existing NSG to the subnet or remove the dangling association: "
                   f"`az network vnet subnet update -g {rg} --vnet-name VNET -n {holder.name} "
                   f"--network-security-group NSG`.")
        else:
            fix = (f"Attach an existing NSG to the NIC or remove the dangling association: "
                   f"`az network nic update -g {rg} -n {holder.name} --network-security-group NSG`.")
        return None, Check(check_id, Status.ERROR, f"the {level} {holder.name} references NSG {_name(ref)}, {why}",
                           {"nsg": ref, "error": nsg_error.message if nsg_error else None}, fix)
    return SecurityGroup.from_arm(nsg.body), None


def _name(resource_id: str | None) -> str:
    return (resource_id or "?").rstrip("/").rsplit("/", 1)[-1]


def _level_check(check_id: str, decision: Decision, flow: Flow, where: dict[str, Any]) -> Check:
    details = {**where, **decision.to_dict()}
    summary = decision.describe(flow)
    if decision.allowed:
        return Check(check_id, Status.PASS, summary, details)
    if any(r.allows for r in decision.conditional):
        return Check(check_id, Status.WARN, summary, details,
                     "Pass --source-ip YOUR_PUBLIC_IP to evaluate the address you connect from.")
    return Check(check_id, Status.FAIL, summary, details, _open_remedy(decision, flow))


def _effective_check(effective: Any, flow: Flow, where: dict[str, Any]) -> Check:
    details = {**where, "allowed": effective.allowed, "subnet": effective.subnet.to_dict(),
               "nic": effective.nic.to_dict()}
    deciding = effective.deciding
    what = f"TCP {flow.port} from {flow.source}"
    if effective.allowed:
        levels = [d for d in (effective.subnet, effective.nic) if d.nsg is not None]
        by = "; ".join(f"{_LEVEL[d.level]} NSG {d.nsg.name} rule {d.rule.label()}" for d in levels if d.rule)
        return Check("nsg.effective", Status.PASS, f"{what} is allowed" + (f" ({by})" if by else " (no NSG)"),
                     details)
    label = deciding.rule.label() if deciding.rule else "no matching rule"
    summary = f"{what} is blocked by the {_LEVEL[deciding.level]} NSG {deciding.nsg.name if deciding.nsg else '?'}: " \
              f"rule {label}"
    conditional = [d for d in (effective.subnet, effective.nic) if not d.allowed and any(r.allows for r in d.conditional)]
    if len(conditional) == sum(1 for d in (effective.subnet, effective.nic) if not d.allowed):
        return Check("nsg.effective", Status.WARN, summary + " (some sources are allowed)", details,
                     "Pass --source-ip YOUR_PUBLIC_IP to evaluate the address you connect from.")
    return Check("nsg.effective", Status.FAIL, summary, details, f"See nsg.{deciding.level} above.")


def _open_remedy(decision: Decision, flow: Flow) -> str:
    nsg = decision.nsg
    rule = decision.rule
    if nsg is None or rule is None:
        return "Add an inbound rule that allows the RDP port from your address."
    try:
        rg = parse_resource_id(nsg.id).resource_group
    except ValueError:
        rg = "RESOURCE_GROUP"
    source = f"{flow.source_ip}/32" if flow.source_ip and ":" not in flow.source_ip else (flow.source_ip or "YOUR_PUBLIC_IP")
    priority = free_priority(nsg, below=rule.priority)
    if priority is None:
        return (f"Rule {rule.name} (priority {rule.priority}) denies the RDP port on NSG {nsg.name}: narrow or remove it, "
                f"then allow TCP {flow.port} from your address only (or use just-in-time access).")
    return (f"Allow RDP from your address only (or use just-in-time access): `az network nsg rule create -g {rg} "
            f"--nsg-name {nsg.name} -n AllowRDPFromMyIP --priority {priority} --direction Inbound --access Allow "
            f"--protocol Tcp --source-address-prefixes {source} --destination-port-ranges {flow.port}`; "
            f"never open it to Any or Internet.")


def azure_checks(inventory: Inventory, path: RdpPath) -> list[Check]:
    return [check_os(inventory), check_power(inventory), check_provisioning(inventory), check_agent(inventory),
            check_boot_diagnostics(inventory), check_public_ip(inventory, path)]
