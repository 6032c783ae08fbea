"""What Action Run Command returns: StdOut and StdErr, each cut to its last 4,096 bytes.

Run Command answers with ``value[]``: one status whose code contains ``StdOut`` and one whose code
contains ``StdErr`` (``ComponentStatus/StdOut/succeeded``), each holding only the LAST 4,096 bytes
of that stream and no exit code (Learn: "Run scripts in your Windows VM by using action Run
Commands", restrictions). This is Run Command's own output shape, apart from what a payload
prints into it (azrdp.payloads.result finds and checks the payload's result line). Pure: no SDK
import, so the payload layer can use it without loading Azure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

RUN_COMMAND_OUTPUT_CAP = 4096
"""Action Run Command returns only the last 4,096 bytes of StdOut (and of StdErr)."""

TAIL_CHARS = 300
MAX_STREAM_CHARS = 64 * 1024          # per stream: Run Command returns 4,096 bytes; more is not from it


@dataclass(frozen=True)
class RunCommandOutput:
    """StdOut and StdErr of one Run Command, and whether Azure cut either at its 4 KB cap."""

    stdout: str
    stderr: str

    @property
    def stdout_truncated(self) -> bool:
        return _at_cap(self.stdout)

    @property
    def stderr_truncated(self) -> bool:
        return _at_cap(self.stderr)

    def to_dict(self) -> dict[str, Any]:
        return {"stdout_tail": tail(self.stdout), "stderr_tail": tail(self.stderr),
                "stdout_truncated": self.stdout_truncated, "stderr_truncated": self.stderr_truncated}


def _at_cap(text: str) -> bool:
    return len(text.encode("utf-8")) >= RUN_COMMAND_OUTPUT_CAP


def tail(text: str, chars: int = TAIL_CHARS) -> str:
    """The last ``chars`` characters of ``text``, stripped."""
    text = text.strip()
    return text if len(text) <= chars else "..." + text[-chars:]


def _get(status: Any, name: str) -> Any:
    if isinstance(status, Mapping):
        return status.get(name)
    return getattr(status, name, None)


def output_from_statuses(statuses: Iterable[Any]) -> RunCommandOutput:
    """StdOut/StdErr from Run Command's ``value[]`` (SDK ``InstanceViewStatus`` models or dicts with
    ``code``/``message``), e.g. code ``ComponentStatus/StdOut/succeeded``."""
    stdout, stderr = [], []
    for status in statuses or ():
        code = str(_get(status, "code") or "")
        message = str(_get(status, "message") or "")
        if "/StdOut/" in code or code.endswith("/StdOut"):
            stdout.append(message)
        elif "/StdErr/" in code or code.endswith("/StdErr"):
            stderr.append(message)
    return RunCommandOutput(stdout="\n".join(stdout)[-MAX_STREAM_CHARS:], stderr="\n".join(stderr)[-MAX_STREAM_CHARS:])
