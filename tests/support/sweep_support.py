"""What the fleet tests share: the mixed fleet of the issue, sessions for an emulator, and the
environment a user (or an Automation job) exports to reach one."""

from __future__ import annotations

from typing import Any

from azrdp.azure.session import ArmEndpoint, RetrySettings, open_tenant_session
from azrdp.clock import Clock, ManualClock

FAST = 5000.0   # simulated latencies 5000x faster: a Run Command takes ~6 ms, a restart ~20 ms
MIXED = {"healthy": 2, "0x904": 1, "nsg-blocked": 1, "agent-not-ready": 1}
PROBE_TIMEOUT = 2.0   # an NSG-dropped SYN costs this much real time per probe; 0.5 s let a healthy VM
                      # miss its TLS handshake on a loaded 2-core machine (load 9-15); e2e_support uses 2 s too


def tenant_session(emu: Any, *, clock: Clock | None = None, retries: int = 0, **kwargs: Any) -> Any:
    """azrdp's own factory pointed at ``emu`` (static token), LRO polls back to back; retry waits
    on a ManualClock unless a clock is given."""
    return open_tenant_session(endpoint=ArmEndpoint(emu.base_url), polling_interval=0,
                               retry=RetrySettings(total=retries, backoff_factor=0),
                               clock=clock or ManualClock(), environ={}, **kwargs)


def emulator_env(emu: Any, *, identity: bool = False) -> dict[str, str]:
    env = emu.environment()
    if not identity:
        env.pop("IDENTITY_ENDPOINT")
        env.pop("IDENTITY_HEADER")
    return env


def outcomes(result: Any) -> dict[str, str]:
    return {r.vm.name: r.outcome for r in result.results}
