"""The RDP wire probe: does the RDP port really answer, with which protocol and certificate?

- ``probe(host, port, ...) -> ProbeResult``: one attempt over one TCP connection.
- ``probe_series(...) -> SeriesResult``: repeated attempts with success rate and timing spread.
- ``wait_until_answers(...) -> WaitResult``: poll with a deadline until RDP answers.
- ``rdp_checks(result) -> list[Check]``: rdp.tcp, rdp.negotiation, rdp.tls, rdp.cert.
- ``parse_target("host[:port]")``: what users type, IPv6 literals included.

Names are loaded on first use: `azrdp probe` is a cold-started process, and a single probe
needs neither the series, the wait loop nor (until a certificate arrives) `cryptography`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "CertInfo": "azrdp.rdp.certinfo",
    "rdp_checks": "azrdp.rdp.checks",
    "DEFAULT_RDP_PORT": "azrdp.rdp.endpoint",
    "format_target": "azrdp.rdp.endpoint",
    "parse_target": "azrdp.rdp.endpoint",
    "SeriesResult": "azrdp.rdp.series",
    "probe_series": "azrdp.rdp.series",
    "WaitResult": "azrdp.rdp.wait",
    "wait_until_answers": "azrdp.rdp.wait",
    "OUTCOMES": "azrdp.rdp.wire_probe",
    "ProbeResult": "azrdp.rdp.wire_probe",
    "probe": "azrdp.rdp.wire_probe",
}

__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from azrdp.rdp.certinfo import CertInfo
    from azrdp.rdp.checks import rdp_checks
    from azrdp.rdp.endpoint import DEFAULT_RDP_PORT, format_target, parse_target
    from azrdp.rdp.series import SeriesResult, probe_series
    from azrdp.rdp.wait import WaitResult, wait_until_answers
    from azrdp.rdp.wire_probe import OUTCOMES, ProbeResult, probe


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
