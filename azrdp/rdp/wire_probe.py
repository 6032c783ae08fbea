"""One RDP probe: TCP connect, X.224 negotiation, TLS, certificate, over ONE TCP connection.

The probe never validates the certificate (it reports it) and never sends credentials: after
HYBRID (CredSSP) is selected it stops once the TLS handshake has shown the certificate. Every
outcome has a stable name in ``OUTCOMES``; scripts and the README depend on them.

(The module is not called ``probe.py`` so that ``azrdp.rdp.probe`` can be the function without
shadowing a submodule of the same name.)
"""

from __future__ import annotations

import errno
import functools
import importlib
import socket
import ssl
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azrdp.clock import SYSTEM_CLOCK, Clock
from azrdp.errors import EXIT_OK, EXIT_PROBLEM, ProtocolError
from azrdp.rdp.x224 import (
    DEFAULT_PROTOCOLS,
    PROTOCOL_RDP,
    TPKT_HEADER_LENGTH,
    ConnectionConfirm,
    build_connection_request,
    flag_names,
    parse_connection_confirm,
    parse_tpkt_header,
    protocols_label,
)

if TYPE_CHECKING:
    from azrdp.rdp.certinfo import CertInfo

# Stable outcome names -> what they mean. Documented in README.md (tests/rdp check the table).
OUTCOMES: dict[str, str] = {
    "answers": "RDP answered, TLS completed and the certificate is currently valid",
    "standard_rdp_security": "RDP answered without TLS (Standard RDP Security only): works, but weak",
    "cert_expired": "RDP answered, but the certificate it serves has expired",
    "cert_not_yet_valid": "RDP answered, but the certificate it serves is not valid yet (or the clock is wrong)",
    "negotiation_failure": "RDP answered with a Negotiation Failure (code and name given)",
    "unexpected_protocol": "RDP answered, selecting a protocol azrdp does not know",
    "tls_error": "RDP selected TLS, but the TLS handshake failed (alert or reason given)",
    "not_rdp": "something answered that does not speak RDP (first bytes shown)",
    "timeout": "the TCP connection opened, but no complete answer came in time",
    "closed": "the TCP connection opened, then the server closed it without answering",
    "reset": "the TCP connection opened, then the server reset it",
    "connect_timeout": "no answer to the TCP connection attempt: packets are dropped (NSG, firewall, VM down)",
    "refused": "the connection was refused: nothing listens on that port",
    "unreachable": "no route to the host or its network",
    "connect_error": "the TCP connection failed for another reason (error given)",
    "dns_failed": "the host name does not resolve",
}

# Outcomes in which an RDP stack spoke (a Connection Confirm was received).
RDP_SPOKE = frozenset({"answers", "standard_rdp_security", "cert_expired", "cert_not_yet_valid",
                       "negotiation_failure", "unexpected_protocol", "tls_error"})
# Outcomes a client can connect with.
OK_OUTCOMES = frozenset({"answers", "standard_rdp_security"})
# Outcomes in which the TCP connection opened.
CONNECTED = RDP_SPOKE | {"not_rdp", "timeout", "closed", "reset"}

FIRST_BYTES_SHOWN = 64
DEFAULT_COOKIE = "azrdp"  # mstsc always sends a cookie; its CRLF also makes HTTP servers answer at once


