"""A real RDP listener per emulated VM, on its own loopback address.

What a client sees on the wire follows the guest's state, as a Windows server's would:

* ``open``: TCP accepts; the X.224 Connection Request is answered with a Connection Confirm that
  carries RDP_NEG_RSP or RDP_NEG_FAILURE exactly as Windows picks them from the requested
  protocols, ``SecurityLayer`` and ``UserAuthentication``; then TLS with the guest's certificate
  (made by ``cryptography``, so an expired one is served expired). When TermService cannot open
  the certificate's private key (broken MachineKeys ACL, corrupt key) the TLS handshake is reset
  and Schannel 36870 is logged in the guest, as on Windows.
* ``closed``: nothing listens (connection refused): VM stopped or restarting, TermService
  stopped, ``fDenyTSConnections=1``.
* ``drop``: SYNs are silently dropped (the client's connect times out): an NSG or Windows
  Firewall denies. Done for real: a listen queue of length 0, filled by a connection that is
  never accepted, makes the kernel drop every further SYN.
"""

from __future__ import annotations

import random
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from azrdp.emulator.guest import Certificate
from azrdp.rdp.x224 import (
    NEG_LENGTH,
    PROTOCOL_HYBRID,
    PROTOCOL_HYBRID_EX,
    PROTOCOL_RDP,
    PROTOCOL_SSL,
    TPKT_HEADER_LENGTH,
    TPKT_VERSION,
    TYPE_NEG_FAILURE,
    TYPE_NEG_REQ,
    TYPE_NEG_RSP,
    X224_CC,
    X224_CR,
)

SSL_REQUIRED_BY_SERVER = 1
SSL_NOT_ALLOWED_BY_SERVER = 2
SSL_CERT_NOT_ON_SERVER = 3
HYBRID_REQUIRED_BY_SERVER = 5

WINDOWS_RSP_FLAGS = 0x1F      # extended client data, GFX, reserved, restricted admin, redirected auth
WINDOWS_SOURCE_REF = 0x1234
RDP_PORT = 3389
IDLE_TIMEOUT = 10.0           # seconds a connection may sit without the client's next message
MAX_REQUEST = 0xFF + TPKT_HEADER_LENGTH


@dataclass(frozen=True)
class ListenerConfig:
    """What the listener needs from the guest for one connection (read under the state lock)."""

    security_layer: int
    nla_required: bool
    certificate: Certificate | None
    tls_usable: bool


@dataclass(frozen=True)
class Decision:
    kind: str        # response | failure | legacy
    value: int = 0   # selected protocol, or failure code


def negotiate(requested: int | None, security_layer: int, nla_required: bool, has_certificate: bool) -> Decision:
    """Windows' answer to a Connection Request (MS-RDPBCGR 3.3.5.3.1).

    ``requested`` is the RDP_NEG_REQ's requestedProtocols, None when the request had none (a
    pre-5.2 client). SecurityLayer 0 = Standard RDP Security only, 1 = negotiate, 2 = TLS
    required; UserAuthentication=1 requires CredSSP (NLA), which needs TLS.
    """
    rdp_allowed = security_layer == 0 or (security_layer == 1 and not nla_required)
    if requested is None:
        if rdp_allowed:
            return Decision("legacy")
        return Decision("failure", HYBRID_REQUIRED_BY_SERVER if nla_required else SSL_REQUIRED_BY_SERVER)
    if security_layer == 0:
        if requested == PROTOCOL_RDP:
            return Decision("response", PROTOCOL_RDP)
        return Decision("failure", SSL_NOT_ALLOWED_BY_SERVER)
    for protocol in (PROTOCOL_HYBRID_EX, PROTOCOL_HYBRID):
        if requested & protocol:
            return Decision("response", protocol) if has_certificate else Decision("failure", SSL_CERT_NOT_ON_SERVER)
    if nla_required:
        return Decision("failure", HYBRID_REQUIRED_BY_SERVER)
    if requested & PROTOCOL_SSL:
        return Decision("response", PROTOCOL_SSL) if has_certificate else Decision("failure", SSL_CERT_NOT_ON_SERVER)
    if security_layer == 1:
        return Decision("response", PROTOCOL_RDP)
    return Decision("failure", SSL_REQUIRED_BY_SERVER)


