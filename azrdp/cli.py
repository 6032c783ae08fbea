"""The `azrdp` command line: a Click group, its lazy command table, and the one place that maps
typed errors to exit codes. The options every command shares live in azrdp.options, a result's
way out in azrdp.emit; commands import those, never this module.

Commands live in ``azrdp/commands/<name>.py`` and are imported only when invoked, so
``azrdp --help`` and ``azrdp probe`` never pay for importing the Azure SDK (~0.5 s).
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Any

import click

from azrdp import __version__
from azrdp.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, AzrdpError
from azrdp.options import CONTEXT_SETTINGS, settings, shared_options

# name -> ("module:attribute", one-line summary for `azrdp --help`), in the order --help lists
# them. Add a line when you add a command. The summary lives here so that `azrdp --help` lists
# every command without importing any of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "probe": ("azrdp.commands.probe:probe_command",
              "Does RDP answer on HOST[:PORT]? TCP, X.224, TLS and the certificate."),
    "diagnose": ("azrdp.commands.diagnose:diagnose_command",
                 "Why does this VM refuse Remote Desktop? Azure, network, wire and guest."),
    "fix": ("azrdp.commands.fix:fix_command",
            "Repair Remote Desktop on a VM and prove it answers again."),
    "rescue": ("azrdp.commands.rescue:rescue_command",
               "No Run Command? Repair the OS disk offline through a rescue VM."),
    "revoke": ("azrdp.commands.revoke:revoke_command",
               "Remove the NSG rules `fix --allow-from` added to a VM."),
    "check": ("azrdp.commands.check:check_command",
              "CI smoke check: does the VM answer RDP? Detail only when it fails."),
    "sweep": ("azrdp.commands.sweep:sweep_command",
              "Check (and with --fix repair) every Windows VM in a scope."),
    "demo": ("azrdp.commands.demo:demo_command",
             "See azrdp repair a broken VM on a local Azure stand-in."),
    "emulator": ("azrdp.commands.emulator:emulator_group",
                 "Run the local Azure stand-in for your own scripts and runbooks."),
}

class _Failure(click.ClickException):
    """A typed azrdp error on its way out: one line on stderr and its documented exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        # Click declares exit_code a ClassVar, yet its main() reads it from the raised instance;
        # one instance per typed error carries that error's documented code
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        from azrdp.logsafe import printable

        try:
            click.echo(f"Error: {printable(self.message)}", err=True)
        except (OSError, ValueError):
            pass


class AzrdpGroup(click.Group):
    """Lazily imports commands and turns typed errors into exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in COMMANDS.items()])

    def invoke(self, ctx: click.Context) -> Any:
        from azrdp.clock import clear_stop

        clear_stop()
        previous = _install_stop_handlers()
        try:
            return super().invoke(ctx)
        except AzrdpError as err:
            if settings(ctx).debug:
                traceback.print_exc(file=sys.stderr)
            raise _Failure(err.one_line(), err.exit_code) from err
        except KeyboardInterrupt:
            raise _Failure(f"interrupted ({_stop_name()}): no new change was sent after it.",
                           _interrupted_code()) from None
        except click.exceptions.Exit as done:
            if done.exit_code == EXIT_INTERRUPTED:
                raise click.exceptions.Exit(_interrupted_code()) from None
            raise
        finally:
            _restore_handlers(previous)


def _stop_name() -> str:
    from azrdp.clock import stop_requested

    return {"SIGTERM": "SIGTERM", "SIGINT": "Ctrl-C"}.get(stop_requested() or "SIGINT", "Ctrl-C")


def _interrupted_code() -> int:
    """130 after Ctrl-C (SIGINT), 143 (128 + 15) after SIGTERM, as a shell reports a killed job."""
    from azrdp.clock import stop_requested

    return EXIT_TERMINATED if stop_requested() == "SIGTERM" else EXIT_INTERRUPTED


def _on_stop_signal(signum: int, _frame: Any) -> None:
    """SIGINT and SIGTERM alike: request the stop (no new change; every wait wakes), and raise
    KeyboardInterrupt in the main thread once, so the command records what was in flight and
    reports. A second signal does not cut that report short."""
    import signal

    from azrdp.clock import request_stop, stop_requested

    first = stop_requested() is None
    request_stop("SIGTERM" if signum == signal.SIGTERM else "SIGINT")
    if first:
        raise KeyboardInterrupt


def _install_stop_handlers() -> dict[int, Any]:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, _on_stop_signal)
        except (ValueError, OSError):  # not settable here (embedded interpreters)
            pass
    return previous


def _restore_handlers(previous: dict[int, Any]) -> None:
    import signal

    for signum, handler in previous.items():
        try:
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        except (ValueError, OSError):
            pass


@click.group(cls=AzrdpGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="azrdp")
@shared_options
def cli() -> None:
    """Find out why an Azure Windows VM refuses Remote Desktop, repair it, and prove RDP answers.

    \b
    Exit codes: 0 RDP answers (healthy or fixed); 1 problem found or still not answering;
    2 usage error; 3 sign-in or permission failure; 4 VM or resource not found;
    5 an Azure operation failed or timed out; 130 interrupted (Ctrl-C), 143 stopped by SIGTERM.
    """


def main() -> None:
    cli(prog_name="azrdp")
