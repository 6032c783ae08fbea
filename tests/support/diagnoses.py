"""Diagnoses built the way ``azrdp.diagnose`` builds them, without any I/O: ARM bodies shaped like
the REST examples (tests/arm-examples: VirtualMachines_Get/_InstanceView, NetworkInterfaces_Get,
Subnets_Get, NetworkSecurityGroups_Get, PublicIPAddresses_Get) go through the real pure checks
(``azrdp.azure.checks``), a diagnose result (``payload_samples``) through the real guest checks,
and a wire outcome becomes a real ``ProbeResult``. The planner is then fed exactly the evidence
the CLI would feed it, one fact changed per table row."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from azrdp.azure.checks import azure_checks, nsg_checks, rdp_path, vm_facts
from azrdp.azure.inventory import Inventory, Resource
from azrdp.checks import Check, Status
from azrdp.diagnose import Diagnosis
from azrdp.guest import GuestDiagnosis
from azrdp.guest.checks import guest_checks
from azrdp.rdp.certinfo import CertInfo
from azrdp.rdp.checks import rdp_checks
from azrdp.rdp.wire_probe import ProbeResult
from azrdp.target import Target, id_key
from tests.support.payload_samples import CERT_OK, CERT_OLD

SUB = "00000000-0000-0000-0000-0000000000aa"
RG, VM = "rg-plan", "vm-plan"
PRIVATE_IP = "10.0.0.4"
PUBLIC_IP = "203.0.113.10"
AGENT_TIME = "2026-04-01T09:00:00+00:00"
LAST_OPERATION = "2026-04-01T08:00:00+00:00"   # the agent's report is newer: not rebooting


def _rg_id(kind: str, name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/{kind}/{name}"


VM_ID = _rg_id("Microsoft.Compute/virtualMachines", VM)
NIC_ID = _rg_id("Microsoft.Network/networkInterfaces", f"{VM}-nic")
VNET_ID = _rg_id("Microsoft.Network/virtualNetworks", "vnet-plan")
SUBNET_ID = f"{VNET_ID}/subnets/default"
PIP_ID = _rg_id("Microsoft.Network/publicIPAddresses", f"{VM}-ip")
NIC_NSG_ID = _rg_id("Microsoft.Network/networkSecurityGroups", f"{VM}-nsg")
SUBNET_NSG_ID = _rg_id("Microsoft.Network/networkSecurityGroups", "subnet-nsg")


def rule(name: str, priority: int, access: str, *, port: str = "3389", source: str = "*") -> dict[str, Any]:
    """One inbound TCP security rule (SecurityRules_Get)."""
    return {"name": name, "properties": {
        "protocol": "Tcp", "sourceAddressPrefix": source, "sourcePortRange": "*",
        "destinationAddressPrefix": "*", "destinationPortRange": port, "access": access,
        "priority": priority, "direction": "Inbound", "provisioningState": "Succeeded"}}


ALLOW_RDP = rule("allow-rdp", 300, "Allow")
DENY_RDP = rule("deny-rdp", 200, "Deny")


@dataclass
class Layout:
    """The ARM facts of one VM; each table row changes one of them."""

    power: str = "running"
    agent: str | None = "Ready"            # the vmAgent's displayStatus; None: not reported
    agent_time: str = AGENT_TIME
    last_operation: str = LAST_OPERATION
    nic_rules: list[dict[str, Any]] = field(default_factory=lambda: [copy.deepcopy(ALLOW_RDP)])
    subnet_rules: list[dict[str, Any]] | None = None   # None: no NSG on the subnet


def vm_body(layout: Layout) -> dict[str, Any]:
    statuses = [{"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded",
                 "time": layout.last_operation},
                {"code": f"PowerState/{layout.power}", "level": "Info", "displayStatus": f"VM {layout.power}"}]
    agent = ({"vmAgentVersion": "2.7.41491.1102", "statuses": [
        {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": layout.agent,
         "message": "GuestAgent is running and processing the extensions.", "time": layout.agent_time}]}
        if layout.agent else {})
    return {"id": VM_ID, "name": VM, "location": "westeurope", "type": "Microsoft.Compute/virtualMachines",
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
                "storageProfile": {"osDisk": {"osType": "Windows", "name": f"{VM}-os"}},
                "osProfile": {"computerName": VM, "windowsConfiguration": {"provisionVMAgent": True}},
                "networkProfile": {"networkInterfaces": [{"id": NIC_ID, "properties": {"primary": True}}]},
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
                "provisioningState": "Succeeded",
                "instanceView": {"computerName": VM, "osName": "Windows Server 2022 Datacenter",
                                 "vmAgent": agent, "statuses": statuses}}}


def _nsg(nsg_id: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": nsg_id, "name": nsg_id.rsplit("/", 1)[-1], "location": "westeurope",
            "properties": {"securityRules": copy.deepcopy(rules), "provisioningState": "Succeeded"}}


def inventory(layout: Layout) -> Inventory:
    nic = {"id": NIC_ID, "name": f"{VM}-nic", "properties": {
        "networkSecurityGroup": {"id": NIC_NSG_ID},
        "ipConfigurations": [{"name": "ipconfig1", "properties": {
            "primary": True, "privateIPAddress": PRIVATE_IP, "privateIPAllocationMethod": "Dynamic",
            "subnet": {"id": SUBNET_ID}, "publicIPAddress": {"id": PIP_ID}}}]}}
    subnet: dict[str, Any] = {"id": SUBNET_ID, "name": "default", "properties": {"addressPrefix": "10.0.0.0/24"}}
    if layout.subnet_rules is not None:
        subnet["properties"]["networkSecurityGroup"] = {"id": SUBNET_NSG_ID}
    bodies = {
        NIC_ID: ("nic", nic), SUBNET_ID: ("subnet", subnet),
        VNET_ID: ("vnet", {"id": VNET_ID, "name": "vnet-plan",
                           "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}}}),
        PIP_ID: ("public_ip", {"id": PIP_ID, "name": f"{VM}-ip", "properties": {
            "publicIPAllocationMethod": "Static", "ipAddress": PUBLIC_IP}}),
        NIC_NSG_ID: ("nsg", _nsg(NIC_NSG_ID, layout.nic_rules)),
    }
    if layout.subnet_rules is not None:
        bodies[SUBNET_NSG_ID] = ("nsg", _nsg(SUBNET_NSG_ID, layout.subnet_rules))
    resources = {id_key(rid): Resource(rid, kind, body) for rid, (kind, body) in bodies.items()}
    return Inventory(Target(VM, RG), SUB, vm_body(layout), resources)


def served_cert(*, expired: bool) -> CertInfo:
    """The certificate the RDP port served (an expired one for ``cert_expired``)."""
    not_after = datetime(2025, 11, 30, 10, 2, 11, tzinfo=timezone.utc) if expired else \
        datetime(2026, 7, 2, 8, 14, 55, tzinfo=timezone.utc)
    return CertInfo(subject=f"CN={VM}", issuer=f"CN={VM}", common_name=VM, self_signed=True,
                    not_before=not_after - timedelta(days=180), not_after=not_after,
                    days_left=-122 if expired else 92, expired=expired, not_yet_valid=False,
                    thumbprint=CERT_OLD if expired else CERT_OK, sha256="00" * 32, serial="01", key_type="RSA",
                    key_size=2048, signature_algorithm="sha256WithRSAEncryption")


def probe(outcome: str, port: int = 3389) -> ProbeResult:
    """What the wire probe saw: an RDP stack with TLS serves a certificate, the rest do not."""
    tls = outcome in ("answers", "cert_expired")
    return ProbeResult(PUBLIC_IP, port, outcome, tls_version="TLSv1.2" if tls else None,
                       cipher="ECDHE-RSA-AES256-GCM-SHA384" if tls else None,
                       certificate=served_cert(expired=outcome == "cert_expired") if tls else None)


def diagnosis(layout: Layout | None = None, *, guest: dict[str, Any] | None = None,
              wire: str | None = "answers", run_error: str | None = None,
              port: int = 3389) -> Diagnosis:
    """The diagnosis of a VM laid out as ``layout``, with ``guest`` read by the diagnose payload
    (None: not read), the wire probe's ``wire`` outcome (None: not probed) and, with
    ``run_error``, a guest.run ERROR (Run Command failed). It carries the inventory and RDP path
    diagnose read, as diagnose's does (the planner places NSG rules from them)."""
    layout = layout or Layout()
    inv = inventory(layout)
    path = rdp_path(inv)
    probed = probe(wire, port) if wire is not None else None
    checks: list[Check] = azure_checks(inv, path)
    checks += nsg_checks(inv, path, port=port, source_ip=None)
    if probed is not None:
        checks += rdp_checks(probed)
    guest_diagnosis = None
    if guest is not None:
        guest_diagnosis = GuestDiagnosis(guest, guest_checks(guest, probe_result=probed, rdp_port=port), run=None)
        checks += guest_diagnosis.checks
    if run_error is not None:
        checks.append(Check("guest.run", Status.ERROR, run_error))
    return Diagnosis(vm_facts(inv, path), checks, port=port, probe_result=probed, guest=guest_diagnosis,
                     inventory=inv, path=path)
