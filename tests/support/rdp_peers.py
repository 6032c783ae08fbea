"""Real and fake RDP peers on loopback, for tests/rdp and bench/ (one place for both).

- ``write_cert``: a self-signed RSA certificate and key (PEM) with any validity window.
- ``XrdpServer``: Debian's xrdp in the foreground (`xrdp --nodaemon --config <tmp ini>`), bound to
  127.0.0.1 only, with our certificate and security layer; stopped by SIGTERM.
- ``ShadowServer``: FreeRDP's shadow server under its own Xvfb.
- ``Listener``: a loopback TCP server thread whose per-connection behaviour is a function
  (fake RDP answers, HTTP, silence, close, reset, banners).

Recipes and gotchas: ../shared/reference/rdp-test-peers.md (backlog 2, bind to tcp://127.0.0.1:N,
wait for LISTEN in /proc/net/tcp, absolute paths).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

XRDP_INI = Path("/etc/xrdp/xrdp.ini")
START_TIMEOUT = 10.0


# -- certificates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    der: bytes
    not_before: dt.datetime
    not_after: dt.datetime
    common_name: str


def write_cert(folder: Path, *, cn: str = "rdp.test", not_before: dt.datetime | None = None,
               not_after: dt.datetime | None = None, name: str = "cert") -> CertFiles:
    """A self-signed RSA-2048 certificate and its key as PEM files in ``folder``."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    not_before = not_before or now - dt.timedelta(days=1)
    not_after = not_after or now + dt.timedelta(days=365)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertFiles(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER),
                     not_before, not_after, cn)


# -- processes --------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_listening(port: int) -> bool:
    """A LISTEN entry for 127.0.0.1:port in /proc/net/tcp (no connection, so no server log noise)."""
    needle = f"0100007F:{port:04X} 00000000:0000 0A"
    try:
        return needle in Path("/proc/net/tcp").read_text()
    except OSError:
        return False


