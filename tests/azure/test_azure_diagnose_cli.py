"""`azrdp diagnose` end to end: CliRunner, the real SDK clients, the ARM stand-in on loopback.

The command line reaches the stand-in the way a user reaches an emulator: AZRDP_ARM_ENDPOINT."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re

import pytest
from click.testing import CliRunner

from azrdp.cli import cli
from azrdp.payloads import payload
from tests.support.fake_arm import EXAMPLES, SUB, VmSpec, rule
from tests.support.payload_samples import healthy, result_line
from tests.support.rdp_peers import Listener, tls_rdp_server, write_cert

pytestmark = pytest.mark.usefixtures("cli_env")

HEADER = f"VM vm1 in rg1 (subscription {SUB}): Windows, {{power}}, westeurope, Standard_DS3_v2\n"
AZURE_OK = """\
Azure
  ok   vm.os              Windows (Windows Server 2016 Datacenter)
  ok   vm.power           running
  ok   vm.provisioning    Succeeded
  ok   vm.agent           Ready (version 2.7.41491.949)
  ok   boot.diagnostics   enabled (managed storage)
"""
NETWORK_OK = """\
Network
  ok   net.public_ip      127.0.0.1 (vm1PublicIP)
  ok   nsg.subnet         no NSG on the subnet: TCP 3389 from any Internet address passes this level
  ok   nsg.nic            NSG vm1NSG allows TCP 3389 from any Internet address: rule RDP (priority 300, Allow)
  ok   nsg.effective      TCP 3389 from any Internet address is allowed (NIC NSG vm1NSG rule RDP (priority 300, Allow))
"""
NO_PROBE = """\
Wire (RDP port)
  skip rdp.tcp            not probed (--no-probe)
"""
PERMISSION_MESSAGE = ("The client 'ops@contoso.com' with object id '11111111-1111-1111-1111-111111111111' does not "
                      "have authorization to perform action 'Microsoft.Network/networkSecurityGroups/read' over scope "
                      "'{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.")


def run(*args: str):
    return CliRunner().invoke(cli, ["diagnose", *args])


def progress_lines(stderr: str) -> list[str]:
    return [re.sub(r"^\S+Z ", "", line) for line in stderr.splitlines() if not line.startswith("Error:")]


def test_healthy_vm(arm, tmp_path):
    spec = arm.add_vm(VmSpec())
    now = dt.datetime.now(dt.timezone.utc)
    cert = write_cert(tmp_path, not_after=now + dt.timedelta(days=400, hours=12))
    thumbprint = hashlib.sha1(cert.der).hexdigest().upper()
    guest = healthy()  # the guest serves the same certificate the wire sees
    guest["cert"]["certs"][0].update(thumbprint=thumbprint, not_after=f"{cert.not_after:%Y-%m-%dT%H:%M:%SZ}")
    arm.guest_stdout[spec.vm_id.lower()] = result_line(guest)
    with Listener(tls_rdp_server(0x01, cert)) as rdp:
        result = run("vm1", "-g", "rg1", "--host", f"127.0.0.1:{rdp.port}")
    assert result.stdout == HEADER.format(power="running") + AZURE_OK + NETWORK_OK + f"""\
Wire (RDP port)
  ok   rdp.tcp            TCP connection to 127.0.0.1:{rdp.port} opened
  ok   rdp.negotiation    RDP answers, selecting SSL
  ok   rdp.tls            TLS handshake completed (TLSv1.3, TLS_AES_256_GCM_SHA384)
  ok   rdp.cert           certificate CN=rdp.test (thumbprint {thumbprint}) valid until {cert.not_after:%Y-%m-%d} (400 days left)
