"""The result schemas: realistic results pass, every kind of mismatch is named, sizes are bounded."""

from __future__ import annotations

import pytest

from azrdp.azure.runcommand_output import RUN_COMMAND_OUTPUT_CAP
from azrdp.errors import ProtocolError
from azrdp.payloads import payload_ids
from azrdp.payloads.schema import (
    REPAIR_STEP_SCHEMAS,
    REPAIR_STEPS,
    RESULT_LINE_BUDGET,
    SCHEMAS,
    Field,
    ResultSchemaError,
    validate_result,
    worst_case_size,
)
from tests.support.payload_samples import SCENARIOS, healthy, healthy_repair


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_realistic_diagnose_results_follow_the_schema(name):
    obj = SCENARIOS[name]()
    assert validate_result("diagnose", obj) is obj


def test_realistic_repair_result_follows_the_schema():
    validate_result("repair", healthy_repair())


def test_every_manifest_payload_has_a_schema():
    assert sorted(payload_ids()) == sorted(SCHEMAS)


@pytest.mark.parametrize("payload_id", sorted(SCHEMAS))
def test_the_longest_result_line_a_schema_allows_fits_run_commands_cap(payload_id):
    size = worst_case_size(payload_id)
    assert size <= RESULT_LINE_BUDGET < RUN_COMMAND_OUTPUT_CAP


def _walk(spec: Field, path: str):
    yield path, spec
    for name, sub in (spec.fields or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if spec.items is not None:
        yield from _walk(spec.items, f"{path}[]")
    for name, sub in (spec.variants or {}).items():
        yield from _walk(sub, f"{path}<{name}>")


@pytest.mark.parametrize("payload_id", sorted(SCHEMAS))
def test_every_field_is_documented_and_bounded(payload_id):
    for path, spec in _walk(SCHEMAS[payload_id], "$"):
        assert spec.doc.strip(), f"{path} has no doc"
        if spec.kind == "str":
            assert spec.max_len, f"{path}: free text must be bounded"
        if spec.kind == "array":
            assert spec.max_items, f"{path}: lists must be bounded"


def test_repair_step_variants_cover_every_step():
    assert tuple(REPAIR_STEP_SCHEMAS) == REPAIR_STEPS


@pytest.mark.parametrize("mutate, where, problem", [
    (lambda r: r.pop("cert"), "$.cert", "required key is missing"),
    (lambda r: r.update(extra=1), "$", "unknown key(s) ['extra']"),
    (lambda r: r["rdp"].update(port="3389"), "$.rdp.port", "expected int, got str"),
    (lambda r: r["rdp"].update(port=4294967296), "$.rdp.port", "4294967296 is above 4294967295"),
    (lambda r: r["listener"].update(tcp_listening=1), "$.listener.tcp_listening", "expected bool, got int"),
    (lambda r: r["services"][0].update(state="running"), "$.services[0].state", "'running' is not one of"),
    (lambda r: r["cert"]["certs"][0].update(thumbprint="abc"), "$.cert.certs[0].thumbprint", "does not match"),
    (lambda r: r["cert"]["certs"][0].update(not_after="2026-07-02"), "$.cert.certs[0].not_after", "does not match"),
    (lambda r: r["sessions"]["list"].extend([r["sessions"]["list"][0]] * 4), "$.sessions.list", "5 items, at most 4"),
    (lambda r: r.update(os=[]), "$.os", "expected object, got array"),
    (lambda r: r["machinekeys"].update(sddl="x" * 137), "$.machinekeys.sddl", "longer than 136"),
    (lambda r: r["services"].__setitem__(0, None), "$.services[0]", "null is not allowed"),
])
def test_mismatches_name_the_path_and_the_problem(mutate, where, problem):
    obj = healthy()
    mutate(obj)
    with pytest.raises(ResultSchemaError) as caught:
        validate_result("diagnose", obj)
    assert caught.value.path == where
    assert problem in caught.value.problem
    assert isinstance(caught.value, ProtocolError)


def test_a_section_may_be_null_when_it_failed():
    obj = healthy()
    obj["firewall"] = None
    validate_result("diagnose", obj)


def test_repair_steps_must_follow_the_fixed_order_once_each():
    obj = healthy_repair()
    obj["steps"].reverse()
    with pytest.raises(ResultSchemaError, match="in the order"):
        validate_result("repair", obj)


def test_repair_step_is_checked_against_its_own_variant():
    obj = healthy_repair()
    obj["steps"][0]["info"]["removed"] = []   # a cert-step key inside rdp-config
    with pytest.raises(ResultSchemaError) as caught:
        validate_result("repair", obj)
    assert caught.value.path == "$.steps[0].info"


def test_unknown_step_name_is_refused():
    obj = healthy_repair()
    obj["steps"][0]["name"] = "format-c"
    with pytest.raises(ResultSchemaError, match="name must be one of"):
        validate_result("repair", obj)


def test_unknown_payload_is_a_programming_error():
    with pytest.raises(ValueError, match="no result schema"):
        validate_result("nope", {})
