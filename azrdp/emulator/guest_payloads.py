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

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

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
    MACHINEKEYS_SDDL_MAX,
    REPAIR_STEPS,
    RESULT_MARKER,
    SERVICE_NAMES,
    SESSION_LIST_MAX,
)

UNKNOWN_SCRIPT = ("The azrdp emulator's simulated Windows guest runs only the payloads azrdp ships "
                  f"({', '.join(payload_ids())}), byte for byte; this script is not one of them.")

FIREWALL_REFUSAL = "Access denied"   # what a refused NetSecurity query says here (guest.firewall_readable)


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
    if raw is None:  # no payload parameter is Mandatory: PowerShell never prompts; the default applies
        return [] if spec.type == "list" else spec.default
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
    if spec.type == "list":  # [ValidatePattern('^(a|b)(,(a|b))*$')][string[]]: -File binds one element
        choices = "|".join(re.escape(choice) for choice in spec.choices or ())
        if raw == "":
            return []
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


def test_private_key(guest: WindowsGuest, cert: Certificate) -> bool | None:
    """common.ps1's Test-PrivateKey on this Windows: True works, False definitely broken, None
    could not test. ECDsaCertificateExtensions needs .NET 4.6.1 and RSACertificateExtensions 4.6
    (Learn, the classes' "Applies to"); on .NET 4.5 only CAPI keys are reachable (through
    X509Certificate2.PrivateKey). A decrypt-only CNG key refuses to sign but decrypts."""
    works = guest.key_readable(cert)
    if cert.key_alg == "ecdsa" and guest.dotnet < (4, 6, 1):
        return None
    if guest.dotnet < (4, 6) and cert.provider == "cng":
        return None
    if works:
        return True
    # Get-KeyFailureVerdict: the environment, not the key, refused. SYSTEM denied by the key file's
    # ACL is E_ACCESSDENIED (machinekeys-acl's fault); with KeyIso (CNG Key Isolation) not running a
    # good key fails too (unverified: which CAPI operations need it). An admin's key container that
    # refuses SYSTEM answers NTE_PERM (CNG) or NTE_BAD_KEYSET (CAPI): could not test (RECHECK #5).
    # RDP's own certificate with its container gone or damaged inside (NTE_BAD_KEYSET while SYSTEM
    # opens the file) is broken (RECHECK #7).
    key = guest.machinekeys.rdp_key
    if cert.self_signed and key is not None and not key.corrupt and not key.system_full:
        return None
    if not cert.self_signed and cert.key_denied:
        return None
    return False if guest.running("KeyIso") else None


def _cert_facts(guest: WindowsGuest, cert: Certificate) -> dict[str, Any]:
    return {"not_after": _utc(cert.not_after), "expired": cert.expired(guest.real_now()),
            "key_readable": test_private_key(guest, cert), "self_signed": cert.self_signed}


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
    keys = guest.machinekeys   # the SDDL first; files null when SYSTEM cannot list the folder (review #18)
    return {"sddl": limit_text(keys.sddl, MACHINEKEYS_SDDL_MAX), "default": keys.default,
            "files": _listed_files(keys), "nested": _nested(keys), "rdp_key": _rdp_key(keys)}


def _listed_files(keys: MachineKeys) -> int | None:
    """Get-MachineKeysListing's count: it stops after MAX_KEY_FILES + 1 files (desk finding 6)."""
    return min(keys.files, MAX_KEY_FILES + 1) if keys.listable else None


def _nested(keys: MachineKeys) -> bool | None:
    """Get-MachineKeysListing: a subfolder or reparse point seen; None when not listed to the end."""
    if not keys.listable:
        return None
    if keys.subfolders:
        return True
    return None if keys.files > MAX_KEY_FILES else False


def _user_sessions(guest: WindowsGuest) -> list[Session]:
    """What Get-UserSessions lists (WTSEnumerateSessions rows with a user name): sessions with a
    signed-in user, never session 0 or an empty console; a logoff that completed is gone. Without
    the WTS API, what the script's quser fallback reads from the guest's localized quser text.
    None unless TermService runs: Get-WtsRows asks neither the API nor quser then (both are RPC to
    TermService; quser fails with 0x6BA, RPC server unavailable, when it is stopped)."""
    guest.settle()
    if not guest.running("TermService"):
        return []
    if not guest.wts_api:
        return _quser_fallback(guest)
    return [s for s in guest.sessions if s.user]


