"""The audit log: every change azrdp makes, appended as one JSON object per line.

Guest repair steps (with before/after and backup locations inside the guest), NSG rules created
or removed, restarts and starts. The same records are returned in the command's JSON result, so
an operator can always answer "what did azrdp change on this VM, and where is the backup?".
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from azrdp.clock import SYSTEM_CLOCK, Clock


def default_audit_path(env: dict[str, str] | None = None, platform: str | None = None) -> Path:
    """Where the audit log lives when --audit-log is not given: the user's data directory.

    Linux: $XDG_DATA_HOME/azrdp (default ~/.local/share/azrdp); macOS: ~/Library/Application
    Support/azrdp; Windows: %LOCALAPPDATA%\\azrdp. AZRDP_AUDIT_LOG overrides all of them.
    """
    env = os.environ if env is None else env
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


@dataclass
class AuditLog:
    """Collects change records and appends each to a JSON-lines file as it happens.

    Records are written immediately (not at the end), so a crash or Ctrl-C never loses the
    record of a change that was already made.
    """

    path: Path | None
    context: dict[str, Any] = field(default_factory=dict)
    clock: Clock = SYSTEM_CLOCK
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def record(self, action: str, **fields: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"time": self.clock.now().isoformat(), "action": action}
        entry.update(self.context)
        entry.update(fields)
        with self._lock:
            self.records.append(entry)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(entry, default=_jsonable, ensure_ascii=False) + "\n")
        return entry


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
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
