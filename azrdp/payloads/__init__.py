"""The PowerShell payloads azrdp runs inside a VM through Run Command, and their manifest.

``manifest.json`` lists each payload: id, script file, version, whether it is read-only, and its
parameters (type and validation). This module loads the manifest and the script text from the
installed package, and turns Python values into Run Command's ``parameters`` list after checking
them against the manifest. Values reach a script ONLY as Run Command parameters: the script text
sent is the shipped file, unchanged (see :meth:`Payload.script_lines`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from azrdp.errors import UsageError

_PACKAGE = __name__
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ParamSpec:
    """One script parameter as the manifest declares it.

    type: ``int`` (min/max), ``string`` (pattern), ``bool`` (sent as ``true``/``false``) or
    ``list`` (choices; sent comma-separated).
    """

    name: str
    type: str
    required: bool = False
    default: Any = None
    min: int | None = None
    max: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    description: str = ""

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> ParamSpec:
        return cls(name=data["name"], type=data["type"], required=bool(data.get("required", False)),
                   default=data.get("default"), min=data.get("min"), max=data.get("max"),
                   pattern=data.get("pattern"),
                   choices=tuple(data["choices"]) if data.get("choices") else None,
                   description=data.get("description", ""))

    def encode(self, payload_id: str, value: Any) -> str:
        """The string Run Command passes for ``value``; UsageError when it is not allowed."""
        where = f"parameter {self.name} of the {payload_id} payload"
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{where} must be a whole number, got {value!r}.")
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise UsageError(f"{where} must be between {self.min} and {self.max}, got {value}.")
            return str(value)
        if self.type == "bool":
            if not isinstance(value, bool):
                raise UsageError(f"{where} must be true or false, got {value!r}.")
            return "true" if value else "false"
        if self.type == "list":
            items = [value] if isinstance(value, str) else list(value)
            choices = self.choices or ()
            bad = [item for item in items if item not in choices]
            if bad or not items:
                raise UsageError(f"{where} takes one or more of {', '.join(choices)}; got "
                                 f"{', '.join(map(repr, bad)) or 'nothing'}.")
            return ",".join(choice for choice in choices if choice in items)  # fixed order, no repeats
        if self.type == "string":
            if not isinstance(value, str) or _CONTROL.search(value) or not re.fullmatch(self.pattern or ".*", value):
                raise UsageError(f"{where} must match {self.pattern}, got {value!r}.")
            return value
        raise ValueError(f"manifest: unknown parameter type {self.type!r} for {self.name}")


@dataclass(frozen=True)
class Payload:
    id: str
    file: str
    version: str
    read_only: bool
    description: str
    parameters: tuple[ParamSpec, ...]
    steps: tuple[str, ...] = ()

    def script_text(self) -> str:
        """The script as sent: the shipped payload file with each shipped include file in place of
        its ``# azrdp:include <file>`` line (one copy of the shared helpers, and the text sent is
        always exactly what the package ships). See :func:`expand_includes` for the rules."""
        return expand_includes(self.file, _read_text(self.file), read_only=self.read_only)

    def script_lines(self) -> list[str]:
        """The script as Run Command's ``script`` array: ``script_text()`` split at ``\\n``,
        nothing else touched. ``"\\n".join(lines) + "\\n"`` is that text, byte for byte."""
        text = self.script_text()
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return lines

    def parameter(self, name: str) -> ParamSpec:
        for spec in self.parameters:
            if spec.name == name:
                return spec
        raise UsageError(f"the {self.id} payload has no parameter {name!r} "
                         f"(it takes {', '.join(p.name for p in self.parameters) or 'none'}).")

    def run_command_parameters(self, values: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
        """Run Command ``parameters`` for ``values`` (name -> Python value), validated against the
        manifest. Names not given are left out, so the script's own default applies."""
        values = dict(values or {})
        out = []
        for name in values:
            self.parameter(name)  # unknown names fail before anything is sent
        for spec in self.parameters:
            if spec.name in values and values[spec.name] is not None:
                out.append({"name": spec.name, "value": spec.encode(self.id, values[spec.name])})
            elif spec.required:
                raise UsageError(f"the {self.id} payload needs parameter {spec.name}.")
        return out


COMMON_FILE = "common.ps1"
CHANGE_FILE = "change.ps1"
# The include files, in the order a payload includes them: common.ps1 (every payload) and
# change.ps1 (the helpers that change things, for the payloads that are not read-only).
INCLUDE_FILES = (COMMON_FILE, CHANGE_FILE)
INCLUDE_LINE = f"# azrdp:include {COMMON_FILE}\n"
_INCLUDE = re.compile(r"^# azrdp:include (.*)\n", re.M)


def expand_includes(file: str, source: str, *, read_only: bool,
                    read: Callable[[str], str] | None = None) -> str:
    """``source`` (the payload ``file``) with each ``# azrdp:include <name>`` line replaced by the
    include file's text. Rules (RuntimeError otherwise): only names in INCLUDE_FILES; each at most
    once, common.ps1 always (exactly once) and change.ps1 only in a payload that is not read-only,
    after common.ps1; an include file holds no include line itself (one level, no loops)."""
    read = read or _read_text
    names = _INCLUDE.findall(source)
    unknown = [name for name in names if name not in INCLUDE_FILES]
    if unknown:
        raise RuntimeError(f"{file} includes unknown file(s) {', '.join(map(repr, unknown))} "
                           f"(known: {', '.join(INCLUDE_FILES)})")
    if len(set(names)) != len(names) or COMMON_FILE not in names:
        raise RuntimeError(f"{file} must contain each include line once, {INCLUDE_LINE.strip()!r} always")
    if CHANGE_FILE in names and read_only:
        raise RuntimeError(f"{file} is read-only and must not include {CHANGE_FILE} (its helpers change things)")
    if names != [name for name in INCLUDE_FILES if name in names]:
        raise RuntimeError(f"{file} must include {' before '.join(INCLUDE_FILES)}")
    texts = {name: read(name) for name in names}
    for name, text in texts.items():
        if _INCLUDE.search(text):
            raise RuntimeError(f"include file {name} may not include another file")
    return _INCLUDE.sub(lambda match: texts[match.group(1)], source)   # one pass: inserted text is never re-read


def _read_text(name: str) -> str:
    data = resources.files(_PACKAGE).joinpath(name).read_bytes()
    return data.decode("ascii")  # Windows PowerShell 5.1 reads BOM-less files as ANSI: keep them ASCII


@lru_cache(maxsize=1)
def manifest() -> dict[str, Any]:
    """The parsed manifest.json."""
    return json.loads(_read_text("manifest.json"))


@cache
def payload(payload_id: str) -> Payload:
    """The payload with this manifest id (``diagnose`` or ``repair``)."""
    for entry in manifest()["payloads"]:
        if entry["id"] == payload_id:
            return Payload(id=entry["id"], file=entry["file"], version=entry["version"],
                           read_only=bool(entry["read_only"]), description=entry["description"],
                           parameters=tuple(ParamSpec.from_manifest(p) for p in entry["parameters"]),
                           steps=tuple(entry.get("steps", ())))
    known = ", ".join(entry["id"] for entry in manifest()["payloads"])
    raise KeyError(f"no payload {payload_id!r} in manifest.json (known: {known})")


def payload_ids() -> list[str]:
    return [entry["id"] for entry in manifest()["payloads"]]
