"""Throttling that neither hammers nor hangs (issue 11, item 2): Compute answers 429 with
Retry-After 120 s, at times 1200 s (real-azure-behaviour.md, "Throttling"). A wait that fits the
command's budget (AZRDP_THROTTLE_BUDGET, default 300 s) is waited out and announced with its
length; one beyond it ends the command at once with one line naming the throttled operation group
and when to retry (exit 5). Rate-limit headers running low slow azrdp down before the bucket is
empty."""

from __future__ import annotations

import time

from click.testing import CliRunner

from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings
from azrdp.azure.throttle import RateLimitPacer, ThrottleBudget
from azrdp.cli import cli
from azrdp.clock import ManualClock
from azrdp.diagnose import diagnose
from azrdp.errors import EXIT_AZURE
from azrdp.target import Target
from tests.support.emulator_support import session_for

RG, VM = "rg-azrdp-demo", "vm-web-01"


def _cli(emu, *args, env=None):
    environ = {**emu.environment(), "CI": "true", **(env or {})}
    environ.pop("IDENTITY_ENDPOINT", None)
    environ.pop("IDENTITY_HEADER", None)
    return CliRunner().invoke(cli, list(args), env=environ)


def test_a_1200_s_retry_after_ends_a_diagnose_within_the_budget_with_one_line_and_exit_5(emu):
    emu.inject("throttle", operation="VirtualMachines_Get", count=None, retry_after=1200)
    began = time.monotonic()
    result = _cli(emu, "diagnose", VM, "-g", RG, "--no-probe")
    assert time.monotonic() - began < 30                      # never a 1200 s sleep
    assert result.exit_code == EXIT_AZURE, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert errors[0].startswith(f"Error: Azure is throttling Microsoft.Compute/LowCostGet3Min while reading VM "
                                f"{RG}/{VM}: retry after 1200 s (at ")
    assert "AZRDP_THROTTLE_BUDGET" in errors[0]
    assert emu.count("VirtualMachines_Get", status=429) == 1   # not hammered either


def test_a_retry_after_within_the_budget_is_waited_out_and_announced_with_its_length(emu, fake_credential):
    clock = ManualClock()
    said = []
    emu.inject("throttle", operation="VirtualMachines_Get", count=1, retry_after=120)
    azure = AzureSession(fake_credential, emu.subscription_id, endpoint=ArmEndpoint(emu.base_url),
                         polling_interval=0, retry=RetrySettings(backoff_factor=0), clock=clock,
                         on_wait=said.append)
    diagnosis = diagnose(azure, Target(VM, RG), probe=False)
    assert diagnosis.check("vm.power").status.value == "pass"
    assert 120 in clock.sleeps and max(clock.sleeps) <= azure.retry.throttle_budget
    assert any("Azure is throttling Microsoft.Compute/LowCostGet3Min (429)" in s and "waiting 120 s" in s
               for s in said), said
    assert azure.throttle.spent >= 120


def test_the_budget_is_shared_by_the_whole_command(emu, fake_credential):
    clock = ManualClock()
    emu.inject("throttle", operation="VirtualMachines_Get", count=None, retry_after=120)
    azure = AzureSession(fake_credential, emu.subscription_id, endpoint=ArmEndpoint(emu.base_url),
                         polling_interval=0, retry=RetrySettings(backoff_factor=0, throttle_budget=300), clock=clock)
    try:
        azure.compute.virtual_machines.get(RG, VM)
    except Exception as err:  # noqa: BLE001 - the SDK's 429
        assert getattr(err, "status_code", None) == 429
    assert sum(clock.sleeps) <= 300 and clock.sleeps.count(120) == 2   # 2 x 120 fit, a third does not


def test_a_throttled_restart_beyond_the_budget_is_not_slept(emu, fake_credential):
    from azrdp.azure.arm_errors import Throttled
    from azrdp.azure.power import restart_vm

    clock = ManualClock()
    emu.inject("throttle", operation="VirtualMachines_Restart", count=None, retry_after=1200)
    azure = session_for(emu, fake_credential, clock=clock)
    try:
        restart_vm(azure.compute, RG, VM, clock=clock, polling_interval=0)
    except Throttled as err:
        assert err.group == "Microsoft.Compute/UpdateVM3Min" and err.retry_after == 1200
    else:
        raise AssertionError("a 1200 s throttle was not reported")
    assert clock.sleeps == [] and emu.count("VirtualMachines_Restart") == 1


def test_every_answer_carries_rate_limit_headers(emu, fake_credential):
    azure = session_for(emu, fake_credential)
    raw = azure.compute.virtual_machines.get(RG, VM, cls=lambda pipeline, body, headers: pipeline.http_response)
    groups = raw.headers["x-ms-ratelimit-remaining-resource"].split(",")
    assert [g.split(";")[0] for g in groups] == ["Microsoft.Compute/LowCostGet3Min", "Microsoft.Compute/LowCostGet30Min"]
    assert int(raw.headers["x-ms-ratelimit-remaining-subscription-reads"]) < 250
    nic = azure.network.network_interfaces.get(RG, "vm-web-01-nic",
                                               cls=lambda pipeline, body, headers: pipeline.http_response)
    assert "x-ms-ratelimit-remaining-subscription-reads" in nic.headers


def test_a_low_bucket_slows_azrdp_down_before_it_is_empty():
    clock = ManualClock()
    said = []
    pacer = RateLimitPacer(clock=clock, budget=ThrottleBudget(300), notify=said.append)
    pacer.observe({"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/HighCostGet3Min;5,"
                                                        "Microsoft.Compute/HighCostGet30Min;900"})
    pacer.wait()
    assert clock.sleeps == [30.0]                                  # 180 s shared out over the 5 left (+1)
    assert said == ["Azure's rate limit for Microsoft.Compute/HighCostGet3Min is nearly used up; spacing "
                    "requests 30.0 s apart ..."]
    pacer.observe({"x-ms-ratelimit-remaining-subscription-reads": "240"})
    pacer.wait()
    assert clock.sleeps == [30.0]                                  # plenty left: no pause
    pacer.observe({"x-ms-ratelimit-remaining-subscription-reads": "0"})
    pacer.wait()
    assert clock.sleeps == [30.0, 0.4]                             # refill to the low-water mark at 25/s
