"""A probe result as the wire-side checks every report shows: rdp.tcp, rdp.negotiation,
rdp.tls, rdp.cert. A check whose phase was never reached is skipped, naming the earlier failure."""

from __future__ import annotations

from typing import Any

from azrdp.checks import Check, Status
from azrdp.rdp.endpoint import format_target
from azrdp.rdp.wire_probe import OUTCOMES, ProbeResult
from azrdp.rdp.x224 import FAILURE_CODES

CERT_RENEW_WARNING_DAYS = 14
OLD_TLS_VERSIONS = frozenset({"TLSv1", "TLSv1.1"})

_REPLACE_CERT = ("Replace the RDP certificate: move the expired self-signed one out of the "
                 "'Remote Desktop' certificate store (keep it: azrdp fix moves it to the store "
                 "azrdp-backup) and restart TermService (Windows creates a new one), or renew the "
                 "configured one (azrdp fix does this through Run Command).")

_TCP_REMEDIES = {
    "dns_failed": "Check the host name, or probe the VM's public IP address instead.",
    "refused": ("The host answered but nothing listens on port {port}: check that TermService runs "
                "and which port RDP-Tcp listens on (guest checks), or probe the right port."),
    "connect_timeout": ("Packets to port {port} are dropped: check that the VM is running, that the "
                        "subnet and NIC NSGs allow your IP on port {port}, and Windows Firewall."),
    "unreachable": "No route to the address: check the IP address and your own network or VPN.",
    "connect_error": "Check the address and your network; run again with --debug for details.",
}

_NEGOTIATION_REMEDIES = {
    "timeout": ("The port accepts connections but does not answer RDP: TermService may be hung or "
                "another program owns port {port}; restart TermService (azrdp fix)."),
    "closed": ("The port accepts connections and closes them: the RDP listener may be broken, or a "
               "proxy or firewall closes them; check the RDP-Tcp listener and TermService."),
    "reset": ("The connection was reset: a firewall, or an RDP listener that cannot start its "
              "security layer; check TermService and its event log."),
    "not_rdp": "Another service answers on port {port}: RDP listens elsewhere, or the port is wrong.",
    "unexpected_protocol": "The server chose a security protocol azrdp does not know; try `azrdp probe HOST --protocols ssl`.",
}

_FAILURE_REMEDIES = {
    1: "The server requires TLS: request it (`azrdp probe HOST --protocols ssl,hybrid`).",
    2: ("The server allows only Standard RDP Security: set the RDP-Tcp SecurityLayer to "
        "Negotiate (1) or TLS (2), or request it (`azrdp probe HOST --protocols rdp`)."),
    3: ("The server has no usable TLS certificate: the RDP certificate is missing or its private "
        "key is unreadable (MachineKeys permissions); see the guest.cert and guest.machinekeys checks."),
    4: "The server rejected the request's flags: a proxy may have rewritten the Connection Request.",
    5: "The server requires Network Level Authentication: request it (`azrdp probe HOST --protocols hybrid,hybrid_ex`).",
    6: "The server requires TLS with a client certificate: use a client with a certificate, or relax the policy.",
}


def probe_document(result: ProbeResult) -> dict[str, Any]:
    """`azrdp probe -o json`: the probe and the rdp.* checks made of it."""
    return {**result.to_dict(), "checks": [check.to_dict() for check in rdp_checks(result)]}


def rdp_checks(result: ProbeResult) -> list[Check]:
    """The four wire checks for one probe, in order."""
    return [_tcp(result), _negotiation(result), _tls(result), _cert(result)]


def _where(result: ProbeResult) -> str:
    return format_target(result.host, result.port)


def _timing(result: ProbeResult, phase: str) -> dict[str, Any]:
    seconds = result.timings.get(phase)
    return {} if seconds is None else {f"{phase}_ms": round(seconds * 1000, 1)}


def _tcp(result: ProbeResult) -> Check:
    details = {"host": result.host, "port": result.port, "address": result.address, **_timing(result, "connect")}
    if result.connected:
        return Check("rdp.tcp", Status.PASS, f"TCP connection to {_where(result)} opened", details)
    details["outcome"] = result.outcome
    remedy = _TCP_REMEDIES.get(result.outcome, _TCP_REMEDIES["connect_error"]).format(port=result.port)
    return Check("rdp.tcp", Status.FAIL, f"{_where(result)}: {OUTCOMES.get(result.outcome, result.outcome)}",
                 {**details, "error": result.error}, remedy)


