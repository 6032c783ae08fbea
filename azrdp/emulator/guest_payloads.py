"""How the simulated Windows guest answers the PowerShell payloads azrdp ships.

The guest recognises a payload by its script text: the Run Command ``script`` lines must be
exactly a shipped payload's lines (``azrdp.payloads.payload(id).script_lines()``), which also
proves the script was sent unchanged. Parameters are read and validated as the script's typed
``param()`` block would. The answer is the payload's one ``AZRDP-RESULT:{json}`` line, in the
result schema of :mod:`azrdp.payloads.schema` (tests validate every answer against it), and the
repair payload's effects are applied to the guest.

Any other script gets what PowerShell would print for a script the guest cannot run here: a
message on StdErr and no result line.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Callable

from azrdp.emulator.guest import (
    Certificate,
    FirewallRule,
    MachineKeys,
    WindowsGuest,
)
from azrdp.payloads import ParamSpec, payload, payload_ids
from azrdp.payloads.schema import (
    MACHINEKEYS_DEFAULT_SDDL,
    REPAIR_STEPS,
    RESULT_MARKER,
    SERVICE_NAMES,
    SESSION_LIST_MAX,
)

UNKNOWN_SCRIPT = ("The azrdp emulator's simulated Windows guest runs only the payloads azrdp ships "
                  f"({', '.join(payload_ids())}), byte for byte; this script is not one of them.")


def identify(script: list[Any]) -> str | None:
    """The manifest id of the shipped payload whose lines ``script`` is, else None."""
    lines = [str(line) for line in script]
    for payload_id in payload_ids():
        try:
            shipped = payload(payload_id).script_lines()
        except (FileNotFoundError, OSError):
            continue
        if lines == shipped:
            return payload_id
    return None


def execute(guest: WindowsGuest, script: list[Any], parameters: list[Any]) -> tuple[str, str]:
    """Run one Run Command on the guest: (StdOut, StdErr)."""
    payload_id = identify(script)
    if payload_id is None:
        return "", UNKNOWN_SCRIPT
    given = {str(p.get("name")): str(p.get("value", "")) for p in parameters if isinstance(p, dict)}
    try:
        values = _bind(payload_id, given)
    except ValueError as problem:
        return "", str(problem)
    result = ANSWERS[payload_id](guest, values)
    return RESULT_MARKER + json.dumps(result, separators=(",", ":")) + "\n", ""


def _bind(payload_id: str, given: dict[str, str]) -> dict[str, Any]:
    """The parameter values, checked as PowerShell's param() block with validation would."""
    specs = {spec.name.lower(): spec for spec in payload(payload_id).parameters}
    for name in given:
        if name.lower() not in specs:
            raise ValueError(f"A parameter cannot be found that matches parameter name '{name}'.")
    values: dict[str, Any] = {}
    for key, spec in specs.items():
        raw = next((v for n, v in given.items() if n.lower() == key), None)
        values[spec.name] = _decode(spec, raw)
    return values


def _decode(spec: ParamSpec, raw: str | None) -> Any:
    if raw is None:
        if spec.required:
            raise ValueError(f"Missing an argument for parameter '{spec.name}'.")
        return spec.default
    invalid = f"Cannot validate argument on parameter '{spec.name}'. The argument \"{raw}\" is not valid."
    if spec.type == "int":
        if not re.fullmatch(r"-?\d+", raw.strip()):
            raise ValueError(invalid)
        value = int(raw)
        if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
            raise ValueError(invalid)
        return value
    if spec.type == "bool":
        if raw.lower() not in ("true", "false", "1", "0", "$true", "$false"):
            raise ValueError(invalid)
        return raw.lower() in ("true", "1", "$true")
    if spec.type == "list":
        items = [item.strip() for item in raw.split(",") if item.strip()]
        if not items or any(item not in (spec.choices or ()) for item in items):
            raise ValueError(invalid)
        return items
    if spec.pattern and not re.fullmatch(spec.pattern, raw):
        raise ValueError(invalid)
    return raw


# -- facts, in the schema's shapes ---------------------------------------------------------------

def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _services(guest: WindowsGuest, names: tuple[str, ...] = SERVICE_NAMES) -> list[dict[str, Any]]:
    out = []
    for name in names:
        service = guest.services.get(name)
        if service is None or service.state == "Missing":
            out.append({"name": name, "state": "Missing", "start": None})
        else:
            out.append({"name": name, "state": service.state if guest.up else "Stopped", "start": service.start})
    return out