@functools.lru_cache(maxsize=1)
def _quser_patterns() -> tuple[re.Pattern[str], list[tuple[re.Pattern[str], str]]]:
    """Get-QuserSessions' line pattern and $LocalizedStates, read from the shipped common.ps1, so the
    fallback the emulator runs is the script's own (not a second copy of it)."""
    text = payload("diagnose").script_text()
    line = re.search(r"if \(\$line -notmatch '([^']+)'\) \{ continue \}", text[text.index("function Get-QuserSessions"):])
    block = text[text.index("$LocalizedStates = @("):text.index("function ConvertFrom-QuserState")]
    states = [(re.compile(m.group(1)), m.group(2)) for m in re.finditer(r"@\('(\^[^']+)', '(\w+)'\)", block)]
    for m in re.finditer(r"-join \[char\[\]\]\(([^)]*)\)\) \+ '\$'\), '(\w+)'\)", block):
        word = "".join(chr(int(code, 16)) for code in m.group(1).split(", "))
        states.append((re.compile("^" + re.escape(word) + "$"), m.group(2)))
    assert line is not None and states, "common.ps1's quser fallback changed shape"
    return re.compile(line.group(1)), states


def _quser_fallback(guest: WindowsGuest) -> list[Session]:
    from azrdp.emulator.profiles import quser_text

    pattern, states = _quser_patterns()
    out = []
    for text in quser_text(guest)[1:]:
        m = pattern.match(text)
        if m is None:
            continue
        word = m.group(4)
        state = next((name for regex, name in states if regex.search(word)), "Unknown")
        idle = m.group(5)
        minutes = (int(idle.split(":")[0]) * 60 + int(idle.split(":")[1]) if ":" in idle
                   else int(idle) if idle.isdigit() else 0 if not re.search(r"\d", idle) else None)
        out.append(Session(int(m.group(3)), m.group(2), m.group(1).strip(), state, minutes))
    return out


