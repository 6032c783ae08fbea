"""`azrdp probe` end to end through Click: text, JSON, exit codes, bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from azrdp.cli import cli
from tests.support.rdp_peers import Listener, answer_with, free_port


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.realserver
def test_expired_certificate_of_a_real_xrdp_exits_1_and_names_it(xrdp, expired_cert):
    server = xrdp(expired_cert, security_layer="tls")
    result = run("probe", f"127.0.0.1:{server.port}")
    assert result.exit_code == 1, result.output
    first = result.stdout.splitlines()[0]
    assert "CN=expired-rdp.test EXPIRED on 2021-01-01" in first and "[cert_expired]" in first
    assert "FAIL rdp.cert" in result.stdout and "-> Replace the RDP certificate" in result.stdout


@pytest.mark.realserver
def test_valid_certificate_of_a_real_xrdp_exits_0(xrdp, valid_cert):
    server = xrdp(valid_cert, security_layer="tls")
    result = run("probe", f"127.0.0.1:{server.port}")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"OK: RDP answers on 127.0.0.1:{server.port} (SSL, TLSv1.")
    assert "CN=valid-rdp.test" in result.stdout


@pytest.mark.realserver
def test_json_is_the_full_result_with_schema_version(xrdp, expired_cert):
    server = xrdp(expired_cert, security_layer="tls")
    result = run("probe", f"127.0.0.1:{server.port}", "-o", "json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["schema_version"] == 1
    assert document["outcome"] == "cert_expired" and document["answers"] is True and document["ok"] is False
    assert document["certificate"]["not_after"] == "2021-01-01T00:00:00+00:00"
    assert document["certificate"]["thumbprint"] == hashlib.sha1(expired_cert.der).hexdigest().upper()
    assert [check["id"] for check in document["checks"]] == ["rdp.tcp", "rdp.negotiation", "rdp.tls", "rdp.cert"]
    assert set(document["timings"]) == {"resolve", "connect", "negotiation", "tls", "total"}


@pytest.mark.realserver
def test_requested_protocols_option(xrdp, valid_cert):
    server = xrdp(valid_cert, security_layer="tls")
    result = run("probe", f"127.0.0.1:{server.port}", "--protocols", "rdp", "-o", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["failure_name"] == "SSL_REQUIRED_BY_SERVER"


def test_standard_rdp_security_exits_0_with_a_warning():
    with Listener(answer_with(bytes.fromhex("0300000b06d00000123400"), linger=0)) as server:
        result = run("probe", f"127.0.0.1:{server.port}")
    assert result.exit_code == 0
    assert result.stdout.startswith("WARN: RDP answers") and "WARN rdp.negotiation" in result.stdout


def test_refused_exits_1():
    port = free_port()
    result = run("probe", f"127.0.0.1:{port}", "--timeout", "1")
    assert result.exit_code == 1 and "[refused]" in result.stdout


def test_count_reports_statistics_in_text_and_json():
    with Listener(answer_with(bytes.fromhex("0300000b06d00000123400"), linger=0)) as server:
        text = run("probe", f"127.0.0.1:{server.port}", "--count", "3", "--interval", "0")
        document = run("probe", f"127.0.0.1:{server.port}", "--count", "2", "--interval", "0", "-o", "json")
    assert text.exit_code == 0 and "3/3 attempts succeeded (100%)" in text.stdout
    assert "negotiation" in text.stdout and "jitter" in text.stdout
    data = json.loads(document.stdout)
    assert data["schema_version"] == 1 and data["count"] == 2 and data["success_rate"] == 1.0
    assert set(data["timings"]["negotiation"]) == {"samples", "min", "median", "max", "jitter"}


def test_count_with_a_failure_exits_1():
    result = run("probe", f"127.0.0.1:{free_port()}", "--count", "2", "--interval", "0")
    assert result.exit_code == 1 and "0/2 attempts succeeded" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["127.0.0.1:0"], "bad port '0'"),
    (["127.0.0.1:99999"], "bad port '99999'"),
    (["vm:rdp"], "bad port 'rdp'"),
    ([""], "empty host"),
    ([":3389"], "empty host"),
    (["vm", "--protocols", "tls"], "unknown protocol 'tls'"),
    (["vm", "--timeout", "0"], "--timeout must be more than 0"),
    (["vm", "--count", "0"], "--count must be at least 1"),
    (["vm", "--interval", "-1"], "--interval must not be negative"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run("probe", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_ipv6_literal_in_brackets():
    try:
        server = Listener(answer_with(bytes.fromhex("0300000b06d00000123400"), linger=0), host="::1")
    except OSError:
        pytest.skip("no IPv6 on loopback")
    with server:
        result = run("probe", f"[::1]:{server.port}", "-o", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)["address"] == "::1"


def test_probe_command_does_not_import_the_azure_sdk():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom azrdp.cli import cli\n"
            "r = CliRunner().invoke(cli, ['probe', '127.0.0.1:1', '--timeout', '1'])\n"
            "assert r.exit_code == 1, r.output\n"
            "print(','.join(sorted(m for m in sys.modules if m.startswith('azure'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