def _cert_facts(guest: WindowsGuest, cert: Certificate) -> dict[str, Any]:
    return {"not_after": _utc(cert.not_after), "expired": cert.expired(guest.real_now()),
            "key_readable": guest.key_readable(cert), "self_signed": cert.self_signed}


def _cert(guest: WindowsGuest, cert: Certificate) -> dict[str, Any]:
    return {"thumbprint": cert.thumbprint, **_cert_facts(guest, cert)}


def _rdp_key_acl(keys: MachineKeys) -> dict[str, Any]:
    key = keys.rdp_key
    return {"present": key is not None, "network_service_read": bool(key and key.network_service_read),
            "system_full": bool(key and key.system_full)}


def _rdp_key(keys: MachineKeys) -> dict[str, Any]:
    key = keys.rdp_key
    if key is None:
        return {"present": False, "file": None, "size": None, "network_service_read": False, "system_full": False}
    return {"present": True, "file": key.name, "size": key.size,
            "network_service_read": key.network_service_read, "system_full": key.system_full}


def _machinekeys(guest: WindowsGuest) -> dict[str, Any]:
    keys = guest.machinekeys
    return {"sddl": keys.sddl[:160], "default": keys.default, "files": keys.files, "rdp_key": _rdp_key(keys)}


def _sessions(guest: WindowsGuest) -> dict[str, Any]:
    listed = [{"id": s.id, "name": s.name, "user": s.user[:24] if s.user else None, "state": s.state,
               "idle_min": s.idle_min} for s in guest.sessions]
    limit = guest.seat_limit()
    used = len(guest.remote_sessions())
    return {"list": listed[:SESSION_LIST_MAX], "total": len(listed), "seat_limit": limit, "used": used,
            "free": max(0, limit - used)}


def _fw_counts(guest: WindowsGuest) -> tuple[int, int]:
    rules = [r for r in guest.firewall_rules if r.group == "Remote Desktop"]
    return len(rules), sum(1 for r in rules if r.enabled)


def _reboot(guest: WindowsGuest) -> dict[str, Any]:
    return {"pending": bool(guest.reboot_reasons), "reasons": list(guest.reboot_reasons)[:4]}


# -- diagnose ------------------------------------------------------------------------------------

def diagnose(guest: WindowsGuest, values: dict[str, Any]) -> dict[str, Any]:
    hours = values["EventHours"]
    counts = guest.event_counts(hours)
    last = guest.last_event(hours)
    cert_store = guest.rd_store()
    bound = guest.find(guest.bound_thumbprint)
    listening = guest.rdp_listening()
    rules, enabled = _fw_counts(guest)
    reg = guest.registry
    sessions = _sessions(guest)
    return {
        "payload": "diagnose",
        "version": payload("diagnose").version,
        "run_id": values["RunId"],
        "os": {"build": guest.build, "caption": guest.caption[:48], "uptime_min": guest.uptime_minutes()},
        "services": _services(guest),
        "rdp": {"deny": reg["fDenyTSConnections"], "deny_policy": reg["policy.fDenyTSConnections"],
                "port": reg["PortNumber"], "nla": reg["UserAuthentication"],
                "nla_policy": reg["policy.UserAuthentication"], "security_layer": reg["SecurityLayer"],
                "min_encryption": reg["MinEncryptionLevel"]},
        "listener": {"state": "Listen" if listening else None, "tcp_listening": listening,
                     "owner": "svchost" if listening else None},
        "cert": {"bound": guest.bound_thumbprint,
                 "bound_cert": {"store": bound.store, **_cert_facts(guest, bound)} if bound else None,
                 "certs": [_cert(guest, c) for c in cert_store[:3]], "total": len(cert_store)},
        "machinekeys": _machinekeys(guest),
        "firewall": {"service": "Running" if guest.running("MpsSvc") else "Stopped",
                     "profiles": [{"name": p.name, "enabled": p.enabled, "inbound": p.inbound,
                                   "rules_ignored": p.rules_ignored} for p in guest.firewall_profiles],
                     "rdp_rules": rules, "rdp_rules_enabled": enabled,
                     "port_allowed": any(r.enabled and r.protocol == "TCP" and r.port == guest.port
                                         for r in guest.firewall_rules)},
        "sessions": {"list": sessions["list"], "total": sessions["total"], "server_mode": "admin",
                     "max_instances": guest.effective("MaxInstanceCount"), "seat_limit": sessions["seat_limit"],
                     "used": sessions["used"], "free": sessions["free"],
                     "single_session": bool(reg["fSingleSessionPerUser"]) if reg["fSingleSessionPerUser"] is not None else None},
        "events": {"hours": hours, **counts,
                   "last": f"{last.event_id} {_utc(guest.logged_at(last))} {last.message}"[:80] if last else None},
        "reboot": _reboot(guest),
        "errors": [],
        "errors_total": 0,
    }