def stop_process(process: subprocess.Popen, grace: float = 3.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(process: subprocess.Popen, port: int, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if is_listening(port):
            return
        if process.poll() is not None:
            break
        time.sleep(0.005)
    stop_process(process)
    detail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} (rc={process.returncode})\n{detail}")


def _set_ini_key(text: str, key: str, value: str, section: str = "Globals") -> str:
    """Set ``key=value`` in ``[section]`` of an xrdp ini (replacing its first uncommented
    occurrence there, or adding it right after the section header)."""
    lines = text.splitlines()
    start = lines.index(f"[{section}]") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    for index in range(start, end):
        if re.match(rf"^{re.escape(key)}\s*=", lines[index]):
            lines[index] = f"{key}={value}"
            break
    else:
        lines.insert(start, f"{key}={value}")
    return "\n".join(lines) + "\n"


class XrdpServer:
    """xrdp in the foreground on 127.0.0.1:<port>. xrdp re-reads its ini and certificate on
    every connection (except the port), so ``configure`` switches them live."""

    def __init__(self, folder: Path, cert: CertFiles | None, *, security_layer: str = "negotiate",
                 ssl_protocols: str | None = None, tls_ciphers: str | None = None):
        self.binary = "xrdp"
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ini = folder / "xrdp.ini"
        self.log = folder / "xrdp.log"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.configure(cert, security_layer=security_layer, ssl_protocols=ssl_protocols, tls_ciphers=tls_ciphers)

    def configure(self, cert: CertFiles | None, *, security_layer: str = "negotiate",
                  ssl_protocols: str | None = None, tls_ciphers: str | None = None) -> None:
        self.cert = cert
        self._settings = {
            "security_layer": security_layer,
            "certificate": str(cert.cert) if cert else "",
            "key_file": str(cert.key) if cert else "",
        }
        if ssl_protocols:
            self._settings["ssl_protocols"] = ssl_protocols
        if tls_ciphers:
            self._settings["tls_ciphers"] = tls_ciphers
        if self.port:
            self._write_ini()

    def _write_ini(self) -> None:
        text = XRDP_INI.read_text()
        for key, value in {"port": f"tcp://127.0.0.1:{self.port}", **self._settings}.items():
            text = _set_ini_key(text, key, value)
        # The log settings live in [Logging]; left alone, xrdp logs to /var/log/xrdp.log, which
        # only root may write (a normal user's xrdp then quits) and which every test would share.
        for key, value in {"LogFile": str(self.log), "EnableSyslog": "false"}.items():
            text = _set_ini_key(text, key, value, section="Logging")
        self.ini.write_text(text)

    def start(self, binary: str = "xrdp") -> XrdpServer:
        for _ in range(5):  # the free port may be taken between choosing and binding
            self.port = free_port()
            self._write_ini()
            out = open(self.folder / "xrdp.out", "ab")
            self.process = subprocess.Popen([binary, "--nodaemon", "--config", str(self.ini)],
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            out.close()
            try:
                _wait_listening(self.process, self.port, "xrdp", self.log)
                return self
            except RuntimeError:
                if self.process.returncode not in (1,):  # 1: port busy; anything else is real
                    raise
        raise RuntimeError("xrdp could not bind a free port five times")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class ShadowServer:
    """freerdp-shadow-cli on 127.0.0.1:<port> under a private Xvfb, serving ``cert``."""

    def __init__(self, folder: Path, cert: CertFiles, *, args: tuple[str, ...] = ("+sec-nla",)):
        self.folder, self.cert, self.args = folder, cert, args
        self.port = 0
        self.xvfb: subprocess.Popen | None = None
        self.process: subprocess.Popen | None = None

    def start(self, shadow: str = "freerdp-shadow-cli", xvfb: str = "Xvfb") -> ShadowServer:
        home = self.folder / "home"
        config = home / ".config" / "freerdp" / "shadow"
        config.mkdir(parents=True, exist_ok=True)
        (config / "shadow.crt").write_bytes(self.cert.cert.read_bytes())
        (config / "shadow.key").write_bytes(self.cert.key.read_bytes())
        display = self._start_xvfb(xvfb)
        self.port = free_port()
        env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "DISPLAY": f":{display}"}
        log = self.folder / "shadow.out"
        with open(log, "ab") as out:
            self.process = subprocess.Popen([shadow, f"/port:{self.port}", "/bind-address:127.0.0.1", *self.args],
                                            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_listening(self.process, self.port, "freerdp-shadow-cli", log)
        except RuntimeError:
            self.stop()
            raise
        return self

    def _start_xvfb(self, xvfb: str) -> str:
        """Xvfb on a random high display. Displays are shared machine-wide (other test runs,
        other users), and a clash can leave a half-started server ("server already running"
        for one of its sockets), so a clash is detected and another display tried."""
        for _ in range(10):
            display = str(random.randint(100, 9999))
            log = self.folder / f"xvfb-{display}.out"
            read_end, write_end = os.pipe()
            with open(log, "wb") as out:
                self.xvfb = subprocess.Popen([xvfb, f":{display}", "-displayfd", str(write_end), "-screen", "0",
                                              "800x600x24", "-nolisten", "tcp", "-noreset"], pass_fds=(write_end,),
                                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            os.close(write_end)
            with os.fdopen(read_end) as ready:
                reported = ready.readline().strip()  # written once Xvfb accepts connections
            if reported == display and b"already running" not in log.read_bytes() and self.xvfb.poll() is None:
                return display
            stop_process(self.xvfb)
        raise RuntimeError("Xvfb could not start on a free display ten times")

    def stop(self) -> None:
        for process in (self.process, self.xvfb):
            if process is not None:
                stop_process(process)


# -- fake peers -----------------------------------------------------------------------------------
Handler = Callable[[socket.socket], None]


class Listener:
    """A loopback TCP server thread; ``handler(conn)`` runs per connection in its own thread."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", *, port: int = 0, backlog: int = 16):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.handler = handler
        self.stopping = threading.Event()
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            worker = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.handler(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.stopping.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(2)
        for worker in self._threads:
            worker.join(2)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_request(conn: socket.socket) -> bytes:
    """Read one TPKT PDU (the client's Connection Request)."""
    data = b""
    while len(data) < 4 or len(data) < struct.unpack(">H", data[2:4])[0]:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def confirm_bytes(neg_type: int | None, value: int = 0, flags: int = 0) -> bytes:
    """A Connection Confirm as a server would send it (``neg_type`` None: legacy, no negotiation)."""
    neg = b"" if neg_type is None else struct.pack("<BBHI", neg_type, flags, 8, value)
    x224 = struct.pack(">BBHHB", 6 + len(neg), 0xD0, 0, 0x1234, 0) + neg
    return struct.pack(">BBH", 3, 0, 4 + len(x224)) + x224


def answer_with(data: bytes, *, linger: float = 0.5) -> Handler:
    """A fake RDP server that answers the request with ``data`` and then waits and closes."""
    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(data)
        conn.settimeout(linger)
        try:
            conn.recv(4096)
        except OSError:
            pass
    return handler


def tls_rdp_server(selected: int, cert: CertFiles, *, flags: int = 0x01) -> Handler:
    """A fake RDP server selecting ``selected`` (e.g. HYBRID_EX), then doing a real TLS handshake
    with ``cert``: the parts of the protocol no real server on Debian produces."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(confirm_bytes(0x02, selected, flags))
        conn.settimeout(5)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)  # the client closes after the handshake
        except (OSError, ssl.SSLError):
            pass
    return handler


def silent(conn: socket.socket) -> None:
    """Accept, read, never answer (until the client gives up)."""
    conn.settimeout(30)
    while conn.recv(4096):
        pass


def close_at_once(conn: socket.socket) -> None:
    pass  # the with-block in Listener closes it


def reset_at_once(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def banner(text: bytes) -> Handler:
    def handler(conn: socket.socket) -> None:
        conn.sendall(text)
        conn.settimeout(2)
        try:
            conn.recv(4096)
        except OSError:
            pass
    return handler


def tempdir(prefix: str = "azrdp-peer-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
