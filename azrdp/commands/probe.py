"""`azrdp probe HOST[:PORT]`: does RDP answer on the wire, and with a valid certificate?"""

from __future__ import annotations

import click

from azrdp.cli import AzrdpCommand, emit, settings, shared_options
from azrdp.commands.numbers import MAX_COUNT, MAX_INTERVAL, MAX_PROBE_TIMEOUT, Number
from azrdp.errors import EXIT_OK, EXIT_PROBLEM, UsageError


@click.command("probe", cls=AzrdpCommand)
@click.argument("target", metavar="HOST[:PORT]")
@click.option("--timeout", type=Number(maximum=MAX_PROBE_TIMEOUT), default=5.0, show_default=True, metavar="SECONDS",
              help="Time limit for each attempt (connect, negotiation and TLS together).")
@click.option("--protocols", default="ssl,hybrid,hybrid_ex", show_default=True, metavar="LIST",
              help="Security protocols to request: any of rdp, ssl, hybrid, hybrid_ex, rdstls, rdsaad.")
@click.option("--count", type=Number(maximum=MAX_COUNT, integer=True), default=1, show_default=True, metavar="N",
              help="Probe N times and report success rate, min/median/max and jitter.")
@click.option("--interval", type=Number(maximum=MAX_INTERVAL), default=1.0, show_default=True, metavar="SECONDS",
              help="With --count: time between the starts of attempts.")
@shared_options
def probe_command(target: str, timeout: float, protocols: str, count: int, interval: float) -> None:
    """Probe the RDP port from here: TCP, X.224/RDP negotiation, TLS and the certificate.

    One TCP connection per attempt; the certificate is read, never validated, and no
    credentials are ever sent. IPv6 literals go in brackets: [2001:db8::4]:3389.

    \b
    Exit codes: 0 RDP answers with a currently valid certificate (or with Standard RDP
    Security, shown as a warning); 1 it does not (every attempt must succeed with --count);
    2 bad input.
    """
    from azrdp.rdp import parse_target
    from azrdp.rdp.x224 import parse_protocols

    host, port = parse_target(target)
    if not timeout > 0:
        raise UsageError(f"--timeout must be more than 0 seconds, got {timeout}.")
    if count < 1:
        raise UsageError(f"--count must be at least 1, got {count}.")
    if interval < 0:
        raise UsageError(f"--interval must not be negative, got {interval}.")
    try:
        mask = parse_protocols(protocols)
    except ValueError as err:
        raise UsageError(f"bad --protocols {protocols!r}: {err}.") from None
    ok = _run_series(host, port, timeout, mask, count, interval) if count > 1 else _run_once(host, port, timeout, mask)
    click.get_current_context().exit(EXIT_OK if ok else EXIT_PROBLEM)


def _run_once(host: str, port: int, timeout: float, mask: int) -> bool:
    from azrdp.rdp import probe, rdp_checks
    from azrdp.rdp.render import render_probe
    from azrdp.report import to_json

    result = probe(host, port, timeout=timeout, protocols=mask)
    if settings().output == "json":
        emit(to_json({**result.to_dict(), "checks": [check.to_dict() for check in rdp_checks(result)]}))
    else:
        emit(render_probe(result, verbose=settings().verbose))
    return result.ok


def _run_series(host: str, port: int, timeout: float, mask: int, count: int, interval: float) -> bool:
    from azrdp.rdp import probe_series
    from azrdp.rdp.render import headline, render_series
    from azrdp.report import to_json
    from azrdp.ui import Progress

    progress = Progress()
    series = probe_series(host, port, count=count, interval=interval, timeout=timeout, protocols=mask,
                          on_attempt=lambda i, r: progress.status(f"attempt {i + 1}/{count}: {headline(r)}"))
    progress.done()
    if settings().output == "json":
        emit(to_json(series.to_dict()))
    else:
        emit(render_series(series, verbose=settings().verbose))
    return series.ok