# -- repair --------------------------------------------------------------------------------------

def _step(name: str, before: dict[str, Any] | None, act: Callable[[], tuple[dict[str, Any], bool, str | None]],
          after: Callable[[], dict[str, Any]], reboot_required: bool = False) -> dict[str, Any]:
    info, changed, error = act()
    status = "failed" if error else ("changed" if changed else "unchanged")
    return {"name": name, "status": status, "before": before, "after": after(), "info": info,
            "reboot_required": reboot_required and changed, "error": error}


def _rdp_config_state(guest: WindowsGuest) -> dict[str, Any]:
    rules, enabled = _fw_counts(guest)
    custom = next((r for r in guest.firewall_rules if r.group == "azrdp"), None)
    return {"deny": guest.registry["fDenyTSConnections"], "deny_policy": guest.registry["policy.fDenyTSConnections"],
            "port": guest.port, "services": _services(guest, ("TermService", "SessionEnv")),
            "fw_rules": rules, "fw_rules_enabled": enabled,
            "custom_rule": None if guest.port == 3389 else bool(custom and custom.enabled)}


def _rdp_config(guest: WindowsGuest) -> tuple[dict[str, Any], bool, str | None]:
    actions: list[str] = []
    if guest.registry["fDenyTSConnections"] != 0:
        guest.registry["fDenyTSConnections"] = 0
        actions.append("deny=0")
    for name in ("TermService", "SessionEnv"):
        service = guest.services[name]
        if service.start == "Disabled":
            service.start = "Manual"
            actions.append(f"enable:{name}")
        if service.state != "Running":
            guest.start_service(name)
            actions.append(f"start:{name}")
    if any(not r.enabled for r in guest.firewall_rules if r.group == "Remote Desktop"):
        for rule in guest.firewall_rules:
            if rule.group == "Remote Desktop":
                rule.enabled = True
        actions.append("fw:group")
    if guest.port != 3389 and not any(r.group == "azrdp" and r.enabled and r.port == guest.port for r in guest.firewall_rules):
        guest.firewall_rules.append(FirewallRule("azrdp-RDP-custom-port", port=guest.port, group="azrdp"))
        actions.append("fw:custom-port")
    policy = guest.registry["policy.fDenyTSConnections"] == 1
    error = "A group policy sets fDenyTSConnections=1." if policy else None
    return {"policy_forces_deny": policy, "actions": actions}, bool(actions), error


def _machinekeys_acl(guest: WindowsGuest, stamp: str) -> tuple[dict[str, Any], bool, str | None]:
    keys = guest.machinekeys
    actions: list[str] = []
    if not keys.default:
        keys.sddl = MACHINEKEYS_DEFAULT_SDDL
        actions.append("acl:folder")
    key = keys.rdp_key
    if key is not None and not (key.network_service_read and key.system_full):
        key.network_service_read = key.system_full = True
        actions.append("acl:rdp-key")
    backup = rf"C:\ProgramData\azrdp\backup\machinekeys-acl-{stamp}" if actions else None
    return {"backup": backup, "actions": actions}, bool(actions), None


def _acl_state(guest: WindowsGuest) -> dict[str, Any]:
    keys = guest.machinekeys
    return {"default": keys.default, "files": keys.files, "rdp_key": _rdp_key_acl(keys)}


def _machinekeys_rename(guest: WindowsGuest, stamp: str) -> tuple[dict[str, Any], bool, str | None]:
    keys = guest.machinekeys
    backup = rf"{keys.path}_azrdp_{stamp}"
    skipped = [keys.rdp_key.name] if keys.rdp_key else []
    keys.backups.append(backup)
    copied = keys.other_files
    keys.sddl, keys.rdp_key = MACHINEKEYS_DEFAULT_SDDL, None
    return {"backup": backup, "acl_backup": rf"C:\ProgramData\azrdp\backup\machinekeys-rename-{stamp}",
            "copied": copied, "skipped": skipped[:1], "skipped_total": len(skipped)}, True, None


