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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from azrdp.emulator.guest import (
    Certificate,
    FirewallRule,
    MachineKeys,
    Session,
    WindowsGuest,
)
from azrdp.payloads import ParamSpec, payload, payload_ids
from azrdp.payloads.schema import (
    ACTIONS_MAX,
    BACKUP_PATH,
    CERT_LIST_MAX,
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
    if spec.type == "bool":  # [ValidateSet('true', 'false')][string]: case-insensitive, nothing else
        if raw.lower() not in ("true", "false"):
            raise ValueError(invalid)
        return raw.lower() == "true"
    if spec.type == "list":  # [ValidatePattern('^(a|b)(,(a|b))*$')][string], split at ','
        choices = "|".join(re.escape(choice) for choice in spec.choices or ())
        if not re.fullmatch(f"({choices})(,({choices}))*", raw, re.IGNORECASE):
            raise ValueError(invalid)
        return [item.lower() for item in raw.split(",")]
    if spec.pattern and not re.fullmatch(spec.pattern, raw, re.IGNORECASE):
        raise ValueError(invalid)
    return raw


# -- facts, in the schema's shapes ---------------------------------------------------------------

def limit_text(text: Any, max_len: int) -> str | None:
    """repair.ps1's Limit-Text: printable ASCII without what ConvertTo-Json escapes, `/` for `\\`."""
    if text is None:
        return None
    clean = re.sub(r"[\r\n\t]+", " ", str(text))
    clean = re.sub(r"[^\x20-\x7E]", "?", clean)
    clean = re.sub(r"['\"]", "`", clean).replace("<", "(").replace(">", ")").replace("&", "+")
    return clean.replace("\\", "/").strip()[:max_len]


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
    return {"present": True, "file": limit_text(key.name, 72), "size": key.size,
            "network_service_read": key.network_service_read, "system_full": key.system_full}


def _machinekeys(guest: WindowsGuest) -> dict[str, Any]:
    keys = guest.machinekeys
    return {"sddl": limit_text(keys.sddl, 160), "default": keys.default, "files": keys.files, "rdp_key": _rdp_key(keys)}


def _user_sessions(guest: WindowsGuest) -> list[Session]:
    """What `quser` lists (Get-UserSessions): sessions with a signed-in user, never session 0 or
    an empty console."""
    return [s for s in guest.sessions if s.user]


def _sessions(guest: WindowsGuest) -> dict[str, Any]:
    users = _user_sessions(guest)
    listed = [{"id": s.id, "name": limit_text(s.name, 12), "user": limit_text(s.user, 24), "state": s.state,
               "idle_min": s.idle_min} for s in users]
    limit = guest.seat_limit()
    used = sum(1 for s in users if s.id != 0 and s.name != "console" and s.state in ("Active", "Disc"))
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
    cert_store = _store_newest_first(guest)
    bound = guest.find(guest.bound_thumbprint)
    listening = guest.rdp_listening()
    rules, enabled = _fw_counts(guest)
    reg = guest.registry
    sessions = _sessions(guest)
    return {
        "payload": "diagnose",
        "version": payload("diagnose").version,
        "run_id": values["RunId"],
        "os": {"build": limit_text(guest.build, 24), "caption": limit_text(guest.caption, 48),
               "uptime_min": guest.uptime_minutes()},
        "services": _services(guest),
        "rdp": {"deny": reg["fDenyTSConnections"], "deny_policy": reg["policy.fDenyTSConnections"],
                "port": reg["PortNumber"], "nla": reg["UserAuthentication"],
                "nla_policy": reg["policy.UserAuthentication"], "security_layer": reg["SecurityLayer"],
                "min_encryption": reg["MinEncryptionLevel"]},
        "listener": {"state": "Listen" if listening else None, "tcp_listening": listening,
                     "owner": "svchost" if listening else None},
        "cert": {"bound": guest.bound_thumbprint,
                 "bound_cert": {"store": bound.store, **_cert_facts(guest, bound)} if bound else None,
                 "certs": [_cert(guest, c) for c in cert_store[:CERT_LIST_MAX]], "total": len(cert_store)},
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
                   "last": limit_text(f"{last.event_id} {_utc(guest.logged_at(last))} {last.message}", 80)
                           if last else None},
        "reboot": _reboot(guest),
        "errors": [],
        "errors_total": 0,
    }


# -- repair --------------------------------------------------------------------------------------
#
# Each step follows repair.ps1: a read function (the step's state, read before and after) and a
# repair function that decides from the state read before, returns an Outcome (changed, reboot,
# info, skip) or throws (StepFailed: the step is "failed", info null, the message as its error),
# all run by _invoke_step as the script's Invoke-Step runs them.

