"""Fixtures for the RDP probe tests: certificates, real servers (xrdp, FreeRDP shadow) and fake
loopback listeners. The peers themselves live in rdp_peers.py (shared with bench/)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from rdp_peers import CertFiles, Listener, ShadowServer, XrdpServer, write_cert

ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"
EXPIRED_FROM = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
EXPIRED_UNTIL = dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)


def _require_binary(config: pytest.Config, name: str) -> str:
    """tests/conftest.py's require_binary (skip when absent, fail under CI=true). Looked up among
    the registered conftest plugins: nested conftest.py files all share the module name."""
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and Path(path).resolve() == ROOT_CONFTEST and hasattr(plugin, "require_binary"):
            return plugin.require_binary(name)
    raise RuntimeError("tests/conftest.py with require_binary is not loaded")


@pytest.fixture
def require_binary(pytestconfig) -> Callable[[str], str]:
    return lambda name: _require_binary(pytestconfig, name)


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