def _sessions_section(guest: WindowsGuest, errors: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Read-Sessions; a reader that throws loses the section, and an error names it."""
    try:
        sessions = _sessions(guest)
    except ReadFailed as failure:
        errors.append({"section": "sessions", "message": limit_text(str(failure), 60)})
        return None
    reg = guest.registry
    return {"list": sessions["list"], "total": sessions["total"], "server_mode": guest.seat_mode,
            "max_instances": guest.effective("MaxInstanceCount"), "seat_limit": sessions["seat_limit"],
            "used": sessions["used"], "free": sessions["free"],
            "single_session": bool(reg["fSingleSessionPerUser"]) if reg["fSingleSessionPerUser"] is not None else None}


def _seat_mode(guest: WindowsGuest) -> str:
    """Get-SeatMode: AVD, multi-session and client Windows are told by the OS alone; a server asks
    Win32_TerminalServiceSetting, and a provider that does not answer (timeout, error) throws:
    fail closed, never 'admin' for what may be an RD Session Host (desk review 2, row 1)."""
    if guest.seat_mode in ("admin", "rdsh") and not guest.ts_settings_answer:
        raise ReadFailed("Win32_TerminalServiceSetting did not answer within 20 s")
    return guest.seat_mode


def _sessions(guest: WindowsGuest) -> dict[str, Any]:
    users = _user_sessions(guest)
    listed = [{"id": s.id, "name": limit_text(s.name, 12), "user": limit_text(s.user, 24), "state": s.state,
               "idle_min": s.idle_min} for s in users]
    _seat_mode(guest)
    limit = guest.seat_limit()
    client = guest.seat_mode == "client"   # the console holds the one seat of client Windows too
    used = sum(1 for s in users if s.id != 0 and (client or s.name != "console") and s.state in ("Active", "Disc"))
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
    bound = guest.find(guest.binding())
    listening = guest.rdp_listening()
    errors: list[dict[str, Any]] = []
    reg = guest.registry
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
        "cert": {"bound": guest.binding(),
                 "bound_cert": {"store": bound.store, **_cert_facts(guest, bound)} if bound else None,
                 "certs": [_cert(guest, c) for c in cert_store[:CERT_LIST_MAX]], "total": len(cert_store)},
        "machinekeys": _machinekeys(guest),
        "firewall": _firewall(guest, errors),
        "sessions": _sessions_section(guest, errors),
        "rds": {"lic_mode": guest.licensing_type if guest.ts_settings_answer else None,
                "grace_days": guest.grace_days if guest.seat_mode == "rdsh" and guest.ts_settings_answer else None,
                "drain": reg["TSServerDrainMode"]},
        "events": {"hours": hours, **counts,
                   "last": limit_text(f"{last.event_id} {_utc(guest.logged_at(last))} {last.message}", 64)
                           if last else None},
        "reboot": _reboot(guest),
        "errors": errors[:3],
        "errors_total": len(errors),
        "error": None,
    }


def _firewall(guest: WindowsGuest, errors: list[dict[str, Any]]) -> dict[str, Any]:
    """Read-Firewall: MpsSvc's state first, in its own try; when the rule cmdlets throw, the
    state still stands, the rest is null and an error names the section."""
    service = "Running" if guest.running("MpsSvc") else "Stopped"
    if not guest.firewall_readable:
        errors.append({"section": "firewall", "message": FIREWALL_REFUSAL})
        return {"service": service, "profiles": None, "rdp_rules": None, "rdp_rules_enabled": None,
                "port_allowed": None, "blocked": None}
    rules, enabled = _fw_counts(guest)
    verdict = guest.firewall_rule_verdict()
    return {"service": service,
            "profiles": [{"name": p.name, "enabled": p.enabled, "inbound": p.inbound,
                          "rules_ignored": p.rules_ignored} for p in guest.firewall_profiles],
            "rdp_rules": rules, "rdp_rules_enabled": enabled,
            "port_allowed": verdict == "Allow", "blocked": verdict == "Block"}


# -- repair --------------------------------------------------------------------------------------
#
# Each step follows repair.ps1: a read function (the step's state, read before and after) and a
# repair function that decides from the state read before, returns an Outcome (changed, reboot,
# info, skip) or throws (StepFailed: the step is "failed", info null, the message as its error),
# all run by _invoke_step as the script's Invoke-Step runs them. What Windows does in answer to
# each action (sessions dropped by a TermService restart, a stop that hangs, a certificate that
# cannot be made, ACL propagation, asynchronous logoff) is modelled in azrdp.emulator.guest.

CUSTOM_PORT_RULE = "azrdp-RemoteDesktop-CustomPort-TCP-In"
USER_MODE_RULES = ("RemoteDesktop-UserMode-In-TCP", "RemoteDesktop-UserMode-In-UDP")
SERVICE_DISPLAY_NAMES = {"TermService": "Remote Desktop Services", "SessionEnv": "Remote Desktop Configuration"}
DEADLINE_SECONDS = 480        # repair.ps1 $script:DeadlineSeconds (on a Stopwatch)
RESERVE_SECONDS = 90          # $ResultReserveSeconds: the final TermService guarantee and the result line
SERVICE_WAIT_SECONDS = 60     # $ServiceWaitSeconds: the longest one service wait
SEAT_MODES_MULTI = ("rdsh", "multi", "avd")
PROTECT_SECONDS = 24 * 3600   # $ProtectHours: sessions a cert step's restart disconnected are kept this long
MAX_KEY_FILES = 20000         # $MaxKeyFiles: more MachineKeys files than a step walks inside its deadline


class StepFailed(Exception):
    """What a repair function throws in repair.ps1: the step fails with this message."""


class ReadFailed(Exception):
    """What a state reader throws in common.ps1 / repair.ps1: diagnose loses that section (an error
    names it), a repair step is skipped with 'cannot read state'."""


@dataclass
class Outcome:
    """repair.ps1's New-Outcome."""

    changed: bool = False
    reboot: bool = False
    info: dict[str, Any] | None = None
    skip: str | None = None


class _RepairRun:
    """One run of repair.ps1: its parameters, its clock (deadline) and its one backup folder."""

    def __init__(self, guest: WindowsGuest, values: dict[str, Any]):
        self.guest = guest
        self.values = values
        self.folder: str | None = None
        self.started = guest.payload_elapsed
        self.start_clock = guest.clock()            # $script:StartFileTime
        self.disc_at_start: set[tuple[int, str | None, float | None]] = set()     # Session.key
        self.active_at_start: set[tuple[int, str | None, float | None]] = set()

    def seconds_left(self) -> float:
        """Get-SecondsLeft."""
        return DEADLINE_SECONDS - (self.guest.payload_elapsed - self.started) - RESERVE_SECONDS

    def stamp(self) -> str:
        return self.guest.real_now().strftime("%Y%m%dT%H%M%SZ")

    def backup_folder(self) -> str:
        """Get-BackupFolder: %ProgramData%\\azrdp (protected: refuses a reparse point or a
        foreign owner) \\backup\\<UTC time> (a suffix when taken), made once per run, with run-id.txt."""
        if self.folder is None:
            try:
                self.guest.backup_root.take()
            except ValueError as refused:
                raise StepFailed(str(refused)) from None
            base = rf"C:\ProgramData\azrdp\backup\{self.stamp()}"
            path, suffix = base, 1
            while path in self.guest.backup_folders:
                suffix += 1
                path = f"{base}-{suffix}"
            self.guest.backup_folders[path] = ["run-id.txt"]
            self.folder = path
        return self.folder

    def recently_disconnected(self) -> set[tuple[int, str | None, float | None]]:
        """Read-DisconnectedRecord: the sign-ins a cert step's restart disconnected in the last 24 h."""
        now = self.guest.clock()
        return {key for key, at in self.guest.backup_root.disconnected if now - at < PROTECT_SECONDS}

    def record_disconnected(self) -> None:
        """Save-DisconnectedRecord, just before the TermService restart: the remote sessions Active
        now, in the protected root (made and checked first: a foreign-owned root throws, and the
        restart is not made); entries older than 24 h are dropped."""
        rows = [s for s in _user_sessions(self.guest) if s.state == "Active" and s.id != 0 and s.name != "console"]
        if not rows:
            return
        self.back_up("undo.txt")
        now = self.guest.clock()
        root = self.guest.backup_root
        root.disconnected = [(key, at) for key, at in root.disconnected if now - at < PROTECT_SECONDS]
        root.disconnected += [(s.key, now) for s in rows]

    def back_up(self, name: str) -> str:
        folder = self.backup_folder()
        if name not in self.guest.backup_folders[folder]:
            self.guest.backup_folders[folder].append(name)
        return folder


def _invoke_step(run: _RepairRun, name: str, read: Callable[[], dict[str, Any]],
                 repair_fn: Callable[[dict[str, Any]], Outcome]) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "status": "failed", "before": None, "after": None, "info": None,
                            "reboot_required": False, "error": None}
    if run.seconds_left() < 1:
        step["status"], step["error"] = "skipped", "skipped: the payload deadline passed"
        return step
    try:
        step["before"] = read()
    except ReadFailed as failure:
        step["status"], step["error"] = "skipped", limit_text(f"cannot read state: {failure}", 60)
        return step
    outcome: Outcome | None = None
    try:
        outcome = repair_fn(step["before"])
        step["info"] = outcome.info
        step["reboot_required"] = bool(outcome.reboot)
        step["error"] = limit_text(outcome.skip, 60)
    except StepFailed as failure:
        step["error"] = limit_text(str(failure), 60)
    try:
        step["after"] = read()
    except ReadFailed as failure:
        step["error"] = step["error"] or limit_text(f"cannot read state after: {failure}", 60)
    if outcome is not None:
        step["status"] = "changed" if outcome.changed else "skipped" if outcome.skip else "unchanged"
    if name == "sessions" and step["info"] is not None:
        step["info"]["seats_freed"] = max(0, step["after"]["free"] - step["before"]["free"])
    return step