def connection_confirm(decision: Decision) -> bytes:
    """TPKT + X.224 Connection Confirm (+ RDP_NEG_RSP / RDP_NEG_FAILURE), as Windows frames it."""
    if decision.kind == "legacy":
        variable = b""
    elif decision.kind == "response":
        variable = struct.pack("<BBHI", TYPE_NEG_RSP, WINDOWS_RSP_FLAGS, NEG_LENGTH, decision.value)
    else:
        variable = struct.pack("<BBHI", TYPE_NEG_FAILURE, 0, NEG_LENGTH, decision.value)
    x224 = struct.pack(">BBHHB", 6 + len(variable), X224_CC, 0, WINDOWS_SOURCE_REF, 0) + variable
    return struct.pack(">BBH", TPKT_VERSION, 0, TPKT_HEADER_LENGTH + len(x224)) + x224


def parse_connection_request(pdu: bytes) -> int | None:
    """requestedProtocols of a TPKT + X.224 Connection Request; None when it carries no
    RDP_NEG_REQ. Raises ValueError for anything that is not a Connection Request."""
    if len(pdu) < TPKT_HEADER_LENGTH + 7 or pdu[0] != TPKT_VERSION:
        raise ValueError("not a TPKT-framed request")
    length_indicator, code = pdu[4], pdu[5]
    if code & 0xF0 != X224_CR or length_indicator != len(pdu) - 5:
        raise ValueError("not an X.224 Connection Request")
    variable = pdu[11:]
    if variable.startswith(b"Cookie:") or variable.startswith(b"Cookie: msts"):
        end = variable.find(b"\r\n")
        if end < 0:
            raise ValueError("cookie without CRLF")
        variable = variable[end + 2:]
    if len(variable) >= NEG_LENGTH and variable[0] == TYPE_NEG_REQ:
        _type, _flags, length, requested = struct.unpack("<BBHI", variable[:NEG_LENGTH])
        if length != NEG_LENGTH:
            raise ValueError("bad RDP_NEG_REQ length")
        return requested
    return None


class AddressPool:
    """Distinct loopback addresses for the VMs of one emulator: 127.A.B.1, .2, ... with A.B
    random per emulator, so parallel emulators do not collide. Each VM listens on 3389 when it
    can (the address is its own), else on a free port of that address.

    Where only 127.0.0.1 exists (not Linux), every VM gets 127.0.0.1 and a port of its own."""

    def __init__(self, rng: random.Random | None = None):
        rng = rng or random.Random()
        self._net = (rng.randint(16, 250), rng.randint(1, 254))
        self._next = 1
        self._lock = threading.Lock()
        self.aliases = _can_bind(f"127.{self._net[0]}.{self._net[1]}.1", 0)

    def allocate(self) -> tuple[str, int]:
        with self._lock:
            if not self.aliases:
                return "127.0.0.1", _free_port("127.0.0.1")
            while True:
                n = self._next
                self._next += 1
                third, fourth = self._net[1] + n // 254, n % 254 + 1
                if third > 254:
                    self._net = (self._net[0] + 1 if self._net[0] < 250 else 16, 1)
                    self._next = 1
                    continue
                address = f"127.{self._net[0]}.{third}.{fourth}"
                if _can_bind(address, RDP_PORT):
                    return address, RDP_PORT
                port = _free_port(address)
                if port:
                    return address, port


