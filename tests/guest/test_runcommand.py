"""Action Run Command through the REAL azure-mgmt-compute client, against the one ARM stand-in on
`responses` (tests/support/fake_arm.py: its Run Command answers scripted per test)."""

from __future__ import annotations

import pytest

from azrdp.azure.runcommand import (
    CONFLICT_BACKOFF_FIRST,
    AgentNotReady,
    RunCommandBusy,
    agent_state,
    run_script,
)
from azrdp.clock import ManualClock
from azrdp.errors import AuthError, OperationTimeout
from azrdp.guest import diagnose_guest, repair_guest, run_payload
from azrdp.payloads import payload
from azrdp.target import Target
from tests.support.fake_arm import BASE, SUB, VmSpec
from tests.support.payload_samples import healthy, healthy_repair, result_line, run_command_value

VM_ID = VmSpec().vm_id   # the VM tests/guest/conftest.py puts in the stand-in: rg1/vm1
READY_VIEW = {"vmAgent": {"vmAgentVersion": "2.7.41491.949", "statuses": [
    {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready",
     "message": "GuestAgent is running and accepting new configurations."}]},
    "statuses": [{"code": "ProvisioningState/succeeded"}, {"code": "PowerState/running"}]}
TOKEN = "INJECTED7Q"  # appears in every hostile value and nowhere in the payloads
HOSTILE = [
    f"'; Remove-Item -Recurse C:\\ ; '{TOKEN}",
    f'"; Stop-Computer -Force; "{TOKEN}',
    f"`$(Invoke-Expression '{TOKEN}')` & whoami | Out-File x",
    f"a\nb\r\nWrite-Output {TOKEN}",
    f"$(Get-Process) & calc.exe | more ; exit 1 {TOKEN}",
]


def test_lro_202_polls_then_final_get_of_location(compute, arm):
    arm.accept_run_command(VM_ID, run_command_value(result_line(healthy()), ""), polls=2)
    spec = payload("diagnose")
    run = run_script(compute, "rg1", "vm1", spec.script_lines(), [], instance_view=READY_VIEW,
                     clock=ManualClock(), polling_interval=0)
    methods = [c.method for c in arm.calls]
    assert methods == ["POST", "GET", "GET", "GET", "GET"]
    assert arm.calls[-1].query.get("monitor") == "true"
    assert run.output.stdout == result_line(healthy())
    assert run.attempts == 1 and run.conflict_waits == []
    assert [s["code"] for s in run.statuses] == ["ComponentStatus/StdOut/succeeded", "ComponentStatus/StdErr/succeeded"]


@pytest.mark.parametrize("value", HOSTILE)
def test_values_travel_only_as_parameters_and_the_script_is_the_shipped_file(compute, arm, value):
    arm.accept_run_command(VM_ID, run_command_value("AZRDP-RESULT:{}"))
    spec = payload("repair")
    parameters = [{"name": "RunId", "value": value}, {"name": "Steps", "value": value}]
    run_script(compute, "rg1", "vm1", spec.script_lines(), parameters, instance_view=READY_VIEW,
               clock=ManualClock(), polling_interval=0)
    (body,) = arm.sent_bodies()
    assert body["commandId"] == "RunPowerShellScript"
    sent = ("\n".join(body["script"]) + "\n").encode()
    shipped = (spec_path_bytes("repair.ps1").replace(b"# azrdp:include common.ps1\n", spec_path_bytes("common.ps1"))
               .replace(b"# azrdp:include change.ps1\n", spec_path_bytes("change.ps1")))
    assert sent == spec.script_text().encode() == shipped
    assert body["parameters"] == parameters
    assert TOKEN not in "\n".join(body["script"])
    assert sum(TOKEN in p["value"] for p in body["parameters"]) == 2


def spec_path_bytes(name: str) -> bytes:
    from pathlib import Path

    import azrdp.payloads

    return (Path(azrdp.payloads.__file__).parent / name).read_bytes()


def test_hostile_values_never_leave_through_the_manifest_path(vm, arm):
    from azrdp.errors import UsageError

    for value in HOSTILE:
        with pytest.raises(UsageError):
            run_payload(vm, "diagnose", {"RunId": value}, instance_view=READY_VIEW)
    assert len(arm.calls) == 0


