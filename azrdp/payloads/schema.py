"""THE result schema of each PowerShell payload, as Python data.

Every payload prints exactly one line ``AZRDP-RESULT:{compact json}``. The JSON object after the
marker follows the schema below for its payload id (``diagnose`` or ``repair``). Three parties
depend on it, and tests keep them in step:

* the PowerShell scripts in this folder, which build the object;
* :mod:`azrdp.payloads.result`, which parses it (and calls :func:`validate_result`);
* the ARM emulator's simulated Windows guest, which answers Run Command with objects in exactly
  this schema (and should call :func:`validate_result` on what it produces).

Conventions (the same in every payload):

* Keys are snake_case. Objects are **closed**: a key the schema does not list is an error, and a
  key marked required must be present (its value may be ``null`` only where ``nullable``).
* A section a payload could not read is ``null`` and an entry in ``errors`` names it: one failed
  check never hides the others.
* Thumbprints are 40 upper-case hex characters. Times are UTC ISO 8601 strings
  ``YYYY-MM-DDTHH:MM:SSZ``.
* Lists are bounded (``max_items``) and free text is bounded (``max_len``): the scripts truncate
  and report the full count beside the list, so the whole output stays well under Run Command's
  4,096-byte cap. :func:`worst_case_size` computes the largest line a schema allows.
* Registry DWORDs are reported as integers, ``null`` when the value is absent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from azrdp.errors import ProtocolError

RESULT_MARKER = "AZRDP-RESULT:"
"""Prefix of the one result line every payload prints."""

RESULT_LINE_BUDGET = 3700
"""The largest result line a schema may allow (bytes). The line is printed last, and Run Command
keeps the *last* 4,096 bytes, so output before it can never cut it; what matters is that the line
alone fits. Free text is made plain printable ASCII by the scripts, with the characters Windows
PowerShell 5.1's ConvertTo-Json would escape (``' " < > & \\``) replaced, so one character is
one byte and this bound is exact; the rest of the cap is head-room for the line ending."""


class ResultSchemaError(ProtocolError):
    """A payload result does not follow its schema (wrong type, missing or unknown key, ...)."""

    def __init__(self, payload_id: str, path: str, problem: str):
        super().__init__(f"{payload_id} payload result does not follow its schema at {path}: {problem}",
                         hint="The guest ran a different payload version, or its output was altered.")
        self.payload_id = payload_id
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Field:
    """One value in a payload result.

    kind: ``str`` | ``int`` | ``bool`` | ``object`` | ``array`` | ``union``.
    ``object`` lists ``fields``; ``array`` has ``items`` and ``max_items``; ``union`` picks one of
    ``variants`` (all objects) by the string value of key ``discriminator``.
    """

    kind: str
    doc: str
    required: bool = True
    nullable: bool = False
    fields: Mapping[str, Field] | None = None
    items: Field | None = None
    max_items: int | None = None
    max_len: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    discriminator: str | None = None
    variants: Mapping[str, Field] | None = field(default=None)

    def member(self, name: str) -> Field:
        """The field ``name`` of this object (KeyError when this is not an object or lacks it)."""
        if self.fields is None:
            raise KeyError(f"a {self.kind} field has no member {name!r}")
        return self.fields[name]


# -- small constructors, so the schemas below read like a table ---------------------------------

def s(doc: str, *, max_len: int = 64, null: bool = False, choices: tuple[str, ...] | None = None,
      pattern: str | None = None, opt: bool = False) -> Field:
    if choices:
        max_len = max(len(c) for c in choices)
    return Field("str", doc, required=not opt, nullable=null, max_len=max_len, choices=choices,
                 pattern=pattern)


def i(doc: str, *, null: bool = False, lo: int | None = 0, hi: int | None = 4294967295,
      opt: bool = False) -> Field:
    return Field("int", doc, required=not opt, nullable=null, minimum=lo, maximum=hi)


def b(doc: str, *, null: bool = False, opt: bool = False) -> Field:
    return Field("bool", doc, required=not opt, nullable=null)


def o(doc: str, *, null: bool = False, opt: bool = False, **fields: Field) -> Field:
    return o_of(doc, fields, null=null, opt=opt)


def o_of(doc: str, fields: Mapping[str, Field], *, null: bool = False, opt: bool = False) -> Field:
    """An object from a mapping of fields (for objects that share a set of fields)."""
    return Field("object", doc, required=not opt, nullable=null, fields=dict(fields))


def a(doc: str, items: Field, *, max_items: int, null: bool = False, opt: bool = False) -> Field:
    return Field("array", doc, required=not opt, nullable=null, items=items, max_items=max_items)


THUMBPRINT = r"^[0-9A-F]{40}$"
BINDING = r"^([0-9A-F]{40}|MALFORMED)$"
"""SSLCertificateSHA1Hash as read: a thumbprint, or MALFORMED when the value is not a 20-byte
REG_BINARY (a REG_SZ thumbprint set by hand, a wrong length): a binding RDP cannot use."""
UTC_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
VERSION = r"^\d+\.\d+\.\d+$"

# -- shared pieces ------------------------------------------------------------------------------

SERVICE_NAMES = ("TermService", "SessionEnv", "UmRdpService", "CertPropSvc", "KeyIso", "CryptSvc",
                 "MpsSvc")
"""The services diagnose reports, in this order."""

SERVICE_STATES = ("Running", "Stopped", "StartPending", "StopPending", "ContinuePending",
                  "PausePending", "Paused", "Missing")
START_TYPES = ("Automatic", "Manual", "Disabled", "Boot", "System")

SERVICE = o(
    "One Windows service.",
    name=s("Service name (not the localized display name).", choices=SERVICE_NAMES),
    state=s("Current state; `Missing` when the service does not exist.", choices=SERVICE_STATES),
    start=s("Start type; null when the service is missing.", choices=START_TYPES, null=True),
)

_CERT_FACTS: dict[str, Field] = dict(
    not_after=s("Expiry (NotAfter) in UTC.", max_len=20, pattern=UTC_TIME),
    expired=b("NotAfter is in the past (guest clock)."),
    key_readable=b("The private key could really be used (as SYSTEM: it signed or decrypted): false "
                   "means definitely broken (no key, or a CryptographicException from it), null "
                   "means it could not be tested (an API this .NET lacks): never act on null.",
                   null=True),
    self_signed=b("Issuer equals subject."),
)

CERT = o_of(
    "One certificate in Cert:\\LocalMachine\\Remote Desktop.",
    {"thumbprint": s("SHA-1 thumbprint.", max_len=40, pattern=THUMBPRINT), **_CERT_FACTS},
)

CERT_LIST_MAX = 2

BOUND_CERT = o_of(
    "The certificate SSLCertificateSHA1Hash names (its thumbprint is `bound`).",
    {"store": s("Where it was found: `rd` = Cert:\\LocalMachine\\Remote Desktop, `my` = "
                "Cert:\\LocalMachine\\My.", choices=("rd", "my")),
     **_CERT_FACTS},
    null=True,
)

RDP_KEY = o(
    "The RDP key container file MachineKeys\\f686aace6942fb7f7ceb231212eef4a4_* .",
    present=b("At least one matching file exists."),
    file=s("Its file name (the first when several).", max_len=72, null=True),
    size=i("Its size in bytes (0 suggests a corrupt key).", null=True, hi=None),
    network_service_read=b("NT AUTHORITY\\NETWORK SERVICE is allowed read."),
    system_full=b("NT AUTHORITY\\SYSTEM is allowed full control."),
)

MACHINEKEYS_DEFAULT_SDDL = "O:SYG:SYD:PAI(A;;0x12019f;;;WD)(A;;FA;;;BA)"
MACHINEKEYS_DEFAULT_DACL = "D:PAI(A;;0x12019f;;;WD)(A;;FA;;;BA)"   # what `default` compares (the owner is in sddl)
"""Windows' default security descriptor of C:\\ProgramData\\Microsoft\\Crypto\\RSA\\MachineKeys."""

