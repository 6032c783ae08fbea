"""`azrdp probe HOST[:PORT]`: does RDP answer on the wire, and with a valid certificate?"""

from __future__ import annotations

import click

from azrdp.commands.numbers import MAX_COUNT, MAX_INTERVAL, MAX_PROBE_TIMEOUT, Number
from azrdp.emit import emit
from azrdp.errors import UsageError
from azrdp.options import AzrdpCommand, shared_options


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
    if count > 1:
        _run_series(host, port, timeout, mask, count, interval)
    else:
        _run_once(host, port, timeout, mask)


def _run_once(host: str, port: int, timeout: float, mask: int) -> None:
    from azrdp.rdp import probe
    from azrdp.rdp.checks import probe_document
    from azrdp.render.probe import render_probe

    emit(probe(host, port, timeout=timeout, protocols=mask), render_probe, document=probe_document)


def _run_series(host: str, port: int, timeout: float, mask: int, count: int, interval: float) -> None:
    from azrdp.rdp import probe_series
    from azrdp.render.probe import headline, render_series
    from azrdp.ui import Progress

    progress = Progress()
    series = probe_series(host, port, count=count, interval=interval, timeout=timeout, protocols=mask,
                          on_attempt=lambda i, r: progress.status(f"attempt {i + 1}/{count}: {headline(r)}"))
    progress.done()
    emit(series, render_series)
