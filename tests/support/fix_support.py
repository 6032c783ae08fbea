"""What the tests of `azrdp fix` share: guest answers as a Windows guest gives them, and a VM in
the ARM stand-in whose RDP port is a real loopback TLS listener.

The guest is played by answer functions of the Run Command request: the diagnose payload gets a
diagnose result; the repair payload gets a repair result for exactly the Steps asked, changing
only what is broken (as repair.ps1 does), honouring LogOffOnlyWhenFull. The wire follows the
guest: the restart hook (or the cert step) swaps the listener's certificate."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azrdp.payloads.schema import validate_result
from tests.support.fake_arm import VmSpec, rule
from tests.support.payload_samples import (
    CERT_OLD,
    broken_machinekeys_acl,
    expired_cert,
    healthy,
    healthy_repair,
    result_line,
    two_disconnected_admins,
)
from tests.support.rdp_peers import CertFiles, Listener, close_at_once, tls_rdp_server, write_cert

BACKUP = "C:/ProgramData/azrdp/backup/20260101T000002Z"


def make_certs(folder) -> tuple[CertFiles, CertFiles]:
    utc = dt.timezone.utc
    expired = write_cert(folder, cn="expired.rdp.test", name="expired",
                         not_before=dt.datetime(2020, 1, 1, tzinfo=utc), not_after=dt.datetime(2021, 1, 1, tzinfo=utc))
    fresh = write_cert(folder, cn="fresh.rdp.test", name="fresh",
                       not_before=dt.datetime(2020, 1, 1, tzinfo=utc), not_after=dt.datetime(2099, 1, 1, tzinfo=utc))
    return expired, fresh


# -- the guest's diagnose answers --------------------------------------------------------------------

def seed_guest() -> dict[str, Any]:
    """The seed's combination: an expired certificate Windows could not renew (MachineKeys ACL broken,
    event 1058) and two disconnected sessions holding both admin seats."""
    r = expired_cert()
    broken = broken_machinekeys_acl()
    r["machinekeys"] = broken["machinekeys"]
    r["sessions"] = two_disconnected_admins()["sessions"]
    return r


# -- the guest's repair answers ------------------------------------------------------------------------

def _healthy_states() -> dict[str, dict[str, Any]]:
    steps = {s["name"]: s for s in healthy_repair()["steps"]}
    states = {name: copy.deepcopy(step["before"]) for name, step in steps.items()}
    states["machinekeys-rename"] = {"files": 9, "default": True,
                                    "rdp_key": {"present": True, "network_service_read": True, "system_full": True}}
    return states


_INFO_UNCHANGED = {
    "rdp-config": {"policy_forces_deny": False, "actions": []},
    "machinekeys-acl": {"backup": None, "actions": []},
    "machinekeys-rename": {"backup": None, "moved": 0, "failed": 0},
    "cert": {"removed": [], "removed_total": 0, "cleared_binding": False, "kept_bound": False, "restarted": []},
    "sessions": {"logged_off": [], "logged_off_total": 0, "seats_freed": 0, "include_active": False, "kept_recent": 0},
}


def _broken_state(name: str, healthy_state: dict[str, Any]) -> dict[str, Any]:
    state = copy.deepcopy(healthy_state)
    if name == "rdp-config":
        state["services"][0].update(state="Stopped")
    elif name in ("machinekeys-acl", "machinekeys-rename"):
        state["default"] = False
        state["rdp_key"]["network_service_read"] = False
    elif name == "cert":
        state.update(bad=1, current=None, current_not_after=None)
    elif name == "sessions":
        state.update(total=3, disconnected=2, active=0, used=2, free=0)
    return state


def _changed_info(name: str) -> dict[str, Any]:
    return {
        "rdp-config": {"policy_forces_deny": False, "actions": ["start:TermService"]},
        "machinekeys-acl": {"backup": BACKUP, "actions": ["acl:folder-default", "acl:rdp-key"]},
        "machinekeys-rename": {"backup": f"{BACKUP}/rdp-key", "moved": 1, "failed": 0},
        "cert": {"removed": [CERT_OLD], "removed_total": 1, "cleared_binding": False, "kept_bound": False,
                 "restarted": ["SessionEnv", "TermService"]},
        "sessions": {"logged_off": [2, 3], "logged_off_total": 2, "seats_freed": 2, "include_active": False, "kept_recent": 0},
    }[name]


def repair_result(steps: list[str], broken: set[str], *, only_when_full: bool = False,
                  unfixable: set[str] = frozenset(), run_id: str = "azrdp-test") -> dict[str, Any]:
    """What repair.ps1 prints for ``steps`` on a guest where ``broken`` steps have something to fix."""
    healthy_states = _healthy_states()
    out = []
    for name in ("rdp-config", "machinekeys-acl", "machinekeys-rename", "cert", "sessions"):
        if name not in steps:
            continue
        fixes = name in broken
        before = _broken_state(name, healthy_states[name]) if name in broken else copy.deepcopy(healthy_states[name])
        if name == "sessions" and name in broken and only_when_full and before["free"] > 0:
            fixes = False
        if name in unfixable:
            after = copy.deepcopy(before)
            out.append({"name": name, "status": "failed", "before": before, "after": after,
                        "info": _INFO_UNCHANGED[name], "reboot_required": False, "error": "Access is denied"})
            continue
        if not fixes:
            out.append({"name": name, "status": "unchanged", "before": before, "after": copy.deepcopy(before),
                        "info": copy.deepcopy(_INFO_UNCHANGED[name]), "reboot_required": False, "error": None})
            continue
        after = copy.deepcopy(healthy_states[name])
        if name == "sessions":
            after.update(total=0, disconnected=0, active=0, used=0, free=2)
        out.append({"name": name, "status": "changed", "before": before, "after": after, "info": _changed_info(name),
                    "reboot_required": name == "machinekeys-acl", "error": None})
    return validate_result("repair", {
        "payload": "repair", "version": "2.1.0", "run_id": run_id, "steps": out,
        "changed": any(s["status"] == "changed" for s in out), "reboot_pending": False,
        "reboot_required": any(s["reboot_required"] for s in out), "termservice": "Running", "error": None})


def parameters(body: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in body.get("parameters") or []}


def is_repair(body: dict[str, Any]) -> bool:
    return "Steps" in parameters(body)


@dataclass
class Guest:
    """One simulated Windows guest: answers both payloads from its state; repairing fixes it."""

    diagnose: dict[str, Any] = field(default_factory=healthy)
    broken: set[str] = field(default_factory=set)
    unfixable: set[str] = field(default_factory=set)
    on_repair: Callable[[set[str]], None] | None = None   # what the guest's own service restarts change
    repairs: list[dict[str, str]] = field(default_factory=list)

    def answer(self, body: dict[str, Any]) -> str:
        if not is_repair(body):
            return result_line(self.diagnose)
        values = parameters(body)
        self.repairs.append(values)
        steps = values["Steps"].split(",")
        result = repair_result(steps, self.broken, only_when_full=values.get("LogOffOnlyWhenFull") == "true",
                               run_id=values.get("RunId", "azrdp-test"),
                               unfixable=self.unfixable)
        fixed = {s["name"] for s in result["steps"] if s["status"] == "changed"}
        self.broken -= fixed
        if fixed:
            self.diagnose = healthy()
        if self.on_repair is not None:
            self.on_repair(fixed)
        return result_line(result)


class SwappableRdp:
    """A loopback RDP listener (TLS, SSL selected) whose certificate, or absence, a test switches."""

    def __init__(self, cert: CertFiles | None, *, port: int = 0):
        self.handler = tls_rdp_server(0x01, cert) if cert else close_at_once
        self.listener = Listener(lambda conn: self.handler(conn), port=port)

    def serve(self, cert: CertFiles | None) -> None:
        self.handler = tls_rdp_server(0x01, cert) if cert else close_at_once

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.listener.port}"

    def close(self) -> None:
        self.listener.close()


def install(arm, guest: Guest, spec: VmSpec | None = None) -> VmSpec:
    """Put the VM in the stand-in with ``guest`` answering every Run Command."""
    spec = arm.add_vm(spec or VmSpec())
    arm.guest_answers[spec.vm_id.lower()] = [guest.answer] * 10
    return spec


def run_commands(arm) -> tuple[int, int]:
    """(diagnose Run Commands, repair Run Commands) the stand-in received."""
    repairs = sum(1 for body in arm.run_commands if is_repair(body))
    return len(arm.run_commands) - repairs, repairs


def restarts(arm) -> int:
    return sum(1 for action, _ in arm.power_calls if action == "restart")


def audit_actions(path) -> list[tuple[str, str | None, str | None]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["action"], r.get("step"), r.get("status")) for r in records]


DENY_RDP = rule("DenyRDP", 200, "Deny")
