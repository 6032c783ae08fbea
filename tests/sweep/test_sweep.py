"""azrdp sweep against the ARM emulator, through the real SDK clients and real RDP listeners."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from azrdp.cli import cli
from azrdp.clock import ManualClock
from azrdp.emulator import Emulator
from azrdp.emulator.scenarios import SUBSCRIPTION_ID, SUBSCRIPTION_NAME
from azrdp.errors import NotFoundError, UsageError
from azrdp.plan import STEP_NAMES
from azrdp.sweep import GATED_STEPS, UNATTENDED_STEPS, FixPolicy, Selection, sweep
from tests.support.sweep_support import FAST, PROBE_TIMEOUT, outcomes, tenant_session

EXPECTED = {"vm-healthy-001": "healthy", "vm-healthy-002": "healthy", "vm-0x904-001": "unhealthy",
            "vm-nsg-blocked-001": "unhealthy", "vm-agent-not-ready-001": "healthy"}
"""A check-only sweep reads the VM agent only of a VM whose RDP does not answer (the fleet lists
report power state, not the agent): the agent-not-ready VM answers RDP, so it is healthy here; a
guest sweep reads every running VM's agent and finds it (GUEST_EXPECTED)."""
GUEST_EXPECTED = {**EXPECTED, "vm-agent-not-ready-001": "unhealthy"}


def run_sweep(emu, selection=None, **kwargs):
    kwargs.setdefault("probe_timeout", PROBE_TIMEOUT)
    kwargs.setdefault("source_ip", emu.state.client_ip)
    session = kwargs.pop("session", None) or tenant_session(emu)
    return sweep(session, selection or Selection(), **kwargs)


def test_check_only_reports_every_vm_and_changes_nothing(fleet):
    seen = []
    result = run_sweep(fleet, on_result=seen.append, resource_graph=False)   # the ARM lists' reads below
    assert outcomes(result) == EXPECTED
    assert sorted(r.vm.name for r in seen) == sorted(EXPECTED)          # each VM reported as it finished
    assert result.exit_code == 1 and not result.ok
    assert result.subscriptions == [SUBSCRIPTION_ID]                      # every visible subscription
    by_name = {r.vm.name: r for r in result.results}
    assert by_name["vm-nsg-blocked-001"].summary.startswith("nsg.nic: NSG vm-nsg-blocked-001-nsg denies TCP 3389")
    assert by_name["vm-nsg-blocked-001"].answers is False
    agent = next(c for c in by_name["vm-agent-not-ready-001"].checks if c.id == "vm.agent")
    assert agent.status.value == "skip" and agent.summary.startswith("not read")
    assert by_name["vm-0x904-001"].summary.startswith("rdp.cert:")
    assert by_name["vm-healthy-001"].answers is True
    for write in ("VirtualMachines_RunCommand", "VirtualMachines_Restart", "VirtualMachines_Start",
                  "SecurityRules_CreateOrUpdate"):
        assert fleet.count(write) == 0
    # the subscription's lists answered for all five VMs; the two running VMs that fail a check
    # had their agent read, and the one of them whose RDP does not answer (the NSG-blocked VM) its
    # serial log's health report (tests/sweep/test_sweep_reads.py counts reads in detail)
    assert fleet.count("NetworkInterfaces_ListAll") == 1 and fleet.count("NetworkInterfaces_List") == 0
    assert fleet.count("Subnets_Get") == 0 and fleet.count("VirtualMachines_Get") == 0
    assert fleet.count("VirtualMachines_InstanceView") == 2
    assert fleet.count("VirtualMachines_RetrieveBootDiagnosticsData") == 1
    assert [c.id for c in by_name["vm-nsg-blocked-001"].checks].count("boot.health") == 1
    assert not any(c.id == "boot.health" for c in by_name["vm-healthy-001"].checks)
    assert result.reads["list_pages"] == 6 and result.reads["per_vm_reads"] == 2 + 1


def test_guest_reads_each_running_vm_once_with_a_ready_agent(fleet):
    result = run_sweep(fleet, guest=True, session=tenant_session(fleet))
    assert outcomes(result) == GUEST_EXPECTED
    by_name = {r.vm.name: r for r in result.results}
    assert by_name["vm-agent-not-ready-001"].summary.startswith("vm.agent:")
    # the agent-not-ready VM is never sent a Run Command (it would hang for 90 minutes)
    sent = [c.path.split("/")[-2] for c in fleet.calls if c.operation == "VirtualMachines_RunCommand"]
    assert sorted(sent) == ["vm-0x904-001", "vm-healthy-001", "vm-healthy-002", "vm-nsg-blocked-001"]
    checks = {c.id for c in next(r for r in result.results if r.vm.name == "vm-0x904-001").checks}
    assert {"guest.cert", "guest.machinekeys", "guest.sessions"} <= checks


