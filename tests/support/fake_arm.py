"""An ARM stand-in on `responses`, for driving the REAL azure-mgmt clients at the HTTP level.

Resources are stored by ID and served case-insensitively, as ARM does. Bodies are built from
Microsoft's REST examples in tests/arm-examples (the shapes the SDK parses), and requests
must carry the api-versions the installed SDK sends. Unknown resources get ARM's 404 envelope;
``fail()`` queues error answers (403, 429 with Retry-After, ...) for one path.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses

from tests.support.arm_api import BASE, COMPUTE_API, NETWORK_API, SUB

EXAMPLES = Path(__file__).resolve().parent.parent / "arm-examples"   # tests/arm-examples, in the repo



def example(name: str, status: str = "200") -> dict:
    folder = "compute" if name.startswith("Virtual") else "network"
    document = json.loads((EXAMPLES / folder / f"{name}.json").read_text())
    return copy.deepcopy(document["responses"][status]["body"])


def rid(rg: str, path: str, sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{path}"


def rule(name: str, priority: int, access: str = "Allow", *, port: str = "3389", source: str = "*",
         protocol: str = "Tcp", direction: str = "Inbound", **extra) -> dict:
    props = {"access": access, "destinationAddressPrefix": "*", "destinationPortRange": port,
             "direction": direction, "priority": priority, "provisioningState": "Succeeded",
             "sourceAddressPrefix": source, "sourcePortRange": "*", "protocol": protocol}
    props.update(extra)
    return {"name": name, "properties": props}


def nsg_body(nsg_id: str, rules: list[dict]) -> dict:
    body = example("NetworkSecurityGroups_Get")
    name = nsg_id.rsplit("/", 1)[1]
    body["id"], body["name"] = nsg_id, name
    for default in body["properties"]["defaultSecurityRules"]:
        default["id"] = f"{nsg_id}/defaultSecurityRules/{default['name']}"
    body["properties"]["securityRules"] = [
        {**r, "id": f"{nsg_id}/securityRules/{r['name']}"} for r in rules]
    return body


@dataclass
class VmSpec:
    """One Windows VM with one NIC, as `az vm create` lays it out (all in one resource group)."""

    name: str = "vm1"
    rg: str = "rg1"
    power: str = "running"
    agent: str | None = "Ready"
    os_type: str = "Windows"
    boot_diagnostics: bool = True
    # The serial log behind retrieveBootDiagnosticsData: a Windows boot with SAC on, as Azure's
    # Windows images start (no "Microsoft Azure VM Health Report": it is written only without SAC).
    serial_log: str = "Windows Boot Manager\nComputer is booting, SAC started and initialized.\n"
    public_ip: str | None = "127.0.0.1"     # None: no public IP resource at all
    private_ip: str = "10.0.0.4"
    subnet_nsg_rules: list[dict] | None = None  # None: no NSG on the subnet
    nic_nsg_rules: list[dict] | None = field(default_factory=lambda: [rule("RDP", 300)])
    nic_rg: str | None = None                # put the NIC (and its NSG) in another group

    @property
    def vm_id(self) -> str:
        return rid(self.rg, f"Microsoft.Compute/virtualMachines/{self.name}")

    @property
    def nic_id(self) -> str:
        return rid(self.nic_rg or self.rg, f"Microsoft.Network/networkInterfaces/{self.name}VMNic")

    @property
    def vnet_id(self) -> str:
        return rid(self.rg, f"Microsoft.Network/virtualNetworks/{self.name}VNET")

    @property
    def subnet_id(self) -> str:
        return f"{self.vnet_id}/subnets/{self.name}Subnet"

    @property
    def subnet_nsg_id(self) -> str:
        return rid(self.rg, f"Microsoft.Network/networkSecurityGroups/{self.name}SubnetNSG")

    @property
    def nic_nsg_id(self) -> str:
        return rid(self.nic_rg or self.rg, f"Microsoft.Network/networkSecurityGroups/{self.name}NSG")

    @property
    def pip_id(self) -> str:
        return rid(self.rg, f"Microsoft.Network/publicIPAddresses/{self.name}PublicIP")


def vm_body(spec: VmSpec) -> dict:
    body = example("VirtualMachines_Get")
    body.pop("managedBy", None)
    body.pop("resources", None)
    body["id"], body["name"], body["location"] = spec.vm_id, spec.name, "westeurope"
    props = body["properties"]
    for key in ("availabilitySet", "proximityPlacementGroup", "applicationProfile", "userData"):
        props.pop(key, None)
    props["storageProfile"]["osDisk"]["osType"] = spec.os_type
    props["storageProfile"]["dataDisks"] = []
    if spec.os_type != "Windows":
        props["osProfile"] = {"computerName": spec.name, "adminUsername": "azureuser",
                              "linuxConfiguration": {"provisionVMAgent": True}}
    props["networkProfile"] = {"networkInterfaces": [{"id": spec.nic_id, "properties": {"primary": True}}]}
    props["diagnosticsProfile"] = {"bootDiagnostics": {"enabled": spec.boot_diagnostics}}
    view = example("VirtualMachines_InstanceView")
    view.pop("patchStatus", None)
    view["computerName"] = spec.name
    view["statuses"][1] = {"code": f"PowerState/{spec.power}", "level": "Info",
                           "displayStatus": f"VM {spec.power}"}
    if spec.agent is None or spec.power != "running":
        view.pop("vmAgent")
    elif spec.agent != "Ready":
        view["vmAgent"]["statuses"][0].update({"code": "ProvisioningState/Unavailable", "level": "Warning",
                                               "displayStatus": spec.agent,
                                               "message": "VM Agent is unresponsive."})
    props["instanceView"] = view
    return body


def nic_body(spec: VmSpec) -> dict:
    body = example("NetworkInterfaces_Get")
    body["id"], body["name"], body["location"] = spec.nic_id, spec.nic_id.rsplit("/", 1)[1], "westeurope"
    props = body["properties"]
    config = props["ipConfigurations"][0]
    config["id"] = f"{spec.nic_id}/ipConfigurations/ipconfig1"
    config["properties"]["privateIPAddress"] = spec.private_ip
    config["properties"]["subnet"]["id"] = _arm_casing(spec.subnet_id)
    if spec.public_ip is None:
        config["properties"].pop("publicIPAddress")
    else:
        config["properties"]["publicIPAddress"]["id"] = spec.pip_id
    props["ipConfigurations"] = [config]
    props["virtualMachine"]["id"] = spec.vm_id
    props.pop("dscpConfiguration", None)
    if spec.nic_nsg_rules is None:
        props.pop("networkSecurityGroup")
    else:
        props["networkSecurityGroup"]["id"] = _arm_casing(spec.nic_nsg_id)
    return body


def _arm_casing(resource_id: str) -> str:
    """ARM's habit: the resource group upper-cased inside references (IDs compare case-insensitively)."""
    return re.sub(r"(/resourceGroups/)([^/]+)", lambda m: m.group(1) + m.group(2).upper(), resource_id)


