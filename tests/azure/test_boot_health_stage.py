"""boot.health in every diagnosis (diagnose, fix, sweep, rescue): the serial log's "Microsoft Azure
VM Health Report" is read where it matters (a running VM whose agent is not Ready, or whose RDP
does not answer), never for a healthy or a stopped VM, judged on the session's clock, and named by
the plan beside the offline route (azrdp rescue) when the agent cannot run a repair."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone

import pytest

from azrdp.checks import Status
from azrdp.clock import ManualClock
from azrdp.diagnose import diagnose
from azrdp.plan import plan
from azrdp.target import Target
from tests.support.fake_arm import VmSpec

WALL = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
TARGET = Target("vm1", "rg1")


@pytest.fixture
def clock():
    """The session's clock (tests/support/azure_fixtures.make_session takes it): its wall time is
    what a report's age is judged against, not the machine's."""
    return ManualClock(wall=WALL)


def serial_log(at: datetime, *, rdp: bool = True, termservice: str = "Running") -> str:
    """A Windows serial log without SAC, as Azure/azure-support-scripts' Get-VMHealth reads it."""
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    report = {"reportTime": stamp, "services": [{"name": "TermService", "state": termservice}],
              "remoteAccess": {"windows": {"rdpEnabled": rdp, "rdpFirewallAccess": "Allowed", "rdpPort": 3389}}}
    return (f"Windows Boot Manager\nComputer is booting.\n"
            f"======== Microsoft Azure VM Health Report - Start {stamp} ========\n{json.dumps(report)}\n"
            f"======== Microsoft Azure VM Health Report - End {stamp} ========\n")


def boot_reads(arm) -> int:
    return sum(1 for c in arm.calls if c.path.endswith("/retrieveBootDiagnosticsData"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_agent_not_ready_reads_the_report_and_judges_its_age_on_the_session_clock(arm, session):
    arm.add_vm(VmSpec(agent="Not Ready", serial_log=serial_log(WALL - timedelta(hours=2), rdp=False,
                                                                termservice="Stopped")))
    diagnosis = diagnose(session, TARGET, probe=False)

    check = diagnosis.check("boot.health")
    assert check.status is Status.FAIL
    assert check.summary.startswith("the guest's health report says: Remote Desktop is disabled; TermService is Stopped")
    assert check.details["age_hours"] == 2.0             # the session's clock, not datetime.now()
    assert boot_reads(arm) == 1
    # the plan cannot repair through Run Command: it names what the guest said and the offline route
    [blocker] = plan(diagnosis).blockers
    assert "Remote Desktop is disabled; TermService is Stopped" in blocker and "(boot.health)" in blocker
    assert "`azrdp rescue vm1 -g rg1` (about 10-30 minutes and a temporary rescue VM" in blocker


def test_the_read_is_counted_among_the_diagnosis_requests(arm, session):
    arm.add_vm(VmSpec(agent="Not Ready"))
    with_report = diagnose(session, TARGET, probe=False)
    arm.add_vm(VmSpec(agent="Not Ready", boot_diagnostics=False))
    without = diagnose(session, TARGET, probe=False)
    assert without.check("boot.health").summary == "boot diagnostics are disabled: no serial log"
    assert with_report.requests == without.requests + 1 and boot_reads(arm) == 1


def test_an_old_report_is_a_warning_and_a_missing_one_a_skip(arm, session):
    arm.add_vm(VmSpec(agent="Not Ready", serial_log=serial_log(WALL - timedelta(days=3), rdp=False)))
    stale = diagnose(session, TARGET, probe=False).check("boot.health")
    assert stale.status is Status.WARN and stale.details["age_hours"] == 72.0
    arm.add_vm(VmSpec(agent="Not Ready"))                 # SAC on: Windows writes no report
    missing = diagnose(session, TARGET, probe=False).check("boot.health")
    assert missing.status is Status.SKIP and missing.summary == "no Microsoft Azure VM Health Report in the serial log"


def test_rdp_not_answering_reads_it_even_with_a_ready_agent(arm, session):
    arm.add_vm(VmSpec(serial_log=serial_log(WALL - timedelta(minutes=30), termservice="Stopped")))
    diagnosis = diagnose(session, TARGET, host=f"127.0.0.1:{closed_port()}", probe_timeout=1.0)
    assert diagnosis.probe_result is not None and not diagnosis.probe_result.answers
    check = diagnosis.check("boot.health")
    assert check.status is Status.FAIL and "TermService is Stopped" in check.summary


@pytest.mark.parametrize("spec", [VmSpec(), VmSpec(power="deallocated", agent=None)], ids=["healthy", "deallocated"])
def test_a_healthy_or_stopped_vm_costs_no_serial_log_read(arm, session, spec):
    arm.add_vm(VmSpec(**{**spec.__dict__, "serial_log": serial_log(WALL, rdp=False)}))
    diagnosis = diagnose(session, TARGET, probe=False)
    assert diagnosis.check("boot.health") is None and boot_reads(arm) == 0
