"""The RDP wire probe: does the RDP port really answer, with which protocol and certificate?

- ``probe(host, port, ...) -> ProbeResult``: one attempt over one TCP connection.
- ``probe_series(...) -> SeriesResult``: repeated attempts with success rate and timing spread.
- ``wait_until_answers(...) -> WaitResult``: poll with a deadline until RDP answers.
- ``rdp_checks(result) -> list[Check]``: rdp.tcp, rdp.negotiation, rdp.tls, rdp.cert.
- ``parse_target("host[:port]")``: what users type, IPv6 literals included.
"""

from typing import Any

from azrdp.rdp.checks import rdp_checks
from azrdp.rdp.endpoint import DEFAULT_RDP_PORT, format_target, parse_target
from azrdp.rdp.series import SeriesResult, probe_series
from azrdp.rdp.wait import WaitResult, wait_until_answers
from azrdp.rdp.wire_probe import OUTCOMES, ProbeResult, probe



def __getattr__(name: str) -> Any:
    """CertInfo is loaded on first use: it imports `cryptography`, which `azrdp probe` needs
    only when a certificate arrives."""
    if name == "CertInfo":
        from azrdp.rdp.certinfo import CertInfo

        return CertInfo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CertInfo",
    "DEFAULT_RDP_PORT",
    "OUTCOMES",
    "ProbeResult",
    "SeriesResult",
    "WaitResult",
    "format_target",
    "parse_target",
    "probe",
    "probe_series",
    "rdp_checks",
    "wait_until_answers",
]