def test_409_in_progress_is_waited_out_with_exact_backoff(compute, arm):
    arm.conflict(VM_ID)
    arm.conflict(VM_ID)
    arm.conflict(VM_ID)
    arm.accept_run_command(VM_ID, run_command_value(result_line(healthy())))
    clock = ManualClock()
    run = run_script(compute, "rg1", "vm1", ["Write-Output x"], [], instance_view=READY_VIEW,
                     clock=clock, polling_interval=0)
    assert run.attempts == 4
    assert run.conflict_waits == [CONFLICT_BACKOFF_FIRST, 2 * CONFLICT_BACKOFF_FIRST, 4 * CONFLICT_BACKOFF_FIRST]
    assert clock.sleeps == [5.0, 10.0, 20.0, 0]       # three conflict waits, then one 0 s poll sleep
    assert len(arm.posts()) == 4


def test_a_409_wait_names_what_holds_the_vm_and_how_long_azrdp_will_wait(compute, arm):
    arm.conflict(VM_ID)
    arm.conflict(VM_ID)
    arm.accept_run_command(VM_ID, run_command_value(result_line(healthy())))
    told, said = [], []
    run_script(compute, "rg1", "vm1", ["Write-Output x"], [], instance_view=READY_VIEW, clock=ManualClock(),
               polling_interval=0, conflict_wait=600, on_conflict=told.append, on_wait=said.append)
    assert told == ['Another Run Command is running on vm1 (Azure: "Run command extension execution is in '
                    'progress. Please wait for completion before invoking a run command."); it cannot be '
                    'cancelled, so azrdp waits for it up to 600 s, trying again with back-off.']
    assert said[:2] == ["waiting for another Run Command to finish (0 s of up to 600 s; next try in 5 s)",
                        "waiting for another Run Command to finish (5 s of up to 600 s; next try in 10 s)"]
    assert said[2:] == ["InProgress"]                      # then the operation's own status, each poll


def test_409_forever_gives_a_clear_error_after_the_limit(compute, arm):
    arm.conflict(VM_ID, times=None)  # every POST from now on
    clock = ManualClock()
    with pytest.raises(RunCommandBusy) as caught:
        run_script(compute, "rg1", "vm1", ["Write-Output x"], [], instance_view=READY_VIEW,
                   clock=clock, polling_interval=0, conflict_wait=100)
    assert clock.sleeps == [5.0, 10.0, 20.0, 40.0]    # the next (60) would pass 100 s
    assert "another Run Command is still running in VM rg1/vm1 after 75 s" in caught.value.message
    assert caught.value.exit_code == 5


def test_other_409_is_not_retried(compute, arm):
    arm.fail(VM_ID + "/runCommand", 409, "OperationNotAllowed", "Cannot run command on deallocated VM", method="POST")
    with pytest.raises(Exception, match="Cannot run command on deallocated VM"):
        run_script(compute, "rg1", "vm1", ["x"], [], instance_view=READY_VIEW, clock=ManualClock(), polling_interval=0)
    assert len(arm.posts()) == 1


@pytest.mark.parametrize("view, why", [
    ({"vmAgent": {"statuses": [{"code": "ProvisioningState/Unavailable", "displayStatus": "Not Ready",
                                "message": "VM status blob is found but not yet populated."}]},
      "statuses": [{"code": "PowerState/running"}]}, "the VM agent is Not Ready"),
    ({"statuses": [{"code": "PowerState/running"}]}, "reports no status"),
    ({"statuses": [{"code": "PowerState/deallocated"}]}, "the VM is deallocated"),
])
def test_agent_not_ready_sends_no_run_command(compute, arm, view, why):
    with pytest.raises(AgentNotReady, match=why):
        run_script(compute, "rg1", "vm1", ["x"], [], instance_view=view, clock=ManualClock(), polling_interval=0)
    assert len(arm.calls) == 0


def test_agent_state_reads_sdk_models_too():
    from azure.mgmt.compute.models import VirtualMachineInstanceView

    assert agent_state(VirtualMachineInstanceView(READY_VIEW)) == (True, "the VM agent is Ready")