CUSTOM_PORT_RULE = "azrdp-RemoteDesktop-CustomPort-TCP-In"
SERVICE_DISPLAY_NAMES = {"TermService": "Remote Desktop Services", "SessionEnv": "Remote Desktop Configuration"}


class StepFailed(Exception):
    """What a repair function throws in repair.ps1: the step fails with this message."""


@dataclass
class Outcome:
    """repair.ps1's New-Outcome."""

    changed: bool = False
    reboot: bool = False
    info: dict[str, Any] | None = None
    skip: str | None = None


class _RepairRun:
    """One run of repair.ps1: its parameters and its one backup folder (Get-BackupFolder)."""

    def __init__(self, guest: WindowsGuest, values: dict[str, Any]):
        self.guest = guest
        self.values = values
        self.folder: str | None = None

    def stamp(self) -> str:
        return self.guest.real_now().strftime("%Y%m%dT%H%M%SZ")

    def backup_folder(self) -> str:
        """%ProgramData%\\azrdp\\backup\\<UTC time> (a suffix when taken), made once per run, with run-id.txt."""
        if self.folder is None:
            root = rf"C:\ProgramData\azrdp\backup\{self.stamp()}"
            path, suffix = root, 1
            while path in self.guest.backup_folders:
                suffix += 1
                path = f"{root}-{suffix}"
            self.guest.backup_folders[path] = ["run-id.txt"]
            self.folder = path
        return self.folder

    def back_up(self, name: str) -> str:
        folder = self.backup_folder()
        self.guest.backup_folders[folder].append(name)
        return folder


def _invoke_step(name: str, read: Callable[[], dict[str, Any]],
                 repair_fn: Callable[[dict[str, Any]], Outcome]) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "status": "failed", "before": read(), "after": None, "info": None,
                            "reboot_required": False, "error": None}
    outcome: Outcome | None = None
    try:
        outcome = repair_fn(step["before"])
        step["info"] = outcome.info
        step["reboot_required"] = bool(outcome.reboot)
        step["error"] = limit_text(outcome.skip, 60)
    except StepFailed as failure:
        step["error"] = limit_text(str(failure), 60)
    step["after"] = read()
    if outcome is not None:
        step["status"] = "changed" if outcome.changed else "skipped" if outcome.skip else "unchanged"
    if name == "sessions" and step["info"] is not None:
        step["info"]["seats_freed"] = max(0, step["after"]["free"] - step["before"]["free"])
    return step


def _start(guest: WindowsGuest, name: str) -> None:
    """Start-Service / Restart-Service: a service that cannot start throws."""
    if not guest.start_service(name):
        raise StepFailed(f"Service '{SERVICE_DISPLAY_NAMES.get(name, name)} ({name})' cannot be started due to "
                         f"the following error: Cannot start service {name} on computer '.'.")


# ---- rdp-config ----

def _custom_rule(guest: WindowsGuest) -> FirewallRule | None:
    return next((r for r in guest.firewall_rules if r.name == CUSTOM_PORT_RULE), None)


def _rdp_config_state(guest: WindowsGuest) -> dict[str, Any]:
    rules, enabled = _fw_counts(guest)
    custom = None
    if guest.port != 3389:
        rule = _custom_rule(guest)
        custom = rule is not None and rule.enabled and rule.port == guest.port
    return {"deny": guest.registry["fDenyTSConnections"], "deny_policy": guest.registry["policy.fDenyTSConnections"],
            "port": guest.registry["PortNumber"], "services": _services(guest, ("TermService", "SessionEnv")),
            "fw_rules": rules, "fw_rules_enabled": enabled, "custom_rule": custom}


def _rdp_config(guest: WindowsGuest, before: dict[str, Any]) -> Outcome:
    actions: list[str] = []
    if before["deny"] != 0:
        guest.registry["fDenyTSConnections"] = 0
        actions.append("deny=0")
    for service in before["services"]:
        name = service["name"]
        if service["state"] == "Missing":
            raise StepFailed(f"service {name} is missing")
        if service["start"] == "Disabled":
            guest.services[name].start = "Manual"
            actions.append(f"demand:{name}")
        if service["state"] != "Running":
            _start(guest, name)
            actions.append(f"start:{name}")
    disabled = [r for r in guest.firewall_rules if r.group == "Remote Desktop" and not r.enabled]
    if disabled:
        for rule in disabled:
            rule.enabled = True
        actions.append("fw:group")
    if guest.port != 3389 and before["custom_rule"] is not True:
        rule = _custom_rule(guest)
        if rule is None:
            guest.firewall_rules.append(FirewallRule(CUSTOM_PORT_RULE, port=guest.port, group=""))
        else:
            rule.port, rule.protocol, rule.enabled = guest.port, "TCP", True
        actions.append("fw:custom-port")
    info = {"policy_forces_deny": before["deny_policy"] == 1, "actions": actions[:ACTIONS_MAX]}
    return Outcome(changed=bool(actions), info=info)