# ---- bounded service control (Wait-ServiceStatus, Start-ServiceBounded, Restart-ServiceBounded) ----

def _wait(run: _RepairRun, name: str, want: str) -> bool:
    """ServiceController.WaitForStatus(want, min(60 s, time left)): a hung service costs the
    whole wait."""
    limit = min(SERVICE_WAIT_SECONDS, run.seconds_left())
    if limit < 1:
        return False
    if run.guest.wait_for_status(name, want):
        return True
    run.guest.pass_time(limit)
    return False


def _start_bounded(run: _RepairRun, name: str) -> None:
    guest = run.guest
    service = guest.services[name]
    if service.state == "Running":
        return
    if service.state == "StopPending" and not _wait(run, name, "Stopped"):
        raise StepFailed(f"{name} is stuck in StopPending; a reboot is needed")
    if service.state == "Missing" or service.start == "Disabled":   # ServiceController.Start() throws
        raise StepFailed(f"Cannot start service {name} on computer '.'.")
    guest.start_service(name)
    if not _wait(run, name, "Running"):
        raise StepFailed(f"{name} did not start in time")


def _restart_bounded(run: _RepairRun, name: str) -> None:
    """Restart-ServiceBounded: no stop begun without time for a whole stop and start; the
    dependents that ran are started again whatever happens (a finally in the script)."""
    guest = run.guest
    dependents = [d for d in ("UmRdpService",) if name == "TermService" and guest.running(d)]
    try:
        if guest.services[name].state != "Stopped":
            if guest.services[name].state != "StopPending":
                if run.seconds_left() < 2 * SERVICE_WAIT_SECONDS:
                    raise StepFailed(f"{name} not restarted: too little time before the deadline")
                guest.stop_service(name)
            if not _wait(run, name, "Stopped"):
                raise StepFailed(f"{name} could not be restarted: stuck in StopPending")
        _start_bounded(run, name)
    finally:
        for dependent in dependents:
            try:
                _start_bounded(run, dependent)
            except StepFailed:
                pass