MACHINEKEYS_SDDL_MAX = 136

MACHINEKEYS = o(
    "The MachineKeys folder and the RDP key container.",
    sddl=s(f"The folder's SDDL (owner, group, DACL), truncated to {MACHINEKEYS_SDDL_MAX} characters.",
           max_len=MACHINEKEYS_SDDL_MAX, null=True),
    default=b(f"The DACL equals Windows' default {MACHINEKEYS_DEFAULT_DACL} (the owner is in sddl)."),
    files=i("Number of files in the folder, counted up to 20,001 (the payloads walk no further); null "
            "when SYSTEM cannot list it (a broken folder DACL).", hi=None, null=True),
    nested=b("The folder holds a subfolder or a reparse point (stock Windows has neither there): "
             "machinekeys-acl is then held back, since a folder ACL write could propagate through "
             "it; null when the folder could not be listed to the end.", null=True),
    rdp_key=RDP_KEY,
)

_HARDENED_ACE = re.compile(r"\(A;[^;]*;(FA|GA|0x1f01ff);;;(SY|BA)\)", re.IGNORECASE)


def machinekeys_hardened(sddl: str | None) -> bool:
    """Is the MachineKeys folder's DACL SYSTEM and Administrators with full control only (SYSTEM
    among them)? Microsoft measured that form to keep RDP working and renewing its certificate
    (Azure/repair-script-library win-fix-rdp-certificate.ps1): not a fault, and never rewritten."""
    if not sddl or "D:" not in sddl:
        return False
    aces = re.findall(r"\([^)]*\)", sddl.split("D:", 1)[1])
    return bool(aces) and all(_HARDENED_ACE.fullmatch(ace) for ace in aces) and \
        any(ace.rstrip(")").endswith(";SY") for ace in aces)

