"""The probe against every way a port can fail to be RDP: loopback listeners with one behaviour
each, plus fake RDP servers for what no real server on Debian produces (HYBRID_EX, failure 4/6)."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import socket
import threading

import pytest

from azrdp.checks import Status
from azrdp.clock import ManualClock
from azrdp.rdp import probe, rdp_checks
from azrdp.rdp.wire_probe import OUTCOMES
from azrdp.rdp.x224 import PROTOCOL_HYBRID_EX
from tests.support.rdp_peers import (
    answer_with,
    banner,
    close_at_once,
    confirm_bytes,
    free_port,
    read_request,
    reset_at_once,
    silent,
    tls_rdp_server,
    write_cert,
)

TIMEOUT = 0.5


def checks_of(result) -> dict[str, Status]:
    return {check.id: check.status for check in rdp_checks(result)}


def test_closed_port_is_refused():
    result = probe("127.0.0.1", free_port(), timeout=TIMEOUT)
    assert result.outcome == "refused" and not result.answers and not result.connected
    assert checks_of(result) == {"rdp.tcp": Status.FAIL, "rdp.negotiation": Status.SKIP,
                                 "rdp.tls": Status.SKIP, "rdp.cert": Status.SKIP}


def test_unresolvable_name_is_dns_failed():
    result = probe("no-such-host.invalid", 3389, timeout=TIMEOUT)
    assert result.outcome == "dns_failed" and "no-such-host.invalid" in result.error
    assert "connect" not in result.timings


def test_a_resolver_that_hangs_is_bounded_by_the_time_limit(monkeypatch):
    # The system resolver has no time limit of its own: stand in for a DNS server that never
    # answers (the wire, not our code), and the probe must still end at its own limit.
    release = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def hanging_getaddrinfo(host, *args, **kwargs):
        if host == "slow-dns.example":
            release.wait(30)
        return real_getaddrinfo("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    try:
        result = probe("slow-dns.example", free_port(), timeout=0.3)
    finally:
        release.set()
    assert result.outcome == "dns_failed" and "did not finish within the time limit" in result.error
    assert "connect" not in result.timings and result.timings["total"] < 5   # bounded (generous: no timing test)


def test_a_full_accept_queue_is_a_connect_timeout():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = [socket.create_connection(("127.0.0.1", port), timeout=5)]  # listen(0) holds one
        try:
            result = probe("127.0.0.1", port, timeout=TIMEOUT)
        finally:
            for filler in fillers:
                filler.close()
    assert result.outcome == "connect_timeout" and not result.connected
    assert result.timings["total"] < TIMEOUT + 2  # bounded by the limit (generous: no timing test)


@pytest.fixture
def http_server():
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_server_is_not_rdp_and_its_first_bytes_are_shown(http_server):
    result = probe("127.0.0.1", http_server, timeout=TIMEOUT)
    assert result.outcome == "not_rdp" and not result.answers and result.connected
    text = bytes.fromhex(result.first_bytes)
    assert text.startswith(b"<!DOCTYPE HTML>") or text.startswith(b"HTTP/")
    negotiation = next(check for check in rdp_checks(result) if check.id == "rdp.negotiation")
    assert negotiation.status == Status.FAIL and negotiation.details["first_bytes"] == result.first_bytes
    assert text[:10].decode() in negotiation.summary


def test_http_server_without_the_cookie_line_waits_for_more_and_times_out(http_server):
    result = probe("127.0.0.1", http_server, timeout=TIMEOUT, cookie=None)
    assert result.outcome == "timeout"


def test_silent_listener_times_out_within_the_limit(listen):
    server = listen(silent)
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert result.outcome == "timeout" and result.connected and not result.answers
    assert result.timings["total"] < TIMEOUT + 2
    assert checks_of(result)["rdp.negotiation"] == Status.FAIL


def test_accept_then_close(listen):
    server = listen(close_at_once)
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert result.outcome in ("closed", "reset")  # closing with our unread request may send RST


def test_accept_then_reset(listen):
    server = listen(reset_at_once)
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert result.outcome in ("reset", "closed")
    assert result.connected and not result.answers


def test_banner_of_another_protocol_is_not_rdp(listen):
    server = listen(banner(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert result.outcome == "not_rdp"
    assert bytes.fromhex(result.first_bytes) == b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
    negotiation = next(check for check in rdp_checks(result) if check.id == "rdp.negotiation")
    assert "SSH-2.0-OpenSSH_9.2p1 Debian-2\\r\\n" in negotiation.summary


def test_half_a_confirm_then_silence_times_out(listen):
    server = listen(answer_with(confirm_bytes(2, 1)[:7], linger=5))
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert result.outcome == "timeout" and result.first_bytes == confirm_bytes(2, 1)[:7].hex()


def test_half_a_confirm_then_close(listen):
    server = listen(answer_with(confirm_bytes(2, 1)[:7], linger=0))
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert result.outcome == "closed" and "after 7 bytes" in result.error


@pytest.mark.parametrize("data, fragment", [
    (bytes.fromhex("0300ffff") + b"\0" * 16, "too long"),
    (bytes.fromhex("0300000b06800000123400"), "Disconnect Request"),
    (bytes.fromhex("030000130dd00000123400020108000100000000"), "length indicator"),
])
def test_malformed_confirms_on_the_wire_are_not_rdp(listen, data, fragment):
    server = listen(answer_with(data))
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert result.outcome == "not_rdp" and fragment in result.error


@pytest.mark.parametrize("code, name", [(4, "INCONSISTENT_FLAGS"), (6, "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER")])
def test_failure_codes_no_real_server_sends(listen, code, name):
    server = listen(answer_with(confirm_bytes(3, code)))
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert (result.outcome, result.failure_code, result.failure_name) == ("negotiation_failure", code, name)
    negotiation = next(check for check in rdp_checks(result) if check.id == "rdp.negotiation")
    assert name in negotiation.summary and negotiation.remedy


def test_legacy_confirm_is_standard_rdp_security(listen):
    server = listen(answer_with(bytes.fromhex("0300000b06d00000123400")))
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert (result.outcome, result.negotiation, result.selected_protocol) == ("standard_rdp_security", "legacy", "RDP")
    assert result.ok


def test_unknown_selected_protocol(listen):
    server = listen(answer_with(confirm_bytes(2, 0x40)))
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert result.outcome == "unexpected_protocol" and result.answers and not result.ok


def test_ssl_selected_then_closed_is_a_tls_error(listen):
    server = listen(answer_with(confirm_bytes(2, 1), linger=0))
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert result.outcome == "tls_error" and result.selected_protocol == "SSL"


def test_ssl_selected_then_silence_is_a_tls_error_within_the_limit(listen):
    def select_ssl_then_say_nothing(conn):
        read_request(conn)
        conn.sendall(confirm_bytes(2, 1))
        silent(conn)

    server = listen(select_ssl_then_say_nothing)
    result = probe("127.0.0.1", server.port, timeout=TIMEOUT)
    assert result.outcome == "tls_error" and "timed out" in result.error
    assert result.timings["total"] < TIMEOUT + 2


def test_hybrid_ex_selected_and_the_certificate_read(listen, tmp_path):
    cert = write_cert(tmp_path, cn="hybrid-ex.test")
    server = listen(tls_rdp_server(PROTOCOL_HYBRID_EX, cert))
    result = probe("127.0.0.1", server.port, timeout=2)
    assert result.outcome == "answers" and result.selected_protocol == "HYBRID_EX"
    assert result.certificate.subject == "CN=hybrid-ex.test"
    assert result.certificate.thumbprint == hashlib.sha1(cert.der).hexdigest().upper()


def test_certificate_not_yet_valid(listen, tmp_path):
    future = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    cert = write_cert(tmp_path, not_before=future, not_after=future + dt.timedelta(days=365))
    server = listen(tls_rdp_server(1, cert))
    result = probe("127.0.0.1", server.port, timeout=2, now=dt.datetime(2029, 1, 1, tzinfo=dt.timezone.utc))
    assert result.outcome == "cert_not_yet_valid" and result.answers and not result.ok
    assert checks_of(result)["rdp.cert"] == Status.FAIL


def test_the_request_carries_the_cookie_and_the_requested_protocols(listen):
    seen = []

    def record(conn):
        seen.append(read_request(conn))
        conn.sendall(confirm_bytes(2, 0))

    server = listen(record)
    probe("127.0.0.1", server.port, timeout=TIMEOUT, protocols=0x0B)
    expected = (bytes.fromhex("0300002b" "26e00000000000") + b"Cookie: mstshash=azrdp\r\n"
                + bytes.fromhex("01000800" "0b000000"))
    assert seen == [expected]


def test_ipv6_literal(listen):
    try:
        server = listen(answer_with(confirm_bytes(2, 0)), host="::1")
    except OSError:
        pytest.skip("no IPv6 on loopback")
    result = probe("::1", server.port, timeout=TIMEOUT)
    assert result.outcome == "standard_rdp_security" and result.address == "::1"


def test_one_tcp_connection_per_probe(listen, tmp_path):
    server = listen(tls_rdp_server(1, write_cert(tmp_path)))
    probe("127.0.0.1", server.port, timeout=2)
    assert server.connections == 1


def test_timings_come_from_the_clock_given():
    clock = ManualClock(start=100.0)
    result = probe("127.0.0.1", free_port(), timeout=TIMEOUT, clock=clock)
    assert result.timings == {"resolve": 0.0, "connect": 0.0, "total": 0.0}


def test_every_outcome_is_described():
    assert all(OUTCOMES.values())


class _SteppingClock(ManualClock):
    """Time moves on by ``step`` at every reading, as on a loaded machine."""

    def __init__(self, step: float):
        super().__init__()
        self.step = step

    def monotonic(self) -> float:
        self.advance(self.step)
        return super().monotonic()


def test_the_deadline_passing_between_two_steps_is_an_outcome_not_an_exception():
    """Whichever step the deadline falls in, probe() returns an outcome (it once passed a negative
    timeout to socket.settimeout, which raises ValueError)."""
    port = free_port()
    for tenths in range(1, 120):
        result = probe("127.0.0.1", port, timeout=tenths / 10 + 0.05, clock=_SteppingClock(1.0))
        assert result.outcome in ("refused", "connect_error", "connect_timeout"), tenths
