"""Agent and power truth (issue 11, item 1), through the real SDK against the emulator on a manual
clock shared by azrdp and the emulator: azrdp's sleeps are the emulator's passing time.

Real Azure (../shared/reference/real-azure-behaviour.md): a restart operation succeeds in 0.2-0.3 s
and Windows reboots afterwards; the instance view meanwhile still shows the agent's last report,
Ready, with a time older than the operation's startTime. A stopped VM keeps that Ready too."""

from __future__ import annotations

from azrdp.azure.power import restart_vm, wait_for_agent, wait_for_reboot
from azrdp.azure.runcommand import agent_state
from azrdp.checks import Status
from azrdp.clock import ManualClock
from azrdp.diagnose import diagnose
from azrdp.rdp import probe
from azrdp.target import Target
from tests.support.emulator_support import session_for

RG, VM = "rg-azrdp-demo", "vm-web-01"


def _manual(start_emulator, fake_credential, scenario="healthy"):
    clock = ManualClock()
    emu = start_emulator(scenario, speed=1.0, clock=clock)
    return emu, session_for(emu, fake_credential, clock=clock), clock


def test_a_fast_restart_then_a_stale_ready_is_not_a_booted_vm(start_emulator, fake_credential):
    emu, azure, clock = _manual(start_emulator, fake_credential)
    compute = azure.compute

    outcome = restart_vm(compute, RG, VM, clock=clock, polling_interval=0)
    assert outcome.seconds < 1.0 and outcome.started is not None      # ARM's operation is already over

    view = compute.virtual_machines.instance_view(RG, VM)
    status = view.vm_agent.statuses[0]
    assert status.display_status == "Ready" and status.time < outcome.started   # stale, as on Azure
    assert agent_state(view) == (True, "the VM agent is Ready")                 # what azrdp used to believe
    ready, why = agent_state(view, since=outcome.started)
    assert not ready and why.startswith("the VM is rebooting: the agent's last report (Ready at ")

    began = clock.monotonic()
    waited = wait_for_agent(compute, RG, VM, clock=clock, since=outcome.started, interval=5.0, timeout=300)
    assert waited.ready and waited.polls > 1
    # Windows went down 3-10 s after the operation and booted for 15-30 s: the wait covered both
    assert 18.0 <= clock.monotonic() - began <= 45.0
    assert emu.snapshot()["vms"][0]["agent_ready"] and not emu.vm().booting


def test_after_a_restart_the_old_listener_cannot_verify_it(start_emulator, fake_credential):
    emu, azure, clock = _manual(start_emulator, fake_credential)
    host, port = emu.rdp_endpoint()
    outcome = restart_vm(azure.compute, RG, VM, clock=clock, polling_interval=0)
    assert probe(host, port, timeout=0.5).answers                            # the old Windows still answers

    reboot = wait_for_reboot(azure.compute, RG, VM, since=outcome.started, clock=clock, timeout=300,
                             port_answers=lambda: probe(host, port, timeout=0.5).answers)
    # down 3-10 s after the operation; the emulator notices it at the next ARM read (every 5 s) at the latest
    assert reboot.seen == "port_down" and 3.0 <= reboot.seconds <= 17.0
    assert emu.vm().booting and not emu.vm().guest.up


def test_diagnose_right_after_a_restart_says_rebooting_not_ready(start_emulator, fake_credential):
    emu, azure, clock = _manual(start_emulator, fake_credential)
    restart_vm(azure.compute, RG, VM, clock=clock, polling_interval=0)
    agent = diagnose(azure, Target(VM, RG), probe=False).check("vm.agent")
    assert agent.status is Status.WARN and agent.summary.startswith("the VM may still be rebooting")


def test_vm_agent_on_a_stopped_vm_is_skip_with_why(start_emulator, fake_credential):
    emu, azure, clock = _manual(start_emulator, fake_credential, "stopped")
    view = azure.compute.virtual_machines.instance_view(RG, VM)
    assert view.statuses[1].code == "PowerState/stopped"
    assert view.vm_agent.statuses[0].display_status == "Ready"                # its last report, kept
    assert view.computer_name and view.os_name
    diagnosis = diagnose(azure, Target(VM, RG), probe=False)
    agent = diagnosis.check("vm.agent")
    assert agent.status is Status.SKIP
    assert agent.summary.startswith("not judged while the VM is stopped: its last report (Ready from ")
    assert agent_state(view)[0] is False and "stopped" in agent_state(view)[1]


def test_deallocated_instance_view_keeps_only_what_azure_keeps(start_emulator, fake_credential):
    from tests.support.emulator_support import raw_and_model

    emu, azure, clock = _manual(start_emulator, fake_credential, "deallocated")
    raw, _ = azure.compute.virtual_machines.instance_view(RG, VM, cls=raw_and_model)
    assert set(raw) == {"disks", "hyperVGeneration", "statuses"}
    assert raw["statuses"][1]["code"] == "PowerState/deallocated"


def test_a_dynamic_public_ip_has_no_address_while_deallocated_and_gets_it_back_on_start(start_emulator,
                                                                                       fake_credential):
    from azrdp.azure.power import start_vm

    emu, azure, clock = _manual(start_emulator, fake_credential, "deallocated")
    pip = azure.network.public_ip_addresses.get(RG, "vm-web-01-ip")
    assert pip.properties.public_ip_allocation_method == "Dynamic" and pip.properties.ip_address is None
    outcome = start_vm(azure.compute, RG, VM, clock=clock, polling_interval=0)
    assert 3.3 <= outcome.seconds <= 5.0                       # a start's operation, as on Azure
    pip = azure.network.public_ip_addresses.get(RG, "vm-web-01-ip")
    assert (pip.properties.ip_address, 3389) == emu.rdp_endpoint()
    waited = wait_for_agent(azure.compute, RG, VM, clock=clock, since=outcome.started, interval=5.0, timeout=300)
    assert waited.ready and waited.polls > 1                   # Windows booted after the operation
