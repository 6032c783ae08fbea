"""Progress for people, on stderr: live in a terminal, plain timestamped lines in logs.

stdout is reserved for the result (text, JSON), so `azrdp ... -o json | jq` always works.

Every wait azrdp makes (a Run Command, a restart or start, the VM agent, RDP answering, another
Run Command holding the VM) goes through :meth:`Progress.waiting`::

    with progress.waiting("Run Command on vm-web-01", limit=900) as wait:
        run_script(..., on_wait=wait.update)       # the poller reports what Azure last said

In a terminal, once a wait has lasted more than two seconds, one status line shows what is
waited for, what Azure last said and the elapsed time ("Run Command on vm-web-01: running, 0:24"),
redrawn every second and on every poll. In a log (stderr is not a terminal, ``CI=true``, an Azure
Automation job) the same line is written with a timestamp when the wait starts, every 30 seconds,
and when it ends. Elapsed time comes from the injected Clock, so tests drive it exactly.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

from azrdp.clock import SYSTEM_CLOCK, Clock

LIVE_AFTER = 2.0      # a terminal shows a wait once it has lasted this long
LOG_EVERY = 30.0      # a log gets a line for a wait this often
REFRESH = 1.0         # a terminal's status line is redrawn this often (real time: display only)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SAID = {"inprogress": "running", "notstarted": "queued", "succeeded": "succeeded", "failed": "failed",
         "canceled": "canceled", "cancelled": "canceled"}


def is_log(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when progress goes to a log, not to a person at a terminal: stderr is not a terminal
    (an Azure Automation job writes to its job streams, a pipe, a file) or ``CI`` is set true (CI
    systems that allocate a pseudo-terminal still keep a log)."""
    env = os.environ if environ is None else environ
    if env.get("CI", "").strip().lower() in ("true", "1", "yes"):
        return True
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def terminal_safe(text: Any) -> str:
    """Text from Azure or the guest without control characters (no escape sequence reaches a terminal)."""
    return _CONTROL.sub(" ", str(text)).strip()


def azure_said(status: Any) -> str:
    """An ARM long-running operation's status as the status line says it: InProgress -> running."""
    text = terminal_safe(status)
    return _SAID.get(text.replace(" ", "").lower(), text or "waiting")


def clock_text(seconds: float) -> str:
    """0:24, 12:05, 1:02:03."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Wait:
    """One wait in progress; ``update(said)`` whenever Azure (or the wire) says something new."""

    def __init__(self, progress: Progress, what: str, *, said: str = "waiting", limit: float | None = None):
        self.progress = progress
        self.what = terminal_safe(what)
        self.said = terminal_safe(said)
        self.limit = limit
        self.outcome: str | None = None
        self.started = progress.clock.monotonic()
        self._logged_at = self.started
        self._drawn = False

    def elapsed(self) -> float:
        return self.progress.clock.monotonic() - self.started

    def line(self) -> str:
        limit = f" of up to {clock_text(self.limit)}" if self.limit else ""
        return f"{self.what}: {self.said}, {clock_text(self.elapsed())}{limit}"

    def update(self, said: Any) -> None:
        """What Azure last said (``InProgress`` reads as "running"); redraws or logs as due."""
        self.said = azure_said(said) if str(said).replace(" ", "").lower() in _SAID else terminal_safe(said)
        self.tick()

    def note(self, text: str) -> None:
        """Something the operator must see now (e.g. waiting behind another Run Command): a line that stays."""
        self.progress.info(terminal_safe(text))
        self._logged_at = self.progress.clock.monotonic()
        self.tick()

    def end(self, outcome: str) -> None:
        """How the wait ended ("succeeded", "answers", "timed out"); shown in a log's last line."""
        self.outcome = terminal_safe(outcome)

    def tick(self) -> None:
        p = self.progress
        if p.quiet:
            return
        now = p.clock.monotonic()
        if p.live:
            if now - self.started >= LIVE_AFTER:
                p._draw(self.line())
                self._drawn = True
        elif now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            p.info(self.line())

    def __enter__(self) -> Wait:
        self.progress._push(self)
        if not self.progress.live:
            limit = f" (azrdp waits up to {clock_text(self.limit)})" if self.limit else ""
            self.progress.info(f"{self.what}: {self.said}{limit}")
        return self

    def __exit__(self, kind: Any, error: Any, _tb: Any) -> None:
        self.progress._pop(self)
        if self.outcome is None:
            self.outcome = ("interrupted" if kind is KeyboardInterrupt else
                            "stopped: " + terminal_safe(getattr(error, "message", None) or kind.__name__)
                            if kind is not None else "done")
        if not self.progress.live:
            self.progress.info(f"{self.what}: {self.outcome} after {clock_text(self.elapsed())}")


