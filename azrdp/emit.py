"""One way out for every command's result (the CLI layer): with ``-o json`` the result's own
document (``result.to_dict()`` through :func:`azrdp.report.to_json`, schema_version first), else
the text its renderer (azrdp.render.*) makes of it; the JUnit file first when one was asked for;
then the result's exit code::

    emit(result, render_diagnosis)                     # a command's last line
    emit(result, render_fix, junit=(path, lambda: junit_xml(...)))

A result is anything with ``to_dict()`` and ``exit_code`` (:class:`Result`). A result whose
report could not be printed (stdout closed, the disk full) is printed on stderr instead and the
command exits non-zero; a JUnit file that cannot be written is said on stderr and does the same.
Nothing here decides what a result says: the renderers do, from the same objects the JSON is
made of.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Protocol

import click

from azrdp.options import settings


class Result(Protocol):
    """What emit() needs of a command's result."""

    @property
    def exit_code(self) -> int: ...

    def to_dict(self) -> dict[str, Any]: ...


Render = Callable[..., str]               # render(result, verbose=N) -> text


def echo(text: str, *, err: bool = False) -> bool:
    """Print text on stdout (``err``: stderr); when stdout cannot take it (a closed pipe, a full
    disk), on stderr, so a result that records a change is never lost. Control characters from
    untrusted text are escaped (azrdp.logsafe.terminal_safe). False when stdout failed."""
    from azrdp.logsafe import terminal_safe

    text = terminal_safe(text)
    if err:
        try:
            click.echo(text, err=True)
        except (OSError, ValueError):
            pass
        return True
    try:
        click.echo(text)
        sys.stdout.flush()
        return True
    except (OSError, ValueError):
        try:
            click.echo(text, err=True)
        except (OSError, ValueError):
            pass
        return False


def as_json() -> bool:
    """True when the command was asked for JSON (-o json)."""
    return settings().output == "json"


def write_junit(path: str | Path, render: Callable[[], str]) -> bool:
    """Write the JUnit XML ``render()`` makes to ``path`` (checked writable before the job ran);
    False (said on stderr) when it cannot be written: the work is done, the result still shows."""
    from azrdp.outfiles import write_output

    try:
        write_output(path, render())
        return True
    except OSError as err:
        echo(f"Error: could not write --junit-xml {path}: {err.strerror or err}", err=True)
        return False


def emit(result: Result, text: Render, *, junit: tuple[str | Path, Callable[[], str]] | None = None,
         document: Callable[[Any], dict[str, Any]] | None = None,
         aside: Callable[[Any], str] | None = None, line: bool = False) -> NoReturn:
    """Show ``result`` and exit with its exit code (non-zero when the report or the JUnit file
    could not be written).

    ``text(result, verbose=N)`` renders it for people; ``document(result)`` replaces
    ``result.to_dict()`` where a command's JSON is a view of the result (sweep's summary line);
    ``line``: that JSON on one line (a JSON-lines stream); ``aside(result)``: with -o json, text
    that still goes to people, on stderr (sweep's table)."""
    from azrdp.report import to_json

    code = result.exit_code
    if junit is not None and not write_junit(*junit):
        code = code or 1
    if as_json():
        ok = echo(to_json(document(result) if document is not None else result.to_dict(), line=line))
        if aside is not None:
            echo(aside(result), err=True)
    else:
        ok = echo(text(result, verbose=settings().verbose))
    click.get_current_context().exit(code if ok else code or 1)
