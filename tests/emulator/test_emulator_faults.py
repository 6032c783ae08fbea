"""Every fault, switched on per test, seen through the real SDK (and the wire probe)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from azrdp.clock import ManualClock
from azrdp.rdp import probe
from tests.support.emulator_support import session_for

RG, VM = "rg-azrdp-demo", "vm-web-01"
RUN = {"commandId": "RunPowerShellScript", "script": ["Write-Output hi"]}


def test_throttle_answers_429_with_retry_after_and_computes_body(emu, fake_credential):
    emu.inject("throttle", operation="VirtualMachines_Get", count=1, retry_after=17)
    with pytest.raises(HttpResponseError) as caught:
        session_for(emu, fake_credential).compute.virtual_machines.get(RG, VM)
    error = caught.value
    assert error.status_code == 429 and error.response.headers["Retry-After"] == "17"
    assert error.error.code == "OperationNotAllowed"
    assert error.error.details[0].code == "TooManyRequests"
    assert "too many requests have been received for this subscription" in error.message


def test_throttle_is_retried_after_the_announced_wait(emu, fake_credential):
    clock = ManualClock()
    fault = emu.inject("throttle", operation="VirtualMachines_Get", count=2, retry_after=3)
    vm = session_for(emu, fake_credential, retries=3, clock=clock).compute.virtual_machines.get(RG, VM)
    assert vm.name == VM and fault.fired == 2
    assert clock.sleeps == [3, 3]
    assert emu.count("VirtualMachines_Get", status=429) == 2 and emu.count("VirtualMachines_Get", status=200) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_burst_then_success(emu, fake_credential, status):
    emu.inject("server_error", status=status, count=2, operation="NetworkInterfaces_Get", retry_after=None)
    nic = session_for(emu, fake_credential, retries=3).network.network_interfaces.get(RG, "vm-web-01-nic")
    assert nic.name == "vm-web-01-nic"
    assert emu.count("NetworkInterfaces_Get", status=status) == 2


def test_server_error_forever_surfaces_the_code(emu, fake_credential):
    emu.inject("server_error", status=500, count=None)
    with pytest.raises(HttpResponseError) as caught:
        session_for(emu, fake_credential, retries=2).compute.virtual_machines.instance_view(RG, VM)
    assert caught.value.status_code == 500 and caught.value.error.code == "InternalServerError"
    assert emu.count("VirtualMachines_InstanceView", status=500) == 3


def test_run_command_conflict(emu, azure):
    emu.inject("run_command_conflict", vm=VM)
    with pytest.raises(ResourceExistsError) as caught:
        azure.compute.virtual_machines.begin_run_command(RG, VM, RUN)
    assert caught.value.error.code == "Conflict"
    assert caught.value.error.message == ("Run command extension execution is in progress. "
                                          "Please wait for completion before invoking a run command.")
    assert azure.compute.virtual_machines.begin_run_command(RG, VM, RUN).result().value  # only once


def test_run_command_that_never_finishes_blocks_the_next_with_409(start_emulator, fake_credential):
    emu = start_emulator(speed=1.0, clock=ManualClock())
    azure = session_for(emu, fake_credential)
    emu.inject("run_command_hang")
    poller = azure.compute.virtual_machines.begin_run_command(RG, VM, RUN, polling=False)
    emu.advance(3600)
    status = emu.state.operations[next(iter(emu.state.operations))]
    assert status.status == "InProgress" and poller.done()
    with pytest.raises(ResourceExistsError):
        azure.compute.virtual_machines.begin_run_command(RG, VM, RUN)


def test_restart_failure(start_emulator, fake_credential):
    emu = start_emulator("seat-taken")
    with pytest.raises(HttpResponseError) as caught:
        emu.inject("restart_failure", vm=VM)
        session_for(emu, fake_credential).compute.virtual_machines.begin_restart(RG, VM).result()
    assert caught.value.error.code == "InternalExecutionError"
    assert len(emu.guest().remote_sessions()) == 2  # the guest was not rebooted


def test_rdp_never_comes_back_after_restart(start_emulator, fake_credential):
    emu = start_emulator(speed=1.0, clock=ManualClock())
    emu.inject("rdp_never_returns", vm=VM)
    azure = session_for(emu, fake_credential)
    azure.compute.virtual_machines.begin_restart(RG, VM, polling=False)
    emu.advance(120 + 30)  # longest restart + longest boot
    view = azure.compute.virtual_machines.instance_view(RG, VM)
    assert view.statuses[1].code == "PowerState/running" and view.vm_agent.statuses[0].display_status == "Ready"
    assert probe(*emu.rdp_endpoint(), timeout=1).outcome == "refused"


def test_connection_reset_mid_poll_is_retried_by_the_sdk(emu, fake_credential):
    fault = emu.inject("connection_reset", count=1)
    result = session_for(emu, fake_credential, retries=3).compute.virtual_machines.begin_run_command(RG, VM, RUN).result()
    assert result.value and fault.fired == 1
    resets = [c for c in emu.calls if c.status is None]
    assert [c.operation for c in resets] == ["ComputeOperations_Get"]


def test_unknown_fault_kind_is_refused(emu):
    with pytest.raises(ValueError, match="unknown fault kind 'gremlins'"):
        emu.inject("gremlins")
