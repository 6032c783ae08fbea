"""The audit log: every change azrdp makes, appended as one JSON object per line.

Guest repair steps (with before/after and backup locations inside the guest), NSG rules created
or removed, restarts and starts. The same records are returned in the command's JSON result, so
an operator can always answer "what did azrdp change on this VM, and where is the backup?".
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from azrdp.clock import SYSTEM_CLOCK, Clock, Interrupted, stop_requested
from azrdp.errors import EXIT_PROBLEM, AzrdpError


def default_audit_path(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """Where the audit log lives when --audit-log is not given: the user's data directory.

    Linux: $XDG_DATA_HOME/azrdp (default ~/.local/share/azrdp); macOS: ~/Library/Application
    Support/azrdp; Windows: %LOCALAPPDATA%\\azrdp. AZRDP_AUDIT_LOG overrides all of them.
    """
    if env is None:
        env = os.environ
    platform = platform or sys.platform
    if env.get("AZRDP_AUDIT_LOG"):
        return Path(env["AZRDP_AUDIT_LOG"])
    home = Path(env.get("HOME") or Path.home())
    if platform.startswith("win"):
        base = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "azrdp" / "audit.jsonl"


class AuditWriteError(AzrdpError):
    """The audit log could not be written. Raised before a change is sent (so nothing unrecorded is
    changed); after a change it is reported with the result, never instead of it."""

    exit_code = EXIT_PROBLEM


@dataclass
class AuditLog:
    """Collects change records and appends each to a JSON-lines file as it happens.

    ``open()`` (called while the command parses its options) checks the file can be written: 0600,
    never through a symlink, never a FIFO or device, room on its disk. Each record is one
    ``write`` of one complete line followed by ``fsync``, so a crash, Ctrl-C or power cut never
    loses the record of a change already sent, and a full disk never leaves half a line (a short
    write is cut back). ``intent=True`` marks a record written *before* a change is sent: if it
    cannot be written, :class:`AuditWriteError` is raised and the change must not be sent. An
    outcome record that cannot be written is kept in memory (``records``, the command's result)
    and the failure is in ``error``; every later intent is then refused.
    """

    path: Path | None
    context: dict[str, Any] = field(default_factory=dict)
    clock: Clock = SYSTEM_CLOCK
    records: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None

    def open(self, option: str = "--audit-log") -> AuditLog:
        """Check (and keep open) the audit file; UsageError when it cannot be written."""
        from azrdp.outfiles import open_private_append

        with self._lock:
            if self.path is not None and self._fd is None:
                self._fd = open_private_append(self.path, option)
        return self

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def record(self, action: str, *, intent: bool = False, **fields: Any) -> dict[str, Any]:
        if intent:   # after SIGINT/SIGTERM no new change is sent: refuse its intent
            stop = stop_requested()
            if stop:
                raise Interrupted(stop)
        entry: dict[str, Any] = {"time": self.clock.now().isoformat(), "action": action}
        entry.update(self.context)
        entry.update(fields)
        with self._lock:
            if self.path is None:
                self.records.append(entry)
                return entry
            if intent and self.error is not None:
                raise AuditWriteError(f"not sending {_what(entry)}: the audit log {self.path} could not be "
                                      f"written ({self.error})", hint=_HINT)
            try:
                self._append(self.path, entry)
            except OSError as err:
                self.error = err.strerror or str(err)
                if intent:
                    raise AuditWriteError(f"not sending {_what(entry)}: the audit log {self.path} could not be "
                                          f"written ({self.error})", hint=_HINT) from None
                entry["audit_write_failed"] = self.error
            self.records.append(entry)
        return entry

    def _append(self, path: Path, entry: dict[str, Any]) -> None:
        from azrdp.outfiles import open_private_append

        if self._fd is None:
            try:
                self._fd = open_private_append(path)
            except AzrdpError as err:
                raise OSError(errno.EIO, err.message) from None
        line = (json.dumps(entry, default=_jsonable, ensure_ascii=True) + "\n").encode("ascii")
        start = os.lseek(self._fd, 0, os.SEEK_END)
        written = 0
        try:
            while written < len(line):
                written += os.write(self._fd, line[written:])
            os.fsync(self._fd)
        except OSError:
            if written:  # never leave half a line: cut the file back to where this record began
                try:
                    if os.fstat(self._fd).st_size == start + written:
                        os.ftruncate(self._fd, start)
                except OSError:
                    pass
            raise


_HINT = "Free space or fix the audit path; what was already changed is listed in the result."


def _what(entry: dict[str, Any]) -> str:
    step = entry.get("step") or entry.get("payload") or (entry.get("rule") or {}).get("name")
    return f"the {entry['action']}" + (f" ({step})" if step else "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def read_audit(path: Path) -> list[dict[str, Any]]:
    """All records of an audit file (for `revoke`, reports and tests)."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [json.loads(line) for line in handle if line.strip()]