def _confirm_termservice(run: _RepairRun) -> str:
    """Confirm-TermService: a StopPending is waited out (30 s of the reserve: a stop that outlives
    the step's wait still ends, and then TermService must be started, or RDP stays down for
    everyone), a Stopped TermService is started, and so are its stopped dependents; its final
    state. ServiceController.WaitForStatus throws TimeoutException after its timeout
    (learn.microsoft.com/dotnet/api/system.serviceprocess.servicecontroller.waitforstatus)."""
    guest = run.guest
    service = guest.services.get("TermService")
    if service is None or service.state == "Missing":
        return "Missing"
    if service.state == "StopPending" and not guest.wait_for_status("TermService", "Stopped"):
        guest.pass_time(30)
    if service.state == "Stopped":          # the script calls Start() and catches a Disabled's error
        guest.start_service("TermService")
    if service.state == "Running":
        for name in ("UmRdpService",):
            dependent = guest.services.get(name)
            if dependent is not None and dependent.state == "Stopped" and dependent.start != "Disabled":
                guest.start_service(name)
    return service.state


# ---- rdp-config ----

def _custom_rule(guest: WindowsGuest) -> FirewallRule | None:
    return next((r for r in guest.firewall_rules if r.name == CUSTOM_PORT_RULE), None)


def _group_covers_port(guest: WindowsGuest) -> bool:
    """Test-RdpGroupCoversPort: an enabled Remote Desktop group rule, or azrdp's, lets TCP in at the port."""
    return any(r.enabled and r.protocol == "TCP" and r.port == guest.port and
               (r.group == "Remote Desktop" or r.name == CUSTOM_PORT_RULE) for r in guest.firewall_rules)


def _rdp_config_state(guest: WindowsGuest) -> dict[str, Any]:
    """Read-RdpConfigState: deny and the services, then the firewall in its own try (null when the
    NetSecurity queries are refused: RECHECK #12)."""
    state = {"deny": guest.registry["fDenyTSConnections"], "deny_policy": guest.registry["policy.fDenyTSConnections"],
             "port": guest.registry["PortNumber"], "services": _services(guest, ("TermService", "SessionEnv")),
             "fw_rules": None, "fw_rules_enabled": None, "custom_rule": None}
    if not guest.firewall_readable:
        return state
    rules, enabled = _fw_counts(guest)
    rule = _custom_rule(guest)
    custom = (rule.enabled and rule.port == guest.port) if rule is not None else (False if guest.port != 3389 else None)
    state.update(fw_rules=rules, fw_rules_enabled=enabled, custom_rule=custom)
    return state


def _rdp_config(run: _RepairRun, before: dict[str, Any]) -> Outcome:
    guest = run.guest
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
            _start_bounded(run, name)
            actions.append(f"start:{name}")
    info = {"policy_forces_deny": before["deny_policy"] == 1, "actions": actions[:ACTIONS_MAX]}
    if before["fw_rules"] is None:                   # repaired what it could; the firewall part said apart
        return Outcome(changed=bool(actions), info=info, skip=f"firewall not readable: {FIREWALL_REFUSAL}")
    if not 1 <= guest.port <= 65535:
        return Outcome(changed=bool(actions), info=info, skip=f"PortNumber {guest.port} is no TCP port; firewall not changed")
    disabled = [r for r in guest.firewall_rules if r.name in USER_MODE_RULES and not r.enabled]
    if disabled:
        for disabled_rule in disabled:
            disabled_rule.enabled = True
        actions.append("fw:group")
    if not _group_covers_port(guest):
        rule = _custom_rule(guest)
        if rule is None:
            guest.firewall_rules.append(FirewallRule(CUSTOM_PORT_RULE, port=guest.port, group="",
                                                     program=r"%SystemRoot%\system32\svchost.exe", service="TermService"))
        else:
            rule.port, rule.protocol, rule.enabled = guest.port, "TCP", True
        actions.append("fw:custom-port")
    info = {"policy_forces_deny": before["deny_policy"] == 1, "actions": actions[:ACTIONS_MAX]}
    return Outcome(changed=bool(actions), info=info)


# ---- machinekeys-acl ----

def _machinekeys_state(guest: WindowsGuest) -> dict[str, Any]:
    """Read-MachineKeysState: what both MachineKeys steps report before and after."""
    keys = guest.machinekeys
    return {"default": keys.default, "files": _listed_files(keys), "rdp_key": _rdp_key_acl(keys)}