def test_a_fix_sweep_points_an_agent_not_ready_vm_to_azrdp_rescue_with_its_cost(tmp_path):
    """Issue 16 item 2: a VM whose agent is not Ready is not repaired (no Run Command: it would hang),
    and its report says the way is `azrdp rescue`, with its time and temporary VM, beside what its
    serial log's health report said (boot.health, read once)."""
    with Emulator.start(fleet={"agent-not-ready": 1}, speed=FAST) as emu:
        result = run_sweep(emu, guest=True, policy=FixPolicy.unattended(), audit_path=tmp_path / "audit.jsonl")
        [vm] = result.results
        assert vm.outcome == "unhealthy" and vm.repair["verdict"] == "not_attempted"
        assert "`azrdp rescue vm-agent-not-ready-001 -g rg-azrdp-fleet` (about 10-30 minutes and a temporary " \
               "rescue VM" in vm.summary
        assert [c.id for c in vm.checks].count("boot.health") == 1
        assert emu.count("VirtualMachines_RunCommand") == 0
        assert emu.count("VirtualMachines_RetrieveBootDiagnosticsData") == 1


def test_selection_by_tag_group_subscription_name_and_windows_only():
    with Emulator.start(fleet={"healthy": 4}, speed=FAST) as emu:
        def change(backend):
            vms = {vm.name: vm for vm in backend.all_vms()}
            vms["vm-healthy-001"].tags = {"Role": "web", "env": "prod"}
            vms["vm-healthy-002"].tags = {"role": "web", "env": "test"}
            vms["vm-healthy-003"].tags = {"role": "web", "env": "prod"}
            vms["vm-healthy-003"].os_type = "Linux"
        emu.update(change)
        selection = Selection((SUBSCRIPTION_NAME,), ("rg-azrdp-fleet",), (("role", "web"), ("env", "prod")))
        result = run_sweep(emu, selection, resource_graph=False)
        assert outcomes(result) == {"vm-healthy-001": "healthy"}   # tag names ignore case; Linux left alone
        assert result.exit_code == 0
        assert emu.count("Subscriptions_List") == 1 and emu.count("VirtualMachines_List") == 1
        graph = run_sweep(emu, selection)                           # the same selection by Resource Graph
        assert outcomes(graph) == {"vm-healthy-001": "healthy"} and graph.reads["source"] == "resource-graph"
        query = next(c for c in emu.calls if c.operation == "Resources").body["query"]
        assert emu.count("Resources") == 1 and "where resourceGroup in~ ('rg-azrdp-fleet')" in query
        only_key = run_sweep(emu, Selection(tags=(Selection.parse_tag("env"),)))
        assert sorted(outcomes(only_key)) == ["vm-healthy-001", "vm-healthy-002"]
        with pytest.raises(NotFoundError, match="no Windows VM matches .*tags role=db"):
            run_sweep(emu, Selection(tags=(("role", "db"),)))
        with pytest.raises(UsageError, match="no subscription named 'nope'"):
            run_sweep(emu, Selection(subscriptions=("nope",)))


@pytest.mark.parametrize("resource_graph, read", [(False, "VirtualMachines_InstanceView"), (True, "VirtualMachines_Get")],
                         ids=["arm-lists", "resource-graph"])
def test_a_vm_that_fails_does_not_stop_the_others(fleet, resource_graph, read):
    """The VM's own read (its agent after the lists; the VM itself after Resource Graph) fails."""
    fleet.inject("server_error", operation=read, vm="vm-nsg-blocked-001", status=500, count=None)
    result = run_sweep(fleet, resource_graph=resource_graph)
    by_name = {r.vm.name: r for r in result.results}
    failed = by_name["vm-nsg-blocked-001"]   # its agent read (RDP does not answer) fails
    assert failed.outcome == "error" and failed.error["exit_code"] == 5
    assert "InternalServerError" in failed.summary or "internal server error" in failed.summary.lower()
    assert by_name["vm-healthy-001"].outcome == "healthy"
    assert len(result.results) == 5


def test_a_429_pauses_every_worker_once_and_nobody_gives_up(fleet):
    """A throttled read is sent again after the shared pause, below the SDK's retries (which are
    off here): no VM fails although ten requests were throttled."""
    clock = ManualClock()
    fleet.inject("throttle", operation="VirtualMachines_ListAll", count=10, retry_after=7)
    result = run_sweep(fleet, session=tenant_session(fleet, clock=clock), max_parallel=5, resource_graph=False)
    assert outcomes(result) == EXPECTED
    assert fleet.count("VirtualMachines_ListAll", status=429) == 10
    assert result.throttling["throttled"] == 10
    assert 7 in clock.sleeps and all(s <= 7 for s in clock.sleeps)


