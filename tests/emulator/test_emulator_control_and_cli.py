"""The control endpoint (reset, scenario, faults, state) and `azrdp emulator serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from azure.core.exceptions import HttpResponseError

from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings
from tests.support.emulator_support import session_for

RG, VM = "rg-azrdp-demo", "vm-web-01"


def control(emu, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{emu.base_url}/_emulator{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        text = response.read()
        return response.status, (json.loads(text) if text else None)


def test_state_describes_vms_guests_and_listeners(emu):
    status, state = control(emu, "GET", "/state")
    vm = state["vms"][0]
    assert status == 200 and vm["name"] == VM and vm["power"] == "running" and vm["rdp"]["mode"] == "open"
    assert vm["guest"]["certificate"]["expired"] is False and state["scenario"]["scenario"] == "healthy"


def test_faults_over_the_control_endpoint(emu, fake_credential):
    status, fault = control(emu, "POST", "/faults", {"kind": "throttle", "operation": "VirtualMachines_Get", "count": None})
    assert status == 201 and fault["kind"] == "throttle"
    compute = session_for(emu, fake_credential).compute
    with pytest.raises(HttpResponseError):
        compute.virtual_machines.get(RG, VM)
    assert control(emu, "GET", "/faults")[1][0]["fired"] == 1
    control(emu, "DELETE", "/faults")
    assert compute.virtual_machines.get(RG, VM).name == VM


def test_load_scenario_and_reset(emu, fake_credential):
    control(emu, "POST", "/scenario", {"scenario": "deallocated"})
    compute = session_for(emu, fake_credential).compute
    assert compute.virtual_machines.instance_view(RG, VM).statuses[1].code == "PowerState/deallocated"
    compute.virtual_machines.begin_start(RG, VM).result()
    assert compute.virtual_machines.instance_view(RG, VM).statuses[1].code == "PowerState/running"
    status, state = control(emu, "POST", "/reset")
    assert status == 200 and state["vms"][0]["power"] == "deallocated"
    assert [c["operation"] for c in control(emu, "GET", "/calls")[1]] == []


def test_bad_control_requests_say_what_is_wrong(emu):
    with pytest.raises(urllib.error.HTTPError) as caught:
        control(emu, "POST", "/faults", {"kind": "gremlins"})
    assert caught.value.code == 400 and "unknown fault kind" in json.loads(caught.value.read())["error"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        control(emu, "POST", "/scenario", {"scenario": "0x905"})
    assert "unknown scenario '0x905'" in json.loads(caught.value.read())["error"]


def _serve(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZRDP_", "IDENTITY_"))}
    return subprocess.Popen([sys.executable, "-m", "azrdp", "emulator", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_serve_prints_the_environment_and_stops_cleanly_on_ctrl_c(fake_credential):
    process = _serve("--scenario", "0x904", "--speed", "1000", "-o", "json")
    try:
        announced = json.loads(process.stdout.readline())
        environment = announced["environment"]
        endpoint = ArmEndpoint.from_environ(environment)
        session = AzureSession(fake_credential, environment["AZURE_SUBSCRIPTION_ID"], endpoint=endpoint,
                               polling_interval=0, retry=RetrySettings(total=0))
        assert session.compute.virtual_machines.get(RG, VM).name == VM
        assert environment["IDENTITY_ENDPOINT"].startswith(environment["AZRDP_ARM_ENDPOINT"])
        assert announced["vms"][0]["name"] == VM
    finally:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=10)
    assert process.returncode == 0 and "Traceback" not in err


def test_serve_text_output_names_what_to_export():
    process = _serve("--scenario", "expired-cert", "--speed", "1000")
    try:
        lines = [process.stdout.readline() for _ in range(4)]
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
    assert "scenario expired-cert" in lines[0]
    assert lines[3].startswith("  export AZRDP_ARM_ENDPOINT=http://127.0.0.1:")


def test_serve_rejects_an_unknown_scenario_in_one_line():
    result = subprocess.run([sys.executable, "-m", "azrdp", "emulator", "serve", "--scenario", "0x905"],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: unknown --scenario '0x905'.") and "Traceback" not in result.stderr


def test_start_refuses_an_unknown_scenario_or_speed():
    from azrdp.emulator import Emulator

    with pytest.raises(ValueError, match="unknown scenario '0x905'"):
        Emulator.start("0x905")
    with pytest.raises(ValueError, match="speed must be a positive number"):
        Emulator.start(speed=0)