@dataclass
class ProbeResult:
    """What one probe saw. ``answers``: an RDP stack spoke; ``ok``: a client can connect (RDP
    answered and its certificate is currently valid, or it uses Standard RDP Security)."""

    host: str
    port: int
    outcome: str
    requested_protocols: str = protocols_label(DEFAULT_PROTOCOLS)
    address: str | None = None  # the IP address connected to
    negotiation: str | None = None  # response | failure | legacy
    selected_protocol: str | None = None
    flags: list[str] = field(default_factory=list)
    failure_code: int | None = None
    failure_name: str | None = None
    tls_version: str | None = None
    cipher: str | None = None
    certificate: CertInfo | None = None
    first_bytes: str | None = None  # hex, when what answered is not RDP
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds

    @property
    def answers(self) -> bool:
        return self.outcome in RDP_SPOKE

    @property
    def ok(self) -> bool:
        return self.outcome in OK_OUTCOMES

    @property
    def connected(self) -> bool:
        return self.outcome in CONNECTED

    @property
    def exit_code(self) -> int:
        """`azrdp probe`'s: 0 when RDP answers with a currently valid certificate (or Standard RDP Security)."""
        return EXIT_OK if self.ok else EXIT_PROBLEM

    @property
    def standard_rdp_security(self) -> bool:
        return self.outcome == "standard_rdp_security"

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "outcome": self.outcome,
            "outcome_meaning": OUTCOMES.get(self.outcome),
            "answers": self.answers,
            "ok": self.ok,
            "address": self.address,
            "requested_protocols": self.requested_protocols,
            "negotiation": self.negotiation,
            "selected_protocol": self.selected_protocol,
            "flags": list(self.flags),
            "failure_code": self.failure_code,
            "failure_name": self.failure_name,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "certificate": self.certificate.to_dict() if self.certificate else None,
            "first_bytes": self.first_bytes,
            "error": self.error,
            "timings": {phase: round(seconds, 6) for phase, seconds in self.timings.items()},
        }


class _Stop(Exception):
    """Ends a probe early with an outcome (internal control flow)."""

    def __init__(self, outcome: str, error: str | None = None):
        super().__init__(outcome)
        self.outcome = outcome
        self.error = error


