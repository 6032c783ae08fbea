"""Typed errors, each with the exit code the CLI maps it to (one place, documented in README).

Exit codes:
    0  RDP answers (healthy, or fixed)
    1  a problem was found, or RDP still does not answer
    2  usage error (bad input; nothing was changed)
    3  authentication or authorization failure
    4  VM or resource not found
    5  an Azure operation failed or timed out
  130  interrupted (Ctrl-C / SIGINT): no new change after it, the report says what was in flight
  143  stopped by SIGTERM (how CI systems and Azure Automation cancel a job), handled as Ctrl-C is
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_AZURE = 5
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class AzrdpError(Exception):
    """Base of every error azrdp reports to a user.

    The message is one line that names what is wrong; ``hint`` says what to do next.
    """

    exit_code = EXIT_PROBLEM

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class UsageError(AzrdpError):
    """Bad input from the user: a malformed host, port, VM reference or option combination."""

    exit_code = EXIT_USAGE


class AuthError(AzrdpError):
    """Not signed in, token expired, or the identity lacks a permission."""

    exit_code = EXIT_AUTH


class NotFoundError(AzrdpError):
    """The VM, resource group or another resource does not exist (in this subscription)."""

    exit_code = EXIT_NOT_FOUND


class AzureOperationError(AzrdpError):
    """An Azure operation failed, was refused, or did not finish in time."""

    exit_code = EXIT_AZURE


class OperationTimeout(AzureOperationError):
    """An Azure long-running operation did not finish within azrdp's deadline."""


class ProtocolError(AzrdpError):
    """Bytes from a peer that do not follow the protocol (RDP wire, payload result line)."""

    exit_code = EXIT_PROBLEM
