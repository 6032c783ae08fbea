"""Finding and decoding the one AZRDP-RESULT line in Run Command's value[]."""

from __future__ import annotations

import pytest

from azrdp.azure.runcommand_output import RUN_COMMAND_OUTPUT_CAP, RunCommandOutput, output_from_statuses
from azrdp.errors import ProtocolError
from azrdp.payloads.result import PayloadOutputError, parse_result
from azrdp.payloads.schema import ResultSchemaError
from tests.support.payload_samples import SCENARIOS, healthy, healthy_repair, result_line, run_command_value


def _output(stdout: str, stderr: str = "") -> RunCommandOutput:
    return output_from_statuses(run_command_value(stdout, stderr)["value"])


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_realistic_results_parse(name):
    expected = SCENARIOS[name]()
    assert parse_result("diagnose", _output(result_line(expected) + "\n")) == expected


def test_repair_result_parses():
    assert parse_result("repair", _output(result_line(healthy_repair())))["changed"] is False


def test_stderr_noise_and_stray_lines_do_not_matter():
    stdout = "WARNING: The names of some imported commands include unapproved verbs.\r\n" + result_line(healthy()) + "\r\n"
    stderr = "Get-NetTCPConnection : No matching MSFT_NetTCPConnection objects found\r\n    + CategoryInfo : ObjectNotFound"
    assert parse_result("diagnose", _output(stdout, stderr))["rdp"]["port"] == 3389


def test_sdk_models_and_dicts_give_the_same_output():
    from azure.mgmt.compute.models import RunCommandResult

    body = run_command_value("out", "err")
    model = RunCommandResult(body)
    assert output_from_statuses(model.value) == output_from_statuses(body["value"]) == RunCommandOutput("out", "err")


def test_missing_line_shows_the_tails():
    with pytest.raises(PayloadOutputError) as caught:
        parse_result("diagnose", _output("hello\n", "Set-StrictMode : boom at line 40"))
    message = caught.value.one_line()
    assert "printed no AZRDP-RESULT line" in message
    assert "'hello'" in message and "boom at line 40" in message
    assert isinstance(caught.value, ProtocolError)


def test_line_cut_by_the_4096_byte_cap_is_reported_as_truncated():
    # Run Command keeps the LAST 4,096 bytes: a line longer than that loses its marker.
    line = result_line(healthy())
    big = "x" * RUN_COMMAND_OUTPUT_CAP + "\n" + line
    kept = big.encode()[-RUN_COMMAND_OUTPUT_CAP:].decode()
    padded = line[:10] + " " * RUN_COMMAND_OUTPUT_CAP  # the head of a line, then noise
    output = _output(padded[-RUN_COMMAND_OUTPUT_CAP:])
    assert output.stdout_truncated
    with pytest.raises(PayloadOutputError, match="in the part Run Command kept.*cap and was cut"):
        parse_result("diagnose", output)
    assert parse_result("diagnose", _output(kept)) == healthy()  # noise before the line is cut, the line is whole


def test_incomplete_json_is_a_cut_line():
    line = result_line(healthy())
    with pytest.raises(PayloadOutputError, match="not complete JSON .* the line was cut"):
        parse_result("diagnose", _output(line[:-40]))


def test_two_result_lines_are_refused():
    line = result_line(healthy())
    with pytest.raises(PayloadOutputError, match="printed 2 AZRDP-RESULT lines"):
        parse_result("diagnose", _output(line + "\n" + line))


def test_marker_in_the_middle_of_a_line():
    with pytest.raises(PayloadOutputError, match="middle of a line"):
        parse_result("diagnose", _output("junk " + result_line(healthy())))


def test_json_that_is_not_an_object():
    with pytest.raises(PayloadOutputError, match="not a JSON object"):
        parse_result("diagnose", _output("AZRDP-RESULT:[1,2]"))


def test_schema_mismatch_comes_from_the_validator():
    obj = healthy()
    obj["payload"] = "repair"
    with pytest.raises(ResultSchemaError, match=r"\$\.payload"):
        parse_result("diagnose", _output(result_line(obj)))


def test_to_dict_reports_tails_and_truncation():
    output = _output("a" * 5000, "")
    assert output.to_dict()["stdout_truncated"] is True
    assert output.to_dict()["stdout_tail"].startswith("...")


# -- a hostile guest: bounded parsing ------------------------------------------------------------

@pytest.mark.parametrize("line, problem", [
    ("AZRDP-RESULT:" + "[" * 4000, "nested deeper than 16 levels"),
    ('AZRDP-RESULT:{"a":' * 20 + "1" + "}" * 20, "nested deeper than 16 levels"),
    ('AZRDP-RESULT:{"payload": "diagnose", "x": "\\ud800"}', "not valid Unicode"),
    ('AZRDP-RESULT:{"payload": "diagnose", "x": NaN}', "not azrdp's JSON"),
    ("AZRDP-RESULT:{" + '"x": "' + "a" * 9000 + '"}', "more than Run Command returns"),
])
def test_hostile_result_lines_are_refused_not_crashed_on(line, problem):
    with pytest.raises(PayloadOutputError) as caught:
        parse_result("diagnose", _output(line))
    assert problem in caught.value.message


def test_a_bracket_inside_a_string_is_not_nesting():
    expected = healthy()
    expected["os"]["caption"] = '[[[[[[[[[[[[[[[[[[[[ "\\" {{{{{{{{{{{{{{{{{{'   # a string, not depth
    assert parse_result("diagnose", _output(result_line(expected))) == expected


def test_a_huge_stream_is_cut_to_its_tail():
    output = _output("x" * 500_000 + "\n" + result_line(healthy()))
    assert len(output.stdout) <= 64 * 1024 and parse_result("diagnose", output) == healthy()


def test_the_answer_must_be_for_the_run_and_steps_sent():
    from azrdp.guest import check_answer

    result = healthy_repair()
    asked = [s["name"] for s in result["steps"]]
    check_answer("repair", {**result, "run_id": "r1"}, {"RunId": "r1", "Steps": asked})
    with pytest.raises(ResultSchemaError, match="answered for run '7f3c2a', azrdp sent 'r1'"):
        check_answer("repair", result, {"RunId": "r1", "Steps": asked})
    with pytest.raises(ResultSchemaError, match=r"\$.steps"):
        check_answer("repair", {**result, "run_id": "r1"}, {"RunId": "r1", "Steps": asked[:1]})
