"""azrdp check, the CI smoke check, against the emulator; its JUnit read back by a JUnit reader."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from azrdp.cli import cli
from azrdp.emulator import Emulator
from azrdp.smoke import smoke_check
from azrdp.target import Target
from tests.support.sweep_support import FAST, PROBE_TIMEOUT, tenant_session


def read_junit(path):
    """What a CI system reads: suites, cases, failures and errors."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    cases = {}
    for suite in root.iter("testsuite"):
        for case in suite.iter("testcase"):
            outcome = "failure" if case.find("failure") is not None else "error" if case.find("error") is not None \
                else "skipped" if case.find("skipped") is not None else "passed"
            cases[case.get("name")] = outcome
    return root, cases


@pytest.fixture
def demo():
    with Emulator.start("healthy", vms=2, speed=FAST) as emu:
        yield emu


def test_passing_check_with_host_needs_no_azure_at_all(demo, emu_env, tmp_path):
    emu_env(demo)
    host, port = demo.rdp_endpoint("vm-web-01")
    junit = tmp_path / "rdp.xml"
    done = CliRunner().invoke(cli, ["check", "vm-web-01", "-g", demo.resource_group, "--host", f"{host}:{port}",
                                    "--junit-xml", str(junit)])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"VM {demo.resource_group}/vm-web-01: PASS: RDP answers on {host}:{port}")
    assert demo.calls == []                                    # no sign-in, no ARM request
    root, cases = read_junit(junit)
    assert cases == {"rdp.tcp": "passed", "rdp.negotiation": "passed", "rdp.tls": "passed", "rdp.cert": "passed"}
    assert root.get("failures") == "0" and root.get("errors") == "0" and root.get("tests") == "4"


def test_passing_check_finds_the_public_ip_through_arm(demo, emu_env):
    emu_env(demo)
    done = CliRunner().invoke(cli, ["check", "vm-web-02", "-g", demo.resource_group, "-o", "json"])
    assert done.exit_code == 0, done.output
    import json

    body = json.loads(done.stdout)
    assert body["ok"] is True and body["signed_in"] is True and body["diagnosis"] is None
    assert [c["id"] for c in body["checks"]] == ["rdp.tcp", "rdp.negotiation", "rdp.tls", "rdp.cert"]
    assert demo.count("VirtualMachines_RunCommand") == 0


def test_failing_check_explains_from_azure_and_the_guest(fleet):
    """The library call CI makes, with LRO polls back to back: RDP fails, so Azure and the guest are read."""
    target = Target("vm-0x904-001", "rg-azrdp-fleet", fleet.subscription_id)
    result = smoke_check(lambda: tenant_session(fleet).for_subscription(fleet.subscription_id), target,
                         probe_timeout=PROBE_TIMEOUT, source_ip=fleet.state.client_ip)
    assert result.exit_code == 1
    ids = {c.id: c.status.value for c in result.checks}
    assert ids["rdp.cert"] == "fail" and ids["guest.cert"] == "fail" and ids["guest.sessions"] == "fail"
    assert fleet.count("VirtualMachines_RunCommand") == 1      # one read-only guest diagnosis


def test_failing_check_junit_and_exit_code(fleet, emu_env, tmp_path):
    emu_env(fleet)
    junit = tmp_path / "rdp.xml"
    done = CliRunner().invoke(cli, ["check", "vm-nsg-blocked-001", "-g", "rg-azrdp-fleet", "--no-guest",
                                    "--probe-timeout", str(PROBE_TIMEOUT), "--source-ip", fleet.state.client_ip,
                                    "--junit-xml", str(junit)])
    assert done.exit_code == 1, done.output
    assert "FAIL: nsg.nic: NSG vm-nsg-blocked-001-nsg denies TCP 3389" in done.stdout
    root, cases = read_junit(junit)
    assert cases["nsg.nic"] == "failure" and cases["rdp.tcp"] == "failure" and cases["vm.power"] == "passed"
    assert int(root.get("failures")) >= 2


def test_wait_polls_until_rdp_answers(demo):
    """--wait: a VM whose RDP is not up yet passes once it answers (polled on the injected clock)."""
    from datetime import datetime, timezone

    from azrdp.clock import ManualClock

    host, port = demo.rdp_endpoint("vm-web-01")
    demo.update(lambda backend: backend.vm(demo.subscription_id, demo.resource_group, "vm-web-01")
                .guest.services["TermService"].__setattr__("state", "Stopped"))
    clock = ManualClock()
    attempts = []
    now = datetime.now(timezone.utc)   # the probe judges the certificate by the clock's wall time

    class StartOnThirdSleep(ManualClock):
        def sleep(self, seconds):
            clock.sleep(seconds)
            attempts.append(seconds)
            if len(attempts) == 3:
                demo.update(lambda backend: backend.vm(demo.subscription_id, demo.resource_group, "vm-web-01")
                            .guest.services["TermService"].__setattr__("state", "Running"))

    result = smoke_check(lambda: pytest.fail("a passing check with --host must not sign in"),
                         Target("vm-web-01", demo.resource_group), host=f"{host}:{port}", wait=60,
                         probe_timeout=PROBE_TIMEOUT, clock=StartOnThirdSleep(wall=now))
    assert result.ok and result.attempts >= 4 and not result.signed_in
    assert sum(clock.sleeps) < 60


@pytest.mark.parametrize("auth", ["device-code", "browser"])
def test_interactive_sign_in_is_refused(auth):
    done = CliRunner().invoke(cli, ["check", "vm", "-g", "rg", "--auth", auth])
    assert done.exit_code == 2 and "signs in non-interactively only" in done.stderr


def test_bad_input_is_one_line_and_exit_2():
    done = CliRunner().invoke(cli, ["check"])
    assert done.exit_code == 2 and done.stderr.count("\n") == 1
