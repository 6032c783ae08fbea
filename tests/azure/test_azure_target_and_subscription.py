"""VM references, resource IDs, subscriptions and credentials: no network at all."""

from __future__ import annotations

import json

import pytest

from azrdp.azure.credentials import make_credential, missing_variables
from azrdp.azure.subscription import resolve_subscription
from azrdp.errors import AuthError, UsageError
from azrdp.target import Target, id_key, parse_resource_id, parse_target, same_id

VM_ID = "/subscriptions/0000-1/resourceGroups/My-RG/providers/Microsoft.Compute/virtualMachines/web01"
S1, S2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def test_name_and_group():
    assert parse_target("web01", resource_group="My-RG") == Target("web01", "My-RG")


@pytest.mark.parametrize("text", [VM_ID, VM_ID.lower(), VM_ID.upper().replace("VIRTUALMACHINES", "virtualMachines"),
                                  VM_ID + "/"])
def test_resource_ids_in_any_casing(text):
    target = parse_target(ids=text) if text.endswith("/") else parse_target(text)
    assert (target.name.lower(), target.resource_group.lower(), target.subscription.lower()) == \
        ("web01", "my-rg", "0000-1")


def test_child_resource_ids_and_case_insensitive_comparison():
    subnet = parse_resource_id("/subscriptions/s/resourceGroups/RG1/providers/Microsoft.Network/"
                               "virtualNetworks/vnet/subnets/default")
    assert subnet.type == "microsoft.network/virtualnetworks/subnets" and subnet.name == "default"
    assert str(subnet.parent()).endswith("/virtualNetworks/vnet")
    assert same_id(str(subnet), str(subnet).upper()) and id_key(str(subnet) + "/") == id_key(str(subnet))


@pytest.mark.parametrize("kwargs, problem", [
    ({"reference": VM_ID, "resource_group": "other"}, "-g other contradicts the resource group My-RG inside the resource ID"),
    ({"reference": "web01", "ids": VM_ID}, "give the VM either as NAME/resource ID or with --ids, not both"),
    ({"reference": "web 01", "resource_group": "rg"}, "'web 01' is not a VM name or resource ID"),
    ({"reference": "web01", "resource_group": "bad/group"}, "'bad/group' is not a valid resource group name"),
])
def test_contradictions_and_malformed_input(kwargs, problem):
    with pytest.raises(UsageError) as caught:
        parse_target(**kwargs)
    assert caught.value.message == problem + "."
    assert caught.value.exit_code == 2


def write_profile(folder, subscriptions):
    folder.mkdir(parents=True, exist_ok=True)
    # The Azure CLI writes its profile with a UTF-8 byte-order mark.
    (folder / "azureProfile.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"subscriptions": subscriptions}).encode())


def test_subscription_sources_in_order(tmp_path):
    write_profile(tmp_path, [{"id": S1, "name": "Dev", "isDefault": False},
                             {"id": S2, "name": "Prod", "isDefault": True}])
    env = {"AZURE_CONFIG_DIR": str(tmp_path)}
    assert resolve_subscription(environ=env).id == S2  # the Azure CLI default
    assert resolve_subscription(environ={**env, "AZURE_SUBSCRIPTION_ID": S1}).source == "AZURE_SUBSCRIPTION_ID"
    assert resolve_subscription("dev", environ={**env, "AZURE_SUBSCRIPTION_ID": S2}).id == S1  # --subscription wins
    assert resolve_subscription(S1.upper(), environ=env).name == "Dev"


def test_no_subscription_anywhere_says_how_to_pass_one(tmp_path):
    with pytest.raises(UsageError) as caught:
        resolve_subscription(environ={"AZURE_CONFIG_DIR": str(tmp_path)})
    assert caught.value.one_line() == (
        "no Azure subscription chosen. Pass --subscription ID_OR_NAME, set AZURE_SUBSCRIPTION_ID, or choose a "
        "default with `az account set --subscription ID_OR_NAME`.")


def test_unknown_subscription_name(tmp_path):
    write_profile(tmp_path, [{"id": S1, "name": "Dev", "isDefault": True}])
    with pytest.raises(UsageError) as caught:
        resolve_subscription("Staging", environ={"AZURE_CONFIG_DIR": str(tmp_path)}, list_subscriptions=lambda: [])
    assert caught.value.message == "no subscription named 'Staging' is visible to this sign-in."


@pytest.mark.parametrize("method, env, missing", [
    ("env", {}, ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH"]),
    ("env", {"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_CERTIFICATE_PATH": "/p"}, []),
    ("workload", {"AZURE_TENANT_ID": "t"}, ["AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID"]),
    ("msi", {}, []),
])
def test_missing_variables_per_method(method, env, missing):
    assert missing_variables(method, env) == missing


def test_cli_auth_without_az_installed(tmp_path):
    with pytest.raises(AuthError) as caught:
        make_credential("cli", environ={"PATH": str(tmp_path)})
    assert caught.value.one_line() == ("--auth cli needs the Azure CLI, but `az` is not on PATH. Install the Azure "
                                       "CLI and run `az login`, or choose another --auth.")


TENANT, CLIENT = "72f988bf-86f1-41af-91ab-2d7cd011db47", "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize("method", ["env", "auto"])
@pytest.mark.parametrize("variables, reason", [
    ({"AZURE_TENANT_ID": "not a tenant!", "AZURE_CLIENT_SECRET": "s"}, "Invalid tenant ID provided"),
    ({"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_CERTIFICATE_PATH": "/nonexistent/azrdp-cert.pem"},
     "No such file or directory"),
])
def test_a_credential_azure_identity_cannot_build_is_one_line_exit_3(monkeypatch, method, variables, reason):
    """azure-identity reads AZURE_* when the credential is built and raises ValueError/OSError:
    that must end in AuthError (exit 3), not a traceback."""
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(AuthError) as caught:
        make_credential(method)
    assert caught.value.exit_code == 3
    assert reason in caught.value.one_line() and "\n" not in caught.value.one_line()


def test_a_missing_federated_token_file_is_a_sign_in_error_not_a_traceback(tmp_path):
    environ = {"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": CLIENT,
               "AZURE_FEDERATED_TOKEN_FILE": str(tmp_path / "absent-token")}
    credential = make_credential("workload", environ=environ)
    with pytest.raises(AuthError) as caught:  # the file is read before any request is made
        credential.get_token("https://management.azure.com/.default")
    assert caught.value.one_line().startswith("not signed in to Azure (--auth workload): [Errno 2] No such file")
    assert "AZURE_FEDERATED_TOKEN_FILE" in caught.value.one_line()
