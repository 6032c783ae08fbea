"""The probe against real RDP servers on 127.0.0.1: Debian's xrdp and FreeRDP's shadow server.

Every assertion compares with what the server was configured to serve: the certificate file's
SHA-1 thumbprint and notAfter, the security layer, the failure code. Probes run one at a time
(xrdp's listen backlog is 2).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl

import pytest

from azrdp.checks import Status
from azrdp.rdp import probe, rdp_checks
from azrdp.rdp.x224 import (
    PROTOCOL_HYBRID,
    PROTOCOL_RDP,
    PROTOCOL_SSL,
    build_connection_request,
    parse_connection_confirm,
)
from tests.support.rdp_peers import CertFiles

pytestmark = pytest.mark.realserver


def windows_thumbprint(cert: CertFiles) -> str:
    return hashlib.sha1(cert.der).hexdigest().upper()


def statuses(result) -> dict[str, Status]:
    return {check.id: check.status for check in rdp_checks(result)}


def during_validity(cert: CertFiles) -> dt.datetime:
    return cert.not_before + dt.timedelta(days=30)


def test_xrdp_tls_with_a_valid_self_signed_certificate(xrdp, valid_cert):
    server = xrdp(valid_cert, security_layer="tls")
    result = probe("127.0.0.1", server.port, now=during_validity(valid_cert))
    assert result.outcome == "answers" and result.ok and result.answers
    assert result.selected_protocol == "SSL" and result.negotiation == "response"
    assert result.flags == ["EXTENDED_CLIENT_DATA_SUPPORTED"]
    cert = result.certificate
    assert cert.thumbprint == windows_thumbprint(valid_cert)
    assert cert.not_after == valid_cert.not_after
    assert cert.subject == "CN=valid-rdp.test" and cert.self_signed and cert.days_left == 336
    assert result.tls_version in ("TLSv1.2", "TLSv1.3") and result.cipher
    assert set(result.timings) == {"resolve", "connect", "negotiation", "tls", "total"}
    assert set(statuses(result).values()) == {Status.PASS}


def test_xrdp_tls_with_an_expired_certificate(xrdp, expired_cert):
    server = xrdp(expired_cert, security_layer="tls")
    result = probe("127.0.0.1", server.port)
    assert result.outcome == "cert_expired" and result.answers and not result.ok
    assert result.certificate.thumbprint == windows_thumbprint(expired_cert)
    assert result.certificate.not_after == dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)
    assert result.certificate.expired
    checks = {check.id: check for check in rdp_checks(result)}
    assert checks["rdp.tls"].status == Status.PASS
    assert checks["rdp.cert"].status == Status.FAIL
    assert windows_thumbprint(expired_cert) in checks["rdp.cert"].summary
    assert "expired 2021-01-01" in checks["rdp.cert"].summary and checks["rdp.cert"].remedy


def test_certificate_swapped_live_is_seen_by_the_next_probe(xrdp, valid_cert, expired_cert):
    server = xrdp(expired_cert, security_layer="tls")
    assert probe("127.0.0.1", server.port).outcome == "cert_expired"
    server.configure(valid_cert, security_layer="tls")
    after = probe("127.0.0.1", server.port)
    assert after.outcome == "answers" and after.certificate.thumbprint == windows_thumbprint(valid_cert)


def test_xrdp_standard_rdp_security(xrdp, valid_cert):
    server = xrdp(valid_cert, security_layer="rdp")
    result = probe("127.0.0.1", server.port)
    assert result.outcome == "standard_rdp_security" and result.ok
    assert result.selected_protocol == "RDP" and result.certificate is None and result.tls_version is None
    assert statuses(result) == {"rdp.tcp": Status.PASS, "rdp.negotiation": Status.WARN,
                                "rdp.tls": Status.SKIP, "rdp.cert": Status.SKIP}


def test_xrdp_tls_only_refuses_a_request_for_rdp_only_with_failure_1(xrdp, valid_cert):
    server = xrdp(valid_cert, security_layer="tls")
    result = probe("127.0.0.1", server.port, protocols=PROTOCOL_RDP)
    assert result.outcome == "negotiation_failure" and result.answers and not result.ok
    assert (result.failure_code, result.failure_name) == (1, "SSL_REQUIRED_BY_SERVER")
    assert result.requested_protocols == "RDP" and "tls" not in result.timings
    assert statuses(result)["rdp.negotiation"] == Status.FAIL


def test_xrdp_negotiate_answers_a_hybrid_only_request_with_rdp(xrdp, valid_cert):
    server = xrdp(valid_cert, security_layer="negotiate")
    result = probe("127.0.0.1", server.port, protocols=PROTOCOL_HYBRID)
    assert result.outcome == "standard_rdp_security" and result.selected_protocol == "RDP"


def test_xrdp_tls_without_its_certificate_file_fails_with_code_3(xrdp, tmp_path):
    missing = CertFiles(tmp_path / "nope.pem", tmp_path / "nope.key", b"", dt.datetime.now(dt.timezone.utc),
                        dt.datetime.now(dt.timezone.utc), "nope")
    server = xrdp(missing, security_layer="tls")
    result = probe("127.0.0.1", server.port)
    assert (result.outcome, result.failure_code, result.failure_name) == (
        "negotiation_failure", 3, "SSL_CERT_NOT_ON_SERVER")
    checks = {check.id: check for check in rdp_checks(result)}
    assert "guest.cert" in checks["rdp.negotiation"].remedy


def test_xrdp_with_a_key_that_does_not_match_its_certificate_is_a_tls_error(xrdp, valid_cert, expired_cert):
    mismatched = CertFiles(valid_cert.cert, expired_cert.key, valid_cert.der, valid_cert.not_before,
                           valid_cert.not_after, "mismatch")
    server = xrdp(mismatched, security_layer="tls")
    result = probe("127.0.0.1", server.port)
    assert result.outcome == "tls_error" and result.selected_protocol == "SSL" and result.answers
    assert result.error and result.certificate is None
    assert statuses(result)["rdp.tls"] == Status.FAIL and statuses(result)["rdp.cert"] == Status.SKIP


def test_xrdp_tls_1_0_only_is_still_probed(xrdp, valid_cert):
    server = xrdp(valid_cert, security_layer="tls", ssl_protocols="TLSv1", tls_ciphers="DEFAULT:@SECLEVEL=0")
    result = probe("127.0.0.1", server.port, now=during_validity(valid_cert))
    assert result.outcome == "answers" and result.tls_version == "TLSv1"
    assert result.certificate.thumbprint == windows_thumbprint(valid_cert)
    assert statuses(result)["rdp.tls"] == Status.WARN
    # ... which Python's default client context cannot do: the relaxed context is what makes it work.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(build_connection_request(PROTOCOL_SSL))
        assert parse_connection_confirm(sock.recv(19)).selected_protocol == PROTOCOL_SSL
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(sock)


def test_xrdp_answers_a_request_without_negotiation_with_a_legacy_confirm(xrdp, valid_cert):
    server = xrdp(valid_cert, security_layer="tls")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(build_connection_request(None))
        confirm = parse_connection_confirm(sock.recv(64))
    assert confirm.kind == "legacy" and confirm.selected_name == "RDP"


def test_freerdp_shadow_with_nla_selects_hybrid_and_still_shows_the_certificate(shadow, valid_cert):
    server = shadow(valid_cert, args=("+sec-nla",))
    result = probe("127.0.0.1", server.port, now=during_validity(valid_cert))
    assert result.outcome == "answers" and result.selected_protocol == "HYBRID"
    assert result.flags == ["EXTENDED_CLIENT_DATA_SUPPORTED", "DYNVC_GFX_PROTOCOL_SUPPORTED"]
    assert result.certificate.thumbprint == windows_thumbprint(valid_cert)
    assert result.certificate.not_after == valid_cert.not_after


def test_freerdp_shadow_failure_codes_5_and_2(shadow, valid_cert):
    nla_only = shadow(valid_cert, args=("/sec:nla",))
    result = probe("127.0.0.1", nla_only.port, protocols=PROTOCOL_SSL)
    assert (result.outcome, result.failure_code, result.failure_name) == (
        "negotiation_failure", 5, "HYBRID_REQUIRED_BY_SERVER")
    rdp_only = shadow(valid_cert, args=("/sec:rdp",))
    result = probe("127.0.0.1", rdp_only.port)
    assert (result.failure_code, result.failure_name) == (2, "SSL_NOT_ALLOWED_BY_SERVER")
    # FreeRDP would go on with TLS after this failure; the probe must stop.
    assert result.tls_version is None and result.certificate is None


def test_xrdp_answers_a_legacy_request_without_negotiation_data(xrdp, valid_cert):
    # A Connection Request with no RDP_NEG_REQ (a pre-RDP 5.2 client): xrdp answers the legacy
    # Connection Confirm with no negotiation data, in every security_layer, TLS included.
    server = xrdp(valid_cert, security_layer="tls")
    result = probe("127.0.0.1", server.port, protocols=None)
    assert (result.outcome, result.negotiation, result.requested_protocols) == (
        "standard_rdp_security", "legacy", "none")