def _cert_state(guest: WindowsGuest) -> dict[str, Any]:
    now = guest.real_now()
    store = guest.rd_store()
    bad = [c for c in store if c.expired(now) or not guest.key_readable(c)]
    current = guest.serving_certificate()
    if current is not None and current.store == "rd" and current in bad:
        usable = [c for c in store if c not in bad]
        current = max(usable, key=lambda c: c.not_before) if usable else None
    return {"bound": guest.bound_thumbprint, "total": len(store), "bad": len(bad),
            "current": current.thumbprint if current else None,
            "current_not_after": _utc(current.not_after) if current else None,
            "security_layer": guest.registry["SecurityLayer"]}


def _cert_step(guest: WindowsGuest) -> tuple[dict[str, Any], bool, str | None]:
    now = guest.real_now()
    unusable = [c for c in guest.rd_store() if c.expired(now) or not guest.key_readable(c)]
    removed = [c.thumbprint for c in unusable]
    guest.certificates = [c for c in guest.certificates if c not in unusable]
    bound = guest.find(guest.bound_thumbprint)
    cleared = bool(guest.bound_thumbprint) and (bound is None or bound.expired(now))
    if cleared:
        guest.bound_thumbprint = None
    kept = bound is not None and not cleared
    restarted: list[str] = []
    if removed or cleared or guest.serving_certificate() is None:
        for name in ("SessionEnv", "TermService"):
            guest.restart_service(name)
            restarted.append(name)
    serving = guest.serving_certificate()
    error = None
    if serving is None or not guest.key_readable(serving, as_network_service=True):
        error = "Windows made no new certificate (event 1057/1058)."
    info = {"removed": removed[:2], "removed_total": len(removed), "cleared_binding": cleared, "kept_bound": kept,
            "restarted": restarted}
    return info, bool(removed or cleared), error


def _sessions_state(guest: WindowsGuest) -> dict[str, Any]:
    seats = _sessions(guest)
    remote = guest.remote_sessions()
    return {"total": seats["total"], "disconnected": sum(1 for s in guest.sessions if s.state == "Disc"),
            "active": sum(1 for s in remote if s.state == "Active"), "seat_limit": seats["seat_limit"],
            "used": seats["used"], "free": seats["free"]}


def _sessions_step(guest: WindowsGuest, include_active: bool) -> tuple[dict[str, Any], bool, str | None]:
    free_before = _sessions(guest)["free"]
    states = ("Disc", "Active") if include_active else ("Disc",)
    targets = [s for s in guest.remote_sessions() if s.state in states]
    guest.sessions = [s for s in guest.sessions if s not in targets]
    logged_off = [s.id for s in targets]
    freed = max(0, _sessions(guest)["free"] - free_before)
    return {"logged_off": logged_off[:4], "logged_off_total": len(logged_off), "seats_freed": freed,
            "include_active": include_active}, bool(targets), None


def repair(guest: WindowsGuest, values: dict[str, Any]) -> dict[str, Any]:
    wanted = set(values["Steps"])
    stamp = guest.real_now().strftime("%Y%m%d-%H%M%S")
    pending_before = bool(guest.reboot_reasons)
    steps = []
    for name in REPAIR_STEPS:
        if name not in wanted:
            continue
        if name == "rdp-config":
            steps.append(_step(name, _rdp_config_state(guest), lambda: _rdp_config(guest),
                               lambda: _rdp_config_state(guest)))
        elif name == "machinekeys-acl":
            steps.append(_step(name, _acl_state(guest), lambda: _machinekeys_acl(guest, stamp),
                               lambda: _acl_state(guest)))
        elif name == "machinekeys-rename":
            steps.append(_step(name, _acl_state(guest), lambda: _machinekeys_rename(guest, stamp),
                               lambda: _acl_state(guest)))
        elif name == "cert":
            steps.append(_step(name, _cert_state(guest), lambda: _cert_step(guest), lambda: _cert_state(guest)))
        else:
            steps.append(_step(name, _sessions_state(guest),
                               lambda: _sessions_step(guest, bool(values["LogOffActive"])),
                               lambda: _sessions_state(guest)))
    return {
        "payload": "repair",
        "version": payload("repair").version,
        "run_id": values["RunId"],
        "steps": steps,
        "changed": any(step["status"] == "changed" for step in steps),
        "reboot_required": pending_before or any(step["reboot_required"] for step in steps),
        "reboot_pending": pending_before,
    }


ANSWERS: dict[str, Callable[[WindowsGuest, dict[str, Any]], dict[str, Any]]] = {
    "diagnose": diagnose,
    "repair": repair,
}
