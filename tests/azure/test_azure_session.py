"""The session factory: clouds, the emulator endpoint, retries announced on an injectable clock."""

from __future__ import annotations

import pytest
import responses

from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings, StaticTokenCredential, open_session
from azrdp.errors import UsageError
from tests.support.fake_arm import BASE, SUB, VmSpec

VM_PATH = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"


@pytest.mark.parametrize("cloud, endpoint, scope", [
    ("public", "https://management.azure.com", "https://management.azure.com/.default"),
    ("china", "https://management.chinacloudapi.cn", "https://management.chinacloudapi.cn/.default"),
    ("usgov", "https://management.usgovcloudapi.net", "https://management.core.usgovcloudapi.net/.default"),
])
def test_a_cloud_sets_endpoint_and_token_scope_together(cloud, endpoint, scope, fake_credential):
    session = AzureSession(fake_credential, SUB, cloud=cloud, retry=RetrySettings(total=0))
    with responses.RequestsMock() as mock:  # answers in-process: nothing leaves the machine
        mock.get(f"{endpoint}{VM_PATH}", json={"name": "vm1", "location": "x"})
        assert session.compute.virtual_machines.get("rg1", "vm1").name == "vm1"
    assert fake_credential.calls == [(scope,)]
    assert session.describe() == {"public": "Azure public cloud", "china": "Azure operated by 21Vianet",
                                  "usgov": "Azure US Government"}[cloud]


def test_an_explicit_endpoint_gets_its_own_scope_and_http_only_on_loopback(arm, make_session, fake_credential):
    arm.add_vm(VmSpec())
    session = make_session(endpoint=ArmEndpoint(BASE, scope="https://arm.local/.default"))
    assert session.compute.virtual_machines.get("rg1", "vm1").name == "vm1"
    assert fake_credential.calls == [("https://arm.local/.default",)]
    assert session.describe() == f"ARM endpoint {BASE}"


@pytest.mark.parametrize("url, problem", [
    ("http://arm.example.com", "refusing plain http to arm.example.com: a bearer token would travel unencrypted."),
    ("ftp://127.0.0.1", "ARM endpoint 'ftp://127.0.0.1' is not an http(s) URL."),
])
def test_bad_endpoints_are_refused(url, problem):
    with pytest.raises(UsageError) as caught:
        ArmEndpoint(url)
    assert caught.value.message == problem


def test_environment_points_azrdp_at_an_emulator_without_a_real_token(arm, monkeypatch):
    arm.add_vm(VmSpec())
    monkeypatch.setenv("AZRDP_ARM_ENDPOINT", BASE)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    session = open_session(polling_interval=0)
    assert isinstance(session.credential, StaticTokenCredential)
    assert session.subscription_id == SUB and session.endpoint == ArmEndpoint(BASE)
    assert session.compute.virtual_machines.get("rg1", "vm1").name == "vm1"


def test_the_polling_interval_comes_from_the_environment_when_not_given(monkeypatch):
    monkeypatch.setenv("AZRDP_ARM_ENDPOINT", BASE)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    assert open_session().polling_interval == 30.0          # the SDK's default for Azure
    monkeypatch.setenv("AZRDP_POLLING_INTERVAL", "0.5")
    assert open_session().polling_interval == 0.5
    assert open_session(polling_interval=0).polling_interval == 0   # the caller's choice wins
    monkeypatch.setenv("AZRDP_POLLING_INTERVAL", "soon")
    with pytest.raises(UsageError, match="AZRDP_POLLING_INTERVAL='soon' is not a number of seconds"):
        open_session()


def test_an_explicit_auth_is_used_even_for_an_emulator(monkeypatch):
    monkeypatch.setenv("AZRDP_ARM_ENDPOINT", BASE)
    monkeypatch.setenv("AZRDP_ARM_SCOPE", "api://emulator/.default")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:47012/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "h")
    session = open_session(auth="msi")
    assert session.credential.method == "msi"
    assert session.endpoint.token_scope == "api://emulator/.default"


def test_throttling_waits_as_long_as_azure_asks_and_says_so(arm, make_session, clock):
    spec = arm.add_vm(VmSpec())
    arm.fail(spec.vm_id, 429, "TooManyRequests", "slow down", headers={"Retry-After": "7"}, times=2)
    heard: list[str] = []
    session = make_session(on_wait=heard.append)
    assert session.compute.virtual_machines.get("rg1", "vm1").name == "vm1"
    assert clock.sleeps == [7.0, 7.0]
    assert heard == ["Azure is throttling requests (429) on virtualMachines/vm1; waiting 7 s before attempt 2 ...",
                     "Azure is throttling requests (429) on virtualMachines/vm1; waiting 7 s before attempt 3 ..."]


def test_transient_errors_back_off_within_the_cap(arm, make_session, clock):
    spec = arm.add_vm(VmSpec())
    arm.fail(spec.vm_id, 503, "ServiceUnavailable", "try later", times=3)
    session = make_session(retry=RetrySettings(total=4, backoff_factor=0.8, backoff_max=2.0))
    assert session.compute.virtual_machines.get("rg1", "vm1").name == "vm1"
    assert clock.sleeps == [0, 1.6, 2.0]


def test_subscription_by_name_is_resolved_through_arm(arm, monkeypatch):
    monkeypatch.setenv("AZRDP_ARM_ENDPOINT", BASE)
    session = open_session(subscription="production")
    assert (session.subscription_id, session.subscription_name) == (SUB, "Production")
    assert [c.path for c in arm.calls] == ["/subscriptions"]
