"""A transport that counts sequential ARM round trips.

Requests that are in flight together form one wave: each request is held until no new request
has arrived for ``window`` seconds, then the whole wave goes out. A request issued only after an
earlier answer (a dependency, or a retry) lands in a later wave. The count can only err upwards
(a parallel request delayed by more than the window), never hide a sequential one. The window
is 0.25 s: at 0.05 s a thread of the same wave that a loaded 2-core machine scheduled late made
a wave of its own (seen at load 9).
"""

from __future__ import annotations

import threading
import time

from azure.core.pipeline.transport import HttpTransport, RequestsTransport


class WaveTransport(HttpTransport):
    def __init__(self, window: float = 0.25):
        self.inner = RequestsTransport()
        self.window = window
        self.waves: list[list[str]] = []
        self._cond = threading.Condition()
        self._waiting: list[dict] = []
        self._last_arrival = 0.0

    def send(self, request, **kwargs):
        entry = {"url": request.url, "wave": None}
        with self._cond:
            self._waiting.append(entry)
            self._last_arrival = time.monotonic()
            self._cond.notify_all()
            while entry["wave"] is None:
                quiet = time.monotonic() - self._last_arrival
                if quiet >= self.window:
                    self.waves.append([e["url"] for e in self._waiting])
                    for waiting in self._waiting:
                        waiting["wave"] = len(self.waves)
                    self._waiting = []
                    self._cond.notify_all()
                else:
                    self._cond.wait(self.window - quiet)
        return self.inner.send(request, **kwargs)

    def open(self):
        self.inner.open()

    def close(self):
        self.inner.close()

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *args):
        self.inner.__exit__(*args)

    def sleep(self, duration):
        self.inner.sleep(duration)