SESSION_STATES = ("Active", "Disc", "Conn", "Listen", "Shadow", "Idle", "Down", "Init", "Reset",
                  "ConnQ", "Unknown")

SEAT_MODES = ("admin", "rdsh", "client", "multi", "avd")
"""admin: Windows Server without the Session Host role (2 remote sessions); rdsh: RD Session Host;
client: Windows 10/11 single-session (1 interactive session); multi: Windows 10/11 Enterprise
multi-session; avd: an Azure Virtual Desktop session host."""

SESSION = o(
    "One signed-in user's session (WTS API; `quser` only when the API cannot be used).",
    id=i("Session id.", hi=65536),
    name=s("Session name (console, rdp-tcp#3), null for a disconnected session.",
           max_len=12, null=True),
    user=s("User name, truncated to 24 characters; null when none.", max_len=24, null=True),
    state=s("Session state (WTS_CONNECTSTATE_CLASS, the same in every display language; a quser "
            "word azrdp does not know is `Unknown`).", choices=SESSION_STATES),
    idle_min=i("Idle minutes from `query user` (capped at 99999); null when unknown.", null=True,
               hi=99999),
)

SESSION_LIST_MAX = 4
SEAT_MODES_DOC = ("`admin` no Session Host role, 2 remote sessions; `rdsh` RD Session Host; `client` "
                  "Windows 10/11 single-session, 1 session; `multi` Windows 10/11 multi-session; "
                  "`avd` an AVD session host.")

# -- diagnose ------------------------------------------------------------------------------------

DIAGNOSE_SECTIONS = ("os", "services", "rdp", "listener", "cert", "machinekeys", "firewall",
                     "sessions", "rds", "events", "reboot")
"""The sections of a diagnose result; each can be null (then ``errors`` says why)."""

REBOOT_REASONS = ("cbs", "windows_update", "file_rename", "computer_rename")

ERROR = o(
    "A check or step that failed inside the guest (the rest still ran).",
    section=s("The section that failed.", choices=DIAGNOSE_SECTIONS),
    message=s("The exception message, truncated to 60 characters.", max_len=60),
)

