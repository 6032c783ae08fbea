"""Parse what Run Command returns for a payload into its validated result object.

Run Command hands back StdOut and StdErr, each cut to its last 4,096 bytes and with no exit code
(:mod:`azrdp.azure.runcommand_output`). A payload prints exactly one ``AZRDP-RESULT:{compact json}`` line, last. This module finds
that line, decodes it and checks it against :mod:`azrdp.payloads.schema`; anything else is a
:class:`PayloadOutputError` that shows the tail of StdOut/StdErr so a user sees what the guest said.

The guest is not trusted: whatever it prints is parsed with bounds. A result line longer than
Run Command can return, JSON nested deeper than any schema (``"[" * 4000`` would exhaust Python's
recursion limit), NaN/Infinity, and strings that are not valid Unicode (a lone ``"\\ud800"``
escape decodes to a surrogate that no file or terminal can encode) are refused here, before the
schema, the audit or a report sees them.
"""

from __future__ import annotations

import json
from typing import Any

from azrdp.azure.runcommand_output import RUN_COMMAND_OUTPUT_CAP, RunCommandOutput, tail
from azrdp.errors import ProtocolError
from azrdp.payloads.schema import RESULT_MARKER, validate_result

MAX_LINE_CHARS = 2 * RUN_COMMAND_OUTPUT_CAP
MAX_DEPTH = 16                        # the deepest schema nests 5 levels


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


def _nesting(text: str) -> int:
    """The deepest nesting of arrays/objects in JSON ``text`` (strings skipped), without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bad_unicode(value: Any) -> bool:
    """True when any string (or key) in ``value`` holds a lone surrogate. Iterative: depth is bounded
    already, but a guest's answer gets no recursion from us either."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= c <= "\udfff" for c in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


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
    if len(text) > MAX_LINE_CHARS:
        raise PayloadOutputError(payload_id, f"printed an AZRDP-RESULT line of {len(text)} characters, more "
                                 "than Run Command returns", output)
    if _nesting(text) > MAX_DEPTH:
        raise PayloadOutputError(payload_id, f"printed an AZRDP-RESULT line nested deeper than {MAX_DEPTH} "
                                 "levels (no azrdp result is)", output)
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise PayloadOutputError(payload_id, f"printed an AZRDP-RESULT line that is not complete "
                                 f"JSON ({err.msg} at character {err.pos} of {len(text)}): the "
                                 "line was cut", output) from None
    except (ValueError, RecursionError) as err:
        raise PayloadOutputError(payload_id, f"printed an AZRDP-RESULT line that is not azrdp's JSON ({err})",
                                 output) from None
    if _bad_unicode(obj):
        raise PayloadOutputError(payload_id, "printed an AZRDP-RESULT line whose text is not valid Unicode "
                                 "(a lone surrogate escape)", output)
    if not isinstance(obj, dict):
        raise PayloadOutputError(payload_id, "printed an AZRDP-RESULT line that is not a JSON object",
                                 output)
    return validate_result(payload_id, obj)
