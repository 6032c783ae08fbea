"""What every azrdp command shares, in the CLI layer: -o/--output, -v/--verbose and --debug
(accepted before or after the command name), their values (:func:`settings`), and the command
class that refuses empty values up front.

The group (azrdp.cli) and every command (azrdp.commands.*) import this module; it imports
neither, so the command table in azrdp.cli stays the only place that loads a command. The library
never imports it (nor Click).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click


@dataclass
class Settings:
    """Options every command shares; set on the group or after the command name."""

    output: str = "text"
    verbose: int = 0
    debug: bool = False


def settings(ctx: click.Context | None = None) -> Settings:
    ctx = ctx or click.get_current_context()
    return ctx.ensure_object(Settings)


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        settings(ctx).output = value


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        settings(ctx).verbose += value


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not settings(ctx).debug:
        from azrdp.logsafe import enable_debug_logging

        settings(ctx).debug = True
        enable_debug_logging(sys.stderr)


def shared_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """-o/--output, -v/--verbose and --debug, accepted before or after the command name."""
    for decorator in reversed((
        click.option("-o", "--output", type=click.Choice(["text", "json"]), default=None,
                     expose_value=False, callback=_set_output, is_eager=True,
                     help="Result format on stdout (default: text)."),
        click.option("-v", "--verbose", count=True, expose_value=False, callback=_set_verbose,
                     is_eager=True, help="More detail in text output; repeat for more."),
        click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug,
                     is_eager=True, help="Log HTTP traffic (tokens redacted) and show tracebacks."),
    )):
        fn = decorator(fn)
    return fn


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
"""Every command's own: Click 8.2+ builds a command's help option once, from the first context
it sees, and keeps it; a command that took ``-h`` from its group only would lose it for good after
one call without the group (a library caller, a test), and its --help text would change."""


class AzrdpCommand(click.Command):
    """A command that refuses an empty value up front (``--host ''``, ``--subscription ''``): exit 2,
    one line naming the option, before anything is read or sent. Every azrdp command uses it, with
    :data:`CONTEXT_SETTINGS` as its own context settings."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["context_settings"] = {**CONTEXT_SETTINGS, **(kwargs.get("context_settings") or {})}
        super().__init__(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        from azrdp.errors import UsageError

        for param in self.params:
            value = ctx.params.get(param.name) if param.name else None
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, str) and not v.strip() for v in values):
                source = ctx.get_parameter_source(param.name)
                where = " (from the environment)" if source is not None and source.name == "ENVIRONMENT" else ""
                if isinstance(param, click.Option):
                    name = max(param.opts, key=len)
                    raise UsageError(f"{name} is empty{where}.", hint=f"Give {name} a value, or leave it out.")
                name = param.human_readable_name
                raise UsageError(f"empty {name.lower()} argument.", hint=f"Give {name} a value.")
        return super().invoke(ctx)
