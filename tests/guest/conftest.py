"""Fixtures for the guest-side tests: a real ComputeManagementClient, built by azrdp's own session
factory, against the one ARM stand-in on `responses` (tests/support/fake_arm.py), holding one VM,
``rg1/vm1``."""

from __future__ import annotations

import pytest

from azrdp.azure.session import RetrySettings
from tests.support.azure_fixtures import clock, make_session
from tests.support.fake_arm import SUB, FakeArm, VmSpec

__all__ = ["clock", "make_session"]


@pytest.fixture
def compute(make_session):
    # polling_interval=0: no 30 s LRO sleeps; no retries: a 409 reaches azrdp at once
    return make_session(retry=RetrySettings(total=0)).compute


@pytest.fixture
def vm(compute):
    """The handle of VM rg1/vm1 over that client, on a ManualClock with polling interval 0 (what
    the jobs get from ``session.vm(target)``)."""
    from types import SimpleNamespace

    from azrdp.azure.vm import AzureVm
    from azrdp.clock import ManualClock
    from azrdp.target import Target

    session = SimpleNamespace(compute=compute, network=None, clock=ManualClock(), polling_interval=0.0,
                              subscription_id=SUB, credential=None)
    return AzureVm(session, Target("vm1", "rg1"))


@pytest.fixture
def arm():
    with FakeArm() as fake:
        fake.add_vm(VmSpec())
        yield fake