DIAGNOSE = o(
    "Result of the read-only diagnose payload.",
    payload=s("Always `diagnose`.", choices=("diagnose",)),
    version=s("The payload's version (manifest.json).", max_len=12, pattern=VERSION),
    run_id=s("The RunId parameter echoed back (empty when none was given).", max_len=36),
    os=o("The operating system.", null=True,
         build=s("Build and revision, e.g. 20348.2340.", max_len=24, null=True),
         caption=s("Product name, truncated.", max_len=48, null=True),
         uptime_min=i("Minutes since boot.", null=True, hi=None)),
    services=a("TermService, SessionEnv, UmRdpService, CertPropSvc, KeyIso, CryptSvc, MpsSvc.",
               SERVICE, max_items=len(SERVICE_NAMES), null=True),
    rdp=o("Remote Desktop settings from the registry.", null=True,
          deny=i("fDenyTSConnections under HKLM\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server.",
                 null=True),
          deny_policy=i("fDenyTSConnections under HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows NT\\"
                        "Terminal Services (a group policy; wins over the local value).", null=True),
          port=i("RDP-Tcp PortNumber (any DWORD: one above 65535 is a misconfiguration guest.port "
                 "reports, never a result that fails its schema).", null=True),
          nla=i("RDP-Tcp UserAuthentication (1 = NLA required).", null=True),
          nla_policy=i("UserAuthentication set by policy.", null=True),
          security_layer=i("RDP-Tcp SecurityLayer (0 RDP, 1 negotiate, 2 TLS).", null=True),
          min_encryption=i("RDP-Tcp MinEncryptionLevel (4 = FIPS).", null=True)),
    listener=o("The RDP-Tcp listener.", null=True,
               state=s("State of the rdp-tcp winstation in `query session` (Listen when healthy); "
                       "null when it is not listed.", choices=SESSION_STATES, null=True),
               tcp_listening=b("Something listens on the RDP port over TCP."),
               owner=s("The process that owns the listening socket (svchost for TermService).",
                       max_len=24, null=True)),
    cert=o("The RDP certificate.", null=True,
           bound=s("SSLCertificateSHA1Hash on RDP-Tcp (an admin-chosen certificate); null when "
                   "unset (RDP then uses its self-signed certificate); `MALFORMED` when it is not a "
                   "20-byte REG_BINARY (e.g. a thumbprint set as a string).", max_len=40,
                   pattern=BINDING, null=True),
           bound_cert=BOUND_CERT,
           certs=a(f"Certificates in Cert:\\LocalMachine\\Remote Desktop (first {CERT_LIST_MAX}, "
                   "newest first).", CERT, max_items=CERT_LIST_MAX),
           total=i("Certificates in that store, including those not listed.", hi=None)),
    machinekeys=Field("object", MACHINEKEYS.doc, nullable=True, fields=MACHINEKEYS.fields),
    firewall=o("Windows Firewall.", null=True,
               service=s("MpsSvc state.", choices=SERVICE_STATES),
               profiles=a("Domain, Private and Public profiles; null (as every field below) when the "
                          "rules could not be read while `service` could (errors says why).",
                          o("One firewall profile.",
                            name=s("Profile name.", choices=("Domain", "Private", "Public")),
                            enabled=b("The profile is on."),
                            inbound=s("Default inbound action.",
                                      choices=("Block", "Allow", "NotConfigured")),
                            rules_ignored=b("AllowInboundRules is off (block all inbound: every "
                                            "allow rule is ignored).")),
                          max_items=3, null=True),
               rdp_rules=i("Inbound rules in the Remote Desktop group.", hi=None, null=True),
               rdp_rules_enabled=i("Of those, enabled allow rules.", hi=None, null=True),
               port_allowed=b("An enabled inbound Allow rule covers the RDP port over TCP in an active "
                              "profile, and no Block rule does.", null=True),
               blocked=b("An enabled inbound Block rule for every remote address covers the RDP port (it "
                         "beats every Allow; one scoped to some addresses is not counted).",
                         null=True)),
    sessions=o("Sessions and free seats.", null=True,
               list=a(f"Sessions (first {SESSION_LIST_MAX}; listeners excluded).", SESSION,
                      max_items=SESSION_LIST_MAX),
               total=i("All sessions, including those not listed.", hi=None),
               server_mode=s("Seat model: " + SEAT_MODES_DOC, choices=SEAT_MODES),
               max_instances=i("RDP-Tcp MaxInstanceCount (4294967295 = unlimited), or the policy "
                               "value when set.", null=True),
               seat_limit=i("Sessions allowed: min(2 admin, 1 client, unlimited otherwise; "
                            "max_instances)."),
               used=i("Remote sessions holding a seat (Active or Disc, not console, not 0)."),
               free=i("seat_limit - used, never negative."),
               single_session=b("fSingleSessionPerUser (a user reconnects to the same session).",
                                null=True)),
    rds=o("RD Licensing and drain mode (Win32_TerminalServiceSetting, Terminal Server key).", null=True,
          lic_mode=i("LicensingType (2 per device, 4 per user; anything else: no licensing mode set); "
                     "null when the class is missing.", null=True),
          grace_days=i("GetGracePeriodDays().DaysLeft on an RD Session Host (0: the grace period is "
                       "over); null elsewhere or when it cannot be read.", null=True),
          drain=i("TSServerDrainMode (1, 2: new logons are refused).", null=True)),
    events=o("System log event counts for the last `hours` hours (each capped at 500).", null=True,
             hours=i("Window in hours (the EventHours parameter).", lo=1, hi=168),
             rcm_1057=i("TerminalServices-RemoteConnectionManager 1057: failed to create the "
                        "self-signed certificate (Keyset does not exist)."),
             rcm_1058=i("TerminalServices-RemoteConnectionManager 1058: failed to replace the "
                        "expired self-signed certificate."),
             schannel_36870=i("Schannel 36870: TLS server credential private key not accessible."),
             schannel_36871=i("Schannel 36871: fatal error creating a TLS server credential."),
             scm_termservice=i("Service Control Manager 7000/7001/7022/7023/7024/7031/7034 "
                               "naming Remote Desktop Services."),
             last=s("The newest of those events: `<id> <time> <message>`, truncated to 64.",
                    max_len=64, null=True)),
    reboot=o("A reboot Windows is waiting for.", null=True,
             pending=b("Any reason below applies."),
             reasons=a("Why.", s("Reason.", choices=REBOOT_REASONS), max_items=4)),
    errors=a("Sections that failed (first 3).", ERROR, max_items=3),
    errors_total=i("All failures, including those not listed.", hi=None),
    error=s("Why nothing was read (`unsupported: ...` under Constrained Language Mode); null "
            "normally.", max_len=60, null=True),
)

# -- repair --------------------------------------------------------------------------------------