def test_instance_view_is_read_when_not_given(compute, arm):
    arm.accept_run_command(VM_ID, run_command_value(result_line(healthy())))
    run_script(compute, "rg1", "vm1", ["x"], [], clock=ManualClock(), polling_interval=0)
    assert [(c.method, c.path.rsplit("/", 1)[1]) for c in arm.calls][:2] == [("GET", "instanceView"),
                                                                             ("POST", "runCommand")]


def test_timeout_while_polling_is_an_operation_timeout(compute, arm):
    arm.accept_run_command(VM_ID, run_command_value(""), forever=True)
    clock = ManualClock()
    with pytest.raises(OperationTimeout, match="did not finish within 120 s"):
        run_script(compute, "rg1", "vm1", ["x"], [], instance_view=READY_VIEW, clock=clock,
                   polling_interval=15, timeout=120)
    assert clock.sleeps == [15.0] * 8                # 8 polls x 15 s; the 9th would pass 120 s
    assert clock.monotonic() == 120.0


def test_retry_after_on_a_poll_counts_against_the_deadline(compute, arm):
    arm.accept_run_command(VM_ID, run_command_value(""), forever=True, poll_headers={"Retry-After": "50"})
    clock = ManualClock()
    with pytest.raises(OperationTimeout):
        run_script(compute, "rg1", "vm1", ["x"], [], instance_view=READY_VIEW, clock=clock,
                   polling_interval=0, timeout=120)
    assert clock.sleeps == [50.0, 50.0]


def test_403_goes_through_arm_errors(compute, arm):
    arm.fail(VM_ID + "/runCommand", 403, "AuthorizationFailed",
             "The client 'x' with object id 'y' does not have authorization to perform action "
             "'Microsoft.Compute/virtualMachines/runCommand/action' over scope '/subscriptions/s/resourceGroups/rg1' "
             "or the scope is invalid.", method="POST")
    with pytest.raises(AuthError, match="runCommand/action"):
        run_script(compute, "rg1", "vm1", ["x"], [], instance_view=READY_VIEW, clock=ManualClock(), polling_interval=0)


def test_diagnose_guest_end_to_end(vm, arm):
    arm.accept_run_command(VM_ID, run_command_value("WARNING: noise\r\n" + result_line({**healthy(), "run_id": "abc-1"}) + "\r\n", ""))
    diagnosis = diagnose_guest(vm, instance_view=READY_VIEW, run_id="abc-1")
    assert [c.id for c in diagnosis.checks][0] == "guest.termservice"
    assert all(c.status.value == "pass" for c in diagnosis.checks)
    (body,) = arm.sent_bodies()
    assert body["parameters"] == [{"name": "EventHours", "value": "24"}, {"name": "RunId", "value": "abc-1"}]
    assert diagnosis.to_dict()["run"]["attempts"] == 1


def test_repair_guest_end_to_end(vm, arm):
    arm.accept_run_command(VM_ID, run_command_value(result_line(healthy_repair())))
    outcome = repair_guest(vm, steps=["sessions", "cert", "rdp-config", "machinekeys-acl"], instance_view=READY_VIEW)
    assert outcome.changed is False and outcome.reboot_required is False and outcome.failed_steps == []
    (body,) = arm.sent_bodies()
    assert body["parameters"][0] == {"name": "Steps", "value": "rdp-config,machinekeys-acl,cert,sessions"}


def test_a_guest_running_another_version_is_refused(vm, arm):
    from azrdp.payloads.schema import ResultSchemaError

    obj = healthy()
    obj["version"] = "0.9.0"
    arm.accept_run_command(VM_ID, run_command_value(result_line(obj)))
    with pytest.raises(ResultSchemaError, match="version 0.9.0"):
        diagnose_guest(vm, instance_view=READY_VIEW)


def test_through_azrdps_session_factory(fake_credential, arm):
    from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings

    clock = ManualClock()
    session = AzureSession(fake_credential, SUB, endpoint=ArmEndpoint(BASE), polling_interval=0,
                           retry=RetrySettings(total=0), clock=clock)
    arm.conflict(VM_ID)
    arm.accept_run_command(VM_ID, run_command_value(result_line(healthy())))
    diagnosis = diagnose_guest(session.vm(Target("vm1", "rg1"), clock=clock), instance_view=READY_VIEW)
    assert diagnosis.run.attempts == 2 and diagnosis.run.conflict_waits == [CONFLICT_BACKOFF_FIRST]
