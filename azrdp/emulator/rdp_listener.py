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
import selectors
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections import OrderedDict
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
    """Server SSL contexts per certificate. ``ssl`` loads a certificate chain only from files, so
    each key is written once to a private temporary folder and each certificate to one scratch
    file, overwritten for the next (a file per certificate made a 10,000-VM emulator write and,
    at its stop, unlink 20,000 files). At most ``keep`` contexts are kept, the most recently used:
    a sweep touches each VM once, a test the same VM many times."""

    def __init__(self, keep: int = 1024) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="azrdp-emulator-")
        self._contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._key_files: dict[bytes, Path] = {}
        self._keep = keep
        self._lock = threading.Lock()

    def context(self, cert: Certificate) -> ssl.SSLContext:
        with self._lock:
            thumbprint = cert.thumbprint
            context = self._contexts.get(thumbprint)
            if context is not None:
                self._contexts.move_to_end(thumbprint)
                return context
            folder = Path(self._dir.name)
            key_file = self._key_files.get(cert.key_pem)
            if key_file is None:
                key_file = folder / f"key-{len(self._key_files)}.pem"
                key_file.touch(mode=0o600)
                key_file.write_bytes(cert.key_pem)
                self._key_files[cert.key_pem] = key_file
            cert_file = folder / "serving.crt"
            cert_file.write_bytes(cert.cert_pem)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.maximum_version = ssl.TLSVersion.TLSv1_2   # what RDP on Windows Server 2022 negotiates
            context.load_cert_chain(str(cert_file), str(key_file))
            self._contexts[thumbprint] = context
            if len(self._contexts) > self._keep:
                self._contexts.popitem(last=False)
            return context

    def close(self) -> None:
        self._dir.cleanup()


