"""`HOST[:PORT]` parsing and certificate facts."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from azrdp.errors import ProtocolError, UsageError
from azrdp.rdp import format_target, parse_target
from azrdp.rdp.certinfo import cert_info
from tests.support.rdp_peers import write_cert


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.4", ("10.0.0.4", 3389)),
    ("10.0.0.4:3390", ("10.0.0.4", 3390)),
    ("myvm.westeurope.cloudapp.azure.com", ("myvm.westeurope.cloudapp.azure.com", 3389)),
    (" vm:1 ", ("vm", 1)),
    ("[::1]:3389", ("::1", 3389)),
    ("[::1]", ("::1", 3389)),
    ("::1", ("::1", 3389)),
    ("2001:db8::4", ("2001:db8::4", 3389)),
    ("[fe80::1%eth0]:65535", ("fe80::1%eth0", 65535)),
])
def test_parse_target(text, expected):
    assert parse_target(text) == expected


def test_default_port_is_the_callers():
    assert parse_target("vm", default_port=443) == ("vm", 443)


@pytest.mark.parametrize("text, fragment", [
    ("", "empty host"),
    ("   ", "empty host"),
    (":3389", "empty host"),
    ("[]:3389", "empty host"),
    ("vm:0", "bad port '0'"),
    ("vm:65536", "bad port '65536'"),
    ("vm:rdp", "bad port 'rdp'"),
    ("vm:", "bad port ''"),
    ("vm:-1", "bad port '-1'"),
    ("vm:\u00b2", "bad port '\u00b2'"),  # a superscript two: str.isdigit() says yes, int() says no
    ("[::1]:x", "bad port 'x'"),
    ("[::1", "missing ']'"),
    ("[::1]3389", "unexpected '3389'"),
    ("[vm]:3389", "bad IPv6 address 'vm'"),
    ("fe80::zz", "bad IPv6 address"),
    ("rdp://vm", "bad port '//vm'"),
    ("my vm", "bad host 'my vm'"),
])
def test_bad_targets_are_usage_errors_naming_the_problem(text, fragment):
    with pytest.raises(UsageError) as excinfo:
        parse_target(text)
    assert fragment in excinfo.value.message
    assert excinfo.value.exit_code == 2
    assert "\n" not in excinfo.value.one_line()


def test_format_target_brackets_ipv6():
    assert format_target("::1", 3389) == "[::1]:3389"
    assert format_target("10.0.0.4", 3389) == "10.0.0.4:3389"


# -- certificates -----------------------------------------------------------------------------------
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


def test_cert_facts_match_the_certificate(tmp_path):
    files = write_cert(tmp_path, cn="vm.example", not_before=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                       not_after=dt.datetime(2026, 6, 11, 12, 0, tzinfo=dt.timezone.utc))
    info = cert_info(files.der, now=NOW)
    parsed = x509.load_der_x509_certificate(files.der)
    assert info.subject == info.issuer == "CN=vm.example"
    assert info.common_name == "vm.example"
    assert info.self_signed
    assert info.not_after == files.not_after and info.not_before == files.not_before
    assert info.days_left == 10 and info.valid_now
    assert info.thumbprint == parsed.fingerprint(hashes.SHA1()).hex().upper()
    assert info.sha256 == parsed.fingerprint(hashes.SHA256()).hex().upper()
    assert info.serial == f"{parsed.serial_number:X}"
    assert (info.key_type, info.key_size) == ("RSA", 2048)
    assert info.signature_algorithm == "sha256WithRSAEncryption"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_thumbprint_is_what_openssl_and_windows_show(tmp_path):
    files = write_cert(tmp_path)
    out = subprocess.run(["openssl", "x509", "-in", str(files.cert), "-noout", "-fingerprint", "-sha1"],
                         capture_output=True, text=True, check=True).stdout
    windows_style = out.strip().split("=", 1)[1].replace(":", "").upper()
    assert cert_info(files.der, now=NOW).thumbprint == windows_style
    assert len(windows_style) == 40


def test_expired_and_not_yet_valid(tmp_path):
    files = write_cert(tmp_path, not_before=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
                       not_after=dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc))
    expired = cert_info(files.der, now=NOW)
    assert expired.expired and not expired.not_yet_valid and expired.days_left < 0
    early = cert_info(files.der, now=dt.datetime(2019, 12, 31, tzinfo=dt.timezone.utc))
    assert early.not_yet_valid and not early.expired and not early.valid_now


def test_cert_signed_by_another_key_is_not_self_signed(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    issuer_key, subject_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "same-name")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(subject_key.public_key())
            .serial_number(1).not_valid_before(dt.datetime(2026, 1, 1)).not_valid_after(dt.datetime(2027, 1, 1))
            .sign(issuer_key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding

    info = cert_info(cert.public_bytes(Encoding.DER), now=NOW)
    assert not info.self_signed
    assert (info.key_type, info.key_size) == ("EC", 256)


def test_garbage_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        cert_info(b"\x30\x03\x02\x01\x01", now=NOW)


def _ec_cert_der(*, extensions=(), not_after=dt.datetime(2027, 1, 1)) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(1).not_valid_before(dt.datetime(2026, 1, 1)).not_valid_after(not_after))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


@pytest.mark.parametrize("mangle", [
    # a v4 certificate: cryptography raises x509.InvalidVersion, not ValueError
    lambda der: der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x05", 1),
    # the common name as a BIT STRING: cryptography raises TypeError
    lambda der: der.replace(b"\x0c\x01x", b"\x03\x01\x00"),
])
def test_hostile_certificate_bytes_are_a_protocol_error(mangle):
    der = _ec_cert_der()
    mangled = mangle(der)
    assert mangled != der
    with pytest.raises(ProtocolError):
        cert_info(mangled, now=NOW)


def test_duplicate_extensions_do_not_crash_the_probe():
    """A server may send a certificate with two SAN extensions (x509.DuplicateExtension): the
    probe still reports the certificate, without DNS names."""
    der = _ec_cert_der(extensions=[x509.SubjectAlternativeName([x509.DNSName("a")]),
                                   x509.IssuerAlternativeName([x509.DNSName("a")])])
    duplicated = der.replace(b"\x06\x03\x55\x1d\x12", b"\x06\x03\x55\x1d\x11")  # IssuerAltName OID -> SAN OID
    assert duplicated != der
    info = cert_info(duplicated, now=NOW)
    assert info.common_name == "x" and info.dns_names == []
