"""Fixtures for the emulator's tests: each test starts its own emulator on port 0 (so tests can
run in parallel) and talks to it only through the real azure-mgmt clients, built by azrdp's one
client factory, or through the real RDP wire probe."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from azrdp.azure.session import AzureSession
from azrdp.emulator import Emulator
from tests.support.emulator_support import FAST, session_for


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


@pytest.fixture
def azure(emu: Emulator, fake_credential: Any) -> AzureSession:
    return session_for(emu, fake_credential)
