"""One accept loop for every VM's RDP port (rdp_listener.ListenerHub): a fleet holds one listening
descriptor per VM and one thread in all, and the hub serves many connections at once without one
slow client holding up the others."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from azrdp.emulator import Emulator
from azrdp.emulator.guest import Certificate
from azrdp.emulator.rdp_listener import ListenerConfig, ListenerHub, RdpListener, TlsMaterial
from azrdp.emulator.server import LISTENER_HUBS
from azrdp.rdp import probe
from azrdp.rdp.x224 import PROTOCOL_HYBRID_EX, PROTOCOL_SSL

TIMEOUT = 2.0
FLEET_PROBE_TIMEOUT = 10.0
"""124 probes, 16 at a time, into the hub threads that make each TLS handshake: on a loaded 2-core
machine one can wait its turn longer than 2 s (111, once 93, of 120 answered); a bound, not a sleep."""


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _request(protocols: int = PROTOCOL_SSL | PROTOCOL_HYBRID_EX) -> bytes:
    neg = struct.pack("<BBHI", 1, 0, 8, protocols)
    x224 = struct.pack(">BBHHB", 6 + len(neg), 0xE0, 0, 0, 0) + neg
    return struct.pack(">BBH", 3, 0, 4 + len(x224)) + x224


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc")
def test_a_fleet_of_listeners_costs_one_descriptor_each_and_no_thread(start_emulator):
    threads_before, fds_before = threading.active_count(), _open_fds()
    emu = start_emulator(fleet={"healthy": 120, "nsg-blocked": 4})
    modes = [vm["rdp"]["mode"] for vm in emu.snapshot()["vms"]]
    assert modes.count("open") == 120 and modes.count("drop") == 4
    # 120 listening sockets, 4 dropping ones with their two queue fillers, the HTTP server, the
    # hubs' selectors and wake-up pairs: nothing per VM beyond its own socket(s)
    assert _open_fds() - fds_before <= 120 + 4 * 3 + 3 * LISTENER_HUBS + 4
    assert threading.active_count() - threads_before <= 2 + LISTENER_HUBS   # HTTP server, scheduler, the hubs
    assert not [t for t in threading.enumerate() if t.name.startswith("rdp-")]

    # a dropping port answers nothing however long one waits: its probe keeps the short timeout
    endpoints = [(*emu.rdp_endpoint(vm.name), TIMEOUT if vm.name.startswith("vm-nsg-blocked") else FLEET_PROBE_TIMEOUT)
                 for vm in emu.state.all_vms()]
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda ep: probe(ep[0], ep[1], timeout=ep[2]).outcome, endpoints))
    assert outcomes.count("answers") == 120 and outcomes.count("connect_timeout") == 4


def test_a_silent_client_does_not_hold_up_the_others_and_is_hung_up_on_when_idle():
    hub = ListenerHub(idle_timeout=0.3)
    tls = TlsMaterial()
    config = ListenerConfig(security_layer=1, nla_required=False, certificate=Certificate.make("HUB-TEST", *_validity()),
                            tls_usable=True)
    listener = RdpListener("127.0.0.1", lambda: config, tls, lambda: None, hub)
    try:
        listener.apply("open", _free_port())
        silent = socket.create_connection(("127.0.0.1", listener.port), timeout=TIMEOUT)
        silent.sendall(_request()[:5])                                 # half a request, then nothing
        assert probe("127.0.0.1", listener.port, timeout=TIMEOUT).outcome == "answers"
        started = time.monotonic()
        assert silent.recv(16) == b""                                  # the hub hung up on it
        assert time.monotonic() - started < TIMEOUT
        silent.close()
        assert hub.open_connections == 0
    finally:
        listener.close()
        hub.close()
        tls.close()


def test_closing_the_port_refuses_at_once_and_resets_what_it_had_accepted():
    hub = ListenerHub()
    tls = TlsMaterial()
    config = ListenerConfig(security_layer=1, nla_required=False, certificate=Certificate.make("HUB-TEST", *_validity()),
                            tls_usable=True)
    listener = RdpListener("127.0.0.1", lambda: config, tls, lambda: None, hub)
    try:
        port = _free_port()
        listener.apply("open", port)
        waiting = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        _until(lambda: hub.open_connections == 1)
        listener.apply("closed", port)                                 # TermService stopped
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        with pytest.raises(ConnectionResetError):
            waiting.recv(16)
        waiting.close()
        listener.apply("open", port)                                   # started again: the same port
        assert probe("127.0.0.1", port, timeout=TIMEOUT).outcome == "answers"
    finally:
        listener.close()
        hub.close()
        tls.close()


def test_an_emulator_stops_its_hub():
    def hubs() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "emulator-rdp")

    before = hubs()
    emu = Emulator.start("healthy", speed=100)
    assert hubs() == before + LISTENER_HUBS
    emu.stop()
    assert hubs() == before
    address, port = emu.rdp_endpoint()
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=TIMEOUT)


def _validity():
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    return now - timedelta(days=1), now + timedelta(days=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _until(condition, limit: float = TIMEOUT) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _with_limits(soft: int, hard: int, code: str):
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, preexec_fn=limit)


_RAISE = ("import resource; from azrdp.commands.emulator import _open_files_for; _open_files_for({vms}); "
          "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])")


def test_serve_raises_the_soft_open_file_limit_to_the_hard_one_when_the_fleet_needs_it_and_says_so():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip("the hard open-file limit is below this test's fleet")
    raised = _with_limits(1024, hard, _RAISE.format(vms=1000))
    assert raised.returncode == 0, raised.stderr
    assert int(raised.stdout) == (hard if hard != resource.RLIM_INFINITY else 1000 + 512)
    assert "raised the open-file limit from 1024 to" in raised.stderr and "for 1000 VMs" in raised.stderr
    untouched = _with_limits(1024, hard, _RAISE.format(vms=10))
    assert int(untouched.stdout) == 1024 and untouched.stderr == ""


def test_serve_refuses_a_fleet_beyond_the_hard_limit_and_changes_nothing():
    refused = _with_limits(256, 300, "import resource\nfrom azrdp.commands.emulator import _open_files_for\n"
                           "try:\n    _open_files_for(1000)\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
                           "print(resource.getrlimit(resource.RLIMIT_NOFILE))")
    assert "UsageError 1000 VMs need about 1512 open files, and this process may open at most 300" in refused.stdout
    assert refused.stdout.strip().endswith("(256, 300)")


def test_tls_material_writes_a_key_once_and_keeps_the_recently_used_contexts():
    """A file per certificate made a 10,000-VM emulator write 20,000 files (and unlink them at its
    stop, minutes on a slow disk): one file per key and one scratch certificate file now."""
    from pathlib import Path

    tls = TlsMaterial(keep=2)
    try:
        certs = [Certificate.make(f"VM-{n}", *_validity()) for n in range(3)]
        first = tls.context(certs[0])
        assert tls.context(certs[0]) is first                       # kept
        tls.context(certs[1])
        tls.context(certs[2])                                       # the least recently used goes
        assert tls.context(certs[0]) is not first
        folder = Path(tls._dir.name)
        assert sorted(p.name for p in folder.iterdir()) == ["key-0.pem", "serving.crt"]
        assert (folder / "key-0.pem").stat().st_mode & 0o077 == 0
    finally:
        tls.close()
