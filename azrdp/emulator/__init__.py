"""A local stand-in for Azure: an ARM emulator with simulated Windows guests and real RDP
listeners on loopback, laid out like moto (models, responses, urls, exceptions, server).

``Emulator.start(scenario=..., speed=...)`` is the entry point; docs/emulator.md explains it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Emulator", "SCENARIOS"]


def __getattr__(name: str) -> Any:  # imported on first use: `python -m azrdp.emulator.urls` stays light
    if name == "Emulator":
        from azrdp.emulator.server import Emulator

        return Emulator
    if name == "SCENARIOS":
        from azrdp.emulator.scenarios import SCENARIOS

        return SCENARIOS
    raise AttributeError(name)
