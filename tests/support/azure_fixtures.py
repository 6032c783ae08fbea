"""Fixtures for the Azure side, shared by tests/azure and tests/fix (each conftest imports them):
an ARM stand-in on `responses` and sessions built by the real factory."""

from __future__ import annotations

import pytest

from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings
from azrdp.clock import ManualClock
from tests.support.fake_arm import BASE, SUB, FakeArm

FAST_RETRY = RetrySettings(total=4, backoff_factor=0.8, backoff_max=30.0)


@pytest.fixture
def arm():
    with FakeArm() as fake:
        yield fake


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def make_session(fake_credential, clock):
    """A session from the real factory: FakeCredential, the loopback ARM stand-in, polling_interval=0,
    retries sleeping on a ManualClock (so a Retry-After of 7 s costs no time and is recorded)."""
    def make(**kwargs) -> AzureSession:
        options = {"endpoint": ArmEndpoint(BASE), "polling_interval": 0, "retry": FAST_RETRY, "clock": clock}
        options.update(kwargs)
        return AzureSession(fake_credential, SUB, **options)
    return make


@pytest.fixture
def session(make_session):
    return make_session()


@pytest.fixture
def cli_env(monkeypatch):
    """The command line pointed at the ARM stand-in, as a user points it at an emulator."""
    monkeypatch.setenv("AZRDP_ARM_ENDPOINT", BASE)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
