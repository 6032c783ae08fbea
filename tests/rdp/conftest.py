"""Fixtures for the RDP probe tests: certificates, real servers (xrdp, FreeRDP shadow) and fake
loopback listeners. The peers themselves live in tests/support/rdp_peers.py (shared with bench/)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from tests.support import binaries
from tests.support.rdp_peers import CertFiles, Listener, ShadowServer, XrdpServer, write_cert

EXPIRED_FROM = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
EXPIRED_UNTIL = dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def require_binary() -> Callable[[str], str]:
    """tests.support.binaries.require_binary: skip when a server is absent, fail under CI=true."""
    return binaries.require_binary


@pytest.fixture
def valid_cert(tmp_path) -> CertFiles:
    return write_cert(tmp_path / "certs", cn="valid-rdp.test", name="valid")


@pytest.fixture
def expired_cert(tmp_path) -> CertFiles:
    return write_cert(tmp_path / "certs", cn="expired-rdp.test", name="expired",
                      not_before=EXPIRED_FROM, not_after=EXPIRED_UNTIL)


@pytest.fixture
def xrdp(require_binary, tmp_path):
    """Start real xrdp servers: ``xrdp(cert, security_layer=..., ssl_protocols=..., tls_ciphers=...)``."""
    binary = require_binary("xrdp")
    servers: list[XrdpServer] = []

    def start(cert: CertFiles | None, **settings) -> XrdpServer:
        server = XrdpServer(tmp_path / f"xrdp-{len(servers)}", cert, **settings)
        servers.append(server)
        return server.start(binary)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def shadow(require_binary, tmp_path):
    """Start real FreeRDP shadow servers under Xvfb: ``shadow(cert, args=("+sec-nla",))``."""
    binary, xvfb = require_binary("freerdp-shadow-cli"), require_binary("Xvfb")
    servers: list[ShadowServer] = []

    def start(cert: CertFiles, args: tuple[str, ...] = ("+sec-nla",)) -> ShadowServer:
        server = ShadowServer(tmp_path / f"shadow-{len(servers)}", cert, args=args)
        servers.append(server)
        return server.start(binary, xvfb)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def listen():
    """Start fake loopback listeners: ``listen(handler, host="127.0.0.1")``."""
    listeners: list[Listener] = []

    def start(handler, host: str = "127.0.0.1", **kwargs) -> Listener:
        listener = Listener(handler, host, **kwargs)
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        listener.close()