REPAIR_STEPS = ("rdp-config", "machinekeys-acl", "machinekeys-rename", "cert", "sessions")
"""Repair steps in the fixed order the payload runs them (whatever order they are asked in)."""

STEP_STATUSES = ("changed", "unchanged", "failed", "skipped")

ACTION = s("One change made, e.g. `deny=0`, `start:TermService`, `fw:group`.", max_len=20)
ACTIONS_MAX = 4

RDP_KEY_ACL = o(
    "The RDP key container's presence and ACL.",
    present=RDP_KEY.member("present"),
    network_service_read=RDP_KEY.member("network_service_read"),
    system_full=RDP_KEY.member("system_full"),
)

RDP_CONFIG_STATE = o(
    "Remote Desktop enablement, its services and firewall rules.", null=True,
    deny=i("Local fDenyTSConnections.", null=True),
    deny_policy=i("Policy fDenyTSConnections (null when no policy sets it).", null=True),
    port=i("RDP-Tcp PortNumber (any DWORD).", null=True),
    services=a("TermService then SessionEnv.", SERVICE, max_items=2),
    fw_rules=i("Inbound rules in the Remote Desktop group; null (as the two below) when the firewall "
               "could not be read (MpsSvc stopped, WMI refusing): deny and the services are still "
               "repaired, and the step's error says so.", hi=None, null=True),
    fw_rules_enabled=i("Of those, enabled.", hi=None, null=True),
    custom_rule=b("azrdp's own rule exists, is enabled and covers the RDP port; null when the "
                  "port is 3389 and there is no such rule.", null=True),
)

MACHINEKEYS_STATE = o(
    "MachineKeys folder ACL, file count and the RDP key container's ACL (both MachineKeys steps).",
    null=True,
    default=MACHINEKEYS.member("default"),
    files=MACHINEKEYS.member("files"),
    rdp_key=RDP_KEY_ACL,
)

CERT_STATE = o(
    "What RDP would serve, and the Remote Desktop store.", null=True,
    bound=s("SSLCertificateSHA1Hash, null when unset, `MALFORMED` when not a 20-byte REG_BINARY.",
            max_len=40, pattern=BINDING, null=True),
    total=i("Certificates in Cert:\\LocalMachine\\Remote Desktop.", hi=None),
    bad=i("Of those, expired or with an unreadable private key.", hi=None),
    current=s("Thumbprint RDP serves: the bound one when set, else the newest usable one in the "
              "store; null when none.", max_len=40, pattern=THUMBPRINT, null=True),
    current_not_after=s("Its expiry.", max_len=20, pattern=UTC_TIME, null=True),
    security_layer=i("RDP-Tcp SecurityLayer (read only: the step never lowers it).", null=True),
)

SESSIONS_STATE = o(
    "Sessions and seats.", null=True,
    total=i("All sessions (listeners excluded).", hi=None),
    disconnected=i("Sessions in state Disc.", hi=None),
    active=i("Remote sessions in state Active.", hi=None),
    mode=s("Seat model (as diagnose's sessions.server_mode).", choices=SEAT_MODES),
    seat_limit=i("Remote sessions allowed."),
    used=i("Remote sessions holding a seat."),
    free=i("Free seats."),
)

BACKUP_PATH = 80


def _step(name: str, doc: str, state: Field, info: Field) -> Field:
    return o(doc,
             name=s("The step.", choices=(name,)),
             status=s("changed | unchanged (already healthy) | failed | skipped (a precondition "
                      "was not met; `error` says which).", choices=STEP_STATUSES),
             before=state,
             after=Field(state.kind, "The same state read again after the step (null when it "
                         "could not be read).", nullable=True, fields=state.fields),
             info=info,
             reboot_required=b("This step's change takes full effect only after a reboot."),
             error=s("Why the step failed or was skipped, truncated to 60 characters.",
                     max_len=60, null=True))


