"""Fixtures for the emulator's tests: each test starts its own emulator on port 0 (so tests can
run in parallel) and talks to it only through the real azure-mgmt clients, built by azrdp's one
client factory, or through the real RDP wire probe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings
from azrdp.clock import ManualClock
from azrdp.emulator import Emulator

EXAMPLES = Path(__file__).resolve().parent / "arm-examples"
FAST = 5000.0  # simulated latencies 5000x faster: a 30 s Run Command takes 6 ms


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def start(scenario: str = "healthy", **options: Any) -> Emulator:
        options.setdefault("speed", FAST)
        options.setdefault("seed", 7)
        emulator = Emulator.start(scenario, **options)
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emu(start_emulator: Callable[..., Emulator]) -> Emulator:
    return start_emulator()


def session_for(emulator: Emulator, credential: Any, *, retries: int = 0, clock: ManualClock | None = None) -> AzureSession:
    """SDK clients exactly as azrdp builds them for an emulator endpoint. Retry waits go to a
    ManualClock (recorded, not slept); LRO polling does not wait between polls."""
    return AzureSession(credential, emulator.subscription_id, endpoint=ArmEndpoint(emulator.base_url),
                        polling_interval=0, retry=RetrySettings(total=retries, backoff_factor=0),
                        clock=clock or ManualClock())


@pytest.fixture
def azure(emu: Emulator, fake_credential: Any) -> AzureSession:
    return session_for(emu, fake_credential)


def example(name: str) -> dict[str, Any]:
    """One of Microsoft's spec examples (``compute/VirtualMachines_Get``)."""
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def raw_and_model(pipeline_response: Any, deserialized: Any, headers: Any) -> tuple[Any, Any]:
    """``cls=`` callback: keep the wire JSON beside the SDK model the SDK made of it."""
    body = pipeline_response.http_response.text()
    return (json.loads(body) if body else None), deserialized
