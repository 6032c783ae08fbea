"""docs/emulator.md stays true: the generated operation list, every scenario and every fault."""

from __future__ import annotations

import inspect
from pathlib import Path

from azrdp.emulator import SCENARIOS, responses
from azrdp.emulator.faults import KINDS
from azrdp.emulator.urls import DOC_BEGIN, DOC_END, ROUTES, operations_markdown, snake

DOC = (Path(__file__).resolve().parents[2] / "docs" / "emulator.md").read_text()


def test_operation_list_is_generated_from_the_route_table():
    generated = DOC[DOC.index(DOC_BEGIN) + len(DOC_BEGIN):DOC.index(DOC_END)].strip()
    assert generated == operations_markdown(), \
        "docs/emulator.md is stale: run `python -m azrdp.emulator.urls --write docs/emulator.md`"


def test_every_route_has_its_operationid_handler_and_every_handler_a_route():
    handlers = {name for name, fn in inspect.getmembers(responses, inspect.isfunction)
                if fn.__module__ == responses.__name__ and not name.startswith("_")}
    routed = {snake(route.operation_id) for route in ROUTES}
    assert routed == handlers
    assert all(callable(route.handler) for route in ROUTES)


def test_snake_case_of_operation_ids():
    assert snake("VirtualMachines_RetrieveBootDiagnosticsData") == "virtual_machines_retrieve_boot_diagnostics_data"
    assert snake("PublicIPAddresses_Get") == "public_ip_addresses_get"


def test_every_scenario_and_fault_is_documented():
    for name in SCENARIOS:
        assert f"| `{name}` |" in DOC, name
    for kind in KINDS:
        assert f"| `{kind}` |" in DOC, kind
