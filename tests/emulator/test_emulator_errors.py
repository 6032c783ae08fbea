"""ARM's error envelopes with real codes and Microsoft's message formats."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.rest import HttpRequest

from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings
from tests.support.arm_api import COMPUTE_API
from tests.support.emulator_support import session_for

RG, VM = "rg-azrdp-demo", "vm-web-01"
RUN = {"commandId": "RunPowerShellScript", "script": ["Write-Output hi"]}


def test_missing_vm(azure):
    with pytest.raises(ResourceNotFoundError) as caught:
        azure.compute.virtual_machines.get(RG, "vm-nope")
    assert caught.value.error.code == "ResourceNotFound"
    assert caught.value.error.message == ("The Resource 'Microsoft.Compute/virtualMachines/vm-nope' under resource "
                                          "group 'rg-azrdp-demo' was not found. For more details please go to "
                                          "https://aka.ms/ARMResourceNotFoundFix")


def test_missing_resource_group(azure):
    with pytest.raises(ResourceNotFoundError) as caught:
        azure.network.network_security_groups.get("rg-gone", "nsg")
    assert (caught.value.error.code, caught.value.error.message) == (
        "ResourceGroupNotFound", "Resource group 'rg-gone' could not be found.")


def test_missing_subscription(emu, fake_credential):
    other = AzureSession(fake_credential, "00000000-0000-0000-0000-00000000abcd", endpoint=ArmEndpoint(emu.base_url),
                         polling_interval=0, retry=RetrySettings(total=0))
    with pytest.raises(ResourceNotFoundError) as caught:
        other.compute.virtual_machines.get(RG, VM)
    assert caught.value.error.code == "SubscriptionNotFound"


def test_missing_child_resources_use_the_network_rps_format(emu, azure):
    with pytest.raises(ResourceNotFoundError) as caught:
        azure.network.subnets.get(RG, "vnet-azrdp", "nope")
    assert caught.value.error.code == "NotFound"
    assert caught.value.error.message == (f"Resource /subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers/"
                                          "Microsoft.Network/virtualNetworks/vnet-azrdp/subnets/nope not found.")
    with pytest.raises(ResourceNotFoundError):
        azure.network.security_rules.get(RG, "vm-web-01-nsg", "nope")


def test_unknown_route_names_it(emu, azure):
    path = f"/subscriptions/{emu.subscription_id}/providers/Microsoft.Compute/disks"
    response = azure.compute.send_request(HttpRequest("GET", path + "?api-version=2026-03-02"))
    assert response.status_code == 501
    error = response.json()["error"]
    assert error["code"] == "NotImplementedInEmulator" and f"GET {path}" in error["message"]


def test_any_supported_api_version_is_accepted_and_others_refused(azure):
    """Real Azure accepts every supported api-version, not only the SDK's (real-azure-behaviour.md).
    Until issue 11 this test asserted that 2024-07-01 was refused: the emulator's fault."""
    from azrdp.emulator.models import SUPPORTED_API_VERSIONS

    assert azure.compute.virtual_machines.get(RG, VM, api_version="2024-07-01").name == VM
    assert azure.network.network_interfaces.get(RG, "vm-web-01-nic", api_version="2023-09-01").name
    with pytest.raises(HttpResponseError) as caught:
        azure.compute.virtual_machines.get(RG, VM, api_version="2019-13-01")
    assert caught.value.status_code == 400 and caught.value.error.code == "InvalidApiVersionParameter"
    assert caught.value.error.message == ("The api-version '2019-13-01' is invalid. The supported versions are "
                                          f"'{','.join(SUPPORTED_API_VERSIONS[COMPUTE_API])}'.")


def test_gateway_404s_say_so_and_compute_has_its_own_not_found(emu, azure):
    with pytest.raises(ResourceNotFoundError) as caught:
        azure.compute.virtual_machines.get(RG, "no-such-vm")
    assert caught.value.response.headers["x-ms-failure-cause"] == "gateway"
    emu.inject("vm_being_deleted", vm=VM)
    with pytest.raises(ResourceNotFoundError) as caught:
        azure.compute.virtual_machines.get(RG, VM)
    assert caught.value.error.code == "NotFound"
    assert caught.value.error.message == "The entity was not found in this Azure location."
    assert "x-ms-failure-cause" not in caught.value.response.headers


def test_missing_api_version(emu, azure):
    response = azure.compute.send_request(HttpRequest(
        "GET", f"/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{VM}"))
    assert response.status_code == 400 and response.json()["error"]["code"] == "MissingApiVersionParameter"


@pytest.mark.parametrize("action", ["run_command", "restart"])
def test_deallocated_vm_refuses(start_emulator, fake_credential, action):
    emu = start_emulator("deallocated")
    compute = session_for(emu, fake_credential).compute.virtual_machines
    with pytest.raises(ResourceExistsError) as caught:
        compute.begin_run_command(RG, VM, RUN) if action == "run_command" else compute.begin_restart(RG, VM)
    assert caught.value.status_code == 409
    assert (caught.value.error.code, caught.value.error.message) == (
        "OperationNotAllowed", "The operation requires the VM to be running (or set to run).")


def test_unknown_command_id(azure):
    with pytest.raises(ResourceNotFoundError) as caught:
        azure.compute.virtual_machines.begin_run_command(RG, VM, {"commandId": "NoSuchCommand"})
    assert caught.value.error.message == "The entity was not found in this Azure location."


@pytest.mark.parametrize("change, code", [
    ({"priority": 5000}, "SecurityRuleInvalidPriority"),
    ({"priority": 300}, "SecurityRuleConflict"),
    ({"destinationPortRange": "70000"}, "SecurityRuleInvalidPortRange"),
    ({"protocol": "Carrier-Pigeon"}, "SecurityRuleInvalidProtocol"),
])
def test_invalid_security_rules(azure, change, code):
    rule = {"protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 110,
            "sourceAddressPrefix": "198.51.100.7/32", "sourcePortRange": "*",
            "destinationAddressPrefix": "*", "destinationPortRange": "3389", **change}
    with pytest.raises(HttpResponseError) as caught:
        azure.network.security_rules.begin_create_or_update(RG, "vm-web-01-nsg", "bad", {"properties": rule})
    assert caught.value.status_code == 400 and caught.value.error.code == code


def test_no_bearer_token_is_401(emu):
    url = f"{emu.base_url}/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{VM}?api-version={COMPUTE_API}"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url)
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["error"]["code"] == "AuthenticationFailed"
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer ")


def test_effective_nsgs_need_a_running_vm(start_emulator, fake_credential):
    network = session_for(start_emulator("deallocated"), fake_credential).network
    with pytest.raises(HttpResponseError) as caught:
        network.network_interfaces.begin_list_effective_network_security_groups(RG, "vm-web-01-nic")
    assert caught.value.status_code == 400
    assert caught.value.error.code == "NicMustBeAttachedToRunningVmToGetEffectiveSecurityGroups"


def test_the_emulator_serves_the_api_versions_the_installed_sdk_sends():
    """The emulator's own constants (what it renders into LRO headers and nextLinks) are the SDK's."""
    from azrdp.emulator.models import COMPUTE_API as EMULATOR_COMPUTE
    from azrdp.emulator.models import NETWORK_API as EMULATOR_NETWORK
    from tests.support.arm_api import NETWORK_API

    assert (EMULATOR_COMPUTE, EMULATOR_NETWORK) == (COMPUTE_API, NETWORK_API)
