"""Helpers for the emulator's tests: azrdp's own client factory pointed at an emulator, Microsoft's
example bodies, and a ``cls=`` callback that keeps the wire JSON beside the SDK model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings
from azrdp.clock import ManualClock

EXAMPLES = Path(__file__).resolve().parent.parent / "arm-examples"
FAST = 5000.0  # simulated latencies 5000x faster: a 30 s Run Command takes 6 ms


def session_for(emulator: Any, credential: Any, *, retries: int = 0, clock: ManualClock | None = None) -> AzureSession:
    """SDK clients exactly as azrdp builds them for an emulator endpoint. Retry waits go to a
    ManualClock (recorded, not slept); LRO polling does not wait between polls."""
    return AzureSession(credential, emulator.subscription_id, endpoint=ArmEndpoint(emulator.base_url),
                        polling_interval=0, retry=RetrySettings(total=retries, backoff_factor=0),
                        clock=clock or ManualClock())


def example(name: str) -> dict[str, Any]:
    """One of Microsoft's spec examples (``compute/VirtualMachines_Get``)."""
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def raw_and_model(pipeline_response: Any, deserialized: Any, headers: Any) -> tuple[Any, Any]:
    """``cls=`` callback: keep the wire JSON beside the SDK model the SDK made of it."""
    body = pipeline_response.http_response.text()
    return (json.loads(body) if body else None), deserialized


def run_payload(azure: AzureSession, payload_id: str, values: dict[str, Any] | None = None, *,
                script: list[str] | None = None, rg: str = "rg-azrdp-demo", vm: str = "vm-web-01") -> tuple[str, str]:
    """(StdOut, StdErr) of one shipped payload sent through the real SDK's begin_run_command."""
    from azrdp.payloads import payload

    shipped = payload(payload_id)
    body = {"commandId": "RunPowerShellScript", "script": script or shipped.script_lines(),
            "parameters": shipped.run_command_parameters(values or {})}
    out, err = (s.message for s in azure.compute.virtual_machines.begin_run_command(rg, vm, body).result().value)
    return out, err


def payload_answer(azure: AzureSession, payload_id: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The payload's one result line, checked against its schema (validate_result)."""
    from azrdp.payloads.schema import RESULT_MARKER, validate_result

    stdout, stderr = run_payload(azure, payload_id, values)
    assert stderr == ""
    lines = stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(RESULT_MARKER)
    return validate_result(payload_id, json.loads(lines[0][len(RESULT_MARKER):]))


def cli_json(emu: Any, monkeypatch: Any, command: str, *options: str) -> tuple[int, dict]:
    """`azrdp <command> vm-web-01 -o json` of the scenario through the real CLI, with the
    emulator's environment (its credential, not managed identity) and its RDP endpoint:
    (exit code, document)."""
    from click.testing import CliRunner

    from azrdp.cli import cli

    env = emu.environment()
    env.pop("IDENTITY_ENDPOINT", None)
    env.pop("IDENTITY_HEADER", None)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    host, port = emu.rdp_endpoint()
    result = CliRunner().invoke(cli, [command, "vm-web-01", "-g", "rg-azrdp-demo", "-o", "json", "--host",
                                      f"{host}:{port}", "--probe-timeout", "2", *options])
    return result.exit_code, json.loads(result.stdout)


def diagnose(emu: Any, monkeypatch: Any) -> tuple[int, dict]:
    """`azrdp diagnose` of the scenario's vm-web-01 (:func:`cli_json`)."""
    return cli_json(emu, monkeypatch, "diagnose")


def checks(doc: dict) -> dict[str, dict]:
    """A diagnosis document's checks by id."""
    return {c["id"]: c for c in doc["checks"]}


def repair(emu: Any, fake_credential: Any, steps: str, **values: Any) -> tuple[dict, dict[str, dict]]:
    """The repair payload's validated result through the real SDK, and its steps by name."""
    result = payload_answer(session_for(emu, fake_credential), "repair", {"Steps": steps, **values})
    return result, {step["name"]: step for step in result["steps"]}
