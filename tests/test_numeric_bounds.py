"""Every numeric option is bounded at parse time: inf, nan and huge numbers are one clear line and
exit 2 before anything is probed, read or changed (they were OverflowError tracebacks)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from azrdp.cli import cli


@pytest.mark.parametrize("argv, option", [
    (["probe", "127.0.0.1:9", "--timeout", "inf"], "--timeout"),
    (["probe", "127.0.0.1:9", "--timeout", "nan"], "--timeout"),
    (["probe", "127.0.0.1:9", "--count", "2", "--interval", "inf"], "--interval"),
    (["probe", "127.0.0.1:9", "--count", "99999999999999999999"], "--count"),
    (["demo", "--speed", "inf"], "--speed"),
    (["demo", "--speed", "nan"], "--speed"),
    (["emulator", "serve", "--speed", "1e400"], "--speed"),
    (["check", "vm1", "-g", "rg1", "--host", "127.0.0.1:9", "--wait", "inf"], "--wait"),
    (["check", "vm1", "-g", "rg1", "--host", "127.0.0.1:9", "--probe-timeout", "nan"], "--probe-timeout"),
    (["diagnose", "vm1", "-g", "rg1", "--probe-timeout", "inf"], "--probe-timeout"),
    (["sweep", "--probe-timeout", "1e309"], "--probe-timeout"),
    (["fix", "vm1", "-g", "rg1", "--yes", "--probe-timeout", "inf"], "--probe-timeout"),
])
def test_non_finite_or_huge_numbers_are_usage_errors(argv, option):
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert option in result.stderr and ("finite" in result.stderr or "too large" in result.stderr), result.stderr
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("option, value", [
    ("--wait-timeout", "99999999d"), ("--run-command-timeout", "3000000d"), ("--allow-for", "3000000d"),
    ("--wait-timeout", "1e400"), ("--run-command-timeout", "3h"),
])
def test_durations_are_bounded_before_anything_is_read(monkeypatch, option, value):
    monkeypatch.setenv("AZRDP_ARM_ENDPOINT", "http://127.0.0.1:9")   # nothing may be contacted
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-0000000000aa")
    extra = ["--allow-from", "203.0.113.7"] if option == "--allow-for" else []
    result = CliRunner().invoke(cli, ["fix", "vm1", "-g", "rg1", "--yes", *extra, option, value])
    assert result.exit_code == 2, result.output
    assert option in result.stderr and ("too long" in result.stderr or "is not a duration" in result.stderr)
