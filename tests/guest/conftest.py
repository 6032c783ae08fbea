"""Fixtures for the guest-side tests: a real ComputeManagementClient against `responses`, and
the payload samples shared with tests/payloads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payloads"))

from runcommand_arm import SUB, RunCommandArm  # noqa: E402


@pytest.fixture
def compute(fake_credential):
    from azure.mgmt.compute import ComputeManagementClient

    # polling_interval=0: no 30 s LRO sleeps; retry_total=0: a 409 reaches azrdp at once
    return ComputeManagementClient(fake_credential, SUB, polling_interval=0, retry_total=0)


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
    import responses

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield RunCommandArm(rsps)