def _negotiation(result: ProbeResult) -> Check:
    if not result.connected:
        return _skipped("rdp.negotiation", "no TCP connection")
    details = {"requested": result.requested_protocols, "negotiation": result.negotiation,
               "selected_protocol": result.selected_protocol, "flags": result.flags,
               **_timing(result, "negotiation")}
    if result.outcome == "negotiation_failure":
        code = result.failure_code or 0
        meaning = FAILURE_CODES.get(code, ("", "an unknown failure code"))[1]
        return Check("rdp.negotiation", Status.FAIL,
                     f"RDP refused the requested protocols: failure {code} {result.failure_name} ({meaning})",
                     {**details, "failure_code": code, "failure_name": result.failure_name},
                     _FAILURE_REMEDIES.get(code, "Try other protocols: `azrdp probe HOST --protocols rdp`."))
    if result.outcome == "standard_rdp_security":
        return Check("rdp.negotiation", Status.WARN,
                     "RDP answers with Standard RDP Security only (no TLS: the server is not authenticated)",
                     details, "Set the RDP-Tcp SecurityLayer to Negotiate (1) or TLS (2) so clients get TLS.")
    if result.answers and result.outcome != "unexpected_protocol":
        return Check("rdp.negotiation", Status.PASS, f"RDP answers, selecting {result.selected_protocol}", details)
    remedy = _NEGOTIATION_REMEDIES.get(result.outcome, "Check the RDP listener.").format(port=result.port)
    if result.first_bytes:
        details["first_bytes"] = result.first_bytes
    summary = OUTCOMES.get(result.outcome, result.outcome)
    if result.outcome == "not_rdp" and result.first_bytes:
        summary += f": {printable(bytes.fromhex(result.first_bytes))}"
    return Check("rdp.negotiation", Status.FAIL, summary, {**details, "error": result.error}, remedy)


def _tls(result: ProbeResult) -> Check:
    if result.outcome == "standard_rdp_security":
        return _skipped("rdp.tls", "the server selected Standard RDP Security (no TLS)")
    if not result.connected:
        return _skipped("rdp.tls", "no TCP connection")
    if not result.answers:
        return _skipped("rdp.tls", "no RDP answer")
    if result.outcome in ("negotiation_failure", "unexpected_protocol"):
        return _skipped("rdp.tls", "the RDP negotiation did not select TLS")
    details = {"tls_version": result.tls_version, "cipher": result.cipher, **_timing(result, "tls")}
    if result.outcome == "tls_error":
        return Check("rdp.tls", Status.FAIL, f"TLS handshake failed: {result.error}", details,
                     "The RDP listener cannot complete TLS: its certificate or private key is unusable, "
                     "or TLS versions/ciphers do not overlap; see the guest.cert check and Schannel events.")
    if result.tls_version in OLD_TLS_VERSIONS:
        return Check("rdp.tls", Status.WARN, f"TLS works but only {result.tls_version} ({result.cipher})", details,
                     "Enable TLS 1.2 on the server: current clients may refuse TLS 1.0/1.1.")
    return Check("rdp.tls", Status.PASS, f"TLS handshake completed ({result.tls_version}, {result.cipher})", details)


def _cert(result: ProbeResult) -> Check:
    cert = result.certificate
    if cert is None:
        reason = ("the server selected Standard RDP Security (no TLS)" if result.outcome == "standard_rdp_security"
                  else "no certificate was received")
        return _skipped("rdp.cert", reason)
    details = cert.to_dict()
    who = f"{cert.subject} (thumbprint {cert.thumbprint})"
    if cert.expired:
        return Check("rdp.cert", Status.FAIL,
                     f"certificate {who} expired {cert.not_after:%Y-%m-%d} ({-cert.days_left} days ago)",
                     details, _REPLACE_CERT)
    if cert.not_yet_valid:
        return Check("rdp.cert", Status.FAIL, f"certificate {who} is not valid before {cert.not_before:%Y-%m-%d}",
                     details, "Check the VM's clock (and time sync), or replace the certificate.")
    if cert.days_left < CERT_RENEW_WARNING_DAYS:
        return Check("rdp.cert", Status.WARN,
                     f"certificate {who} expires {cert.not_after:%Y-%m-%d} ({cert.days_left} days left)",
                     details, _REPLACE_CERT.replace("expired ", ""))
    return Check("rdp.cert", Status.PASS,
                 f"certificate {who} valid until {cert.not_after:%Y-%m-%d} ({cert.days_left} days left)", details)


def _skipped(check_id: str, reason: str) -> Check:
    return Check(check_id, Status.SKIP, f"not checked: {reason}")


def printable(data: bytes, limit: int = 48) -> str:
    """Bytes a peer sent, readable in one line: printable ASCII as is, the rest escaped."""
    shown = "".join(chr(b) if 0x20 <= b <= 0x7E else _ESCAPES.get(b, f"\\x{b:02x}") for b in data[:limit])
    return shown + ("..." if len(data) > limit else "")


_ESCAPES = {0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t"}