def _machinekeys_acl(run: _RepairRun, before: dict[str, Any]) -> Outcome:
    key = before["rdp_key"]
    key_ok = not key["present"] or (key["network_service_read"] and key["system_full"])
    if before["default"] and key_ok:
        return Outcome(info={"backup": None, "actions": []})
    keys = run.guest.machinekeys
    actions: list[str] = []
    if not keys.listable:
        # SYSTEM cannot list the folder: one non-inheritable list ACE for SYSTEM added first (the
        # folder's SDDL and the undo saved before it is sent); the default DACL below replaces it.
        run.back_up("machinekeys.folder.sddl.txt")
        run.back_up("undo.txt")
        keys.add_system_list_ace()
        actions.append("acl:list")
    held = {"backup": limit_text(run.folder, BACKUP_PATH), "actions": actions}
    if keys.files > MAX_KEY_FILES:                   # Get-MachineKeysListing, before any change
        return Outcome(changed=bool(actions), info=held, skip=f"held back: MachineKeys holds over {MAX_KEY_FILES} files")
    if keys.subfolders:                              # a junction could carry the propagation (RECHECK new H-2)
        return Outcome(changed=bool(actions), info=held, skip="held back: MachineKeys holds a subfolder")
    backup = run.back_up("machinekeys.acl")          # icacls /save, before any change
    run.back_up("machinekeys.sddl.txt")              # every SDDL, owners included
    run.back_up("undo.txt")
    # A folder that takes new keys and gives every user no more than the default keeps its DACL:
    # one hardened to SYSTEM and Administrators works and renews (#19).
    if not before["default"] and (not keys.writable or keys.broad_grant):
        if keys.make_inherited_explicit():           # Protect-InheritedKeyAces
            actions.append("acl:explicit")
        keys.set_folder_sddl(MACHINEKEYS_DEFAULT_SDDL)
        actions.append("acl:folder-default")
    rdp_key = keys.rdp_key
    if rdp_key is not None and rdp_key.grant_as_shipped(run.guest.build):   # Grant-RdpKeyAccess (change.ps1)
        actions.append("acl:rdp-key")
    return Outcome(changed=bool(actions), reboot=bool(actions),
                   info={"backup": limit_text(backup, BACKUP_PATH), "actions": actions[:ACTIONS_MAX]})


# ---- machinekeys-rename: the RDP key container moved aside ----

def _rdp_key_usable(guest: WindowsGuest) -> bool | None:
    """Test-RdpKeyUsable: judges the live container f686aace..._<MachineGuid> only (containers of
    another MachineGuid, ``MachineKeys.stale_rdp_keys``, are never opened by Windows). True when it
    is absent or a self-signed Remote Desktop certificate's key in it works; False when it is empty,
    or when such a key test says broken (a container damaged inside: NTE_BAD_KEYSET, RECHECK #7);
    None when SYSTEM is refused (an ACL fault) or a key test could not run."""
    key = guest.machinekeys.rdp_key
    if key is None:
        return True
    if key.corrupt:
        return False
    if not key.system_full:
        return None
    answers = [test_private_key(guest, cert) for cert in guest.rd_store() if cert.self_signed]
    if any(a is True for a in answers):
        return True
    if any(a is None for a in answers):
        return None
    return not any(a is False for a in answers)


def _machinekeys_rename(run: _RepairRun, before: dict[str, Any]) -> Outcome:
    guest = run.guest
    none = {"backup": None, "moved": 0, "failed": 0}
    usable = _rdp_key_usable(guest)
    if usable is None:
        return Outcome(info=none, skip="held back: the RDP key could not be tested")
    if usable:
        return Outcome(info=none)
    hold = _cert_hold_back(run, skip_key_checks=True)   # never move a key the cert step could not replace
    if hold:
        return Outcome(info=none, skip=hold)
    keys = guest.machinekeys
    dest = run.back_up("rdp-key") + r"\rdp-key"
    assert keys.rdp_key is not None                   # usable is False only for a live container
    keys.backups.append(f"{dest}\\{keys.rdp_key.name}")   # Move-Item into the backup, then locked down
    run.back_up("undo.txt")
    keys.rdp_key = None
    return Outcome(changed=True, info={"backup": limit_text(dest, BACKUP_PATH), "moved": 1, "failed": 0})


# ---- cert ----

def _usable(guest: WindowsGuest, cert: Certificate) -> bool | None:
    """Test-CertificateUsable: False expired or key definitely broken, None could not test."""
    if cert.expired(guest.real_now()):
        return False
    return test_private_key(guest, cert)


def _broken(guest: WindowsGuest, cert: Certificate) -> bool:
    return _usable(guest, cert) is False


def _store_newest_first(guest: WindowsGuest) -> list[Certificate]:
    return sorted(guest.rd_store(), key=lambda c: c.not_after, reverse=True)


def _cert_state(guest: WindowsGuest) -> dict[str, Any]:
    store = _store_newest_first(guest)
    bound = guest.binding()
    if bound is not None:
        current = guest.find(bound)
    else:
        current = next((c for c in store if not _broken(guest, c)), None)
    return {"bound": bound, "total": len(store), "bad": sum(1 for c in store if _broken(guest, c)),
            "current": current.thumbprint if current else None,
            "current_not_after": _utc(current.not_after) if current else None,
            "security_layer": guest.registry["SecurityLayer"]}