def test_read_limit_throttles_like_arm_and_the_sweep_stays_within_it():
    """ARM's token bucket in the emulator, on a manual simulated clock (it moves only by the
    emulated per-call latency, 0.05-0.3 s, and by advance())."""
    from azure.core.exceptions import HttpResponseError

    from azrdp.emulator.throttling import ReadLimit

    emulator_clock = ManualClock()
    with Emulator.start("healthy", speed=1, clock=emulator_clock, read_limit=ReadLimit(3, 0.01)) as emu:
        session = tenant_session(emu).for_subscription(emu.subscription_id)
        remaining = []
        for _ in range(3):
            response = session.compute.virtual_machines.get(emu.resource_group, "vm-web-01",
                                                            cls=lambda pipeline, body, headers: pipeline)
            remaining.append(response.http_response.headers["x-ms-ratelimit-remaining-subscription-reads"])
        assert remaining == ["2", "1", "0"]
        with pytest.raises(HttpResponseError) as caught:
            session.compute.virtual_machines.get(emu.resource_group, "vm-web-01")
        assert caught.value.status_code == 429 and caught.value.error.code == "SubscriptionRequestsThrottled"
        wait = int(caught.value.response.headers["Retry-After"])      # whole seconds, like ARM
        assert 90 < wait <= 100 and f"try again after '{wait}' seconds" in caught.value.error.message
        emu.advance(wait)   # a token is back
        session.compute.virtual_machines.get(emu.resource_group, "vm-web-01")


def test_the_policy_covers_every_repair_step_exactly_once():
    assert sorted(UNATTENDED_STEPS + GATED_STEPS) == sorted(STEP_NAMES)
    assert FixPolicy.unattended().skipped == list(GATED_STEPS)
    assert FixPolicy.unattended(["machinekeys-acl,machinekeys-rename"]).skipped == []
    with pytest.raises(UsageError, match="'start' is not a repair step"):
        FixPolicy.unattended(["start"])


def test_cli_json_lines_summary_table_and_junit(fleet, emu_env, tmp_path):
    emu_env(fleet)
    junit = tmp_path / "sweep.xml"
    outcome = CliRunner().invoke(cli, ["sweep", "-o", "json", "--probe-timeout", str(PROBE_TIMEOUT),
                                       "--source-ip", fleet.state.client_ip, "--junit-xml", str(junit)])
    assert outcome.exit_code == 1, outcome.output
    lines = [json.loads(line) for line in outcome.stdout.splitlines()]
    vms = [line for line in lines if line["type"] == "vm"]
    assert {v["vm"]: v["outcome"] for v in vms} == EXPECTED
    assert all(v["schema_version"] == 1 for v in lines)
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["counts"]["healthy"] == 3 and summary["ok"] is False
    assert "VM  " in outcome.stderr and "5 VMs in" in outcome.stderr    # the table, on stderr with -o json
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "2" and suite.get("errors") == "0"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == set(EXPECTED)
    assert cases["vm-healthy-001"].find("failure") is None
    assert cases["vm-nsg-blocked-001"].find("failure").get("message").startswith("unhealthy: nsg.nic:")


def test_cli_text_and_exit_codes(emu_env):
    with Emulator.start(fleet={"healthy": 2}, speed=FAST) as emu:
        emu_env(emu)
        ok = CliRunner().invoke(cli, ["sweep", "--probe-timeout", str(PROBE_TIMEOUT)])
        assert ok.exit_code == 0, ok.output
        assert ok.stdout.splitlines()[0].split() == ["VM", "RESOURCE", "GROUP", "OUTCOME", "SECONDS", "SUMMARY"]
        assert "2 VMs in" in ok.stdout and "2 healthy" in ok.stdout
        none = CliRunner().invoke(cli, ["sweep", "--tag", "nope=1"])
        assert none.exit_code == 4 and "no Windows VM matches" in none.stderr
        bad = CliRunner().invoke(cli, ["sweep", "--allow-step", "machinekeys-acl"])
        assert bad.exit_code == 2 and "--allow-step only applies with --fix" in bad.stderr
        bad_tag = CliRunner().invoke(cli, ["sweep", "--tag", "=x"])
        assert bad_tag.exit_code == 2 and "has no tag name" in bad_tag.stderr
        assert emu.count("VirtualMachines_RunCommand") == 0


