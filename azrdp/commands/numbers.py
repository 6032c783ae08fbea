"""Numeric options, bounded at parse time: ``inf``, ``nan`` and numbers too large to mean anything
are a usage error (exit 2) naming the option and its range, never an OverflowError after work.

    @click.option("--timeout", type=Number(maximum=300), ...)
    seconds = parse_duration("15m", "--wait-timeout", maximum=MAX_WAIT)
"""

from __future__ import annotations

import math
import re
from typing import Any

import click

from azrdp.errors import UsageError

HOUR = 3600.0
DAY = 24 * HOUR
MAX_PROBE_TIMEOUT = 300.0        # one wire probe: TCP, X.224 and TLS within five minutes or never
MAX_WAIT = DAY                   # waiting for RDP / the VM agent: a day is already a stuck job
MAX_RUN_COMMAND_TIMEOUT = 2 * HOUR   # action Run Command itself gives up after 90 minutes
MAX_INTERVAL = HOUR
MAX_COUNT = 10_000
MAX_SPEED = 100_000.0


class Number(click.ParamType):
    """A finite float (or int with ``integer``) within [minimum, maximum]; either bound optional."""

    name = "number"

    def __init__(self, *, minimum: float | None = None, maximum: float | None = None, integer: bool = False,
                 open_minimum: bool = False):
        self.minimum, self.maximum, self.integer, self.open_minimum = minimum, maximum, integer, open_minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            try:
                number = int(text) if self.integer else float(text)
            except ValueError:
                self.fail(f"{value!r} is not {'a whole number' if self.integer else 'a number'}.", param, ctx)
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; {self._range()}.", param, ctx)
        if self.maximum is not None and number > self.maximum:
            self.fail(f"{value!r} is too large; {self._range()}.", param, ctx)
        if self.minimum is not None and (number < self.minimum or (self.open_minimum and number == self.minimum)):
            self.fail(f"{value!r} is too small; {self._range()}.", param, ctx)
        return number

    def _range(self) -> str:
        low = "" if self.minimum is None else f"more than {self.minimum:g}" if self.open_minimum \
            else f"at least {self.minimum:g}"
        high = "" if self.maximum is None else f"at most {self.maximum:g}"
        return "it must be " + " and ".join(p for p in (low, high) if p)


_DURATION = re.compile(r"^\s*(\d{1,9}(?:\.\d{1,6})?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str, *, maximum: float) -> float:
    """Seconds from '900', '90s', '15m', '2h', '1d'; more than 0 and at most ``maximum``."""
    found = _DURATION.match(text or "")
    if not found or float(found.group(1)) <= 0:
        raise UsageError(f"{option} {text!r} is not a duration.", hint=f"Use e.g. {option} 15m, 90s or 2h.")
    seconds = float(found.group(1)) * _UNITS[found.group(2).lower()]
    if seconds > maximum:
        raise UsageError(f"{option} {text.strip()} is too long: at most {_human(maximum)}.",
                         hint=f"Use e.g. {option} 15m, 90s or 2h.")
    return seconds


def _human(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", HOUR), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