def _cert_hold_back(run: _RepairRun, *, skip_key_checks: bool = False) -> str | None:
    """Get-CertHoldBack (-SkipKeyChecks: machinekeys-rename asks before it moves the container)."""
    guest = run.guest
    for name in ("SessionEnv", "TermService", "CertPropSvc", "KeyIso", "CryptSvc"):
        service = guest.services.get(name)
        if service is None or service.state == "Missing":
            return f"held back: {name} is missing"
        if service.start == "Disabled":
            return f"held back: {name} is disabled; run rdp-config"
    keys = guest.machinekeys
    if not keys.writable:                           # Test-KeyFolderWritable
        return "held back: MachineKeys ACL not default; run machinekeys-acl"
    key = keys.rdp_key
    if key is not None and not (key.network_service_read and key.system_full):
        return "held back: RDP key ACL broken; run machinekeys-acl"
    if not skip_key_checks and key is not None and (key.unusable or _rdp_key_usable(guest) is False):
        return "held back: RDP key unusable; run machinekeys-rename"
    if guest.self_signed_cert_store not in (None, "Remote Desktop"):
        return "held back: SelfSignedCertStore is not Remote Desktop"
    return None


def _cert_step(run: _RepairRun, before: dict[str, Any]) -> Outcome:
    guest = run.guest
    bound = guest.binding()                 # MALFORMED finds nothing: a broken binding
    found = guest.find(bound)
    bound_broken = bound is not None and (found is None or _broken(guest, found))
    bound_usable = bound is not None and not bound_broken
    info = {"removed": [], "removed_total": 0, "cleared_binding": False, "kept_bound": bound_usable, "restarted": []}
    if not (before["bad"] > 0 or bound_broken or before["current"] is None):
        return Outcome(info=info)
    hold = _cert_hold_back(run)
    if hold:
        return Outcome(skip=hold)
    broken = [cert for cert in _store_newest_first(guest) if _broken(guest, cert)]
    # Decided before any change: on a session host the restart disconnects every user (RECHECK #8).
    restart = bound_broken or (bool(broken) and not bound_usable) or before["current"] is None
    if restart and not run.values["MultiSession"]:
        try:
            mode = _seat_mode(guest)
        except ReadFailed as failure:               # Get-SeatMode throws inside the step: it fails
            raise StepFailed(str(failure)) from None
        if mode in SEAT_MODES_MULTI:
            return Outcome(info=info, skip=f"held back: {mode} host; restarts only with MultiSession")
    removed: list[str] = []
    for cert in broken:
        run.back_up("undo.txt")                     # Move-Item to Cert:\LocalMachine\azrdp-backup
        cert.store = "backup"
        removed.append(cert.thumbprint)
    cleared = bound_broken
    if cleared:
        run.back_up("SSLCertificateSHA1Hash.txt")  # the value as stored (kind:data), then removed
        guest.bound_thumbprint, guest.bound_kind = None, "Binary"
    restarted: list[str] = []
    problem = None
    if restart:
        try:
            for name in ("SessionEnv", "TermService"):
                if name == "TermService":
                    run.record_disconnected()       # before the restart is sent
                _restart_bounded(run, name)
                restarted.append(name)
            if not any(not _broken(guest, c) for c in guest.rd_store()):   # Wait-RdpCertificate's 60 s
                guest.pass_time(60)
                raise StepFailed("no new self-signed certificate after 60 s (RCM 1057/1058)")
        except StepFailed as failure:
            problem = str(failure)
        finally:                                    # SessionEnv and UmRdpService started again
            for name in ("SessionEnv", "UmRdpService"):
                service = guest.services.get(name)
                if service is None or service.state in ("Running", "Missing") or service.start == "Disabled":
                    continue
                if name == "UmRdpService" and not guest.running("TermService"):
                    continue
                try:
                    _start_bounded(run, name)
                except StepFailed:
                    pass
    info.update(removed=removed[:2], removed_total=len(removed), cleared_binding=cleared, restarted=restarted)
    return Outcome(changed=bool(removed or cleared or restarted), info=info, skip=problem)


# ---- sessions ----

def _sessions_state(guest: WindowsGuest) -> dict[str, Any]:
    seats = _sessions(guest)
    users = _user_sessions(guest)
    return {"total": seats["total"], "disconnected": sum(1 for s in users if s.state == "Disc"),
            "active": sum(1 for s in users if s.state == "Active" and s.name != "console"),
            "mode": guest.seat_mode, "seat_limit": seats["seat_limit"], "used": seats["used"], "free": seats["free"]}


