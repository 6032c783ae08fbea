"""One knob, speed: simulated latencies run N times faster, and simulated time is accounted."""

from __future__ import annotations

from datetime import datetime

import pytest
from azure.core.rest import HttpRequest

from azrdp.clock import ManualClock
from azrdp.emulator import timescale as ts
from azrdp.emulator.timescale import TimeScale
from tests.support.arm_api import COMPUTE_API
from tests.support.emulator_support import session_for

RG, VM = "rg-azrdp-demo", "vm-web-01"


def test_speed_divides_simulated_durations():
    clock = ManualClock()
    scale = TimeScale(100, seed=1, clock=clock)
    assert scale.real(30) == pytest.approx(0.3)
    clock.advance(0.5)
    assert scale.now() == pytest.approx(50)
    scale.sleep(30)
    assert clock.sleeps == [pytest.approx(0.3)] and scale.now() == pytest.approx(80)
    assert all(20 <= scale.draw(ts.RUN_COMMAND) <= 40 for _ in range(100))


def test_speed_must_be_positive():
    with pytest.raises(ValueError, match="speed must be a positive number"):
        TimeScale(0)


def test_seed_makes_durations_reproducible():
    first, second = TimeScale(10, seed=3), TimeScale(10, seed=3)
    assert [first.draw(ts.RESTART) for _ in range(5)] == [second.draw(ts.RESTART) for _ in range(5)]


@pytest.mark.parametrize("speed", [1.0, 1000.0])
def test_operations_report_their_simulated_duration_whatever_the_speed(start_emulator, fake_credential, speed):
    emu = start_emulator(speed=speed, clock=ManualClock())
    azure = session_for(emu, fake_credential)
    url = (f"/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Compute/"
           f"virtualMachines/{VM}/runCommand?api-version={COMPUTE_API}")
    started = azure.compute.send_request(HttpRequest("POST", url, json={"commandId": "RunPowerShellScript", "script": ["x"]}))
    status_url = started.headers["Azure-AsyncOperation"]
    emu.advance(40)
    status = azure.compute.send_request(HttpRequest("GET", status_url)).json()
    took = (datetime.fromisoformat(status["endTime"][:26]) - datetime.fromisoformat(status["startTime"][:26])).total_seconds()
    assert status["status"] == "Succeeded" and 20 <= took <= 40
    assert emu.simulated_seconds() >= 40


def test_a_fast_emulator_completes_a_restart_and_boot_while_counting_simulated_time(start_emulator, fake_credential):
    emu = start_emulator(speed=5000)
    azure = session_for(emu, fake_credential)
    azure.compute.virtual_machines.begin_restart(RG, VM).result()
    assert emu.simulated_seconds() >= 60  # a restart takes 60-120 simulated seconds