REPAIR_STEP_SCHEMAS: dict[str, Field] = {
    "rdp-config": _step(
        "rdp-config", "fDenyTSConnections=0, TermService/SessionEnv running, firewall rules on.",
        RDP_CONFIG_STATE,
        o("What the step did.", null=True,
          policy_forces_deny=b("A group policy sets fDenyTSConnections=1 and will put it back: fix "
                               "the policy (the step does not override it)."),
          actions=a("Changes made.", ACTION, max_items=ACTIONS_MAX))),
    "machinekeys-acl": _step(
        "machinekeys-acl", "Restore the MachineKeys default ACL and the RDP key container's ACL.",
        MACHINEKEYS_STATE,
        o("What the step did.", null=True,
          backup=s("Folder holding `icacls /save` of the ACLs before any change (null when nothing "
                   "needed changing).", max_len=BACKUP_PATH, null=True),
          actions=a("Changes made.", ACTION, max_items=ACTIONS_MAX))),
    "machinekeys-rename": _step(
        "machinekeys-rename", "Move the definitely unusable RDP key container aside (only it).",
        MACHINEKEYS_STATE,
        o("What the step did.", null=True,
          backup=s("Folder the RDP key container file(s) were moved into (kept, locked to SYSTEM "
                   "and Administrators); null when nothing moved.", max_len=BACKUP_PATH,
                   null=True),
          moved=i("RDP key container files moved.", hi=None),
          failed=i("Files that could not be moved (left in place).", hi=None))),
    "cert": _step(
        "cert", "Move expired/broken RDP certificates to azrdp-backup, let Windows make one.",
        CERT_STATE,
        o("What the step did.", null=True,
          removed=a("Thumbprints moved from the Remote Desktop store to Cert:\\LocalMachine\\"
                    "azrdp-backup (first 2; undo: move them back).",
                    s("Thumbprint.", max_len=40, pattern=THUMBPRINT), max_items=2),
          removed_total=i("All certificates removed.", hi=None),
          cleared_binding=b("SSLCertificateSHA1Hash pointed to a missing, expired or unusable "
                            "certificate and was removed."),
          kept_bound=b("A valid admin-bound certificate was left in place."),
          restarted=a("Services restarted, in order (only when RDP's certificate had to change).",
                      s("Service.", choices=SERVICE_NAMES), max_items=2))),
    "sessions": _step(
        "sessions", "Log off sessions disconnected at the start (active ones only when asked).",
        SESSIONS_STATE,
        o("What the step did.", null=True,
          logged_off=a("Session ids logged off (first 4).", i("Session id.", hi=65536),
                       max_items=4),
          logged_off_total=i("All sessions logged off.", hi=None),
          seats_freed=i("after.free - before.free, never negative."),
          include_active=b("Active sessions were included (LogOffActive=true)."),
          kept_recent=i("Sessions disconnected at the start that were kept: a cert step's TermService "
                        "restart disconnected them in the last 24 h (their users were working; "
                        "logged off only with LogOffActive=true).", hi=65536))),
}

REPAIR = o(
    "Result of the repair payload.",
    payload=s("Always `repair`.", choices=("repair",)),
    version=s("The payload's version (manifest.json).", max_len=12, pattern=VERSION),
    run_id=s("The RunId parameter echoed back.", max_len=36),
    steps=a("The steps asked for, in the fixed order of REPAIR_STEPS.",
            Field("union", "One step, by name.", discriminator="name",
                  variants=REPAIR_STEP_SCHEMAS),
            max_items=len(REPAIR_STEPS)),
    changed=b("At least one step changed something."),
    reboot_pending=b("Windows had a reboot pending before the repair (same sources as diagnose)."),
    reboot_required=b("A step needs a reboot, or Windows already had one pending."),
    termservice=s("TermService's state at the end (the payload starts it again if it stopped); "
                  "null when the payload did not run.", choices=SERVICE_STATES, null=True),
    error=s("Why no step ran (no -Steps; `unsupported: ...` under Constrained Language Mode).",
            max_len=60, null=True),
)

# -- rescue: the offline repair of a Windows disk attached to a rescue VM ------------------------

RESCUE_STEPS = ("rdp-enable", "services", "rdp-tcp", "cert", "machinekeys", "firewall")
"""The offline steps, in their fixed order (azrdp/payloads/rescue.ps1)."""

RESCUE_SERVICES = ("TermService", "SessionEnv", "UmRdpService", "WindowsAzureGuestAgent", "RdAgent")