def _sessions_step(run: _RepairRun, before: dict[str, Any]) -> Outcome:
    guest, values = run.guest, run.values
    include_active = bool(values["LogOffActive"])
    info: dict[str, Any] = {"logged_off": [], "logged_off_total": 0, "seats_freed": 0, "include_active": include_active,
                            "kept_recent": 0}
    if values["LogOffOnlyWhenFull"] and before["free"] > 0:
        return Outcome(info=info)
    # The same sign-in as at the start, and disconnected since before it (desk finding 14).
    candidates = [s for s in _user_sessions(guest) if s.id != 0 and s.name != "console" and (
        (s.state == "Disc" and s.key in run.disc_at_start and
         (s.disconnected_at is None or s.disconnected_at < run.start_clock)) or
        (include_active and s.key in run.active_at_start and s.state in ("Active", "Disc")))]
    # Nor, for 24 h unless LogOffActive, those an earlier run's cert step disconnected (new H-1).
    recent = set() if include_active else run.recently_disconnected()
    targets = [s for s in candidates if s.key not in recent]
    info["kept_recent"] = len(candidates) - len(targets)
    targets.sort(key=lambda s: -1 if s.idle_min is None else s.idle_min, reverse=True)
    if values["LogOffOnlyWhenFull"]:
        targets = targets[:max(0, before["used"] - before["seat_limit"] + 1)]
    if not targets:
        if info["kept_recent"]:
            return Outcome(info=info, skip=f"held back: azrdp disconnected {info['kept_recent']} in 24 h; LogOffActive")
        return Outcome(info=info)
    if before["mode"] in SEAT_MODES_MULTI and not values["MultiSession"]:
        return Outcome(info=info, skip=f"held back: {before['mode']} host; logs off only with MultiSession")
    logged_off = [s.id for s in targets if guest.log_off(s.id)]       # logoff.exe <id>
    for _ in range(10):                                                # up to 10 s for them to leave
        if not logged_off or run.seconds_left() <= 1:
            break
        if not any(s.id in logged_off for s in _user_sessions(guest)):
            break
        guest.pass_time(1)
    info.update(logged_off=logged_off[:4], logged_off_total=len(logged_off))
    failed = len(targets) - len(logged_off)
    return Outcome(changed=bool(logged_off), info=info,
                   skip=f"{failed} sessions could not be logged off" if failed else None)


def repair(guest: WindowsGuest, values: dict[str, Any]) -> dict[str, Any]:
    run = _RepairRun(guest, values)
    steps: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], Outcome]]] = {
        "rdp-config": (lambda: _rdp_config_state(guest), lambda before: _rdp_config(run, before)),
        "machinekeys-acl": (lambda: _machinekeys_state(guest), lambda before: _machinekeys_acl(run, before)),
        "machinekeys-rename": (lambda: _machinekeys_state(guest), lambda before: _machinekeys_rename(run, before)),
        "cert": (lambda: _cert_state(guest), lambda before: _cert_step(run, before)),
        "sessions": (lambda: _sessions_state(guest), lambda before: _sessions_step(run, before)),
    }
    pending_before = bool(guest.reboot_reasons)
    wanted = set(values["Steps"])
    error = None if wanted else "no steps given: pass -Steps rdp-config,cert,..."
    if "sessions" in wanted or "cert" in wanted:   # the snapshot before any step
        users = _user_sessions(guest)
        run.disc_at_start = {s.key for s in users if s.state == "Disc"}
        run.active_at_start = {s.key for s in users if s.state == "Active"}
    results = [_invoke_step(run, name, *steps[name]) for name in REPAIR_STEPS if name in wanted]
    termservice = _confirm_termservice(run)
    return {
        "payload": "repair",
        "version": payload("repair").version,
        "run_id": values["RunId"],
        "steps": results,
        "changed": any(step["status"] == "changed" for step in results),
        "reboot_pending": pending_before,
        "reboot_required": pending_before or any(step["reboot_required"] for step in results),
        "termservice": termservice,
        "error": error,
    }


ANSWERS: dict[str, Callable[[WindowsGuest, dict[str, Any]], dict[str, Any]]] = {
    "diagnose": diagnose,
    "repair": repair,
}


def _rescue(guest: WindowsGuest, values: dict[str, Any]) -> dict[str, Any]:
    """guest_offline.rescue (imported here, not at the top: it uses this module's helpers, and
    either module may be imported first)."""
    from azrdp.emulator.guest_offline import rescue

    return rescue(guest, values)


ANSWERS["rescue"] = _rescue
