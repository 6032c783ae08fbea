"""A local stand-in for Azure: an ARM emulator with simulated Windows guests and real RDP
listeners on loopback, laid out like moto (models, responses, urls, exceptions, server).

``Emulator.start(scenario=..., speed=...)`` is the entry point; docs/emulator.md explains it.
"""

from azrdp.emulator.server import Emulator
from azrdp.emulator.scenarios import SCENARIOS

__all__ = ["Emulator", "SCENARIOS"]