def subnet_body(spec: VmSpec) -> dict:
    body = example("Subnets_Get")
    body["id"], body["name"] = spec.subnet_id, spec.subnet_id.rsplit("/", 1)[1]
    body["properties"]["addressPrefix"] = "10.0.0.0/24"
    body["properties"]["ipConfigurations"] = [{"id": f"{spec.nic_id}/ipConfigurations/ipconfig1"}]
    if spec.subnet_nsg_rules is not None:
        body["properties"]["networkSecurityGroup"] = {"id": spec.subnet_nsg_id}
    return body


def pip_body(spec: VmSpec) -> dict:
    body = example("PublicIPAddresses_Get")
    body["id"], body["name"], body["location"] = spec.pip_id, spec.pip_id.rsplit("/", 1)[1], "westeurope"
    body["properties"].pop("ddosSettings", None)
    body["properties"]["ipConfiguration"]["id"] = f"{spec.nic_id}/ipConfigurations/ipconfig1"
    body["properties"]["ipAddress"] = spec.public_ip
    body["properties"]["publicIPAllocationMethod"] = "Static"
    return body


def vnet_body(spec: VmSpec) -> dict:
    return {"id": spec.vnet_id, "name": spec.vnet_id.rsplit("/", 1)[1], "location": "westeurope",
            "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                           "subnets": [subnet_body(spec)], "provisioningState": "Succeeded"}}


@dataclass
class Call:
    method: str
    path: str
    query: dict
    body: Any = None      # the request's JSON body, when it has one


CONFLICT = ("Run command extension execution is in progress. Please wait for completion before invoking a "
            "run command.")   # ARM's 409 while another Run Command runs on the VM


@dataclass
class ScriptedRun:
    """One Run Command answered exactly as a test scripts it: ``polls`` InProgress status answers
    (each with ``poll_headers``, e.g. Retry-After) before Succeeded, or InProgress ``forever``;
    then ``final`` (the whole value[] body) from the Location GET."""

    final: dict
    polls: int = 1
    poll_headers: dict = field(default_factory=dict)
    forever: bool = False


class FakeArm:
    """Serve stored ARM resources through `responses` (activate with ``with FakeArm() as arm``)."""

    def __init__(self, base: str = BASE, *, latency: float = 0.0):
        self.base = base
        self.latency = latency  # seconds added to every answer (benchmarks only)
        self.resources: dict[str, dict] = {}
        self.groups: set[str] = set()
        self.failures: dict[tuple[str, str], list[tuple[int, dict, dict]]] = {}
        self.sticky: set[tuple[str, str]] = set()   # failures that answer every later request too
        self.calls: list[Call] = []
        self.boot_diagnostics: dict[str, dict] = {}
        self.subscriptions: list[tuple[str, str]] = [(SUB, "Production")]
        # What each VM's guest answers to a Run Command (vm id key -> StdOut text); None: healthy.
        self.guest_stdout: dict[str, str] = {}
        self.run_commands: list[dict] = []
        self.operations: dict[str, ScriptedRun] = {}   # Run Command operation path -> its answers
        self.page_size = 50  # items per page of a list (ARM pages long lists with nextLink)
        # Per-VM queue of guest answers, used before guest_stdout: each a StdOut text, a function
        # of the Run Command request body (so a repair answer can follow the Steps asked for), or a
        # ScriptedRun (the wire answers themselves).
        self.guest_answers: dict[str, list] = {}
        self.specs: dict[str, VmSpec] = {}
        self.power_calls: list[tuple[str, str]] = []          # (action, vm name): restart | start
        self.on_power: dict[str, Callable[[str], None]] = {}  # vm id key -> hook(action) after it succeeds
        self.power_failures: dict[tuple[str, str], dict] = {}  # (action, vm id key) -> ARM error: LRO Failed
        self.rule_calls: list[tuple[str, str, str]] = []      # (PUT | DELETE, nsg name, rule name)
        self.lro_status: dict[str, dict] = {}                 # other async operations -> status body
        self.mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        pattern = re.compile(re.escape(base) + r"/.*")
        for method in ("GET", "POST", "PUT", "DELETE"):
            self.mock.add_callback(method, pattern, callback=self._dispatch)

    def __enter__(self) -> FakeArm:
        self.mock.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.mock.__exit__(*exc)

    # -- state ----------------------------------------------------------------------------------
    def put(self, body: dict) -> dict:
        self.resources[body["id"].lower()] = body
        self.groups.add(body["id"].split("/")[4].lower())
        return body

    def delete(self, resource_id: str) -> None:
        self.resources.pop(resource_id.lower(), None)

    def add_vm(self, spec: VmSpec) -> VmSpec:
        self.specs[spec.vm_id.lower()] = spec
        self.put(vm_body(spec))
        self.put(nic_body(spec))
        self.put(subnet_body(spec))
        self.put(vnet_body(spec))
        if spec.public_ip is not None:
            self.put(pip_body(spec))
        if spec.nic_nsg_rules is not None:
            self.put(nsg_body(spec.nic_nsg_id, spec.nic_nsg_rules))
        if spec.subnet_nsg_rules is not None:
            self.put(nsg_body(spec.subnet_nsg_id, spec.subnet_nsg_rules))
        return spec

    def fail(self, resource_id: str, status: int, code: str, message: str, *, method: str = "GET",
             headers: dict | None = None, times: int | None = 1, body: dict | None = None) -> None:
        """Answer the next ``times`` ``method`` requests for the path with this error (None: every
        later one: the last queued failure then stays)."""
        envelope = body or {"error": {"code": code, "message": message}}
        queue = self.failures.setdefault((method, resource_id.lower()), [])
        queue.extend([(status, headers or {}, envelope)] * (times or 1))
        if times is None:
            self.sticky.add((method, resource_id.lower()))

    def conflict(self, vm_id: str, *, times: int | None = 1) -> None:
        """ARM's 409 Conflict for the next Run Command POSTs on the VM (another one is running)."""
        self.fail(f"{vm_id}/runCommand", 409, "Conflict", CONFLICT, method="POST", times=times)

    def accept_run_command(self, vm_id: str, final: dict, *, polls: int = 1, poll_headers: dict | None = None,
                           forever: bool = False) -> None:
        """Queue the wire answer of the VM's next Run Command (see :class:`ScriptedRun`)."""
        self.guest_answers.setdefault(vm_id.lower(), []).append(
            ScriptedRun(final, polls, poll_headers or {}, forever))

    def posts(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST"]

    def sent_bodies(self) -> list[Any]:
        """The bodies of every POST sent (refused ones too)."""
        return [c.body for c in self.posts()]

    # -- serving --------------------------------------------------------------------------------
    def _dispatch(self, request):
        if self.latency:
            time.sleep(self.latency)
        parts = urlsplit(request.url)
        path = parts.path[len(urlsplit(self.base).path):] if urlsplit(self.base).path else parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.calls.append(Call(request.method, path, query, json.loads(request.body) if request.body else None))
        key = path.rstrip("/").lower()
        queued = self.failures.get((request.method, key))
        if queued:
            status, headers, body = queued[0] if len(queued) == 1 and (request.method, key) in self.sticky \
                else queued.pop(0)
            return status, {"Content-Type": "application/json", **headers}, json.dumps(body)
        if key.startswith("/_blobs/") and request.method == "GET":     # boot-diagnostics blobs (SAS, no token)
            spec = next((v for v in self.specs.values() if key == f"/_blobs/{v.name.lower()}.serialconsole.log"), None)
            if spec is None:
                return 404, {}, ""
            return 200, {"Content-Type": "text/plain; charset=utf-8"}, spec.serial_log
        if key == "/subscriptions":
            value = [{"subscriptionId": i, "displayName": n, "state": "Enabled"} for i, n in self.subscriptions]
            return 200, {"Content-Type": "application/json"}, json.dumps({"value": value})
        wanted = COMPUTE_API if "/microsoft.compute/" in key else NETWORK_API
        if query.get("api-version") != wanted:
            return self._error(400, "InvalidApiVersionParameter", f"api-version {query.get('api-version')}")
        if request.method == "POST" and key.endswith("/runcommand"):
            return self._run_command(key.rsplit("/", 1)[0], request)
        if request.method == "POST" and key.rsplit("/", 1)[1] in ("restart", "start"):
            return self._power(*reversed(key.rsplit("/", 1)))
        if "/securityrules/" in key and request.method in ("PUT", "DELETE"):
            return self._security_rule(request.method, key, request)
        if request.method == "GET" and key.endswith("/instanceview") and key.rsplit("/", 1)[0] in self.resources:
            view = self.resources[key.rsplit("/", 1)[0]]["properties"]["instanceView"]
            return 200, {"Content-Type": "application/json"}, json.dumps(view)
        if key.startswith("/subscriptions/") and "/operations/" in key:
            return self._operation(key, query)
        if request.method == "POST" and key.endswith("/retrievebootdiagnosticsdata"):
            vm_key = key.rsplit("/", 1)[0]
            if vm_key not in self.resources:
                return self._not_found(vm_key)
            # Microsoft's REST example: both SAS URIs; by default on this fake's own blob path
            blob = f"{self.base}/_blobs/{self.specs[vm_key].name}" if vm_key in self.specs else None
            answer = self.boot_diagnostics.get(vm_key) or {
                "consoleScreenshotBlobUri": blob and f"{blob}.screenshot.bmp?sv=fake-sas",
                "serialConsoleLogBlobUri": blob and f"{blob}.serialconsole.log?sv=fake-sas"}
            return 200, {"Content-Type": "application/json"}, json.dumps(answer)
        segments = key.split("/")
        if len(segments) >= 5 and segments[4] not in self.groups:
            return self._error(404, "ResourceGroupNotFound", f"Resource group '{path.split('/')[4]}' could not be found.")
        if key.endswith("/providers/microsoft.network/networkinterfaces"):
            prefix = key + "/"
            items = [b for k, b in sorted(self.resources.items())
                     if k.startswith(prefix) and k.count("/") == prefix.count("/")]
            skip = int(query.get("$skiptoken") or 0)
            body = {"value": items[skip:skip + self.page_size]}
            if skip + self.page_size < len(items):  # ARM pages lists with nextLink
                body["nextLink"] = (f"{self.base}{path}?api-version={NETWORK_API}"
                                    f"&$skiptoken={skip + self.page_size}")
            return 200, {"Content-Type": "application/json"}, json.dumps(body)
        if key in self.resources:
            return 200, {"Content-Type": "application/json"}, json.dumps(self.resources[key])
        return self._not_found(key, path)

    def _run_command(self, vm_key: str, request):
        """Action Run Command as ARM answers it: 202 + Azure-AsyncOperation + Location; the status
        says Succeeded; the final GET of Location returns value[] with StdOut and StdErr."""
        if vm_key not in self.resources:
            return self._not_found(vm_key)
        from tests.support.payload_samples import healthy, result_line, run_command_value

        body = json.loads(request.body)
        self.run_commands.append(body)
        queued = self.guest_answers.get(vm_key)
        scripted = None
        if queued:
            answer = queued.pop(0)
            if isinstance(answer, ScriptedRun):
                scripted = answer
            else:
                self.guest_stdout[vm_key] = answer(body) if callable(answer) else answer
        op = f"{self.base}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/operations/" \
             f"rc{len(self.run_commands)}"
        self.operations[op.lower()[len(self.base):]] = scripted or ScriptedRun(
            run_command_value(self.guest_stdout.get(vm_key) or result_line(healthy())), polls=0)
        return 202, {"Azure-AsyncOperation": f"{op}?api-version={COMPUTE_API}",
                     "Location": f"{op}?monitor=true&api-version={COMPUTE_API}"}, ""

    def _async(self, status: dict, location: bool = True):
        """A 202 whose Azure-AsyncOperation answers ``status`` (and Location an empty 200)."""
        op = f"/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/operations/op{len(self.lro_status) + 1}"
        self.lro_status[op.lower()] = status
        headers = {"Azure-AsyncOperation": f"{self.base}{op}?api-version={NETWORK_API}"}
        if location:
            headers["Location"] = f"{self.base}{op}?monitor=true&api-version={NETWORK_API}"
        return headers

    def _power(self, action: str, vm_key: str):
        """restart / start: 202, then Succeeded (the VM runs, its agent Ready) or the queued failure."""
        if vm_key not in self.resources:
            return self._not_found(vm_key)
        self.power_calls.append((action, vm_key.rsplit("/", 1)[1]))
        failure = self.power_failures.get((action, vm_key))
        if failure:
            status = {"status": "Failed", "error": failure}
        else:
            status = {"status": "Succeeded"}
            spec = self.specs.get(vm_key)
            if spec is not None:
                spec.power, spec.agent = "running", spec.agent or "Ready"
                self.put(vm_body(spec))
            hook = self.on_power.get(vm_key)
            if hook is not None:
                hook(action)
        return 202, self._async(status), ""

    def _security_rule(self, method: str, key: str, request):
        """PUT (201 + Azure-AsyncOperation, provisioningState Updating) and DELETE (202) of one rule,
        kept in step with the NSG body's securityRules."""
        nsg_key, name = key.rsplit("/securityrules/", 1)
        if nsg_key not in self.resources:
            return self._not_found(nsg_key)
        nsg = self.resources[nsg_key]
        rules = nsg["properties"].setdefault("securityRules", [])
        name = request.url.split("?")[0].rsplit("/", 1)[1]
        self.rule_calls.append((method, nsg["name"], name))
        rules[:] = [r for r in rules if r["name"].lower() != name.lower()]
        if method == "DELETE":
            self.resources.pop(key, None)
            return 202, self._async({"status": "Succeeded"}), ""
        props = dict(json.loads(request.body)["properties"], provisioningState="Succeeded")
        stored = {"name": name, "id": f"{nsg['id']}/securityRules/{name}", "properties": props}
        rules.append(stored)
        self.resources[key] = stored
        body = {**stored, "properties": {**props, "provisioningState": "Updating"}}
        return 201, {"Content-Type": "application/json", **self._async({"status": "Succeeded"}, location=False)}, \
            json.dumps(body)

    def _operation(self, key: str, query: dict):
        if key in self.lro_status:
            if query.get("monitor") == "true":
                return 200, {"Content-Type": "application/json"}, ""
            return 200, {"Content-Type": "application/json"}, json.dumps(self.lro_status[key])
        run = self.operations.get(key)
        if run is None:
            return self._error(404, "NotFound", f"operation {key}")
        if query.get("monitor") == "true":
            return 200, {"Content-Type": "application/json"}, json.dumps(run.final)
        if run.forever or run.polls > 0:
            run.polls -= 1
            return 200, {"Content-Type": "application/json", **run.poll_headers}, json.dumps({"status": "InProgress"})
        return 200, {"Content-Type": "application/json"}, json.dumps({"status": "Succeeded"})

    def _not_found(self, key: str, path: str | None = None):
        path = path or key
        parts = path.strip("/").split("/")
        what = "/".join(parts[5:]) if len(parts) > 5 else path
        return self._error(404, "ResourceNotFound",
                           f"The Resource '{what}' under resource group '{parts[3]}' was not found. "
                           "For more details please go to https://aka.ms/ARMResourceNotFoundFix")

    @staticmethod
    def _error(status: int, code: str, message: str):
        return status, {"Content-Type": "application/json"}, json.dumps({"error": {"code": code, "message": message}})
