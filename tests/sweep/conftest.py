"""Fixtures for the fleet tests: a mixed emulated fleet and sessions built by azrdp's own factory."""

from __future__ import annotations

import pytest

from azrdp.emulator import Emulator
from tests.support.sweep_support import FAST, MIXED, emulator_env, tenant_session  # noqa: F401


@pytest.fixture
def fleet():
    """healthy x2, 0x904, nsg-blocked, agent-not-ready in rg-azrdp-fleet."""
    with Emulator.start(fleet=MIXED, speed=FAST) as emu:
        yield emu


@pytest.fixture
def emu_env(monkeypatch):
    """Point the process (CLI, runbook) at an emulator: ``emu_env(emu)``."""
    def apply(emu, *, identity: bool = False):
        for name, value in emulator_env(emu, identity=identity).items():
            monkeypatch.setenv(name, value)
    return apply
