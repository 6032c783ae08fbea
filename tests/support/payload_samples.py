"""Realistic payload results, as a Windows Server 2022 Azure VM prints them, and the broken
variants the parser and guest-check tests use. Each builder returns a fresh dict."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

MARKER = "AZRDP-RESULT:"
CERT_OK = "3F2A9C41D0B7E6F5A4C3B2A1908172635445362B"
CERT_OLD = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678"
CA_CERT = "0F1E2D3C4B5A69788796A5B4C3D2E1F00112233F"

HEALTHY_DIAGNOSE: dict[str, Any] = {
    "payload": "diagnose", "version": "2.1.0", "run_id": "7f3c2a",
    "os": {"build": "20348.2340", "caption": "Microsoft Windows Server 2022 Datacenter", "uptime_min": 4312},
    "services": [
        {"name": "TermService", "state": "Running", "start": "Manual"},
        {"name": "SessionEnv", "state": "Running", "start": "Manual"},
        {"name": "UmRdpService", "state": "Running", "start": "Manual"},
        {"name": "CertPropSvc", "state": "Running", "start": "Manual"},
        {"name": "KeyIso", "state": "Running", "start": "Manual"},
        {"name": "CryptSvc", "state": "Running", "start": "Automatic"},
        {"name": "MpsSvc", "state": "Running", "start": "Automatic"},
    ],
    "rdp": {"deny": 0, "deny_policy": None, "port": 3389, "nla": 1, "nla_policy": None,
            "security_layer": 2, "min_encryption": 2},
    "listener": {"state": "Listen", "tcp_listening": True, "owner": "svchost"},
    "cert": {"bound": None, "bound_cert": None,
             "certs": [{"thumbprint": CERT_OK, "not_after": "2026-07-02T08:14:55Z", "expired": False,
                        "key_readable": True, "self_signed": True}],
             "total": 1},
    "machinekeys": {"sddl": "O:SYG:SYD:PAI(A;;0x12019f;;;WD)(A;;FA;;;BA)", "default": True, "files": 9, "nested": False,
                    "rdp_key": {"present": True,
                                "file": "f686aace6942fb7f7ceb231212eef4a4_3c8d1d4c-3a5e-4d1b-9a39-2f1e0c7b6a55",
                                "size": 2478, "network_service_read": True, "system_full": True}},
    "firewall": {"service": "Running",
                 "profiles": [{"name": n, "enabled": True, "inbound": "Block", "rules_ignored": False}
                              for n in ("Domain", "Private", "Public")],
                 "rdp_rules": 3, "rdp_rules_enabled": 3, "port_allowed": True, "blocked": False},
    "sessions": {"list": [{"id": 2, "name": "rdp-tcp#4", "user": "azureuser", "state": "Active", "idle_min": 0}],
                 "total": 1, "server_mode": "admin", "max_instances": 4294967295, "seat_limit": 2,
                 "used": 1, "free": 1, "single_session": True},
    "rds": {"lic_mode": 5, "grace_days": None, "drain": None},
    "events": {"hours": 24, "rcm_1057": 0, "rcm_1058": 0, "schannel_36870": 0, "schannel_36871": 0,
               "scm_termservice": 0, "last": None},
    "reboot": {"pending": False, "reasons": []},
    "errors": [], "errors_total": 0, "error": None,
}


def healthy() -> dict[str, Any]:
    return copy.deepcopy(HEALTHY_DIAGNOSE)


def expired_cert() -> dict[str, Any]:
    r = healthy()
    r["cert"]["certs"] = [{"thumbprint": CERT_OLD, "not_after": "2025-11-30T10:02:11Z", "expired": True,
                           "key_readable": True, "self_signed": True}]
    r["events"].update(rcm_1058=14, last="1058 2026-01-01T09:00:02Z The RD Session Host Server has fail")
    return r


def broken_machinekeys_acl() -> dict[str, Any]:
    r = healthy()
    r["machinekeys"]["sddl"] = "O:BAG:SYD:PAI(A;;FA;;;BA)"
    r["machinekeys"]["default"] = False
    r["machinekeys"]["rdp_key"]["network_service_read"] = False
    r["cert"]["certs"][0]["key_readable"] = False
    r["events"].update(rcm_1057=3, schannel_36870=41)
    return r


def corrupt_key() -> dict[str, Any]:
    r = healthy()
    r["cert"]["certs"][0]["key_readable"] = False
    r["events"].update(schannel_36870=7)
    return r


def two_disconnected_admins() -> dict[str, Any]:
    r = healthy()
    r["sessions"] = {"list": [{"id": 1, "name": "console", "user": None, "state": "Conn", "idle_min": None},
                              {"id": 2, "name": None, "user": "azureuser", "state": "Disc", "idle_min": 2881},
                              {"id": 3, "name": None, "user": "opsadmin", "state": "Disc", "idle_min": 95}],
                     "total": 3, "server_mode": "admin", "max_instances": 4294967295, "seat_limit": 2,
                     "used": 2, "free": 0, "single_session": True}
    return r


def firewall_off() -> dict[str, Any]:
    r = healthy()
    for profile in r["firewall"]["profiles"]:
        profile["enabled"] = False
    return r


def firewall_blocks_rdp() -> dict[str, Any]:
    r = healthy()
    r["firewall"].update(rdp_rules_enabled=0, port_allowed=False)
    return r


def nla_off() -> dict[str, Any]:
    r = healthy()
    r["rdp"]["nla"] = 0
    return r


def section_failed() -> dict[str, Any]:
    r = healthy()
    r["firewall"] = None
    r["errors"] = [{"section": "firewall", "message": "Access denied (MI_RESULT_ACCESS_DENIED)"}]
    r["errors_total"] = 1
    return r


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "healthy": healthy, "expired_cert": expired_cert, "broken_machinekeys_acl": broken_machinekeys_acl,
    "corrupt_key": corrupt_key, "two_disconnected_admins": two_disconnected_admins,
    "firewall_off": firewall_off, "firewall_blocks_rdp": firewall_blocks_rdp, "nla_off": nla_off,
    "section_failed": section_failed,
}


def healthy_repair() -> dict[str, Any]:
    """A second repair run on a healthy VM: every step unchanged."""
    def state_cert() -> dict[str, Any]:
        return {"bound": None, "total": 1, "bad": 0, "current": CERT_OK,
                "current_not_after": "2026-07-02T08:14:55Z", "security_layer": 2}
    def step(name: str, state: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "status": "unchanged", "before": state, "after": copy.deepcopy(state),
                "info": info, "reboot_required": False, "error": None}
    key = {"present": True, "network_service_read": True, "system_full": True}
    return {
        "payload": "repair", "version": "2.1.0", "run_id": "7f3c2a",
        "steps": [
            step("rdp-config", {"deny": 0, "deny_policy": None, "port": 3389,
                                "services": [{"name": "TermService", "state": "Running", "start": "Manual"},
                                             {"name": "SessionEnv", "state": "Running", "start": "Manual"}],
                                "fw_rules": 3, "fw_rules_enabled": 3, "custom_rule": None},
                 {"policy_forces_deny": False, "actions": []}),
            step("machinekeys-acl", {"default": True, "files": 9, "rdp_key": dict(key)},
                 {"backup": None, "actions": []}),
            step("cert", state_cert(), {"removed": [], "removed_total": 0, "cleared_binding": False,
                                        "kept_bound": False, "restarted": []}),
            step("sessions", {"total": 1, "disconnected": 0, "active": 1, "mode": "admin", "seat_limit": 2, "used": 1,
                              "free": 1},
                 {"logged_off": [], "logged_off_total": 0, "seats_freed": 0, "include_active": False, "kept_recent": 0}),
        ],
        "changed": False, "reboot_pending": False, "reboot_required": False, "termservice": "Running",
        "error": None,
    }


def result_line(obj: dict[str, Any]) -> str:
    return MARKER + json.dumps(obj, separators=(",", ":"))


def run_command_value(stdout: str, stderr: str = "") -> dict[str, Any]:
    """Run Command's final body, as in arm-examples/compute/VirtualMachines_RunCommand.json."""
    return {"value": [
        {"code": "ComponentStatus/StdOut/succeeded", "level": "Info",
         "displayStatus": "Provisioning succeeded", "message": stdout},
        {"code": "ComponentStatus/StdErr/succeeded", "level": "Info",
         "displayStatus": "Provisioning succeeded", "message": stderr},
    ]}
