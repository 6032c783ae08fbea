"""wait_until_answers and probe_series, on a ManualClock: exact sleeps, no real waiting."""

from __future__ import annotations

import pytest

from azrdp.clock import ManualClock
from azrdp.rdp import ProbeResult, WaitResult, probe, probe_series, wait_until_answers
from tests.support.rdp_peers import Listener, answer_with, confirm_bytes, free_port


class SlowTransport:
    """Stands in for the network: each attempt costs ``cost`` seconds of the manual clock and
    answers with the outcome scripted for that moment."""

    def __init__(self, clock: ManualClock, cost: float = 0.0, answers_from: float = float("inf")):
        self.clock, self.cost, self.answers_from = clock, cost, answers_from
        self.calls: list[tuple[float, float]] = []  # (start, timeout given)

    def __call__(self, host, port, *, timeout, clock, **_):
        assert clock is self.clock
        start = clock.monotonic()
        self.calls.append((start, timeout))
        clock.advance(min(self.cost, timeout))
        outcome = "standard_rdp_security" if start >= self.answers_from else "refused"
        return ProbeResult(host=host, port=port, outcome=outcome, timings={"total": min(self.cost, timeout)})


def test_backoff_doubles_to_the_cap_and_respects_the_deadline():
    clock = ManualClock()
    transport = SlowTransport(clock)
    result = wait_until_answers("vm", 3389, timeout=10, clock=clock, prober=transport)
    assert clock.sleeps == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert [start for start, _ in transport.calls] == [0, 0.5, 1.5, 3.5, 5.5, 7.5, 9.5]
    assert [budget for _, budget in transport.calls] == [3.0] * 5 + [2.5, 0.5]  # never past the deadline
    assert result == WaitResult(answered=False, attempts=7, elapsed=9.5, last=result.last)
    assert result.last.outcome == "refused"


def test_slow_attempts_shorten_the_pause_so_attempts_start_at_most_the_interval_apart():
    clock = ManualClock()
    transport = SlowTransport(clock, cost=0.75)
    result = wait_until_answers("vm", 3389, timeout=8, clock=clock, prober=transport)
    assert clock.sleeps == [0.0, 0.25, 1.25, 1.25, 1.25]
    assert [start for start, _ in transport.calls] == [0, 0.75, 1.75, 3.75, 5.75, 7.75]
    assert transport.calls[-1][1] == 0.25  # the last attempt gets only what is left
    assert result.elapsed == 8.0 and not result.answered


def test_attempts_that_use_their_whole_budget_do_not_sleep():
    clock = ManualClock()
    transport = SlowTransport(clock, cost=10)
    result = wait_until_answers("vm", 3389, timeout=7, clock=clock, prober=transport, probe_timeout=3)
    assert clock.sleeps == [0.0, 0.0]
    assert [budget for _, budget in transport.calls] == [3, 3, 1]
    assert result.elapsed == 7 and result.attempts == 3


def test_answer_stops_the_wait_and_reports_every_attempt():
    clock = ManualClock()
    seen = []
    transport = SlowTransport(clock, answers_from=3.0)
    result = wait_until_answers("vm", 3389, timeout=60, clock=clock, prober=transport, on_attempt=seen.append)
    assert result.answered and result.attempts == 4 and result.elapsed == 3.5
    assert [r.outcome for r in seen] == ["refused"] * 3 + ["standard_rdp_security"]


@pytest.mark.parametrize("starts_at", [0.0, 0.3, 1.2, 1.6, 3.4, 5.9, 11.0, 29.99])
def test_a_server_that_starts_answering_is_noticed_within_2_seconds(starts_at):
    """The real probe on loopback; the server comes up when the manual clock reaches ``starts_at``."""
    clock = ManualClock()
    port = free_port()
    servers: list[Listener] = []
    starts: list[float] = []

    def world(host, port_, **kwargs):
        if not servers and clock.monotonic() >= starts_at:
            servers.append(Listener(answer_with(confirm_bytes(2, 0), linger=0), port=port))
        starts.append(clock.monotonic())
        return probe(host, port_, **kwargs)

    try:
        result = wait_until_answers("127.0.0.1", port, timeout=60, clock=clock, prober=world)
    finally:
        for server in servers:
            server.close()
    assert result.answered and result.last.outcome == "standard_rdp_security"
    assert all(start < starts_at for start in starts[:-1])
    assert starts[-1] - starts_at <= 2.0


def test_bad_arguments():
    with pytest.raises(ValueError):
        wait_until_answers("vm", 3389, timeout=0, clock=ManualClock())
    with pytest.raises(ValueError):
        wait_until_answers("vm", 3389, timeout=5, initial_interval=3, max_interval=2, clock=ManualClock())


# -- series -------------------------------------------------------------------------------------------
def scripted(clock: ManualClock, results: list[ProbeResult], cost: float):
    queue = list(results)

    def transport(host, port, *, timeout, protocols, clock):
        clock.advance(cost)
        return queue.pop(0)
    return transport


def attempt(outcome: str, connect: float, negotiation: float | None = None, tls: float | None = None) -> ProbeResult:
    timings = {"connect": connect}
    if negotiation is not None:
        timings["negotiation"] = negotiation
    if tls is not None:
        timings["tls"] = tls
    timings["total"] = sum(timings.values())
    return ProbeResult(host="vm", port=3389, outcome=outcome, timings=timings,
                       tls_version="TLSv1.3" if tls is not None else None)


def test_series_statistics_are_exact():
    clock = ManualClock()
    results = [attempt("answers", 0.010, 0.020, 0.005), attempt("answers", 0.030, 0.020, 0.007),
               attempt("connect_timeout", 2.0), attempt("answers", 0.020, 0.050, 0.006)]
    series = probe_series("vm", 3389, count=4, interval=1.0, clock=clock, prober=scripted(clock, results, 0.25))
    assert clock.sleeps == [0.75, 0.75, 0.75]
    assert series.count == 4 and series.successes == 3 and series.success_rate == 0.75 and not series.ok
    assert series.outcomes == {"answers": 3, "connect_timeout": 1}
    connect = series.spread("connect")  # the timed-out connect is not a latency sample
    assert (connect.samples, connect.min, connect.median, connect.max) == (3, 0.010, 0.020, 0.030)
    assert connect.jitter == pytest.approx((0.020 + 0.010) / 2)
    negotiation = series.spread("negotiation")
    assert (negotiation.min, negotiation.median, negotiation.max) == (0.020, 0.020, 0.050)
    assert negotiation.jitter == pytest.approx(0.015)
    document = series.to_dict()
    assert document["success_rate"] == 0.75 and len(document["attempts"]) == 4
    assert document["timings"]["tls"] == {"samples": 3, "min": 0.005, "median": 0.006, "max": 0.007, "jitter": 0.0015}


def test_series_of_one_has_no_jitter_and_no_sleep():
    clock = ManualClock()
    series = probe_series("vm", 3389, count=1, interval=5, clock=clock,
                          prober=scripted(clock, [attempt("answers", 0.01, 0.02, 0.003)], 0))
    assert clock.sleeps == [] and series.ok and series.spread("connect").jitter == 0.0


def test_series_against_a_real_listener():
    with Listener(answer_with(bytes.fromhex("0300000b06d00000123400"), linger=0)) as server:
        series = probe_series("127.0.0.1", server.port, count=3, interval=0, timeout=2)
    assert series.ok and series.outcomes == {"standard_rdp_security": 3} and server.connections == 3
