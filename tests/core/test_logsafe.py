import io
import logging
import subprocess
import sys

from azrdp.logsafe import enable_debug_logging, redact

SAS = ("https://md-abc.blob.core.windows.net/x/screenshot.bmp?sv=2018-03-28&sr=b&"
       "sig=AbC%2Bdef%3D&se=2026-11-21T21%3A00%3A00Z&sp=r")


def test_secrets_are_redacted_in_urls_headers_and_json():
    assert redact(SAS) == SAS.replace("sig=AbC%2Bdef%3D", "sig=REDACTED")
    assert redact("Authorization: Bearer eyJ0eXAi.eyJhdWQi.c2ln") == "Authorization: Bearer REDACTED"
    assert redact('{"access_token": "eyJ0eXAi", "expires_in": "3599"}') == \
        '{"access_token": "REDACTED", "expires_in": "3599"}'
    assert redact("GET /subscriptions/s/resourceGroups/rg?api-version=2026-04-01") == \
        "GET /subscriptions/s/resourceGroups/rg?api-version=2026-04-01"


def test_debug_logging_scrubs_what_libraries_log():
    stream = io.StringIO()
    handler = enable_debug_logging(stream)
    try:
        # urllib3 logs the fetched URL, query string included, at DEBUG
        logging.getLogger("urllib3.connectionpool").debug('%s://%s:%s "%s %s %s" %s', "https", "md-abc", 443,
                                                         "GET", SAS.split(".net", 1)[1], "HTTP/1.1", 200)
    finally:
        logging.getLogger().removeHandler(handler)
    assert "sig=REDACTED" in stream.getvalue() and "AbC%2Bdef" not in stream.getvalue()


def test_a_failed_sign_in_prints_one_line_not_the_sdk_warnings(tmp_path):
    az = tmp_path / "az"
    az.write_text("#!/bin/sh\necho \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n")
    az.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path),
           "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001"}
    done = subprocess.run([sys.executable, "-m", "azrdp", "diagnose", "vm1", "-g", "rg1", "--no-probe",
                           "--auth", "cli"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3
    lines = [line for line in done.stderr.splitlines() if "Reading VM" not in line]
    assert len(lines) == 1 and lines[0].startswith("Error: not signed in to Azure (--auth cli)"), done.stderr


def test_printable_escapes_everything_that_acts_on_a_terminal():
    from azrdp.logsafe import printable, terminal_safe

    hostile = "FAIL\r\x1b[2Kok \x9b31m \u202eevil\u200b \ud800 line\nbreak\tend"
    safe = printable(hostile)
    assert all(c.isprintable() and c not in "\u202e\u200b" for c in safe), safe
    assert safe == ("FAIL\\u000d\\u001b[2Kok \\u009b31m \\u202eevil\\u200b \\ud800 line\\u000abreak\\u0009end")
    assert terminal_safe("a\nb\x07") == "a\nb\\u0007"
    import json
    assert json.loads('"' + printable("x\x9by") + '"') == "x\x9by"   # valid inside a JSON string


def test_log_records_are_escaped():
    from azrdp.logsafe import enable_debug_logging

    stream = io.StringIO()
    handler = enable_debug_logging(stream)
    try:
        logging.getLogger("azrdp.test").debug("osName %s", "Windows\x1b]0;pwned\x07")
    finally:
        logging.getLogger().removeHandler(handler)
    assert "\x1b" not in stream.getvalue() and "Windows\\u001b]0;pwned\\u0007" in stream.getvalue()