# ---- machinekeys-acl ----

def _machinekeys_state(guest: WindowsGuest) -> dict[str, Any]:
    """Read-MachineKeysState: what both MachineKeys steps report before and after."""
    keys = guest.machinekeys
    return {"default": keys.default, "files": keys.files, "rdp_key": _rdp_key_acl(keys)}


def _machinekeys_acl(run: _RepairRun, before: dict[str, Any]) -> Outcome:
    key = before["rdp_key"]
    key_ok = not key["present"] or (key["network_service_read"] and key["system_full"])
    if before["default"] and key_ok:
        return Outcome(info={"backup": None, "actions": []})
    keys = run.guest.machinekeys
    backup = run.back_up("machinekeys.acl")          # icacls /save, before any change
    actions: list[str] = []
    if not before["default"]:
        keys.sddl = MACHINEKEYS_DEFAULT_SDDL
        actions.append("acl:folder-default")
    rdp_key = keys.rdp_key
    if rdp_key is not None and not (rdp_key.network_service_read and rdp_key.system_full):
        rdp_key.network_service_read = rdp_key.system_full = True
        actions.append("acl:rdp-key")
    return Outcome(changed=bool(actions), reboot=bool(actions),
                   info={"backup": limit_text(backup, BACKUP_PATH), "actions": actions[:ACTIONS_MAX]})


# ---- machinekeys-rename ----

def _rdp_key_usable(guest: WindowsGuest) -> bool:
    """Test-RdpKeyUsable: the key container file opens (as SYSTEM) and is not empty, and every
    Remote Desktop certificate's private key works."""
    key = guest.machinekeys.rdp_key
    if key is not None and (key.corrupt or not key.system_full):
        return False
    return all(guest.key_readable(cert) for cert in guest.rd_store())


def _machinekeys_rename(run: _RepairRun, before: dict[str, Any]) -> Outcome:
    guest = run.guest
    if before["default"] and _rdp_key_usable(guest):
        return Outcome(info={"backup": None, "acl_backup": None, "copied": 0, "skipped": [], "skipped_total": 0})
    acl_backup = run.back_up("machinekeys.acl")
    keys = guest.machinekeys
    parent, _, _ = keys.path.rpartition("\\")
    stamp = run.stamp()
    new_name, suffix = f"MachineKeys.azrdp-{stamp}", 1
    while f"{parent}\\{new_name}" in keys.backups:
        suffix += 1
        new_name = f"MachineKeys.azrdp-{stamp}-{suffix}"
    old_path = f"{parent}\\{new_name}"
    keys.backups.append(old_path)
    skipped = [keys.rdp_key.name] if keys.rdp_key else []
    copied = keys.other_files                       # every other key file, with its own ACL
    keys.sddl, keys.rdp_key = MACHINEKEYS_DEFAULT_SDDL, None
    info = {"backup": limit_text(old_path, BACKUP_PATH), "acl_backup": limit_text(acl_backup, BACKUP_PATH),
            "copied": copied, "skipped": [limit_text(name, 72) for name in skipped[:1]],
            "skipped_total": len(skipped)}
    return Outcome(changed=True, reboot=True, info=info)


# ---- cert ----

def _usable(guest: WindowsGuest, cert: Certificate) -> bool:
    """Test-CertificateUsable: not expired, and its private key works (for SYSTEM)."""
    return not cert.expired(guest.real_now()) and guest.key_readable(cert)


def _store_newest_first(guest: WindowsGuest) -> list[Certificate]:
    return sorted(guest.rd_store(), key=lambda c: c.not_after, reverse=True)


def _cert_state(guest: WindowsGuest) -> dict[str, Any]:
    store = _store_newest_first(guest)
    bound = guest.bound_thumbprint
    if bound is not None:
        current = guest.find(bound)
    else:
        current = next((c for c in store if _usable(guest, c)), None)
    return {"bound": bound, "total": len(store), "bad": sum(1 for c in store if not _usable(guest, c)),
            "current": current.thumbprint if current else None,
            "current_not_after": _utc(current.not_after) if current else None,
            "security_layer": guest.registry["SecurityLayer"]}


