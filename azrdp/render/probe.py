"""`azrdp probe`: a one-line verdict of a probe, its wire checks, and series statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from azrdp.rdp.checks import printable, rdp_checks
from azrdp.rdp.endpoint import format_target
from azrdp.rdp.wire_probe import OUTCOMES, ProbeResult
from azrdp.report import render_checks

if TYPE_CHECKING:
    from azrdp.rdp.series import SeriesResult

_PHASES_SHOWN = ("connect", "negotiation", "tls", "total")


def headline(result: ProbeResult) -> str:
    """One line: the verdict and the fact that decides it."""
    where = format_target(result.host, result.port)
    cert = result.certificate
    if result.outcome == "answers" and cert is not None:
        return (f"OK: RDP answers on {where} ({result.selected_protocol}, {result.tls_version}); "
                f"certificate {cert.subject} valid until {cert.not_after:%Y-%m-%d} ({cert.days_left} days left)")
    if result.outcome == "standard_rdp_security":
        return f"WARN: RDP answers on {where} with Standard RDP Security only (no TLS)"
    if result.outcome == "cert_expired" and cert is not None:
        return (f"FAIL: RDP answers on {where}, but its certificate {cert.subject} EXPIRED on "
                f"{cert.not_after:%Y-%m-%d} ({-cert.days_left} days ago), thumbprint {cert.thumbprint}")
    if result.outcome == "cert_not_yet_valid" and cert is not None:
        return (f"FAIL: RDP answers on {where}, but its certificate {cert.subject} is NOT VALID before "
                f"{cert.not_before:%Y-%m-%d}, thumbprint {cert.thumbprint}")
    if result.outcome == "negotiation_failure":
        return (f"FAIL: RDP on {where} refused the requested protocols ({result.requested_protocols}): "
                f"failure {result.failure_code} {result.failure_name}")
    if result.outcome == "not_rdp" and result.first_bytes:
        return f"FAIL: {where} does not speak RDP; it sent: {printable(bytes.fromhex(result.first_bytes))}"
    meaning = OUTCOMES.get(result.outcome, result.outcome)
    detail = f" ({result.error})" if result.error else ""
    return f"FAIL: {where}: {meaning}{detail}"


def timings_line(result: ProbeResult) -> str:
    parts = [f"{phase} {result.timings[phase] * 1000:.1f} ms" for phase in _PHASES_SHOWN if phase in result.timings]
    return "timings: " + ", ".join(parts)


def render_probe(result: ProbeResult, *, verbose: int = 0) -> str:
    lines = [f"{headline(result)}  [{result.outcome}]", render_checks(rdp_checks(result), verbose=verbose),
             timings_line(result)]
    return "\n".join(lines)


def render_series(series: SeriesResult, *, verbose: int = 0) -> str:
    where = format_target(series.host, series.port)
    outcomes = ", ".join(f"{name} {count}" for name, count in sorted(series.outcomes.items(), key=lambda kv: -kv[1]))
    lines = [f"{'OK' if series.ok else 'FAIL'}: {where}: {series.successes}/{series.count} attempts succeeded "
             f"({series.success_rate:.0%}); outcomes: {outcomes}"]
    spreads = series.timings()
    if spreads:
        lines.append(f"  {'phase':<12} {'min':>9} {'median':>9} {'max':>9} {'jitter':>9}   (ms, successful phases)")
        for phase, spread in spreads.items():
            cells = " ".join(f"{value * 1000:9.1f}" for value in (spread.min, spread.median, spread.max, spread.jitter))
            lines.append(f"  {phase:<12} {cells}   n={spread.samples}")
    failing = [attempt for attempt in series.attempts if not attempt.ok]
    shown = failing[-1] if failing else series.attempts[-1]
    lines.append(("last failure: " if failing else "last attempt: ") + render_probe(shown, verbose=verbose))
    return "\n".join(lines)