Guest (Windows)
  ok   guest.run          the guest diagnosis ran through Run Command
  ok   guest.termservice  TermService runs
  ok   guest.rdp_enabled  Remote Desktop connections are allowed
  ok   guest.port         RDP-Tcp listens on port 3389
  ok   guest.nla          Network Level Authentication is required, TLS in use
  ok   guest.listener     the RDP-Tcp listener is listening
  ok   guest.cert         RDP certificate {thumbprint} is valid
  ok   guest.machinekeys  MachineKeys has its default ACL and the RDP key is readable
  ok   guest.firewall     Windows Firewall allows TCP 3389
  ok   guest.sessions     1 seat(s) free
  ok   guest.licensing    not an RD Session Host: remote administration needs no RD licenses
  ok   guest.drain        new logons are allowed
  ok   guest.events       no RDP certificate, Schannel or TermService errors in the last 24 h
  ok   guest.reboot       no reboot is pending
Verdict: pass: no problem found
"""
    assert result.exit_code == 0
    assert progress_lines(result.stderr) == [
        "Reading VM rg1/vm1 and its network interfaces ...",
        "Reading 1 network security group, 1 subnet, 1 public IP address ...",
        f"Probing RDP on 127.0.0.1:{rdp.port} ...",
        "Reading the guest through Run Command (about 20-40 s) ...",
        # in a log, a wait is a line when it starts and one when it ends (and one every 30 s)
        "Run Command (read the guest) on vm1: sent (azrdp waits up to 15:00)",
        "Run Command (read the guest) on vm1: finished after 0:00"]
    # exactly one Run Command, and it is the shipped read-only diagnose payload
    assert len(arm.run_commands) == 1
    assert arm.run_commands[0]["commandId"] == "RunPowerShellScript"
    assert arm.run_commands[0]["script"] == payload("diagnose").script_lines()


def test_no_guest_sends_no_run_command(arm):
    arm.add_vm(VmSpec())
    result = run("vm1", "-g", "rg1", "--no-probe", "--no-guest")
    assert result.exit_code == 0 and arm.run_commands == []
    assert "Guest (Windows)" not in result.stdout


def test_a_guest_diagnosis_that_fails_is_one_error_and_the_rest_stands(arm):
    spec = arm.add_vm(VmSpec())
    arm.guest_stdout[spec.vm_id.lower()] = "Set-StrictMode: something went wrong before the result line"
    result = run("vm1", "-g", "rg1", "--no-probe")
    assert result.exit_code == 1
    assert AZURE_OK in result.stdout and NETWORK_OK in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("  ") and "guest." in line]
    assert len(lines) == 1 and lines[0].startswith("  ERR  guest.run          the guest diagnosis did not complete: ")


def test_nsg_blocked_vm_names_the_deciding_rule(arm):
    arm.add_vm(VmSpec(subnet_nsg_rules=[rule("DenyRDPFromInternet", 200, "Deny", source="Internet")]))
    result = run("vm1", "-g", "rg1", "--no-probe", "--no-guest")
    assert result.stdout == HEADER.format(power="running") + AZURE_OK + """\
Network
  ok   net.public_ip      127.0.0.1 (vm1PublicIP)
  FAIL nsg.subnet         NSG vm1SubnetNSG denies TCP 3389 from any Internet address: rule DenyRDPFromInternet (priority 200, Deny)
                          -> Allow RDP from your address only (or use just-in-time access): `az network nsg rule create -g rg1 --nsg-name vm1SubnetNSG -n AllowRDPFromMyIP --priority 199 --direction Inbound --access Allow --protocol Tcp --source-address-prefixes YOUR_PUBLIC_IP --destination-port-ranges 3389`; never open it to Any or Internet.
  ok   nsg.nic            NSG vm1NSG allows TCP 3389 from any Internet address: rule RDP (priority 300, Allow)
  FAIL nsg.effective      TCP 3389 from any Internet address is blocked by the subnet NSG vm1SubnetNSG: rule DenyRDPFromInternet (priority 200, Deny)
                          -> See nsg.subnet above.