def test_one_gate_for_all_workers_announced_once_per_pause():
    from azrdp.azure.throttle import SharedBackoff, retry_after_seconds

    clock = ManualClock()
    said = []
    gate = SharedBackoff("subscription s", clock=clock, notify=said.append)
    gate.hold(5, "virtualMachines/vm1")      # worker 1 throttled
    gate.hold(3, "virtualMachines/vm2")      # worker 2, inside the same pause: nothing new
    gate.hold(6, "virtualMachines/vm3")      # worker 3 extends it by one second
    assert len(said) == 1 and "every worker pauses 5 s" in said[0]
    gate.wait()                               # any worker now waits out the whole pause
    assert clock.monotonic() == 6 and gate.to_dict() == {"throttled": 3, "pauses": 1, "paused_seconds": 6.0}
    gate.wait()
    assert clock.monotonic() == 6             # open: no wait
    gate.hold(1)
    assert len(said) == 2 and gate.pauses == 2
    assert retry_after_seconds("0.25") == 0.25 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0   # a date in the past: go now


def test_a_429_asking_to_retry_at_once_still_pauses_instead_of_spinning():
    from types import SimpleNamespace

    from azrdp.azure.throttle import MIN_PAUSE, SharedBackoff, backoff_transport

    class Inner:  # the wire: ARM answers 429 "Retry-After: 0" forever
        sent = 0

        def send(self, request, **kwargs):
            Inner.sent += 1
            return SimpleNamespace(status_code=429, headers={"Retry-After": "0"})

    clock = ManualClock()
    gate = SharedBackoff("subscription s", clock=clock, max_wait=10)
    transport = backoff_transport(gate, Inner())
    response = transport.send(SimpleNamespace(url="https://management.azure.com/subscriptions/s/x"))
    assert response.status_code == 429                       # surfaces once max_wait is used up
    assert Inner.sent == 11 and clock.monotonic() == 10 * MIN_PAUSE


@pytest.mark.parametrize("options, message", [({"port": 70000}, "--port 70000 is not a TCP port"),
                                              ({"probe_timeout": 0}, "--probe-timeout 0 must be more than 0"),
                                              ({"source_ip": "nope"}, "--source-ip 'nope' is not an IP address")])
def test_a_bad_port_or_source_ip_is_a_usage_error_before_any_request(fleet, options, message):
    with pytest.raises(UsageError, match=message):
        run_sweep(fleet, **options)
    assert fleet.calls == []


def test_the_table_keeps_one_row_per_vm_whatever_a_summary_quotes():
    """A summary quotes guest, ARM and certificate text: a newline in it must not make a second row
    (here one that would read as a healthy VM), nor a control character reach the terminal."""
    from azrdp.render.sweep import render_table
    from azrdp.sweep import FixPolicy, SelectedVm, SweepResult, VmResult

    vm = SelectedVm("00000000-0000-0000-0000-000000000000", "rg1", "vm1", "/subscriptions/x/resourceGroups/rg1/vm1")
    hostile = VmResult(vm, "unhealthy", "rdp.cert: CN=evil\nvm2  rg1  healthy  0.1  RDP answers\x1b[2K", seconds=1.0)
    table = render_table(SweepResult(Selection(), FixPolicy(), [vm.subscription], [hostile]))
    rows = table.splitlines()
    assert len(rows) == 3 and rows[1].split()[:3] == ["vm1", "rg1", "unhealthy"], table
    assert "\\u000avm2" in rows[1] and "\x1b" not in table


def test_a_vm_another_run_just_restarted_is_busy_not_unhealthy_and_not_repaired(tmp_path):
    """`sweep --fix` beside a `fix` that restarted its VM and is waiting to verify it: the sweep
    once called that VM unhealthy and could repair it again. Real Azure: the restart operation
    ends in 0.2-0.3 s and the instance view keeps the agent's stale Ready while Windows boots."""
    from azrdp.azure.power import restart_vm

    clock = ManualClock()
    with Emulator.start(fleet={"healthy": 1, "0x904": 1}, speed=1.0, clock=clock, seed=3) as emu:
        session = tenant_session(emu, clock=clock)
        restart_vm(session.for_subscription(emu.subscription_id).compute, "rg-azrdp-fleet", "vm-0x904-001",
                   clock=clock, polling_interval=0)
        result = run_sweep(emu, session=session, policy=FixPolicy.unattended(), audit_path=tmp_path / "audit.jsonl")
        by_name = {r.vm.name: r for r in result.results}
        sent = [c.path.split("/")[-2] for c in emu.calls if c.operation in ("VirtualMachines_RunCommand",
                                                                             "VirtualMachines_Restart")]
    busy = by_name["vm-0x904-001"]
    assert busy.outcome == "busy" and busy.summary.startswith("a restart Windows has not answered yet"), busy.summary
    assert by_name["vm-healthy-001"].outcome == "healthy"
    assert sent == ["vm-0x904-001"]                # only the other run's restart: the sweep sent nothing
    assert result.counts()["busy"] == 1 and result.exit_code == 1