RESCUE_STATES: dict[str, Field] = {
    "rdp-enable": o("Remote Desktop switch in the offline hives.", null=True,
                    deny=i("ControlSet\\Control\\Terminal Server fDenyTSConnections (null: absent).", null=True),
                    policy_deny=i("SOFTWARE\\Policies\\...\\Terminal Services fDenyTSConnections (null: absent).",
                                  null=True)),
    "services": o("Start values (ControlSet\\Services\\NAME\\Start) of the RDP services and the VM agent.",
                  null=True,
                  disabled=a("Services whose Start is 4 (Disabled).", s("Service.", choices=RESCUE_SERVICES),
                             max_items=len(RESCUE_SERVICES)),
                  missing=a("Services not installed on the disk.", s("Service.", choices=RESCUE_SERVICES),
                            max_items=len(RESCUE_SERVICES))),
    "rdp-tcp": o("WinStations\\RDP-Tcp values.", null=True,
                 port=i("PortNumber.", null=True), security_layer=i("SecurityLayer.", null=True),
                 min_encryption=i("MinEncryptionLevel.", null=True),
                 enabled=i("fEnableWinStation (null: absent, which means enabled).", null=True)),
    "cert": o("The bound certificate and the Remote Desktop store in the offline SOFTWARE hive.", null=True,
              bound=s("SSLCertificateSHA1Hash as hex (null: none; `MALFORMED` when not a 20-byte REG_BINARY).",
                      max_len=40, pattern=BINDING, null=True),
              bound_usable=b("The bound certificate is in the LocalMachine My or Remote Desktop store and "
                             "not expired (false when MALFORMED).", null=True),
              store=i("Certificates in the Remote Desktop store.", hi=999)),
    "machinekeys": o("The MachineKeys folder on the offline volume.", null=True,
                     default=b("The folder's DACL is Windows' default (the owner does not count)."),
                     rdp_key=b("The RDP key container file is there."),
                     network_service_read=b("NETWORK SERVICE may read the RDP key container (null: SYSTEM "
                                            "may not read its ACL, recorded UNREADABLE).", null=True)),
    "firewall": o("Remote Desktop rules in the offline FirewallPolicy\\FirewallRules.", null=True,
                  rules=i("RemoteDesktop-* rules found.", hi=99), enabled=i("Of them, Active=TRUE.", hi=99)),
}


def _rescue_step(name: str, doc: str) -> Field:
    state = RESCUE_STATES[name]
    return o(doc,
             name=s("The step.", choices=(name,)),
             status=s("changed | unchanged | failed | skipped.", choices=STEP_STATUSES),
             before=state,
             after=Field(state.kind, "The same state read again after the step.", nullable=True,
                         fields=state.fields),
             actions=a("Changes made, e.g. `deny=0`, `start:WindowsAzureGuestAgent`, `store:moved=2`.",
                       s("One change made.", max_len=32), max_items=ACTIONS_MAX),
             error=s("Why the step failed or was skipped, truncated to 60 characters.", max_len=60, null=True))


RESCUE_STEP_SCHEMAS: dict[str, Field] = {
    "rdp-enable": _rescue_step("rdp-enable", "fDenyTSConnections=0 (local and policy value)."),
    "services": _rescue_step("services", "TermService/SessionEnv/UmRdpService Manual, the VM agent Automatic, "
                                          "where they were Disabled."),
    "rdp-tcp": _rescue_step("rdp-tcp", "PortNumber, SecurityLayer, MinEncryptionLevel in range; the listener enabled."),
    "cert": _rescue_step("cert", "Clear a binding to a missing or expired certificate; move the Remote Desktop "
                                 "store's entries aside (exported first)."),
    "machinekeys": _rescue_step("machinekeys", "MachineKeys default ACL (every ACL and owner saved first, inherited "
                                               "ACEs of key files made explicit); the ACEs the disk's Windows build "
                                               "ships added to the RDP key container."),
    "firewall": _rescue_step("firewall", "Remote Desktop firewall rules Active=TRUE."),
}

RESCUE = o(
    "Result of the offline rescue payload.",
    payload=s("Always `rescue`.", choices=("rescue",)),
    version=s("The payload's version (manifest.json).", max_len=12, pattern=VERSION),
    run_id=s("The RunId parameter echoed back.", max_len=36),
    volume=s("Drive letter of the attached Windows volume, e.g. `F:` (null: none found).", max_len=2,
             pattern=r"^[A-Z]:$", null=True),
    found=s("ok | none (no offline Windows volume) | several (more than one: azrdp does not guess) | "
            "locked (BitLocker).", choices=("ok", "none", "several", "locked")),
    computer_name=s("ComputerName in the offline SYSTEM hive.", max_len=15, null=True),
    control_set=s("The control set Windows boots (Select\\Current), e.g. ControlSet001.", max_len=13,
                  pattern=r"^ControlSet\d{3}$", null=True),
    backup=s("Backup folder on the offline volume (exports, saved ACLs).", max_len=BACKUP_PATH, null=True),
    hives_unloaded=b("Both temporary hives were unloaded (true also when none was loaded)."),
    steps=a("The steps, in the fixed order of RESCUE_STEPS.",
            Field("union", "One step, by name.", discriminator="name", variants=RESCUE_STEP_SCHEMAS),
            max_items=len(RESCUE_STEPS)),
    changed=b("At least one step changed something."),
    error=s("What stopped the payload before or between steps, truncated to 80 characters.", max_len=80, null=True),
)

SCHEMAS: dict[str, Field] = {"diagnose": DIAGNOSE, "repair": REPAIR, "rescue": RESCUE}
"""Payload id -> the schema of its result object."""