""" + NO_PROBE + """\
Verdict: fail: nsg.subnet: NSG vm1SubnetNSG denies TCP 3389 from any Internet address: rule DenyRDPFromInternet (priority 200, Deny)
"""
    assert result.exit_code == 1


def test_json_names_the_blocking_rule_agent_and_boot_diagnostics(arm):
    arm.add_vm(VmSpec(subnet_nsg_rules=[rule("DenyRDPFromInternet", 200, "Deny", source="Internet")]))
    result = run("vm1", "-g", "rg1", "--no-probe", "--no-guest", "-o", "json")
    document = json.loads(result.stdout)
    assert result.exit_code == 1
    assert list(document)[:4] == ["schema_version", "vm", "port", "source"]
    assert document["schema_version"] == 1 and document["verdict"] == "fail"
    checks = {c["id"]: c for c in document["checks"]}
    assert list(checks) == ["vm.os", "vm.power", "vm.provisioning", "vm.agent", "boot.diagnostics", "net.public_ip",
                            "nsg.subnet", "nsg.nic", "nsg.effective", "rdp.tcp"]
    assert checks["nsg.effective"]["details"]["subnet"]["rule"] == {
        "name": "DenyRDPFromInternet", "priority": 200, "access": "Deny", "default": False}
    assert checks["vm.agent"]["status"] == "pass" and document["vm"]["agent"]["status"] == "Ready"
    assert document["vm"]["boot_diagnostics"] == {"enabled": True, "storage": "managed"}
    assert document["arm"] == {"round_trips": 3, "requests": 6}


def test_deallocated_vm(arm):
    arm.add_vm(VmSpec(power="deallocated"))
    result = run("vm1", "-g", "rg1")  # the probe is skipped by itself: nothing runs
    assert result.stdout == HEADER.format(power="deallocated") + """\
Azure
  ok   vm.os              Windows (Windows Server 2016 Datacenter)
  FAIL vm.power           deallocated: nothing answers RDP until the VM runs
                          -> Start it with `az vm start -g rg1 -n vm1` (`azrdp fix --start` will do this).
  ok   vm.provisioning    Succeeded
  skip vm.agent           not reported while the VM is not running
  ok   boot.diagnostics   enabled (managed storage)
""" + NETWORK_OK + """\
Wire (RDP port)
  skip rdp.tcp            not probed: the VM is not running
Guest (Windows)
  skip guest.run          guest not read: the VM is not running
Verdict: fail: vm.power: deallocated: nothing answers RDP until the VM runs
"""
    assert result.exit_code == 1


def test_agent_not_ready(arm):
    arm.add_vm(VmSpec(agent="Not Ready"))
    result = run("vm1", "-g", "rg1", "--no-probe")
    assert result.stdout == HEADER.format(power="running") + """\
Azure
  ok   vm.os              Windows (Windows Server 2016 Datacenter)
  ok   vm.power           running
  ok   vm.provisioning    Succeeded
  FAIL vm.agent           Not Ready (version 2.7.41491.949): Run Command cannot reach the guest
                          -> Restart the VM (`az vm restart -g rg1 -n vm1`); if the agent stays Not Ready, repair it offline with `azrdp rescue vm1 -g rg1` (a temporary rescue VM, about 10-30 minutes), with `az vm repair` and the win-GA-fix script, or through the serial console.
  ok   boot.diagnostics   enabled (managed storage)
  skip boot.health        no Microsoft Azure VM Health Report in the serial log
""" + NETWORK_OK + NO_PROBE + """\
Guest (Windows)
  skip guest.run          guest not read: Run Command needs a Ready VM agent (see vm.agent)
Verdict: fail: vm.agent: Not Ready (version 2.7.41491.949): Run Command cannot reach the guest
"""
    assert result.exit_code == 1


def test_vm_without_public_ip(arm):
    arm.add_vm(VmSpec(public_ip=None, boot_diagnostics=False))
    result = run("vm1", "-g", "rg1", "--no-guest")
    assert result.stdout == HEADER.format(power="running") + """\
