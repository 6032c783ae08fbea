"""Waiting on ARM long-running operations on azrdp's Clock, with a deadline.

The SDK's ARMPolling sleeps with time.sleep and ``poller.result(timeout)`` does not raise when
time runs out (azure-sdk-notes.md §0). Run Command, restart, start and NSG rule writes all wait
the same way here: the poller's sleeps go through the injected Clock and stop at a deadline, and
``wait()`` tells a finished operation from one that ran out of time.
"""

from __future__ import annotations

from typing import Any, Callable

from azure.mgmt.core.polling.arm_polling import ARMPolling

from azrdp.clock import Clock

POLL_CAP = 5.0          # LRO status polls at most this far apart (the SDK default is 30 s)


def poll_interval(session: Any) -> float:
    """How often to poll an ARM operation azrdp waits on: the session's interval, capped at 5 s,
    so an operation that ends is noticed within seconds, not up to 30 s later (a Retry-After from
    ARM still wins)."""
    return min(float(getattr(session, "polling_interval", POLL_CAP)), POLL_CAP)


class DeadlinePassed(Exception):
    """Raised inside the SDK's polling thread when the next sleep would pass the deadline."""


class ClockedPolling(ARMPolling):
    """ARMPolling whose sleeps go through azrdp's Clock and stop at a deadline. ``on_poll(status)``
    hears the operation's last status (``InProgress``, ...) before each sleep: the live status line."""

    def __init__(self, delay: float, *, clock: Clock, deadline: float,
                 on_poll: Callable[[str], None] | None = None, **kwargs: Any):
        super().__init__(delay, **kwargs)
        self._clock = clock
        self._deadline = deadline
        self._on_poll = on_poll

    def _sleep(self, delay: float) -> None:
        if self._on_poll is not None:
            self._on_poll(str(self.status()))
        if self._clock.monotonic() + delay > self._deadline:
            raise DeadlinePassed()
        self._clock.sleep(delay)


def clocked_polling(client: Any, *, clock: Clock, deadline: float, polling_interval: float | None = None,
                    on_poll: Callable[[str], None] | None = None) -> ClockedPolling:
    """A ClockedPolling for an operation of ``client`` (its base URL, and its polling interval
    unless ``polling_interval`` is given; tests pass 0)."""
    config = getattr(client, "_config", None)
    delay = polling_interval if polling_interval is not None else getattr(config, "polling_interval", 30)
    base_url = getattr(config, "base_url", None)
    kwargs = {"path_format_arguments": {"endpoint": base_url}} if base_url else {}
    return ClockedPolling(delay, clock=clock, deadline=deadline, on_poll=on_poll, **kwargs)


def wait(poller: Any, *, clock: Clock, deadline: float) -> tuple[Any, bool]:
    """(result, finished) of ``poller``. ``finished`` is False when the deadline passed before the
    operation ended. SDK errors (a Failed operation) propagate to the caller."""
    try:
        # The polling thread stops itself at the deadline; this real-time wait is only a backstop.
        result = poller.result(timeout=max(1.0, deadline - clock.monotonic()) + 60.0)
    except DeadlinePassed:
        return None, False
    return result, poller.done()
