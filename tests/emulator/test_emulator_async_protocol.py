"""ARM's asynchronous-operation protocol, as the emulator speaks it (and the SDK's traps: a 202
without headers silently "succeeds"; an Azure-AsyncOperation status body alone does not carry
the Run Command result)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest

from azrdp.clock import ManualClock
from tests.support.arm_api import COMPUTE_API, NETWORK_API
from tests.support.emulator_support import session_for

RG, VM = "rg-azrdp-demo", "vm-web-01"
RUN = {"commandId": "RunPowerShellScript", "script": ["Write-Output hi"]}


@pytest.fixture
def manual(start_emulator, fake_credential):
    """A real-speed emulator whose time moves only when the test says so."""
    emu = start_emulator(speed=1.0, clock=ManualClock())
    return emu, session_for(emu, fake_credential)


def send(azure, method, url, body=None):
    response = azure.compute.send_request(HttpRequest(method, url, json=body))
    return response, (response.json() if response.text() else None)


def test_run_command_202_then_status_then_location_result(manual):
    emu, azure = manual
    vm_url = f"/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{VM}"
    response, body = send(azure, "POST", vm_url + f"/runCommand?api-version={COMPUTE_API}", RUN)
    assert (response.status_code, body) == (202, None)
    status_url, location = response.headers["Azure-AsyncOperation"], response.headers["Location"]
    assert "/providers/Microsoft.Compute/locations/westeurope/operations/" in status_url
    assert location.startswith(status_url.split("?")[0]) and "monitor=true" in location

    response, status = send(azure, "GET", status_url)
    assert (response.status_code, status["status"], status["name"]) == (200, "InProgress", status_url.split("/")[-1].split("?")[0])
    assert "endTime" not in status
    response, _ = send(azure, "GET", location)
    assert response.status_code == 202 and response.headers["Location"] == location

    emu.advance(41)  # a Run Command takes 20-40 simulated seconds
    _, status = send(azure, "GET", status_url)
    assert status["status"] == "Succeeded" and status["endTime"] > status["startTime"]
    assert status["properties"]["output"]["value"][0]["code"] == "ComponentStatus/StdOut/succeeded"
    response, result = send(azure, "GET", location)
    assert response.status_code == 200
    assert [s["code"] for s in result["value"]] == ["ComponentStatus/StdOut/succeeded", "ComponentStatus/StdErr/succeeded"]


def test_sdk_poller_gets_the_result_from_location(azure, emu):
    result = azure.compute.virtual_machines.begin_run_command(RG, VM, RUN).result()
    assert result is not None and result.value[1].message  # the guest explains it runs only azrdp's payloads
    operations = [c.operation for c in emu.calls]
    assert operations[0] == "VirtualMachines_RunCommand"
    assert set(operations[1:-1]) == {"ComputeOperations_Get"}
    assert operations[-1] == "ComputeOperationResults_Get"


def test_every_lro_answers_with_both_headers(manual):
    emu, azure = manual
    base = f"/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers"
    for method, url, body in (
        ("POST", f"{base}/Microsoft.Compute/virtualMachines/{VM}/runCommand?api-version={COMPUTE_API}", RUN),
        ("POST", f"{base}/Microsoft.Compute/virtualMachines/{VM}/restart?api-version={COMPUTE_API}", None),
        ("DELETE", f"{base}/Microsoft.Network/networkSecurityGroups/vm-web-01-nsg/securityRules/AllowRDP-Admin"
                   f"?api-version={NETWORK_API}", None),
    ):
        response, _ = send(azure, method, url, body)
        assert response.status_code == 202, url
        assert {"Azure-AsyncOperation", "Location"} <= set(response.headers), url


def test_effective_nsgs_answer_202_with_location_only_and_the_first_location_get_has_the_result(manual):
    """Real Azure (real-azure-behaviour.md, "Smaller differences"): 202 with Location only; the first
    Location GET returns 200 and the result. (The emulator used to send both headers and make the
    client poll: test_every_lro_answers_with_both_headers encoded that.)"""
    emu, azure = manual
    url = (f"/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Network/"
           f"networkInterfaces/vm-web-01-nic/effectiveNetworkSecurityGroups?api-version={NETWORK_API}")
    response, _ = send(azure, "POST", url)
    assert response.status_code == 202
    assert "Location" in response.headers and "Azure-AsyncOperation" not in response.headers
    result, body = send(azure, "GET", response.headers["Location"])
    assert result.status_code == 200 and [next(iter(e["association"])) for e in body["value"]] == \
        ["subnet", "networkInterface"]


def test_security_rule_put_is_201_updating_then_final_get(manual):
    emu, azure = manual
    url = (f"/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Network/"
           f"networkSecurityGroups/vm-web-01-nsg/securityRules/new-rule?api-version={NETWORK_API}")
    rule = {"properties": {"protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 120,
                           "sourceAddressPrefix": "198.51.100.0/24", "sourcePortRange": "*",
                           "destinationAddressPrefix": "*", "destinationPortRange": "3389"}}
    response, body = send(azure, "PUT", url, rule)
    assert response.status_code == 201 and body["properties"]["provisioningState"] == "Updating"
    status_url = response.headers["Azure-AsyncOperation"]
    assert send(azure, "GET", status_url)[1] == {"status": "InProgress"}
    emu.advance(11)
    assert send(azure, "GET", status_url)[1] == {"status": "Succeeded"}
    assert send(azure, "GET", url)[1]["properties"]["provisioningState"] == "Succeeded"


def test_sdk_security_rule_lro_call_sequence(azure, emu):
    rule = {"properties": {"protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 120,
                           "sourceAddressPrefix": "198.51.100.0/24", "sourcePortRange": "*",
                           "destinationAddressPrefix": "*", "destinationPortRange": "3389"}}
    azure.network.security_rules.begin_create_or_update(RG, "vm-web-01-nsg", "r", rule).result()
    azure.network.security_rules.begin_delete(RG, "vm-web-01-nsg", "r").result()
    ops = [c.operation for c in emu.calls]
    put_polls = ops[1:ops.index("SecurityRules_Get")]
    assert ops[0] == "SecurityRules_CreateOrUpdate" and set(put_polls) == {"NetworkOperations_Get"}
    after_delete = ops[ops.index("SecurityRules_Delete") + 1:]
    assert set(after_delete) == {"NetworkOperations_Get"}  # DELETE: polls only, no final GET


def test_failed_operation_raises_its_error_code(start_emulator, fake_credential):
    emu = start_emulator("agent-not-ready")
    azure = session_for(emu, fake_credential)
    with pytest.raises(HttpResponseError) as caught:
        azure.compute.virtual_machines.begin_run_command(RG, VM, RUN).result()
    assert caught.value.error.code == "VMAgentStatusCommunicationError"
    assert f"VM '{VM}' has not reported status for VM agent" in caught.value.message