Azure
  ok   vm.os              Windows (Windows Server 2016 Datacenter)
  ok   vm.power           running
  ok   vm.provisioning    Succeeded
  ok   vm.agent           Ready (version 2.7.41491.949)
  WARN boot.diagnostics   disabled: no console screenshot or serial log
                          -> Enable them with `az vm boot-diagnostics enable -g rg1 -n vm1`.
Network
  WARN net.public_ip      none: the wire probe must run from inside the network
                          -> From a machine inside the virtual network run `azrdp diagnose vm1 -g rg1 --host PRIVATE_IP`, or connect through Azure Bastion.
  ok   nsg.subnet         no NSG on the subnet: TCP 3389 from any Internet address passes this level
  ok   nsg.nic            NSG vm1NSG allows TCP 3389 from any Internet address: rule RDP (priority 300, Allow)
  ok   nsg.effective      TCP 3389 from any Internet address is allowed (NIC NSG vm1NSG rule RDP (priority 300, Allow))
Wire (RDP port)
  skip rdp.tcp            not probed: no public IP (probe from inside the network with --host PRIVATE_IP)
Verdict: warn: no problem found (2 warnings)
"""
    assert result.exit_code == 0


def test_nic_referencing_a_deleted_nsg_is_a_check_error(arm):
    spec = arm.add_vm(VmSpec())
    arm.delete(spec.nic_nsg_id)
    result = run("vm1", "-g", "rg1", "--no-probe", "--no-guest")
    assert result.stdout == HEADER.format(power="running") + AZURE_OK + """\
Network
  ok   net.public_ip      127.0.0.1 (vm1PublicIP)
  ok   nsg.subnet         no NSG on the subnet: TCP 3389 from any Internet address passes this level
  ERR  nsg.nic            the NIC vm1VMNic references NSG vm1NSG, which does not exist (deleted?)
                          -> Attach an existing NSG to the NIC or remove the dangling association: `az network nic update -g rg1 -n vm1VMNic --network-security-group NSG`.
  ERR  nsg.effective      cannot evaluate: the NIC vm1VMNic references NSG vm1NSG, which does not exist (deleted?)
