"""Turn a parsed diagnose result (schema ``DIAGNOSE``) into the guest.* checks.

Pure functions, no I/O: the same result always gives the same checks, so the emulator's simulated
guest and real VMs are judged alike. Each remedy names the azrdp repair step that fixes it (or says
that none does). When the wire probe's result is given, the certificate RDP served and the port it
answered on are cross-checked with what the guest says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from azrdp.checks import Check, Status
from azrdp.payloads.schema import machinekeys_hardened

DEFAULT_PORT = 3389
MALFORMED_BINDING = "MALFORMED"   # diagnose's cert.bound when SSLCertificateSHA1Hash is no 20-byte REG_BINARY
SUPPORT_SERVICES = ("SessionEnv", "UmRdpService", "CertPropSvc", "KeyIso", "CryptSvc")


def step_remedy(*steps: str, then: str = "") -> str:
    """"Repair with azrdp's `cert` step." (several steps run in azrdp's fixed order)."""
    names = " then ".join(f"`{s}`" for s in steps)
    word = "step" if len(steps) == 1 else "steps"
    return f"Repair with azrdp's {names} {word}." + (f" {then}" if then else "")


def _section_error(result: dict[str, Any], section: str) -> str:
    for error in result.get("errors") or []:
        if error.get("section") == section:
            return error.get("message") or "failed"
    return "not reported"


def _unreadable(check_id: str, result: dict[str, Any], section: str) -> Check:
    message = _section_error(result, section)
    return Check(check_id, Status.ERROR, f"the guest could not read {section}: {message}",
                 {"section": section, "error": message},
                 "Look at the guest's event log; the other guest checks still ran.")


def _services(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in result.get("services") or []}


def check_termservice(result: dict[str, Any]) -> Check:
    if result.get("services") is None:
        return _unreadable("guest.termservice", result, "services")
    services = _services(result)
    details = {"services": result["services"]}
    term = services.get("TermService")
    if term is None or term["state"] == "Missing":
        return Check("guest.termservice", Status.FAIL, "Remote Desktop Services (TermService) is missing",
                     details, "No azrdp step reinstalls it: repair Windows (`az vm repair`).")
    if term["state"].endswith("Pending") and term["start"] != "Disabled":
        # A service stuck in a pending state answers neither start nor stop (the Service Control
        # Manager refuses control requests meanwhile: ERROR_SERVICE_CANNOT_ACCEPT_CTRL, Learn
        # "ControlService function"); no azrdp step can end it, a restart of Windows does.
        return Check("guest.termservice", Status.FAIL,
                     f"TermService is stuck in {term['state']} (start type {term['start']})", details,
                     "Restart the VM (`azrdp fix VM --reboot`, or Restart in the portal): a service "
                     "stuck in a pending state accepts no start or stop, so no azrdp step can end it.")
    if term["state"] != "Running" or term["start"] == "Disabled":
        return Check("guest.termservice", Status.FAIL,
                     f"TermService is {term['state']} (start type {term['start']})", details,
                     step_remedy("rdp-config"))
    disabled = [name for name in SUPPORT_SERVICES
                if services.get(name, {}).get("start") == "Disabled" or services.get(name, {}).get("state") == "Missing"]
    if disabled:
        return Check("guest.termservice", Status.WARN,
                     f"TermService runs, but {', '.join(disabled)} disabled or missing "
                     "(needed to make the RDP certificate)", details,
                     step_remedy("rdp-config", then=f"Set {', '.join(disabled)} back to Manual."))
    return Check("guest.termservice", Status.PASS, "TermService runs", details)


def check_rdp_enabled(result: dict[str, Any]) -> Check:
    rdp = result.get("rdp")
    if rdp is None:
        return _unreadable("guest.rdp_enabled", result, "rdp")
    details = {"fDenyTSConnections": rdp["deny"], "policy_fDenyTSConnections": rdp["deny_policy"]}
    if rdp["deny_policy"] == 1:
        return Check("guest.rdp_enabled", Status.FAIL,
                     "a group policy denies Remote Desktop connections (fDenyTSConnections=1)", details,
                     "Change the policy \"Allow users to connect remotely by using Remote Desktop "
                     "Services\"; azrdp's `rdp-config` step does not override a policy.")
    if rdp["deny_policy"] is None and rdp["deny"] == 1:
        return Check("guest.rdp_enabled", Status.FAIL, "Remote Desktop connections are denied "
                     "(fDenyTSConnections=1)", details, step_remedy("rdp-config"))
    return Check("guest.rdp_enabled", Status.PASS, "Remote Desktop connections are allowed", details)


def check_port(result: dict[str, Any], rdp_port: int, probe_result: Any = None) -> Check:
    rdp = result.get("rdp")
    if rdp is None:
        return _unreadable("guest.port", result, "rdp")
    port = rdp["port"] if rdp["port"] is not None else DEFAULT_PORT
    details: dict[str, Any] = {"guest_port": port, "checked_port": rdp_port}
    if probe_result is not None:
        details["probe_port"] = probe_result.port
    if not 1 <= port <= 65535:
        return Check("guest.port", Status.FAIL, f"RDP-Tcp PortNumber is {port}, which is no TCP port", details,
                     f"Set RDP-Tcp PortNumber back to {rdp_port} (a DWORD from 1 to 65535) and restart "
                     "TermService; no azrdp step changes the port.")
    if port != rdp_port:
        return Check("guest.port", Status.FAIL,
                     f"RDP-Tcp listens on port {port}, not on {rdp_port} where azrdp checked", details,
                     f"Connect to port {port} (and let the NSG allow it), or set RDP-Tcp PortNumber back "
                     f"to {rdp_port}; no azrdp step changes the port.")
    return Check("guest.port", Status.PASS, f"RDP-Tcp listens on port {port}", details)


def check_nla(result: dict[str, Any]) -> Check:
    rdp = result.get("rdp")
    if rdp is None:
        return _unreadable("guest.nla", result, "rdp")
    nla = rdp["nla_policy"] if rdp["nla_policy"] is not None else rdp["nla"]
    details = {"UserAuthentication": rdp["nla"], "policy_UserAuthentication": rdp["nla_policy"],
               "SecurityLayer": rdp["security_layer"], "MinEncryptionLevel": rdp["min_encryption"]}
    if rdp["security_layer"] == 0:
        return Check("guest.nla", Status.WARN, "SecurityLayer=0: RDP runs without TLS (as the built-in "
                     "ResetRDPCert leaves it)", details,
                     "Set RDP-Tcp SecurityLayer back to 2 (TLS) once the certificate is healthy; azrdp's "
                     "`cert` step never lowers it.")
    if rdp["min_encryption"] == 4:
        return Check("guest.nla", Status.WARN, "MinEncryptionLevel=4 (FIPS): clients without FIPS "
                     "ciphers are refused", details, "No azrdp step changes it: lower it to 2 or 3 if "
                     "clients fail.")
    if nla == 0:
        return Check("guest.nla", Status.WARN, "Network Level Authentication is off", details,
                     "Turn NLA back on (UserAuthentication=1) once you can sign in; no azrdp step "
                     "changes it.")
    return Check("guest.nla", Status.PASS, "Network Level Authentication is required, TLS in use",
                 details)


def check_listener(result: dict[str, Any]) -> Check:
    listener = result.get("listener")
    if listener is None:
        return _unreadable("guest.listener", result, "listener")
    details = dict(listener)
    owner = listener["owner"]
    if listener["tcp_listening"] and owner and owner.lower() != "svchost":
        return Check("guest.listener", Status.FAIL, f"the RDP port is held by {owner}, not by "
                     "Remote Desktop Services", details, "Stop that program or move it to another "
                     "port; no azrdp step does this.")
    if listener["state"] != "Listen" or not listener["tcp_listening"]:
        state = listener["state"] or "absent"
        return Check("guest.listener", Status.FAIL, f"the RDP-Tcp listener is {state} and "
                     f"{'listens' if listener['tcp_listening'] else 'does not listen'} on TCP", details,
                     step_remedy("rdp-config", "cert", then="Both restart what the listener needs."))
    return Check("guest.listener", Status.PASS, "the RDP-Tcp listener is listening", details)


def _usable(cert: dict[str, Any]) -> bool:
    """Not expired and its key not known to be broken: key_readable null is "could not test" (an API
    the guest's .NET lacks, e.g. ECDSA on .NET 4.5), never a reason to replace the certificate."""
    return not cert["expired"] and cert["key_readable"] is not False


def check_cert(result: dict[str, Any], probe_result: Any = None) -> Check:
    cert = result.get("cert")
    if cert is None:
        return _unreadable("guest.cert", result, "cert")
    details: dict[str, Any] = dict(cert)
    served = getattr(getattr(probe_result, "certificate", None), "thumbprint", None)
    if served:
        details["served"] = served
    bound, bound_cert = cert["bound"], cert["bound_cert"]
    if bound == MALFORMED_BINDING:
        return Check("guest.cert", Status.FAIL, "RDP's certificate binding (SSLCertificateSHA1Hash) is not a 20-byte "
                     "binary thumbprint (set as text?): RDP cannot use it", details,
                     step_remedy("cert", then="It saves the value and clears the binding; bind a certificate again "
                                 "through Win32_TSGeneralSetting if you want one."))
    if bound:
        if bound_cert is None:
            return Check("guest.cert", Status.FAIL, f"RDP is bound to certificate {bound}, which is "
                         "in no store", details, step_remedy("cert", then="It clears the binding."))
        if not _usable(bound_cert):
            why = "expired" if bound_cert["expired"] else "has an unreadable private key"
            return Check("guest.cert", Status.FAIL, f"the bound certificate {bound} {why}", details,
                         step_remedy("cert", then="It clears the binding; bind a valid certificate "
                                     "yourself if you want one."))
        current = bound
    else:
        usable = [c for c in cert["certs"] if _usable(c)]
        if not usable:
            if cert["total"] == 0:
                return Check("guest.cert", Status.WARN, "no RDP certificate yet (Windows makes one "
                             "when TermService starts)", details, step_remedy("cert"))
            first = cert["certs"][0] if cert["certs"] else None
            if first and first["expired"]:
                summary = f"the RDP certificate {first['thumbprint']} expired on {first['not_after']}"
                return Check("guest.cert", Status.FAIL, summary, details, step_remedy("cert"))
            return Check("guest.cert", Status.FAIL, "no RDP certificate with a readable private key",
                         details, step_remedy("machinekeys-acl", "cert"))
        current = usable[0]["thumbprint"]
    details["current"] = current
    if served and served.upper() != current:
        known = {c["thumbprint"] for c in cert["certs"]}
        if served.upper() in known:
            return Check("guest.cert", Status.FAIL, f"RDP still serves {served}, not the valid {current}",
                         details, step_remedy("cert", then="It restarts TermService."))
        return Check("guest.cert", Status.WARN, f"the port served certificate {served}, which the guest "
                     f"does not list (it uses {current})", details,
                     "Check that the address azrdp probed reaches this VM; if it does, run the `cert` step.")
    stale = [c["thumbprint"] for c in cert["certs"] if not _usable(c)]
    if not bound and stale:
        return Check("guest.cert", Status.WARN, f"RDP uses {current}, but unusable certificates remain "
                     "in the Remote Desktop store", details, step_remedy("cert"))
    used = bound_cert if bound else next((c for c in cert["certs"] if c["thumbprint"] == current), None)
    if used is not None and used["key_readable"] is None:
        return Check("guest.cert", Status.WARN, f"RDP certificate {current} is valid, but the guest could not "
                     "test its private key (its .NET lacks the API for this key type)", details,
                     "Nothing to repair unless TLS fails: azrdp changes no certificate it could not test.")
    return Check("guest.cert", Status.PASS, f"RDP certificate {current} is valid", details)


NESTED_MACHINEKEYS_REMEDY = (
    "azrdp's machinekeys-acl step holds back: an ACL written to the folder could propagate through a "
    "junction planted there. Look at it by hand (`dir /a C:\\ProgramData\\Microsoft\\Crypto\\RSA\\MachineKeys`: "
    "stock Windows keeps only files there), move what does not belong elsewhere, then run azrdp fix again.")


def check_machinekeys(result: dict[str, Any]) -> Check:
    keys = result.get("machinekeys")
    if keys is None:
        return _unreadable("guest.machinekeys", result, "machinekeys")
    details = dict(keys)
    rdp_key = keys["rdp_key"]
    if rdp_key["present"] and rdp_key["size"] == 0:
        return Check("guest.machinekeys", Status.FAIL, f"the RDP key container {rdp_key['file']} is "
                     "empty (corrupt)", details, step_remedy("machinekeys-rename", "cert"))
    problems = []
    if keys["files"] is None:   # the worst ACL break: SYSTEM cannot even list the folder
        problems.append("SYSTEM cannot list the MachineKeys folder")
    # A folder hardened to SYSTEM and Administrators works and renews (measured by Microsoft): no fault.
    if not keys["default"] and not machinekeys_hardened(keys["sddl"]):
        problems.append("the MachineKeys folder ACL is not Windows' default")
    if rdp_key["present"] and not rdp_key["network_service_read"]:
        problems.append("NETWORK SERVICE cannot read the RDP key")
    if rdp_key["present"] and not rdp_key["system_full"]:
        problems.append("SYSTEM lacks full control of the RDP key")
    if problems and keys.get("nested"):
        return Check("guest.machinekeys", Status.FAIL, "; ".join(problems) + "; and MachineKeys holds a subfolder "
                     "or reparse point", details, NESTED_MACHINEKEYS_REMEDY)
    if problems:
        return Check("guest.machinekeys", Status.FAIL, "; ".join(problems), details,
                     step_remedy("machinekeys-acl", "cert"))
    cert = result.get("cert") or {}
    unreadable = [c["thumbprint"] for c in cert.get("certs") or [] if c["key_readable"] is False]
    if unreadable and rdp_key["present"]:
        return Check("guest.machinekeys", Status.FAIL, "ACLs are right, but the RDP certificate's "
                     "private key cannot be used (a corrupt key)", details,
                     step_remedy("machinekeys-rename", "cert",
                                 then="machinekeys-rename keeps the old folder as a backup."))
    return Check("guest.machinekeys", Status.PASS, "MachineKeys has its default ACL and the RDP key "
                 "is readable" if rdp_key["present"] else "MachineKeys has its default ACL", details)


def check_firewall(result: dict[str, Any], rdp_port: int) -> Check:
    fw = result.get("firewall")
    if fw is None:
        return _unreadable("guest.firewall", result, "firewall")
    details = dict(fw)
    if fw["service"] != "Running":
        return Check("guest.firewall", Status.FAIL, f"the Windows Firewall service (MpsSvc) is "
                     f"{fw['service']}", details,
                     "Start MpsSvc (Windows then applies its rules); no azrdp step changes it.")
    if fw["profiles"] is None:   # MpsSvc runs, but its profiles and rules could not be read
        message = _section_error(result, "firewall")
        return Check("guest.firewall", Status.ERROR, f"the guest could not read the firewall rules: {message}",
                     {**details, "error": message}, "Look at the guest's event log; the other guest checks still ran.")
    enabled = [p for p in fw["profiles"] if p["enabled"]]
    blocking = [p["name"] for p in enabled if p["rules_ignored"]]
    if blocking:
        return Check("guest.firewall", Status.FAIL, f"the {', '.join(blocking)} profile blocks all "
                     "inbound connections (allow rules are ignored)", details,
                     "Allow inbound rules again (netsh advfirewall set allprofiles firewallpolicy "
                     "blockinbound,allowoutbound); no azrdp step changes profiles.")
    if not enabled:
        return Check("guest.firewall", Status.WARN, "Windows Firewall is off in every profile (RDP "
                     "is not blocked, but the VM is unprotected)", details,
                     "Turn the firewall back on after RDP works; azrdp's `rdp-config` step enables the "
                     "Remote Desktop rules it will need.")
    if fw["blocked"]:
        return Check("guest.firewall", Status.FAIL, f"an enabled inbound Block rule covers TCP {rdp_port} (it "
                     "beats every Allow rule)", details,
                     "Disable or narrow that Block rule (Get-NetFirewallRule -Action Block -Enabled True); no azrdp "
                     "step removes a Block rule.")
    if not fw["port_allowed"]:
        return Check("guest.firewall", Status.FAIL, f"no enabled inbound rule allows TCP {rdp_port}",
                     details, step_remedy("rdp-config"))
    return Check("guest.firewall", Status.PASS, f"Windows Firewall allows TCP {rdp_port}", details)


def check_sessions(result: dict[str, Any]) -> Check:
    sessions = result.get("sessions")
    if sessions is None:
        return _unreadable("guest.sessions", result, "sessions")
    details = dict(sessions)
    disconnected = sum(1 for s in sessions["list"] if s["state"] == "Disc")
    if sessions["free"] <= 0:
        holders = f"{sessions['used']} session{'s' if sessions['used'] != 1 else ''} hold"
        summary = (f"no session seat is free: {holders} all {sessions['seat_limit']} seats"
                   + (f" ({disconnected} disconnected)" if disconnected else ""))
        then = "" if disconnected else "Only active sessions hold the seats: log them off with LogOffActive."
        return Check("guest.sessions", Status.FAIL, summary, details, step_remedy("sessions", then=then))
    free = "no seat limit" if sessions["seat_limit"] >= 4294967295 else f"{sessions['free']} seat(s) free"
    if disconnected:
        return Check("guest.sessions", Status.PASS, f"{free}; {disconnected} disconnected session(s) hold others",
                     details)
    return Check("guest.sessions", Status.PASS, free, details)


LICENSED_MODES = {2: "per device", 4: "per user"}   # Win32_TerminalServiceSetting.LicensingType


def check_licensing(result: dict[str, Any]) -> Check:
    """RD Licensing on an RD Session Host: after the grace period (120 days) without a licensing mode
    and license server, every non-admin logon is refused ("no Remote Desktop license servers
    available") although TLS and NLA work, so the wire probe passes."""
    rds = result.get("rds")
    if rds is None:
        return _unreadable("guest.licensing", result, "rds")
    details = dict(rds)
    mode = (result.get("sessions") or {}).get("server_mode")
    if mode != "rdsh":
        return Check("guest.licensing", Status.PASS, "not an RD Session Host: remote administration needs no RD "
                     "licenses", details)
    licensed = LICENSED_MODES.get(rds["lic_mode"])
    remedy = ("Set the licensing mode and a license server (Set-RDLicenseConfiguration, or the policies 'Set the "
              "Remote Desktop licensing mode' and 'Use the specified Remote Desktop license servers'); an "
              "administrator can still sign in with `mstsc /admin`. No azrdp step changes licensing.")
    if licensed is None and rds["grace_days"] == 0:
        return Check("guest.licensing", Status.FAIL, "the RD Licensing grace period is over and no licensing mode "
                     "is set: users are refused (no Remote Desktop license servers available)", details, remedy)
    if licensed is None and rds["grace_days"] is not None and rds["grace_days"] <= 14:
        return Check("guest.licensing", Status.WARN, f"the RD Licensing grace period ends in {rds['grace_days']} "
                     "day(s) and no licensing mode is set", details, remedy)
    if licensed is None:
        return Check("guest.licensing", Status.WARN, "no RD licensing mode is set (the grace period still runs)",
                     details, remedy)
    return Check("guest.licensing", Status.PASS, f"RD Licensing is {licensed}", details)


def check_drain(result: dict[str, Any]) -> Check:
    rds = result.get("rds")
    if rds is None:
        return _unreadable("guest.drain", result, "rds")
    details = dict(rds)
    if rds["drain"] in (1, 2):
        why = "until the next reboot" if rds["drain"] == 2 else "until it is turned off"
        return Check("guest.drain", Status.FAIL, f"drain mode refuses new logons {why} (TSServerDrainMode="
                     f"{rds['drain']}); disconnected users can still reconnect", details,
                     "Allow logons again with `change logon /enable` in the guest; no azrdp step changes it.")
    return Check("guest.drain", Status.PASS, "new logons are allowed", details)


def check_events(result: dict[str, Any]) -> Check:
    events = result.get("events")
    if events is None:
        return _unreadable("guest.events", result, "events")
    details = dict(events)
    hours = events["hours"]
    if events["rcm_1057"] or events["rcm_1058"] or events["schannel_36870"]:
        found = [f"{n} x {name}" for name, n in (("1057", events["rcm_1057"]), ("1058", events["rcm_1058"]),
                                                    ("36870", events["schannel_36870"])) if n]
        return Check("guest.events", Status.WARN, f"RDP certificate/key errors in the last {hours} h: "
                     f"{', '.join(found)}", details, step_remedy("machinekeys-acl", "cert"))
    if events["scm_termservice"]:
        return Check("guest.events", Status.WARN, f"TermService failed {events['scm_termservice']} "
                     f"time(s) in the last {hours} h", details, step_remedy("rdp-config"))
    if events["schannel_36871"]:
        return Check("guest.events", Status.WARN, f"Schannel 36871 (TLS credential errors) in the last "
                     f"{hours} h", details, "Check that TLS 1.2 is enabled under SCHANNEL\\Protocols; no "
                     "azrdp step changes it.")
    return Check("guest.events", Status.PASS, f"no RDP certificate, Schannel or TermService errors in "
                 f"the last {hours} h", details)


def check_reboot(result: dict[str, Any]) -> Check:
    reboot = result.get("reboot")
    if reboot is None:
        return _unreadable("guest.reboot", result, "reboot")
    if reboot["pending"]:
        return Check("guest.reboot", Status.WARN, f"a reboot is pending ({', '.join(reboot['reasons'])})",
                     dict(reboot), "Restart the VM; `azrdp fix` restarts it through ARM when a repair "
                     "step needs it.")
    return Check("guest.reboot", Status.PASS, "no reboot is pending", dict(reboot))


def guest_checks(result: dict[str, Any], *, probe_result: Any = None, rdp_port: int = DEFAULT_PORT) -> list[Check]:
    """The thirteen guest.* checks from a validated diagnose result, in registry order.

    ``probe_result`` (an :class:`azrdp.rdp.wire_probe.ProbeResult`) adds the cross-check of the
    served certificate and port; ``rdp_port`` is the port azrdp checks from outside.
    """
    checks: list[Callable[[], Check]] = [
        lambda: check_termservice(result),
        lambda: check_rdp_enabled(result),
        lambda: check_port(result, rdp_port, probe_result),
        lambda: check_nla(result),
        lambda: check_listener(result),
        lambda: check_cert(result, probe_result),
        lambda: check_machinekeys(result),
        lambda: check_firewall(result, rdp_port),
        lambda: check_sessions(result),
        lambda: check_licensing(result),
        lambda: check_drain(result),
        lambda: check_events(result),
        lambda: check_reboot(result),
    ]
    return [make() for make in checks]