class ListenerHub:
    """One thread and one selector (epoll on Linux) for the RDP ports of every VM of an emulator:
    it accepts on every listening socket and serves each connection as a small state machine
    (Connection Request, Connection Confirm, TLS handshake, the client's first message), so an
    emulator of 10,000 VMs holds 10,000 listening descriptors and one thread, not a thread and a
    blocked ``accept`` per VM plus a thread per connection.

    Locking: every change to the selector (a listening socket registered or closed, a connection
    accepted or closed) happens under ``lock``; ``select`` itself waits without it. The hub never
    takes the backend's lock while it holds ``lock`` (a listener's ``config`` is read outside it),
    and :class:`RdpListener` takes ``lock`` under the backend's lock, so neither can wait on the
    other. A listening socket is closed by the caller at once (a probe right after sees the port
    refused); the connections it accepted are reset by the hub thread, woken for it."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT, clock: Callable[[], float] = time.monotonic):
        self.lock = threading.Lock()
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending_resets: list[_Connection] = []
        self._connections: dict[int, _Connection] = {}   # id(connection) -> connection
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="emulator-rdp")
        self._thread.start()

    # -- called by listeners (any thread, often under the backend's lock) ----------------------
    def listen(self, listener: RdpListener, sock: socket.socket) -> None:
        sock.setblocking(False)
        with self.lock:
            if not self._stopped:
                self._selector.register(sock, selectors.EVENT_READ, listener)

    def unlisten(self, sock: socket.socket) -> None:
        """Stop listening now: unregistered and closed under the lock, so no accept can race it."""
        with self.lock:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            _close_listening(sock)

    def reset_connections(self, listener: RdpListener) -> None:
        """Reset what the listener accepted so far (not what a reopened port accepts next), as
        Windows does when TermService stops or the VM goes down."""
        with self.lock:
            self._pending_resets.extend(listener.connections)
        self._wake()

    def close(self) -> None:
        with self.lock:
            if self._stopped:
                return
            self._stopped = True
        self._wake()
        self._thread.join(timeout=5)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass   # the wake-up socket is full: the hub is already due to wake

    # -- the hub thread --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopped:
                timeout = self._next_timeout()
                events = self._selector.select(timeout)
                for key, mask in events:
                    if key.data is None:
                        self._drain_wake()
                    elif isinstance(key.data, RdpListener):
                        self._accept(key)
                    else:
                        self._step(key.data, mask)
                self._apply_resets()
                self._expire()
        finally:
            with self.lock:
                for conn in list(self._connections.values()):
                    self._finish(conn, reset=True)
                self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _next_timeout(self) -> float | None:
        if not self._connections:
            return None
        soonest = min(conn.deadline for conn in self._connections.values())
        return max(0.0, soonest - self._clock())

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _accept(self, key: selectors.SelectorKey) -> None:
        listener: RdpListener = key.data
        with self.lock:
            if self._selector.get_map().get(key.fd) is not key:
                return   # closed (and its descriptor perhaps reused) since select returned
            for _ in range(64):   # what the backlog holds; the rest at the next wake-up
                try:
                    sock, _peer = key.fileobj.accept()  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                sock.setblocking(False)
                conn = _Connection(sock, listener, self._clock() + self.idle_timeout)
                self._connections[id(conn)] = conn
                listener.connections.add(conn)
                self._selector.register(sock, selectors.EVENT_READ, conn)

    def _apply_resets(self) -> None:
        if not self._pending_resets:
            return
        with self.lock:
            doomed, self._pending_resets = self._pending_resets, []
            for conn in doomed:
                self._finish(conn, reset=True)

    def _expire(self) -> None:
        if not self._connections:
            return
        now = self._clock()
        expired = [conn for conn in self._connections.values() if conn.deadline <= now]
        if expired:
            with self.lock:
                for conn in expired:
                    self._finish(conn)

    def _finish(self, conn: _Connection, *, reset: bool = False) -> None:
        """Close a connection (under the lock): unregistered, then closed (with an RST if asked)."""
        if self._connections.pop(id(conn), None) is None:
            return
        conn.listener.connections.discard(conn)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if reset:
            _reset(conn.sock)
        else:
            conn.sock.close()

    def _watch(self, conn: _Connection, events: int) -> None:
        conn.deadline = self._clock() + self.idle_timeout
        with self.lock:
            if id(conn) in self._connections:
                self._selector.modify(conn.sock, events, conn)

    def _step(self, conn: _Connection, mask: int) -> None:
        """Move one connection on as far as its bytes allow; never blocks."""
        if id(conn) not in self._connections:
            return
        try:
            if conn.outgoing:
                sent = conn.sock.send(conn.outgoing)
                conn.outgoing = conn.outgoing[sent:]
                if conn.outgoing:
                    return self._watch(conn, selectors.EVENT_WRITE)
                return self._after_confirm(conn)
            if conn.stage == "request":
                return self._read_request(conn)
            if conn.stage == "handshake":
                return self._handshake(conn)
            # after the answer: wait for the client's next message (or its close), then hang up
            data = conn.sock.recv(4096)
            if conn.stage == "tls_key_failure":
                if not data:
                    return self._drop(conn)
                conn.listener.tls_key_failed()
                return self._drop(conn, reset=True)
            self._drop(conn)
        except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
            self._watch(conn, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
        except (OSError, ValueError):
            self._drop(conn)

    def _drop(self, conn: _Connection, *, reset: bool = False) -> None:
        with self.lock:
            self._finish(conn, reset=reset)

    def _read_request(self, conn: _Connection) -> None:
        """Read exactly the Connection Request (never a byte of what follows: that is the TLS
        ClientHello), then answer it as Windows would."""
        needed = TPKT_HEADER_LENGTH if len(conn.incoming) < TPKT_HEADER_LENGTH else conn.needed
        chunk = conn.sock.recv(needed - len(conn.incoming))
        if not chunk:
            raise ValueError("closed before a full request")
        conn.incoming += chunk
        if len(conn.incoming) == TPKT_HEADER_LENGTH:
            conn.needed = struct.unpack(">H", conn.incoming[2:4])[0]
            if not TPKT_HEADER_LENGTH + 7 <= conn.needed <= MAX_REQUEST:
                raise ValueError("implausible TPKT length")
        if len(conn.incoming) < TPKT_HEADER_LENGTH or len(conn.incoming) < conn.needed:
            return self._watch(conn, selectors.EVENT_READ)
        requested = parse_connection_request(conn.incoming)
        config = conn.listener.config()          # takes the backend's lock: never under self.lock
        conn.config = config
        conn.decision = negotiate(requested, config.security_layer, config.nla_required,
                                  config.certificate is not None)
        conn.outgoing = connection_confirm(conn.decision)
        self._step(conn, selectors.EVENT_WRITE)

    def _after_confirm(self, conn: _Connection) -> None:
        decision, config = conn.decision, conn.config
        assert decision is not None and config is not None
        if decision.kind == "failure":
            return self._drop(conn)
        if decision.kind != "response" or decision.value == PROTOCOL_RDP:
            conn.stage = "after_answer"      # the client's MCS Connect Initial; a full RDP stack is out of scope
            return self._watch(conn, selectors.EVENT_READ)
        if not config.tls_usable or config.certificate is None:
            conn.stage = "tls_key_failure"   # the ClientHello Schannel cannot answer
            return self._watch(conn, selectors.EVENT_READ)
        context = conn.listener.tls_context(config.certificate)
        with self.lock:
            self._selector.unregister(conn.sock)
            conn.sock = context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        conn.stage = "handshake"
        self._handshake(conn)

    def _handshake(self, conn: _Connection) -> None:
        tls = conn.sock
        assert isinstance(tls, ssl.SSLSocket)
        tls.do_handshake()
        conn.stage = "after_answer"   # CredSSP's first TSRequest, or MCS: the probe stops before it
        tls.recv(4096)                # already buffered with the Finished message, perhaps
        self._drop(conn)


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    listener: RdpListener
    deadline: float
    stage: str = "request"       # request | handshake | after_answer | tls_key_failure
    incoming: bytes = b""
    needed: int = 0
    outgoing: bytes = b""
    config: ListenerConfig | None = None
    decision: Decision | None = None


class RdpListener:
    """The RDP port of one VM. ``apply(mode, port)`` makes the socket match the guest's state;
    the :class:`ListenerHub` accepts and serves its connections."""

    def __init__(self, address: str, config: Callable[[], ListenerConfig], tls: TlsMaterial,
                 on_tls_key_failure: Callable[[], None], hub: ListenerHub):
        self.address = address
        self.port = RDP_PORT
        self.mode = "closed"
        self.error: str | None = None
        self.config = config
        self.connections: set[_Connection] = set()   # the hub's, changed under hub.lock
        self._tls = tls
        self._on_tls_key_failure = on_tls_key_failure
        self._hub = hub
        self._sock: socket.socket | None = None
        self._fillers: list[socket.socket] = []
        self._lock = threading.Lock()

    def apply(self, mode: str, port: int) -> None:
        with self._lock:
            if mode == self.mode and port == self.port and (mode == "closed" or self._sock is not None):
                return
            self._close_socket()
            self.port, self.mode, self.error = port, mode, None
            if mode == "closed":
                self._hub.reset_connections(self)
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
                self._hub.listen(self, self._sock)

    def close(self) -> None:
        self.apply("closed", self.port)

    def tls_context(self, cert: Certificate) -> ssl.SSLContext:
        return self._tls.context(cert)

    def tls_key_failed(self) -> None:
        self._on_tls_key_failure()

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
            self._hub.unlisten(self._sock)
            self._sock = None
        for filler in self._fillers:
            filler.close()
        self._fillers = []


def _close_listening(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _reset(conn: socket.socket) -> None:
    """Close with an RST, as a host does when it abandons a connection."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    conn.close()