""" + NO_PROBE + """\
Verdict: error: nsg.nic: the NIC vm1VMNic references NSG vm1NSG, which does not exist (deleted?)
"""
    assert result.exit_code == 1


def test_throttling_is_announced_and_retried(arm):
    spec = arm.add_vm(VmSpec())
    throttled = json.loads(open(EXAMPLES / "errors" /
                                "Compute_429_OperationNotAllowed_TooManyRequests.body.json").read())
    arm.fail(spec.vm_id, 429, "", "", headers={"Retry-After": "0"}, body={"error": throttled})
    result = run("vm1", "-g", "rg1", "--no-probe")
    assert result.exit_code == 0, result.output
    # the throttled operation group, and the wait's length (Retry-After: 0 still pauses 1 s, never a tight loop)
    assert "Azure is throttling Microsoft.Compute/HighCostGet (429) on virtualMachines/vm1; waiting 1 s before " \
        "attempt 2 ..." in progress_lines(result.stderr)


# -- user errors: one line, the documented exit code -------------------------------------------------
def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert result.stdout == ""
    return lines[0]


def test_not_signed_in_with_the_azure_cli(arm, tmp_path, monkeypatch):
    arm.add_vm(VmSpec())
    az = tmp_path / "az"
    az.write_text("#!/bin/sh\necho \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n")
    az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    result = run("vm1", "-g", "rg1", "--no-probe", "--auth", "cli")
    assert error_line(result) == ("Error: not signed in to Azure (--auth cli): Please run 'az login' to set up an "
                                  "account. Run `az login` (for another cloud first `az cloud set --name ...`), "
                                  "then run azrdp again.")
    assert result.exit_code == 3


def test_service_principal_variables_missing():
    result = run("vm1", "-g", "rg1", "--auth", "env")
    assert error_line(result) == ("Error: --auth env needs AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or "
                                  "AZURE_CLIENT_CERTIFICATE_PATH, which are not set. Set AZURE_TENANT_ID, "
                                  "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH) for a "
                                  "service principal.")
    assert result.exit_code == 3


def test_permission_denied_names_the_missing_action(arm):
    spec = arm.add_vm(VmSpec())
    arm.fail(spec.nic_nsg_id, 403, "AuthorizationFailed", PERMISSION_MESSAGE.format(scope=spec.nic_nsg_id))
    result = run("vm1", "-g", "rg1", "--no-probe")
    assert error_line(result) == (
        "Error: permission denied while reading network security group vm1NSG: the signed-in identity lacks "
        f"'Microsoft.Network/networkSecurityGroups/read' on {spec.nic_nsg_id}. Ask an owner of the subscription to "
        "assign a role with that action (scripts/azrdp-role.json lists exactly what azrdp needs).")
    assert result.exit_code == 3


def test_vm_not_found(arm):
    arm.add_vm(VmSpec())
    result = run("vm2", "-g", "rg1")
    assert error_line(result) == (f"Error: VM 'vm2' not found in resource group 'rg1' (subscription {SUB}). List the "
                                  "VMs there with `az vm list -g rg1 -o table`, or choose another subscription with "
                                  "--subscription.")
    assert result.exit_code == 4


def test_resource_group_not_found(arm):
    arm.add_vm(VmSpec())
    result = run("vm1", "-g", "rg9")
    assert error_line(result) == (f"Error: resource group 'rg9' not found in subscription {SUB}. Check "
                                  "-g/--resource-group, or choose another subscription with --subscription.")
    assert result.exit_code == 4


@pytest.mark.parametrize("args, problem", [
    (["vm1"], "VM 'vm1' needs its resource group (-g/--resource-group)."),
    (["/subscriptions/x/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines"],
     "'/subscriptions/x/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines' is not a VM resource ID."),
    (["rg1/vm1", "-g", "rg1"], "'rg1/vm1' is not a VM name or resource ID."),
    (["--ids", "vm1"], "--ids takes a resource ID, not 'vm1'."),
])
def test_malformed_vm_reference(args, problem):
    result = run(*args)
    assert error_line(result) == (f"Error: {problem} Name a VM as NAME -g RESOURCE_GROUP, or a resource ID "
                                  "/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/NAME.")
    assert result.exit_code == 2


@pytest.mark.parametrize("args, problem", [
    (["--probe-timeout", "0"], "--probe-timeout 0 must be more than 0 seconds."),
    (["--port", "0"], "--port 0 is not a TCP port (1-65535)."),
])
def test_bad_options_are_refused_before_anything_is_read(arm, args, problem):
    arm.add_vm(VmSpec())
    result = run("vm1", "-g", "rg1", *args)
    assert error_line(result) == f"Error: {problem}"
    assert result.exit_code == 2 and arm.calls == []


def test_a_resource_id_reaches_the_same_vm(arm):
    spec = arm.add_vm(VmSpec())
    by_id = run(spec.vm_id.upper().replace("/VIRTUALMACHINES/VM1", "/virtualMachines/vm1"), "--no-probe", "-o", "json")
    assert by_id.exit_code == 0, by_id.output
    assert json.loads(by_id.stdout)["vm"]["name"] == "vm1"


def test_linux_vm_is_a_clear_error(arm):
    arm.add_vm(VmSpec(os_type="Linux"))
    result = run("vm1", "-g", "rg1")
    assert error_line(result) == ("Error: VM rg1/vm1 runs Linux; azrdp diagnoses Remote Desktop on Windows VMs. "
                                  "For Linux use SSH, e.g. `az ssh vm -g rg1 -n vm1`.")
    assert result.exit_code == 2