def _can_bind(address: str, port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address, port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _free_port(address: str) -> int:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((address, 0))
        return probe.getsockname()[1]
    finally:
        probe.close()


class TlsMaterial:
    """Server SSL contexts per certificate, from PEM files in a private temporary folder."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="azrdp-emulator-")
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def context(self, cert: Certificate) -> ssl.SSLContext:
        with self._lock:
            if cert.thumbprint not in self._contexts:
                folder = Path(self._dir.name)
                cert_file, key_file = folder / f"{cert.thumbprint}.crt", folder / f"{cert.thumbprint}.key"
                cert_file.write_bytes(cert.cert_pem)
                key_file.write_bytes(cert.key_pem)
                key_file.chmod(0o600)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.maximum_version = ssl.TLSVersion.TLSv1_2   # what RDP on Windows Server 2022 negotiates
                context.load_cert_chain(str(cert_file), str(key_file))
                self._contexts[cert.thumbprint] = context
            return self._contexts[cert.thumbprint]

    def close(self) -> None:
        self._dir.cleanup()


class RdpListener:
    """The RDP port of one VM. ``apply(mode, port)`` makes the socket match the guest's state."""

    def __init__(self, address: str, config: Callable[[], ListenerConfig], tls: TlsMaterial,
                 on_tls_key_failure: Callable[[], None]):
        self.address = address
        self.port = RDP_PORT
        self.mode = "closed"
        self.error: str | None = None
        self._config = config
        self._tls = tls
        self._on_tls_key_failure = on_tls_key_failure
        self._sock: socket.socket | None = None
        self._fillers: list[socket.socket] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def apply(self, mode: str, port: int) -> None:
        with self._lock:
            if mode == self.mode and port == self.port and (mode == "closed" or self._sock is not None):
                return
            self._close_socket()
            self.port, self.mode, self.error = port, mode, None
            if mode == "closed":
                self._reset_connections()
                return
            try:
                self._sock = self._bind(backlog=0 if mode == "drop" else 64)
            except OSError as exc:
                self.error = f"cannot listen on {self.address}:{port}: {exc.strerror or exc}"
                self.mode = "closed"
                return
            if mode == "drop":
                self._fill_queue()
            else:
                threading.Thread(target=self._accept_loop, args=(self._sock,), daemon=True,
                                 name=f"rdp-{self.address}").start()

    def close(self) -> None:
        self.apply("closed", self.port)

    def _bind(self, backlog: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.address, self.port))
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return sock

    def _fill_queue(self) -> None:
        """Occupy the (length 0) accept queue so the kernel drops every further SYN."""
        for _ in range(2):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex((self.address, self.port))
            self._fillers.append(filler)

    def _close_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        for filler in self._fillers:
            filler.close()
        self._fillers = []

    def _reset_connections(self) -> None:
        for conn in list(self._connections):
            _reset(conn)
        self._connections.clear()

    def _accept_loop(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _peer = sock.accept()
            except OSError:
                return
            with self._lock:
                if sock is not self._sock:
                    _reset(conn)
                    return
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(IDLE_TIMEOUT)
            requested = parse_connection_request(_read_tpkt(conn))
            config = self._config()
            decision = negotiate(requested, config.security_layer, config.nla_required, config.certificate is not None)
            conn.sendall(connection_confirm(decision))
            if decision.kind != "response" or decision.value == PROTOCOL_RDP:
                if decision.kind != "failure":
                    conn.recv(4096)   # the client's MCS Connect Initial; a full RDP stack is out of scope
                return
            if not config.tls_usable or config.certificate is None:
                conn.recv(4096)       # the ClientHello Schannel cannot answer
                self._on_tls_key_failure()
                _reset(conn)
                return
            tls = self._tls.context(config.certificate).wrap_socket(conn, server_side=True)
            try:
                tls.recv(4096)        # CredSSP's first TSRequest, or MCS: the probe stops before it
            finally:
                tls.close()
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()


def _read_tpkt(conn: socket.socket) -> bytes:
    data = b""
    needed = TPKT_HEADER_LENGTH
    while len(data) < needed:
        chunk = conn.recv(needed - len(data))
        if not chunk:
            raise ValueError("closed before a full request")
        data += chunk
        if needed == TPKT_HEADER_LENGTH and len(data) == TPKT_HEADER_LENGTH:
            needed = struct.unpack(">H", data[2:4])[0]
            if not TPKT_HEADER_LENGTH + 7 <= needed <= MAX_REQUEST:
                raise ValueError("implausible TPKT length")
    return data


def _reset(conn: socket.socket) -> None:
    """Close with an RST, as a host does when it abandons a connection."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    conn.close()
