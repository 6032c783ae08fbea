"""Shared test fixtures.

No test may reach a real Azure tenant: every AZURE_*/identity variable is removed from the
environment, and tests use FakeCredential. Tests only touch loopback addresses.
"""

from __future__ import annotations

import os
import time

import pytest
from azure.core.credentials import AccessToken

_CREDENTIAL_ENV_PREFIXES = ("AZURE_", "IDENTITY_", "MSI_", "ARM_", "AZRDP_")


class FakeCredential:
    """A TokenCredential that hands out a fixed token and counts the requests."""

    token = "fake-token-not-a-secret"

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.calls.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture(autouse=True)
def _no_real_azure(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(_CREDENTIAL_ENV_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    # The Azure CLI's profile (default subscription) is read from AZURE_CONFIG_DIR: point it at
    # an empty folder so a developer's own `az login` never leaks into a test.
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "azure-config"))


@pytest.fixture
def fake_credential() -> FakeCredential:
    return FakeCredential()
