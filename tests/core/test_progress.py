"""The live status line (a terminal) and the timestamped wait lines (a log), on an injected clock."""

from __future__ import annotations

import io

import pytest

from azrdp.clock import ManualClock
from azrdp.ui import LIVE_AFTER, LOG_EVERY, Progress, clock_text, is_log


class _Tty(io.StringIO):
    def isatty(self):
        return True


def live(clock):
    stream = _Tty()
    return Progress(stream, live=True, clock=clock, refresh=None), stream


def renders(stream: io.StringIO) -> list[str]:
    """What a terminal shows after each redraw of the status line."""
    return [part for part in stream.getvalue().replace("\x1b[K", "").split("\r") if part]


def test_a_terminal_shows_what_is_waited_for_what_azure_said_and_the_elapsed_time():
    clock = ManualClock()
    progress, stream = live(clock)
    with progress.waiting("Run Command on vm-web-01", said="sent", limit=900) as wait:
        clock.advance(1.0)
        wait.update("InProgress")
        assert stream.getvalue() == ""                     # a wait of under two seconds shows nothing
        clock.advance(LIVE_AFTER + 21.0)
        wait.update("InProgress")
        clock.advance(1.0)
        wait.update("InProgress")
    shown = renders(stream)
    assert shown[0].endswith("Run Command on vm-web-01: running, 0:24 of up to 15:00")
    assert shown[1].endswith("Run Command on vm-web-01: running, 0:25 of up to 15:00")
    assert stream.getvalue().endswith("\r\x1b[K")         # the line is gone when the wait ends


def test_a_line_that_stays_is_written_above_the_status_line_which_comes_back():
    clock = ManualClock()
    progress, stream = live(clock)
    with progress.waiting("Restart of vm1") as wait:
        clock.advance(3)
        wait.update("InProgress")
        progress.info("something happened")
    text = stream.getvalue()
    assert "\r\x1b[K[   3.0s] something happened\n[   3.0s] Restart of vm1: running, 0:03" in text


def test_a_log_gets_a_timestamped_line_at_the_start_every_30_seconds_and_at_the_end():
    clock = ManualClock()
    stream = io.StringIO()
    progress = Progress(stream, clock=clock, environ={})    # not a terminal: a log
    assert not progress.live
    with progress.waiting("Restart of vm1", said="sent", limit=900) as wait:
        for _ in range(13):                                 # polled every 5 s for 65 s
            clock.advance(5)
            wait.update("InProgress")
        wait.end("restarted")
    lines = stream.getvalue().splitlines()
    assert lines == ["2026-01-01T00:00:00Z Restart of vm1: sent (azrdp waits up to 15:00)",
                     "2026-01-01T00:00:30Z Restart of vm1: running, 0:30 of up to 15:00",
                     "2026-01-01T00:01:00Z Restart of vm1: running, 1:00 of up to 15:00",
                     "2026-01-01T00:01:05Z Restart of vm1: restarted after 1:05"]
    assert LOG_EVERY == 30


def test_a_wait_stopped_by_an_error_or_ctrl_c_says_so_in_the_log():
    clock = ManualClock()
    stream = io.StringIO()
    progress = Progress(stream, clock=clock, live=False)
    with pytest.raises(KeyboardInterrupt):
        with progress.waiting("Run Command on vm1"):
            clock.advance(7)
            raise KeyboardInterrupt
    assert stream.getvalue().splitlines()[-1].endswith("Run Command on vm1: interrupted after 0:07")


@pytest.mark.parametrize("tty, environ, log", [
    (True, {}, False), (False, {}, True), (True, {"CI": "true"}, True), (True, {"CI": "false"}, False)])
def test_a_log_is_anything_but_a_terminal_and_ci_counts_as_a_log(tty, environ, log):
    stream = _Tty() if tty else io.StringIO()
    assert is_log(stream, environ) is log
    assert Progress(stream, environ=environ).live is (not log)


def test_what_azure_says_reaches_the_terminal_without_control_characters():
    clock = ManualClock()
    progress, stream = live(clock)
    with progress.waiting("Run Command on vm1") as wait:
        clock.advance(5)
        wait.update("evil\x1b]0;title\x07\x1b[2J text")
    assert "\x07" not in stream.getvalue() and "\x1b]" not in stream.getvalue() and "\x1b[2J" not in stream.getvalue()


def test_the_terminal_line_is_redrawn_every_second_between_polls():
    """The real redraw thread (display only: the wait itself stays on the injected clock)."""
    import threading

    clock = ManualClock()
    stream = _Tty()
    progress = Progress(stream, live=True, clock=clock, refresh=0.01)
    with progress.waiting("RDP on 10.0.0.4:3389", said="refused"):
        clock.advance(LIVE_AFTER)
        drawn = threading.Event()
        for _ in range(500):
            if "0:02" in stream.getvalue():
                drawn.set()
                break
            threading.Event().wait(0.01)
        clock.advance(1)
        for _ in range(500):
            if "0:03" in stream.getvalue():
                break
            threading.Event().wait(0.01)
    assert drawn.is_set() and renders(stream)[-1].endswith("RDP on 10.0.0.4:3389: refused, 0:03")
    assert progress._ticker is None


def test_clock_text():
    assert [clock_text(s) for s in (0, 24.9, 65, 3723)] == ["0:00", "0:24", "1:05", "1:02:03"]
