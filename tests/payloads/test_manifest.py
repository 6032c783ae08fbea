"""manifest.json and turning Python values into Run Command parameters."""

from __future__ import annotations

import pytest

from azrdp.errors import UsageError
from azrdp.payloads import manifest, payload


def test_manifest_lists_every_payload_with_its_file():
    entries = {e["id"]: e for e in manifest()["payloads"]}
    assert set(entries) == {"diagnose", "repair", "rescue"}
    assert manifest()["result_marker"] == "AZRDP-RESULT:"
    for entry in entries.values():
        assert payload(entry["id"]).script_text()  # the file ships with the package


@pytest.mark.parametrize("payload_id", ["diagnose", "repair", "rescue"])
def test_script_lines_rebuild_the_file_byte_for_byte(payload_id):
    spec = payload(payload_id)
    assert ("\n".join(spec.script_lines()) + "\n").encode() == spec.script_text().encode()


def test_values_become_strings_in_manifest_order():
    params = payload("repair").run_command_parameters(
        {"RunId": "run-1", "Steps": ["sessions", "rdp-config", "sessions"], "LogOffActive": True})
    assert params == [{"name": "Steps", "value": "rdp-config,sessions"},
                      {"name": "LogOffActive", "value": "true"},
                      {"name": "RunId", "value": "run-1"}]
    assert payload("diagnose").run_command_parameters({"EventHours": 48}) == [{"name": "EventHours", "value": "48"}]
    assert payload("diagnose").run_command_parameters({}) == []


@pytest.mark.parametrize("payload_id, values, message", [
    ("repair", {}, "needs parameter Steps"),
    ("repair", {"Steps": []}, "takes one or more of"),
    ("repair", {"Steps": ["cert", "format-c"]}, "'format-c'"),
    ("repair", {"Steps": ["cert"], "LogOffActive": "yes"}, "must be true or false"),
    ("repair", {"Steps": ["cert"], "Force": True}, "has no parameter 'Force'"),
    ("diagnose", {"EventHours": 0}, "between 1 and 168"),
    ("diagnose", {"EventHours": "24"}, "whole number"),
    ("diagnose", {"EventHours": True}, "whole number"),
    ("diagnose", {"RunId": "a'; Remove-Item C:\\ -Recurse"}, "must match"),
    ("diagnose", {"RunId": "ok\n"}, "must match"),
    ("diagnose", {"RunId": "x" * 37}, "must match"),
])
def test_bad_values_are_refused_before_anything_is_sent(payload_id, values, message):
    with pytest.raises(UsageError, match=message) as caught:
        payload(payload_id).run_command_parameters(values)
    assert caught.value.exit_code == 2


def test_unknown_payload():
    with pytest.raises(KeyError, match="no payload 'nope'"):
        payload("nope")
