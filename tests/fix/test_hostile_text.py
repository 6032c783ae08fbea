"""Untrusted text is data: a hostile guest's Run Command output and hostile ARM strings never crash
azrdp after a change, and never reach the terminal, the audit or JUnit raw.

Through the real CLI (CliRunner) and the real SDK clients against the ARM stand-in."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from azrdp.cli import cli
from tests.support.fake_arm import VmSpec
from tests.support.fix_support import (
    Guest,
    SwappableRdp,
    audit_actions,
    install,
    is_repair,
    parameters,
    repair_result,
    run_commands,
)
from tests.support.payload_samples import expired_cert, healthy, result_line
from tests.support.rdp_peers import write_cert

pytestmark = pytest.mark.usefixtures("cli_env")

ESCAPES = "\x1b[2K\r  ok   rdp.cert \x9b0m\u202e"


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def rdp(certs):
    peer = SwappableRdp(certs[1])
    yield peer
    peer.close()


def hostile_repair(answer):
    """A guest that answers the diagnose payload truthfully and the repair payload with ``answer(body)``."""
    guest = Guest(healthy())

    def reply(body):
        return answer(body) if is_repair(body) else guest.answer(body)

    return reply


def assert_no_raw_controls(*texts: str) -> None:
    for text in texts:
        assert not any(c in text for c in "\x1b\r\x9b\u202e"), repr(text[:400])


@pytest.mark.parametrize("stdout, problem", [
    ("AZRDP-RESULT:" + "[" * 4000, "nested deeper than 16 levels"),
    ('AZRDP-RESULT:{"payload": "repair", "version": "1.0.0", "run_id": "\\ud800", "steps": []}', "not valid Unicode"),
])
def test_a_hostile_repair_answer_is_reported_with_what_was_sent(arm, rdp, audit_path, stdout, problem):
    spec = install(arm, Guest(healthy()))
    arm.guest_answers[spec.vm_id.lower()] = [hostile_repair(lambda body: stdout)] * 10
    result = run("fix", "vm1", "-g", "rg1", "--yes", "--step", "cert", "--host", rdp.host, "-o", "json",
                 "--audit-log", str(audit_path))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "failed" and problem in doc["error"]["message"]
    assert audit_actions(audit_path) == [("run-command", None, "sent"), ("failed", None, None)]
    assert run_commands(arm)[1] == 1


def test_an_answer_for_another_run_is_refused(arm, rdp, audit_path):
    spec = install(arm, Guest(healthy()))

    def other_run(body):
        steps = parameters(body)["Steps"].split(",")
        return result_line(repair_result(steps, set(), run_id="azrdp-someone-else"))

    arm.guest_answers[spec.vm_id.lower()] = [hostile_repair(other_run)] * 10
    result = run("fix", "vm1", "-g", "rg1", "--yes", "--step", "cert", "--host", rdp.host, "--audit-log",
                 str(audit_path))
    assert result.exit_code == 1, result.output
    assert "the guest answered for run 'azrdp-someone-else'" in result.stdout


def test_guest_text_with_terminal_escapes_is_shown_escaped_everywhere(arm, rdp, audit_path, tmp_path):
    spec = install(arm, Guest(healthy()))

    def failing_with_escapes(body):
        steps = parameters(body)["Steps"].split(",")
        answer = repair_result(steps, set(), unfixable={"cert"}, run_id=parameters(body)["RunId"])
        answer["steps"][0]["error"] = ("denied" + ESCAPES + "\nVerdict: FORGED")[:60]
        return result_line(answer)

    arm.guest_answers[spec.vm_id.lower()] = [hostile_repair(failing_with_escapes)] * 10
    junit = tmp_path / "r.xml"
    result = run("fix", "vm1", "-g", "rg1", "--yes", "--step", "cert", "--host", rdp.host, "--audit-log",
                 str(audit_path), "--junit-xml", str(junit))
    assert "Traceback" not in result.output
    assert_no_raw_controls(result.stdout, result.stderr, audit_path.read_text())
    assert "denied\\u001b[2K\\u000d" in result.stdout
    assert not any(line.startswith("Verdict: FORGED") for line in result.stdout.splitlines())
    ET.fromstring(junit.read_text())     # well-formed XML


def test_hostile_arm_strings_are_escaped(arm, tmp_path):
    spec = install(arm, Guest(healthy()), VmSpec(agent="Not Ready"))
    view = arm.resources[spec.vm_id.lower()]["properties"]["instanceView"]
    view["osName"] = "Windows" + ESCAPES
    view["vmAgent"]["statuses"][0]["message"] = "unresponsive" + ESCAPES + "\nok   vm.agent   Ready"
    view["vmAgent"]["statuses"][0]["displayStatus"] = "Not Ready" + ESCAPES
    for output in ("text", "json"):
        result = run("diagnose", "vm1", "-g", "rg1", "--no-probe", "--no-guest", "-v", "-o", output)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert_no_raw_controls(result.stdout, result.stderr)
        if output == "json":
            json.loads(result.stdout)
        else:
            assert not any(line.lstrip().startswith("ok   vm.agent   Ready") for line in result.stdout.splitlines())


def test_a_newline_in_the_served_certificate_cannot_forge_a_plan_step(arm, audit_path, tmp_path):
    """The plan quotes check summaries, and rdp.cert's quotes the CN of the certificate the port
    served: whoever controls that certificate controls that text. A newline in it once put a forged
    '2. sessions' line into the plan shown before the question."""
    utc = dt.timezone.utc
    hostile = write_cert(tmp_path, cn="evil\n  2. sessions           forged" + ESCAPES, name="evil",
                         not_before=dt.datetime(2020, 1, 1, tzinfo=utc), not_after=dt.datetime(2021, 1, 1, tzinfo=utc))
    peer = SwappableRdp(hostile)
    try:
        install(arm, Guest(expired_cert()))
        result = run("fix", "vm1", "-g", "rg1", "--yes", "--host", peer.host, "--audit-log", str(audit_path))
    finally:
        peer.close()
    assert "Traceback" not in result.output
    assert_no_raw_controls(result.stdout, result.stderr)
    plan = result.stdout[result.stdout.index("Plan ("):].split("\n  Run Command:")[0].splitlines()[1:]
    assert [line.split()[1] for line in plan] == ["machinekeys-acl", "cert", "sessions", "reboot"], plan
    assert "CN=evil\\u000a  2. sessions" in result.stdout
