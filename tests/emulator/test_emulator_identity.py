"""The managed-identity endpoint in Azure Automation's shape, used by the real
ManagedIdentityCredential, and bearer tokens on the ARM side."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential

from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings

RG, VM = "rg-azrdp-demo", "vm-web-01"


def test_managed_identity_credential_gets_a_token_and_arm_accepts_it(emu, monkeypatch):
    for name, value in emu.identity.environment(emu.base_url).items():
        monkeypatch.setenv(name, value)
    credential = ManagedIdentityCredential()
    endpoint = ArmEndpoint(emu.base_url)
    token = credential.get_token(endpoint.token_scope)
    assert token.token.startswith("emulator-mi-") and token.expires_on > 0
    session = AzureSession(credential, emu.subscription_id, endpoint=endpoint, polling_interval=0,
                           retry=RetrySettings(total=0))
    assert session.compute.virtual_machines.get(RG, VM).name == VM
    assert emu.identity.issued == [emu.base_url]  # the resource is the scope without /.default


def test_wrong_identity_header_is_refused(emu, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", emu.identity.environment(emu.base_url)["IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential().get_token(emu.base_url + "/.default")
    assert emu.identity.issued == []


def test_user_assigned_identity_by_client_id(emu, monkeypatch):
    for name, value in emu.identity.environment(emu.base_url).items():
        monkeypatch.setenv(name, value)
    assert ManagedIdentityCredential(client_id=emu.identity.client_id).get_token(emu.base_url + "/.default").token
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential(client_id="11111111-2222-3333-4444-555555555555").get_token(emu.base_url + "/.default")