def probe(host: str, port: int = 3389, *, timeout: float = 5.0, protocols: int | None = DEFAULT_PROTOCOLS,
          clock: Clock = SYSTEM_CLOCK, now: datetime | None = None,
          cookie: str | None = DEFAULT_COOKIE) -> ProbeResult:
    """Probe ``host:port`` once; ``timeout`` bounds the whole attempt. ``now`` (default:
    ``clock.now()``) decides whether the certificate is valid. Never raises for network
    failures: they are outcomes."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    result = ProbeResult(host=host, port=port, outcome="", requested_protocols=protocols_label(protocols))
    attempt = _Attempt(result, clock, clock.monotonic() + timeout)
    start = clock.monotonic()
    sock: socket.socket | None = None
    prefetch: threading.Thread | None = None
    try:
        sock = attempt.connect()
        prefetch = _prefetch_certificate_parser()
        confirm = attempt.negotiate(sock, build_connection_request(protocols, cookie=cookie))
        if confirm.uses_tls:
            sock, der = attempt.tls_handshake(sock)
            attempt.judge_certificate(der, now or clock.now())
        else:
            attempt.judge_plain(confirm)
    except _Stop as stop:
        result.outcome, result.error = stop.outcome, stop.error or result.error
    finally:
        if sock is not None:
            sock.close()
        if prefetch is not None:
            prefetch.join()  # never leave an import running behind the caller's back
        result.timings["total"] = clock.monotonic() - start
    return result


class _Attempt:
    def __init__(self, result: ProbeResult, clock: Clock, deadline: float):
        self.result = result
        self.clock = clock
        self.deadline = deadline

    def remaining(self) -> float:
        return self.deadline - self.clock.monotonic()

    def _timeout_for_next_step(self, what: str) -> float:
        left = self.remaining()
        if left <= 0:
            raise _Stop("timeout", f"no time left for {what}")
        return left

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = self.clock.monotonic()
        try:
            yield
        finally:
            self.result.timings[name] = self.clock.monotonic() - t0

    # -- TCP ------------------------------------------------------------------------------
    def connect(self) -> socket.socket:
        result = self.result
        with self.phase("resolve"):
            addresses = _resolve(result.host, result.port, self.remaining())
        failure = _Stop("connect_error", "no address to connect to")
        with self.phase("connect"):
            for family, kind, proto, _canonical, sockaddr in addresses:
                left = self.remaining()  # read once: a second read may be <= 0 (settimeout raises ValueError)
                if left <= 0:
                    if failure.outcome == "connect_error" and result.address is None:
                        failure = _Stop("connect_timeout", "the time limit ran out before a connection attempt")
                    break
                sock = socket.socket(family, kind, proto)
                result.address = sockaddr[0]
                try:
                    sock.settimeout(left)
                    sock.connect(sockaddr)
                    return sock
                except OSError as err:
                    sock.close()
                    failure = _connect_failure(err, self.remaining())
        raise failure

    # -- X.224 ----------------------------------------------------------------------------
    def negotiate(self, sock: socket.socket, request: bytes) -> ConnectionConfirm:
        result = self.result
        received = bytearray()
        with self.phase("negotiation"):
            try:
                sock.settimeout(self._timeout_for_next_step("the connection request"))
                sock.sendall(request)
                needed = TPKT_HEADER_LENGTH
                while len(received) < needed:
                    sock.settimeout(self._timeout_for_next_step("the connection confirm"))
                    chunk = sock.recv(4096)
                    if not chunk:
                        detail = f" after {len(received)} bytes" if received else " without answering"
                        raise _Stop("closed", f"the server closed the connection{detail}")
                    received += chunk
                    if needed == TPKT_HEADER_LENGTH and len(received) >= TPKT_HEADER_LENGTH:
                        needed = parse_tpkt_header(bytes(received[:TPKT_HEADER_LENGTH]))
                confirm = parse_connection_confirm(bytes(received[:needed]))
            except ProtocolError as err:
                raise _Stop("not_rdp", f"not an RDP answer: {err.message}") from None
            except TimeoutError:
                raise _Stop("timeout", f"no RDP answer within the timeout ({len(received)} bytes received)") from None
            except BrokenPipeError:
                raise _Stop("closed", "the server closed the connection before the request was sent") from None
            except OSError as err:  # ECONNRESET, ECONNABORTED, ...
                raise _Stop("reset", f"connection reset during negotiation: {_reason(err)}") from None
            finally:
                if received:
                    result.first_bytes = bytes(received[:FIRST_BYTES_SHOWN]).hex()
        result.negotiation = confirm.kind
        result.selected_protocol = confirm.selected_name
        result.flags = flag_names(confirm.flags)
        if confirm.kind == "failure":
            result.failure_code, result.failure_name = confirm.failure_code, confirm.failure_name
            raise _Stop("negotiation_failure", f"negotiation failure {confirm.failure_code} ({confirm.failure_name})")
        result.first_bytes = None  # it was RDP: nothing to show
        return confirm

    def judge_plain(self, confirm: ConnectionConfirm) -> None:
        if confirm.kind == "legacy" or confirm.selected_protocol == PROTOCOL_RDP:
            raise _Stop("standard_rdp_security")
        raise _Stop("unexpected_protocol", f"the server selected {confirm.selected_name}")

    # -- TLS ------------------------------------------------------------------------------
    def tls_handshake(self, sock: socket.socket) -> tuple[socket.socket, bytes]:
        """TLS over the negotiated socket. Returns the TLS socket (which now owns the
        connection; the caller closes it) and the server certificate's DER bytes."""
        result = self.result
        with self.phase("tls"):
            left = self.remaining()
            if left <= 0:
                raise _Stop("tls_error", "no time left for the TLS handshake")
            sock.settimeout(left)
            tls = relaxed_tls_context().wrap_socket(sock, server_hostname=None, do_handshake_on_connect=False)
            try:
                tls.do_handshake()
                der = tls.getpeercert(binary_form=True)
            except OSError as err:  # ssl.SSLError and timeouts are OSErrors too
                tls.close()
                raise _Stop("tls_error", _tls_failure(err)) from None
            except BaseException:
                tls.close()
                raise
            result.tls_version = tls.version()
            result.cipher = (tls.cipher() or (None,))[0]
        if not der:
            tls.close()
            raise _Stop("tls_error", "the server sent no certificate")
        return tls, der

    def judge_certificate(self, der: bytes, now: datetime) -> None:
        from azrdp.rdp.certinfo import cert_info  # imported only when needed (see the prefetch)

        try:
            cert = self.result.certificate = cert_info(der, now=now)
        except ProtocolError as err:
            raise _Stop("tls_error", err.message) from None
        if cert.expired:
            raise _Stop("cert_expired", f"the certificate expired on {cert.not_after:%Y-%m-%d %H:%M:%S} UTC")
        if cert.not_yet_valid:
            raise _Stop("cert_not_yet_valid", f"the certificate is valid only from {cert.not_before:%Y-%m-%d %H:%M:%S} UTC")
        raise _Stop("answers")


