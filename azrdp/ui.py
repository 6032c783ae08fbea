"""Progress for people, on stderr: live in a terminal, plain timestamped lines in logs.

stdout is reserved for the result (text, JSON), so `azrdp ... -o json | jq` always works.
"""

from __future__ import annotations

import sys
from typing import TextIO

from azrdp.clock import SYSTEM_CLOCK, Clock


class Progress:
    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None,
                 quiet: bool = False, clock: Clock = SYSTEM_CLOCK):
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.quiet = quiet
        self.clock = clock
        self._start = clock.monotonic()
        self._status_shown = False

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

    def info(self, text: str) -> None:
        """A line that stays: a phase started or finished, something was changed."""
        if self.quiet:
            return
        self._clear_status()
        self.stream.write(self._line(text) + "\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        """A transient line (what azrdp is waiting for). Overwritten in a terminal; in logs,
        written as a plain line, so callers should call it sparingly there."""
        if self.quiet:
            return
        if self.live:
            self._clear_status()
            self.stream.write(self._line(text))
            self._status_shown = True
            self.stream.flush()
        else:
            self.info(text)

    def done(self) -> None:
        if not self.quiet:
            self._clear_status()
            self.stream.flush()


class SilentProgress(Progress):
    def __init__(self) -> None:
        super().__init__(stream=sys.stderr, live=False, quiet=True)
