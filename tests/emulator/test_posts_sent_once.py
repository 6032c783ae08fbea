"""Non-idempotent POSTs are sent once (issue 11, item 3 of the issue, item 2 of the work): Run Command,
restart and start are never resent by the SDK's retry policy, whatever the retry settings, and an
ambiguous failure is followed by a look at the instance view, not by a second POST.

azure-core's RetryPolicy resends a POST after 500/503/504 and after any answer carrying Retry-After
(azure-sdk-notes.md section 4); a second Run Command finds the first one's changes and reports
"unchanged", hiding them and the reboot they need."""

from __future__ import annotations

import pytest

from azrdp.azure.lro import PowerRequestUncertain
from azrdp.azure.power import restart_vm
from azrdp.azure.runcommand import RunCommandUncertain, run_script
from azrdp.clock import ManualClock
from azrdp.errors import EXIT_AZURE
from tests.support.emulator_support import session_for

RG, VM = "rg-azrdp-demo", "vm-web-01"
SCRIPT = ["Write-Output hi"]


def _posts(emu, operation="VirtualMachines_RunCommand"):
    return [c for c in emu.calls if c.operation == operation and c.method == "POST"]


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_on_the_run_command_post_is_sent_once_and_said_to_be_uncertain(emu, fake_credential, status):
    emu.inject("server_error", operation="VirtualMachines_RunCommand", status=status, count=None, retry_after=1)
    azure = session_for(emu, fake_credential, retries=4)          # the SDK would retry 4 times
    with pytest.raises(RunCommandUncertain) as caught:
        run_script(azure.compute, RG, VM, SCRIPT, clock=ManualClock(), polling_interval=0)
    assert len(_posts(emu)) == 1                                   # the call log shows one POST
    error = caught.value
    assert error.exit_code == EXIT_AZURE and error.started is False
    assert f"Azure answered {status} while starting Run Command in VM {RG}/{VM}: the command may have run, " \
           "though the VM shows no Run Command started since the request" in error.message
    assert emu.state.run_commands == []                            # and indeed none reached the guest


def test_a_run_command_accepted_before_its_answer_was_lost_is_found_in_the_instance_view(start_emulator,
                                                                                         fake_credential):
    # At 20x, not FAST's 5000x: azrdp dates the request by the 503's Date less its wall-clock round
    # trip, while the emulator's clock runs `speed` times faster than the wall; at 5000x a few ms
    # of scheduling delay under load are simulated seconds, and an accepted command looked older
    # than the request (the flake two engineers saw). At 20x a second of delay stays within bounds.
    emu = start_emulator(speed=20)
    emu.inject("server_error", operation="VirtualMachines_RunCommand", status=503, accepted=True, retry_after=1)
    azure = session_for(emu, fake_credential, retries=4)
    with pytest.raises(RunCommandUncertain) as caught:
        run_script(azure.compute, RG, VM, SCRIPT, clock=ManualClock(), polling_interval=0)
    assert len(_posts(emu)) == 1 and len(emu.state.run_commands) == 1   # it did start, once
    assert caught.value.started is True
    assert "the command may have run (the VM shows a Run Command that " in caught.value.message
    assert emu.count("VirtualMachines_InstanceView") >= 1               # looked before deciding


def test_a_reset_connection_after_the_run_command_was_accepted_is_not_resent(emu, fake_credential):
    emu.inject("connection_reset", operation="VirtualMachines_RunCommand", accepted=True)
    azure = session_for(emu, fake_credential, retries=4)
    with pytest.raises(RunCommandUncertain, match="the connection to Azure failed") as caught:
        run_script(azure.compute, RG, VM, SCRIPT, clock=ManualClock(), polling_interval=0)
    assert len(_posts(emu)) == 1 and caught.value.started is True


def test_a_restart_answered_503_after_it_was_accepted_is_not_resent(emu, fake_credential):
    emu.inject("server_error", operation="VirtualMachines_Restart", status=503, accepted=True, retry_after=1)
    azure = session_for(emu, fake_credential, retries=4)
    with pytest.raises(PowerRequestUncertain) as caught:
        restart_vm(azure.compute, RG, VM, clock=ManualClock(), polling_interval=0)
    assert len(_posts(emu, "VirtualMachines_Restart")) == 1
    assert "may or may not have been accepted, so it may have run (" in caught.value.message


def test_reads_and_read_only_posts_are_still_retried(emu, fake_credential):
    emu.inject("server_error", operation="VirtualMachines_InstanceView", status=503, count=2, retry_after=None)
    azure = session_for(emu, fake_credential, retries=4)
    assert azure.compute.virtual_machines.instance_view(RG, VM).statuses
    assert emu.count("VirtualMachines_InstanceView", status=503) == 2
    emu.inject("server_error", operation="VirtualMachines_RetrieveBootDiagnosticsData", status=503, count=1,
               retry_after=None)
    assert azure.compute.virtual_machines.retrieve_boot_diagnostics_data(RG, VM).console_screenshot_blob_uri
    assert emu.count("VirtualMachines_RetrieveBootDiagnosticsData") == 2
