"""One repair at a time per VM: `azrdp fix` refuses (exit 2, nothing changed) while another Run
Command is in progress on the VM, unless --force. The real CLI against the emulator, whose VM
instance view shows the RunCommandWindows extension Transitioning while a command runs."""

from __future__ import annotations

from click.testing import CliRunner

from azrdp.cli import cli
from azrdp.emulator import Emulator


def test_a_fix_beside_a_run_command_in_flight_is_refused(tmp_path, fake_credential):
    from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings
    from azrdp.clock import ManualClock

    with Emulator.start("expired-cert", speed=5000.0, seed=5) as emu:
        vm = emu.vm()
        emu.inject("run_command_hang")          # the other run's Run Command never finishes
        session = AzureSession(fake_credential, emu.subscription_id, endpoint=ArmEndpoint(emu.base_url),
                               polling_interval=0, retry=RetrySettings(total=0, backoff_factor=0), clock=ManualClock())
        session.compute.virtual_machines.begin_run_command(vm.resource_group, vm.name, {
            "commandId": "RunPowerShellScript", "script": ["Start-Sleep 600"]})
        audit = tmp_path / "audit.jsonl"
        result = CliRunner().invoke(cli, ["fix", vm.name, "-g", vm.resource_group, "--yes", "--audit-log", str(audit),
                                          "--source-ip", emu.state.client_ip, "--probe-timeout", "2"],
                                    env=emu.environment())
        sent = emu.count("VirtualMachines_RunCommand")
        restarts = emu.count("VirtualMachines_Restart")
    assert result.exit_code == 2, result.output
    assert "another Run Command is in progress on VM" in result.stderr and "--force" in result.stderr
    assert sent == 1 and restarts == 0 and audit.read_text() == ""