def _cert_step(run: _RepairRun, before: dict[str, Any]) -> Outcome:
    guest = run.guest
    bound = guest.bound_thumbprint
    found = guest.find(bound)
    bound_usable = found is not None and _usable(guest, found)
    would_act = before["bad"] > 0 or (bound is not None and not bound_usable) or before["current"] is None
    if would_act and not guest.machinekeys.default:   # Windows could not make the new key (1058)
        return Outcome(skip="held back: MachineKeys ACL not default; run machinekeys-acl")
    removed: list[str] = []
    for cert in _store_newest_first(guest):
        if _usable(guest, cert) or (bound_usable and cert.thumbprint == bound):
            continue
        run.back_up(f"{cert.thumbprint}.cer")           # Export-Certificate, then Remove-Item
        guest.certificates.remove(cert)
        removed.append(cert.thumbprint)
    cleared = bound is not None and not bound_usable
    if cleared:
        run.back_up("SSLCertificateSHA1Hash.txt")
        guest.bound_thumbprint = None
    restarted: list[str] = []
    if removed or cleared or before["current"] is None:
        for name in ("SessionEnv", "TermService"):   # Restart-RdpServices; then up to 60 s for a certificate
            guest.stop_service(name)
            _start(guest, name)
        restarted = ["SessionEnv", "TermService"]
    info = {"removed": removed[:2], "removed_total": len(removed), "cleared_binding": cleared,
            "kept_bound": bound_usable, "restarted": restarted}
    return Outcome(changed=bool(removed or cleared or restarted), info=info)


# ---- sessions ----

def _sessions_state(guest: WindowsGuest) -> dict[str, Any]:
    seats = _sessions(guest)
    users = _user_sessions(guest)
    return {"total": seats["total"], "disconnected": sum(1 for s in users if s.state == "Disc"),
            "active": sum(1 for s in users if s.state == "Active" and s.name != "console"),
            "seat_limit": seats["seat_limit"], "used": seats["used"], "free": seats["free"]}


def _sessions_step(guest: WindowsGuest, values: dict[str, Any], before: dict[str, Any]) -> Outcome:
    include_active = bool(values["LogOffActive"])
    targets = []
    if not (values["LogOffOnlyWhenFull"] and before["free"] > 0):
        targets = [s for s in _user_sessions(guest) if s.id != 0 and (
            s.state == "Disc" or (include_active and s.state == "Active" and s.name != "console"))]
    guest.sessions = [s for s in guest.sessions if s not in targets]     # logoff.exe <id>
    logged_off = [s.id for s in targets]
    return Outcome(changed=bool(logged_off), info={"logged_off": logged_off[:4], "logged_off_total": len(logged_off),
                                                   "seats_freed": 0, "include_active": include_active})


def repair(guest: WindowsGuest, values: dict[str, Any]) -> dict[str, Any]:
    run = _RepairRun(guest, values)
    steps: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], Outcome]]] = {
        "rdp-config": (lambda: _rdp_config_state(guest), lambda before: _rdp_config(guest, before)),
        "machinekeys-acl": (lambda: _machinekeys_state(guest), lambda before: _machinekeys_acl(run, before)),
        "machinekeys-rename": (lambda: _machinekeys_state(guest), lambda before: _machinekeys_rename(run, before)),
        "cert": (lambda: _cert_state(guest), lambda before: _cert_step(run, before)),
        "sessions": (lambda: _sessions_state(guest), lambda before: _sessions_step(guest, values, before)),
    }
    pending_before = bool(guest.reboot_reasons)
    wanted = set(values["Steps"])
    results = [_invoke_step(name, *steps[name]) for name in REPAIR_STEPS if name in wanted]
    return {
        "payload": "repair",
        "version": payload("repair").version,
        "run_id": values["RunId"],
        "steps": results,
        "changed": any(step["status"] == "changed" for step in results),
        "reboot_pending": pending_before,
        "reboot_required": pending_before or any(step["reboot_required"] for step in results),
    }


ANSWERS: dict[str, Callable[[WindowsGuest, dict[str, Any]], dict[str, Any]]] = {
    "diagnose": diagnose,
    "repair": repair,
}

from azrdp.emulator.guest_offline import rescue as _rescue  # noqa: E402 - it uses limit_text above

ANSWERS["rescue"] = _rescue
