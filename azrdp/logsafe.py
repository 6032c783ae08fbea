"""Logging that cannot leak a secret: `--debug` shows HTTP traffic, never a token.

azure-core's HTTP logging redacts headers itself, but urllib3 logs every URL it fetches at DEBUG,
query string included, and the boot-diagnostics screenshot is fetched by a SAS URI whose `sig=`
is the credential. So every record that reaches azrdp's debug handler is scrubbed here.
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


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
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
