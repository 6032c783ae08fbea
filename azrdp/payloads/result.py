"""Parse what Run Command returns for a payload into its validated result object.

Action Run Command answers with ``value[]``: one status whose code contains ``StdOut`` and one
whose code contains ``StdErr``, each holding only the LAST 4,096 bytes of that stream and no exit
code. A payload prints exactly one ``AZRDP-RESULT:{compact json}`` line, last. This module finds
that line, decodes it and checks it against :mod:`azrdp.payloads.schema`; anything else is a
:class:`PayloadOutputError` that shows the tail of StdOut/StdErr so a user sees what the guest said.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from azrdp.errors import ProtocolError
from azrdp.payloads.schema import RESULT_MARKER, RUN_COMMAND_OUTPUT_CAP, validate_result

TAIL_CHARS = 300


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


class PayloadOutputError(ProtocolError):
    """The payload's output has no usable result line (missing, repeated, cut or not JSON)."""

    def __init__(self, payload_id: str, problem: str, output: RunCommandOutput):
        parts = [f"the {payload_id} payload {problem}"]
        if output.stdout_truncated:
            parts.append(f"(StdOut reached Run Command's {RUN_COMMAND_OUTPUT_CAP}-byte cap and was cut)")
        parts.append(f"StdOut ends: {tail(output.stdout)!r}")
        if output.stderr.strip():
            parts.append(f"StdErr ends: {tail(output.stderr)!r}")
        super().__init__("; ".join(parts),
                         hint="Run Command's log in the VM is under C:\\WindowsAzure\\Logs\\Plugins\\"
                              "Microsoft.CPlat.Core.RunCommandWindows.")
        self.payload_id = payload_id
        self.problem = problem
        self.output = output


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
    return RunCommandOutput(stdout="\n".join(stdout), stderr="\n".join(stderr))


def parse_result(payload_id: str, output: RunCommandOutput) -> dict[str, Any]:
    """The validated result object of ``payload_id`` from its Run Command output.

    Exactly one line must start with ``AZRDP-RESULT:`` and hold a complete JSON object that
    follows the payload's schema. Lines before it (a stray warning, a cut head) do not matter;
    a missing, repeated or cut line raises :class:`PayloadOutputError`, a line that is JSON but
    does not follow the schema raises :class:`~azrdp.payloads.schema.ResultSchemaError`.
    """
    lines = [line.strip().lstrip("\ufeff") for line in output.stdout.splitlines()]
    found = [line for line in lines if line.startswith(RESULT_MARKER)]
    if not found:
        if any(RESULT_MARKER in line for line in lines):
            raise PayloadOutputError(payload_id, "printed its result marker in the middle of a line",
                                     output)
        problem = "printed no AZRDP-RESULT line"
        if output.stdout_truncated:
            problem += " in the part Run Command kept"
        raise PayloadOutputError(payload_id, problem, output)
    if len(found) > 1:
        raise PayloadOutputError(payload_id, f"printed {len(found)} AZRDP-RESULT lines (exactly one "
                                 "is expected)", output)
    text = found[0][len(RESULT_MARKER):]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise PayloadOutputError(payload_id, f"printed an AZRDP-RESULT line that is not complete "
                                 f"JSON ({err.msg} at character {err.pos} of {len(text)}): the "
                                 "line was cut", output) from None
    if not isinstance(obj, dict):
        raise PayloadOutputError(payload_id, "printed an AZRDP-RESULT line that is not a JSON object",
                                 output)
    return validate_result(payload_id, obj)