# -- validation ----------------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def _check(payload_id: str, spec: Field, value: Any, path: str) -> None:
    def fail(problem: str) -> NoReturn:
        raise ResultSchemaError(payload_id, path, problem)

    if value is None:
        if not spec.nullable:
            fail("null is not allowed")
        return
    kind = spec.kind
    if kind == "union":
        if not isinstance(value, dict):
            fail(f"expected object, got {_type_name(value)}")
        tag = value.get(spec.discriminator or "")
        variant = (spec.variants or {}).get(tag) if isinstance(tag, str) else None
        if variant is None:
            fail(f"{spec.discriminator} must be one of {sorted(spec.variants or {})}, got {tag!r}")
        _check(payload_id, variant, value, path)
        return
    if kind == "bool":
        if not isinstance(value, bool):
            fail(f"expected bool, got {_type_name(value)}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"expected int, got {_type_name(value)}")
        if spec.minimum is not None and value < spec.minimum:
            fail(f"{value} is below {spec.minimum}")
        if spec.maximum is not None and value > spec.maximum:
            fail(f"{value} is above {spec.maximum}")
    elif kind == "str":
        if not isinstance(value, str):
            fail(f"expected str, got {_type_name(value)}")
        if spec.choices is not None and value not in spec.choices:
            fail(f"{value!r} is not one of {list(spec.choices)}")
        if spec.max_len is not None and len(value) > spec.max_len:
            fail(f"longer than {spec.max_len} characters")
        if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
            fail(f"{value!r} does not match {spec.pattern}")
    elif kind == "array":
        if not isinstance(value, list):
            fail(f"expected array, got {_type_name(value)}")
        if spec.max_items is not None and len(value) > spec.max_items:
            fail(f"{len(value)} items, at most {spec.max_items} allowed")
        assert spec.items is not None
        for index, item in enumerate(value):
            _check(payload_id, spec.items, item, f"{path}[{index}]")
    elif kind == "object":
        if not isinstance(value, dict):
            fail(f"expected object, got {_type_name(value)}")
        fields = spec.fields or {}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            fail(f"unknown key(s) {unknown}")
        for name, sub in fields.items():
            if name not in value:
                if sub.required:
                    raise ResultSchemaError(payload_id, f"{path}.{name}", "required key is missing")
                continue
            _check(payload_id, sub, value[name], f"{path}.{name}")
    else:  # pragma: no cover - a schema bug, not a payload bug
        raise ValueError(f"unknown schema kind {kind!r}")


def validate_result(payload_id: str, obj: Any) -> dict[str, Any]:
    """Check ``obj`` against the result schema of ``payload_id``; return it unchanged.

    Raises :class:`ResultSchemaError` (a :class:`~azrdp.errors.ProtocolError`) naming the JSON
    path and the problem on the first mismatch, and for the repair payload also when the steps are
    not in the fixed order or repeat.
    """
    try:
        spec = SCHEMAS[payload_id]
    except KeyError:
        raise ValueError(f"no result schema for payload {payload_id!r}; known: {sorted(SCHEMAS)}") from None
    _check(payload_id, spec, obj, "$")
    if payload_id in ("repair", "rescue"):
        order = REPAIR_STEPS if payload_id == "repair" else RESCUE_STEPS
        names = [step["name"] for step in obj["steps"]]
        ordered = [name for name in order if name in names]
        if names != ordered:
            raise ResultSchemaError(payload_id, "$.steps",
                                    f"steps {names} must appear once each in the order {list(order)}")
    return obj


# -- size accounting -----------------------------------------------------------------------------

def _largest(spec: Field) -> Any:
    """The value of ``spec`` whose compact JSON is longest (plain ASCII text)."""
    if spec.kind == "union":
        return max((_largest(v) for v in (spec.variants or {}).values()),
                   key=lambda value: len(json.dumps(value, separators=(",", ":"))))
    if spec.kind == "bool":
        return False
    if spec.kind == "int":
        return spec.maximum if spec.maximum is not None else 2**31 - 1
    if spec.kind == "str":
        return "x" * (spec.max_len or 0)
    if spec.kind == "array":
        assert spec.items is not None
        if spec.items.kind == "union":  # each variant once (repair steps never repeat)
            variants = [_largest(v) for v in (spec.items.variants or {}).values()]
            return variants[: spec.max_items or 0]
        return [_largest(spec.items)] * (spec.max_items or 0)
    return {name: _largest(sub) for name, sub in (spec.fields or {}).items()}


def worst_case_size(payload_id: str) -> int:
    """Bytes of the longest result line (marker included) the schema of ``payload_id`` allows,
    counting every character of free text as one byte."""
    return len(RESULT_MARKER) + len(json.dumps(_largest(SCHEMAS[payload_id]), separators=(",", ":")))