_CERTINFO = "azrdp.rdp.certinfo"


def _prefetch_certificate_parser() -> threading.Thread | None:
    """Import the certificate decoder (and `cryptography`, ~20 ms) in a background thread while
    the probe waits on the network, so a certificate is decoded the moment it arrives."""
    if _CERTINFO in sys.modules:
        return None
    thread = threading.Thread(target=importlib.import_module, args=(_CERTINFO,), name="azrdp-prefetch", daemon=True)
    thread.start()
    return thread


@functools.lru_cache(maxsize=1)
def relaxed_tls_context() -> ssl.SSLContext:
    """A client context for this probe only: no validation (the probe reports the certificate
    instead), and TLS 1.0 with any cipher, so old Windows servers can still be probed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.options |= getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0x4)  # servers without RFC 5746
    return context


_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


def _resolve(host: str, port: int, timeout: float) -> list[Any]:
    """getaddrinfo, bounded by ``timeout``: the system resolver has no time limit of its own (a
    broken DNS server can hold it 10-30 s). An IP literal needs no lookup and no thread."""
    def lookup() -> list[Any]:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["addresses"] = lookup()
        except (socket.gaierror, UnicodeError) as err:
            outcome["error"] = err

    if _is_ip_literal(host):
        run()
    elif timeout > 0:
        worker = threading.Thread(target=run, name="azrdp-resolve", daemon=True)
        worker.start()
        worker.join(timeout)
    if "error" in outcome:
        raise _Stop("dns_failed", f"cannot resolve {host!r}: {_reason(outcome['error'])}")
    if "addresses" not in outcome:
        raise _Stop("dns_failed", f"resolving {host!r} did not finish within the time limit")
    return outcome["addresses"]


def _is_ip_literal(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host.split("%", 1)[0])
    except (OSError, ValueError):
        return False
    return True


def _connect_failure(err: OSError, remaining: float) -> _Stop:
    if isinstance(err, ConnectionRefusedError):
        return _Stop("refused", "connection refused")
    if isinstance(err, ConnectionResetError):
        # a RST to the SYN is ECONNREFUSED; ECONNRESET from connect() means the handshake completed
        # and the server reset it before connect() returned (a listener that hangs up at once)
        return _Stop("reset", f"the server reset the connection as soon as it opened: {_reason(err)}")
    if isinstance(err, (socket.timeout, TimeoutError)) or err.errno == errno.ETIMEDOUT:
        return _Stop("connect_timeout", "no answer to the TCP connection attempt")
    if err.errno in _UNREACHABLE:
        return _Stop("unreachable", _reason(err))
    return _Stop("connect_error", _reason(err))


def _tls_failure(err: OSError) -> str:
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "the TLS handshake timed out"
    if isinstance(err, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the server closed the connection during the TLS handshake"
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed: {err.reason or err}"
    return f"TLS handshake failed: {_reason(err)}"


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__
