"""Helpers for the rescue tests (tests/rescue): a session on an emulator with waits on a
ManualClock, the rescue options the tests use, and a progress sink that presses Ctrl-C at a phase."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from azrdp.azure.session import ArmEndpoint, RetrySettings, StaticTokenCredential, open_session
from azrdp.clock import ManualClock
from azrdp.emulator import Emulator
from azrdp.rescue import RescueOptions
from azrdp.target import Target

FAST = 5000.0
TARGET = Target("vm-web-01", "rg-azrdp-demo")


def session_for(emu: Emulator, *, transport: Any = None):
    """``transport``: the SDK clients' HTTP transport (a test's wrapper around the real one)."""
    return open_session(endpoint=ArmEndpoint(emu.base_url), credential=StaticTokenCredential(),
                        subscription=emu.subscription_id, environ={}, polling_interval=0, transport=transport,
                        clock=ManualClock(wall=datetime.now(timezone.utc)),   # certificates are judged by real time
                        retry=RetrySettings(total=0, backoff_factor=0))


def options(emu: Emulator, **kw) -> RescueOptions:
    return RescueOptions(source_ip=emu.state.client_ip, probe_timeout=0.5, **kw)


class StopAt:
    """A progress sink that presses Ctrl-C when the job announces phase ``phase``."""

    WORDS = {"snapshot": "Snapshotting", "copy": "Copying", "group": "Creating resource group",
             "network": "rescue VM's network", "rescue-vm": "Creating rescue VM", "offline-repair": "offline repair",
             "detach": "Detaching", "stop": "Stopping VM", "swap": "Swapping in", "start": "Starting VM",
             "verify": "Re-diagnosing", "cleanup": "Deleting resource group"}

    def __init__(self, phase: str):
        self.word = self.WORDS[phase]
        self.fired = False

    def info(self, text: str) -> None:
        if not self.fired and self.word in text:
            self.fired = True
            raise KeyboardInterrupt

    def status(self, text: str) -> None:
        pass

    def done(self) -> None:
        pass
