"""Text that cannot hurt: `--debug` shows HTTP traffic, never a token; untrusted text (guest
output, ARM strings, certificate names) never reaches a terminal, a log line or a report raw.

azure-core's HTTP logging redacts headers itself, but urllib3 logs every URL it fetches at DEBUG,
query string included, and the boot-diagnostics screenshot is fetched by a SAS URI whose `sig=`
is the credential. So every record that reaches azrdp's debug handler is scrubbed here.

:func:`printable` is the one escaping helper: every control character (C0, DEL, C1 - ESC and CSI
start terminal escape sequences, a bare CR rewrites the line), the Unicode format characters
that reorder or hide text (bidi overrides, zero-width), line and paragraph separators and lone
surrogates become a visible ``\\uXXXX``. The form is valid inside a JSON string, so the same
helper guards text and JSON output. It is applied where text leaves azrdp: the result on stdout
(``azrdp.cli.emit``), error lines, progress lines, log records and JUnit XML; and per field where a
line is built from untrusted strings (check summaries and remedies), so a newline cannot forge
a line either.
"""

from __future__ import annotations

import logging
import re
from typing import TextIO

_SECRETS = (
    # SAS signatures and OAuth values in URLs and form bodies
    (re.compile(r"(?i)\b(sig|signature|access_token|refresh_token|client_secret|client_assertion|code)=([^&\s\"']+)"),
     r"\1=REDACTED"),
    # Authorization headers
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 REDACTED"),
    # tokens in JSON bodies (the managed-identity endpoint's answer)
    (re.compile(r'(?i)("(?:access_token|refresh_token|client_secret|id_token)"\s*:\s*")[^"]*(")'), r"\1REDACTED\2"),
)


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
                     "\ufeff\ufff9-\ufffb\ud800-\udfff]")
_UNSAFE_KEEP_LINES = re.compile("(?![\n\t])" + _UNSAFE.pattern)


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: object, *, keep_newlines: bool = False, limit: int | None = None) -> str:
    """``text`` with every character that could act on a terminal or hide text escaped as
    ``\\uXXXX`` (newlines and tabs too, unless ``keep_newlines``); cut to ``limit`` characters."""
    text = text if isinstance(text, str) else str(text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return (_UNSAFE_KEEP_LINES if keep_newlines else _UNSAFE).sub(_escape, text)


def terminal_safe(text: str) -> str:
    """A whole rendered result (several lines): control characters escaped, line breaks kept."""
    return printable(text, keep_newlines=True)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = terminal_safe(redact(record.getMessage())), None
        return True


def enable_debug_logging(stream: TextIO) -> logging.Handler:
    """Log everything at DEBUG to ``stream``, through the redacting filter. Returns the handler."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    return handler