class Progress:
    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None,
                 quiet: bool = False, clock: Clock = SYSTEM_CLOCK, environ: Mapping[str, str] | None = None,
                 refresh: float | None = REFRESH):
        self.stream = stream if stream is not None else sys.stderr
        self.live = (not is_log(self.stream, environ)) if live is None else live
        self.quiet = quiet
        self.clock = clock
        self.refresh = refresh
        self._start = clock.monotonic()
        self._status_shown = False
        self._lock = threading.RLock()
        self._waits: list[Wait] = []
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def elapsed(self) -> float:
        return self.clock.monotonic() - self._start

    def _line(self, text: str) -> str:
        from azrdp.logsafe import printable

        text = printable(text)   # one line, whatever untrusted text it quotes
        if self.live:
            return f"[{self.elapsed():6.1f}s] {text}"
        return f"{self.clock.now().strftime('%Y-%m-%dT%H:%M:%SZ')} {text}"

    def _clear_status(self) -> None:
        if self._status_shown:
            self.stream.write("\r\x1b[K")
            self._status_shown = False

    def _draw(self, text: str) -> None:
        with self._lock:
            self._clear_status()
            self.stream.write(self._line(text))
            self._status_shown = True
            self.stream.flush()

    def info(self, text: str) -> None:
        """A line that stays: a phase started or finished, something was changed."""
        if self.quiet:
            return
        with self._lock:
            self._clear_status()
            self.stream.write(self._line(text) + "\n")
            self.stream.flush()
            if self.live and self._waits and self._waits[-1]._drawn:
                self._waits[-1].tick()       # the status line comes back under the new line

    def status(self, text: str) -> None:
        """A transient line (what azrdp is doing right now). Overwritten in a terminal; in logs,
        written as a plain line, so callers should call it sparingly there."""
        if self.quiet:
            return
        if self.live:
            self._draw(text)
        else:
            self.info(text)

    def waiting(self, what: str, *, said: str = "waiting", limit: float | None = None) -> Wait:
        """A context manager for one wait: ``with progress.waiting("Restart of vm1", limit=900) as w``."""
        return Wait(self, what, said=said, limit=limit)

    def done(self) -> None:
        if not self.quiet:
            with self._lock:
                self._clear_status()
                self.stream.flush()

    # -- the terminal's once-a-second redraw --------------------------------------------------------
    def _push(self, wait: Wait) -> None:
        with self._lock:
            self._waits.append(wait)
            if self.live and not self.quiet and self.refresh and self._ticker is None:
                self._stop.clear()
                self._ticker = threading.Thread(target=self._tick_loop, name="azrdp-progress", daemon=True)
                self._ticker.start()

    def _pop(self, wait: Wait) -> None:
        with self._lock:
            if wait in self._waits:
                self._waits.remove(wait)
            if wait._drawn:
                self._clear_status()
                self.stream.flush()
            ticker, stop = (self._ticker, not self._waits)
            if stop:
                self._ticker = None
                self._stop.set()
        if stop and ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout=2 * (self.refresh or 0) + 1)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.refresh):
            with self._lock:
                if self._waits:
                    self._waits[-1].tick()


class SilentProgress(Progress):
    """Progress that shows nothing: the default of every job, so a job never asks whether it has one."""

    def __init__(self) -> None:
        super().__init__(stream=sys.stderr, live=False, quiet=True)


class ProgressSink(Protocol):
    """What a job tells people while it works: a Progress, or a caller's own (a runbook's, a test's).
    Waits are shown only when it also has ``waiting`` (see :func:`waiting`)."""

    def info(self, text: str) -> None: ...

    def status(self, text: str) -> None: ...

    def done(self) -> None: ...


SILENT: ProgressSink = SilentProgress()   # shared: it holds no state a caller could see


class _NoWait:
    """What :func:`waiting` gives when there is no Progress to show a wait on."""

    def update(self, said: Any) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def end(self, outcome: str) -> None:
        pass

    def __enter__(self) -> _NoWait:
        return self

    def __exit__(self, *_exc: Any) -> None:
        return None


def waiting(progress: ProgressSink, what: str, *, said: str = "waiting", limit: float | None = None) -> Any:
    """``progress.waiting(...)``, or a wait that shows nothing when ``progress`` has no waits (a
    caller's own sink)."""
    waits = getattr(progress, "waiting", None)
    if waits is None:
        return _NoWait()
    return waits(what, said=said, limit=limit)
