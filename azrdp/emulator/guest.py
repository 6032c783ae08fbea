"""The simulated Windows guest behind each emulated VM.

State: services, the Terminal Server registry values, the certificates in the Remote Desktop
store, MachineKeys (folder ACL and the RDP key container), Windows Firewall, sessions, an event
log, a pending reboot, and the VM agent. Behaviour: what Windows does at boot and when
TermService/SessionEnv start (renew an expired or missing self-signed certificate, which needs a
writable MachineKeys folder, and log 1057/1058 when it cannot), whether the RDP listener accepts
connections, whether TLS can use the certificate's private key (Schannel 36870 when not), and
what happens to sessions on reboot.

How the guest answers the payloads azrdp ships is in :mod:`azrdp.emulator.guest_payloads`.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from azrdp.payloads.schema import MACHINEKEYS_DEFAULT_DACL, MACHINEKEYS_DEFAULT_SDDL

RDP_KEY_PREFIX = "f686aace6942fb7f7ceb231212eef4a4"
"""The RDP self-signed certificate's key container file name prefix in MachineKeys."""

BROKEN_MACHINEKEYS_SDDL = "O:BAG:SYD:PAI(A;;FA;;;BA)"
BROAD_SIDS = ("WD", "AU", "BU")   # Everyone, Authenticated Users, Users: every local account
"""A damaged folder ACL seen in the field: owner changed, Everyone's read/write removed."""
UNLISTABLE_MACHINEKEYS_SDDL = "O:SYG:SYD:PAI(A;;FA;;;S-1-5-21-1004336348-1177238915-682003330-500)"
"""A folder ACL "locked down" to one local administrator account: SYSTEM cannot even list it."""

SELF_SIGNED_VALIDITY = timedelta(days=182)  # Windows makes the RDP certificate valid for 6 months
ADMIN_MODE_SEATS = 2                        # Windows Server without the Session Host role
CLIENT_SEATS = 1                            # Windows 10/11 single-session: one interactive session
LOGOFF_SECONDS = 2.0                        # logoff.exe returns before the session is gone (unverified: how long)
EVENT_CAP = 500
RDP_FIREWALL_RULES = ("RemoteDesktop-UserMode-In-TCP", "RemoteDesktop-UserMode-In-UDP",
                      "RemoteDesktop-Shadow-In-TCP")


@functools.lru_cache(maxsize=1)
def _rsa_key():
    """One RSA-2048 key per process (making one takes ~0.1 s; fleets have hundreds of VMs).
    Every certificate still has its own serial number, dates and thumbprint."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.lru_cache(maxsize=1)
def _ec_key():
    """One ECDSA P-256 key per process, for admin-installed ECC certificates."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Certificate:
    subject_cn: str
    not_before: datetime
    not_after: datetime
    store: str = "rd"             # rd = Cert:\LocalMachine\Remote Desktop, my = Cert:\LocalMachine\My,
                                  # backup = Cert:\LocalMachine\azrdp-backup (RDP never reads it)
    self_signed: bool = True
    key_alg: str = "rsa"          # rsa | ecdsa (the key behind an admin-installed certificate)
    provider: str = "capi"        # capi (RSA\MachineKeys) | cng
    decrypt_only: bool = False    # a CNG key whose usage allows decryption only: it refuses to sign
    key_ok: bool = True           # an admin certificate's own key container works (self-signed: the RDP container)
    key_denied: bool = False      # an admin certificate's key container refuses SYSTEM (CNG NTE_PERM, CAPI NTE_BAD_KEYSET)
    serial: int = 0
    _material: tuple[bytes, bytes, bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def make(cls, subject_cn: str, not_before: datetime, not_after: datetime, *, store: str = "rd",
             key_alg: str = "rsa") -> Certificate:
        """A certificate whose serial number, dates and key are fixed now. An RSA one is signed when
        its bytes are first needed (its thumbprint, a TLS handshake): signing takes 1-3 ms, which
        made a 10,000-VM fleet take half a minute to build. RSASSA-PKCS1-v1_5 signatures are
        deterministic (RFC 8017, section 8.2), so the bytes are the same whenever they are made
        (and in a copy of the guest's disk); an ECDSA signature is not, so that one is signed now."""
        from cryptography import x509

        cert = cls(subject_cn, not_before, not_after, store=store, key_alg=key_alg,
                   serial=x509.random_serial_number())
        if key_alg != "rsa":
            cert._materialise()
        else:
            _rsa_key()   # the key (0.1 s, once per process) and cryptography's imports are made now, not in a handshake
        return cert

    def _materialise(self) -> tuple[bytes, bytes, bytes]:
        if self._material is None:
            self._material = _sign(self)
        return self._material

    @property
    def der(self) -> bytes:
        return self._materialise()[0]

    @property
    def cert_pem(self) -> bytes:
        return self._materialise()[1]

    @property
    def key_pem(self) -> bytes:
        return self._materialise()[2]

    @property
    def thumbprint(self) -> str:
        return hashlib.sha1(self.der).hexdigest().upper()  # noqa: S324 - Windows' thumbprint

    def expired(self, now: datetime) -> bool:
        return self.not_after <= now


def _sign(cert: Certificate) -> tuple[bytes, bytes, bytes]:
    """DER, PEM and the key's PEM of the self-signed X.509 certificate ``cert`` describes."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    rsa_key = cert.key_alg == "rsa"
    key = _rsa_key() if rsa_key else _ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cert.subject_cn)])
    signed = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
              .public_key(key.public_key()).serial_number(cert.serial)
              .not_valid_before(cert.not_before).not_valid_after(cert.not_after)
              .add_extension(x509.KeyUsage(digital_signature=not rsa_key, content_commitment=False,
                                           key_encipherment=rsa_key, data_encipherment=rsa_key,
                                           key_agreement=False, key_cert_sign=False, crl_sign=False,
                                           encipher_only=False, decipher_only=False), critical=False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(key, hashes.SHA256()))
    return (signed.public_bytes(serialization.Encoding.DER), signed.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


@dataclass
class Service:

    name: str
    state: str = "Running"      # Running | Stopped | StopPending | StartPending | Missing
    start: str | None = "Manual"
    hang: str | None = None     # "stop": a stop request leaves it in StopPending for good (a fault)


@dataclass
class KeyFile:
    """The RDP key container file MachineKeys\\f686aace6942fb7f7ceb231212eef4a4_<machine GUID>."""

    name: str
    size: int = 2_040
    network_service_read: bool = True
    system_full: bool = True
    inherited_only: bool = False  # every ACE inherited from the folder (after `icacls /reset /t`)
    damaged: bool = False         # not empty, SYSTEM opens it, yet the key in it is unreadable (NTE_BAD_KEYSET)
    # The per-build ACEs Windows ships beside those two (Azure/repair-script-library
    # win-fix-rdp-certificate.ps1, Get-RequiredContainerAce): NT SERVICE\SessionEnv full control
    # from build 17763, Administrators read before it. A stock container holds its build's one.
    session_env_full: bool = True
    admins_read: bool = True
    # SYSTEM may read the container's ACL (READ_CONTROL). False: a Deny of it, under another owner
    # (an owner always gets READ_CONTROL: Learn "Access control lists"/owner rights), so Get-Acl
    # throws UnauthorizedAccessException ("Attempted to perform an unauthorized operation.").
    acl_readable: bool = True

    def grant_as_shipped(self, build: str) -> bool:
        """change.ps1's Grant-RdpKeyAccess: the ACEs build ``build`` ships are added where missing
        (an Allow; a Deny for the same account removed), nothing else is touched. Returns whether
        an ACL changed; raises PermissionError when SYSTEM cannot read the ACL (Get-Acl throws)."""
        if not self.acl_readable:
            raise PermissionError("Attempted to perform an unauthorized operation.")
        per_build = "session_env_full" if int(build.split(".", 1)[0] or 0) >= 17763 else "admins_read"
        wanted = ("network_service_read", "system_full", per_build)
        missing = [name for name in wanted if not getattr(self, name)]
        for name in missing:
            setattr(self, name, True)
        return bool(missing)

    @property
    def corrupt(self) -> bool:
        return self.size == 0

    @property
    def unusable(self) -> bool:
        """No key can be used from it: empty, or damaged inside."""
        return self.corrupt or self.damaged


@dataclass
class MachineKeys:
    path: str = r"C:\ProgramData\Microsoft\Crypto\RSA\MachineKeys"
    sddl: str = MACHINEKEYS_DEFAULT_SDDL
    other_files: int = 6          # the VM agent's transport key, IIS, ... (never the RDP key)
    rdp_key: KeyFile | None = None  # the live container f686aace..._<MachineGuid>, the one Windows opens
    stale_rdp_keys: list[KeyFile] = field(default_factory=list)  # f686aace..._<an earlier MachineGuid> (a cloned image)
    backups: list[str] = field(default_factory=list)
    inherited_only_files: int = 0  # other key files whose ACEs are all inherited from the folder
    empty_dacl_files: int = 0      # other key files left with an empty DACL: nobody can read them
    explicit_broad_files: int = 0  # key files with an explicit ACE for Everyone/Users: any local user reads them
    subfolders: int = 0            # directories (a junction too) inside: none on stock Windows; any local user may add one
    propagated_into: int = 0       # subfolders a folder ACL write's propagation walked into (a junction's target too)

    @property
    def dacl(self) -> str:
        return "D:" + self.sddl.split("D:", 1)[1] if "D:" in self.sddl else ""

    def _inheritable(self) -> list[tuple[str, str]]:
        """(rights, SID) of the folder's inheritable Allow ACEs (OI/CI): what inherited-only files hold."""
        return [(rights, sid) for flags, rights, sid in re.findall(r"\(A;([^;]*);([^;]*);;;([^)]*)\)", self.dacl)
                if "OI" in flags or "CI" in flags]

    @property
    def exposed_files(self) -> int:
        """Key files any local user can read: a broad ACE of their own, or one inherited from the folder."""
        inherited = self.inherited_only_files + (1 if self.rdp_key and self.rdp_key.inherited_only else 0)
        broad = any(sid in BROAD_SIDS for _, sid in self._inheritable())
        return self.explicit_broad_files + (inherited if broad else 0)

    def set_folder_sddl(self, sddl: str) -> None:
        """Set-Acl on the folder (SetNamedSecurityInfo) re-propagates inheritance to every child:
        a file whose ACEs were only inherited keeps none when the new folder ACEs are not
        inheritable, as in Windows' default MachineKeys ACL (Learn: SetNamedSecurityInfo, "...
        propagates any inheritable ACEs to existing child objects"; "Automatic Propagation of
        Inheritable ACEs")."""
        self.sddl = sddl
        # The propagation walks every child, a planted junction too (unverified whether
        # SetNamedSecurityInfo follows a mount point there: docs/emulator.md).
        self.propagated_into += self.subfolders
        if "OICI" in sddl.split("D:", 1)[-1]:
            return                  # inheritable ACEs: children inherit them
        self.empty_dacl_files += self.inherited_only_files
        self.inherited_only_files = 0
        key = self.rdp_key
        if key is not None and key.inherited_only:
            key.inherited_only = False
            key.network_service_read = key.system_full = False

    def make_inherited_explicit(self) -> int:
        """Protect-InheritedKeyAces on each such file: protected (Learn: ObjectSecurity.
        SetAccessRuleProtection), its inherited ACEs become its own except the broad ones
        (Everyone, Authenticated Users, Users), SYSTEM and Administrators full control when none is
        left; a later folder change no longer touches it. Returns files changed."""
        count = self.inherited_only_files + (1 if self.rdp_key and self.rdp_key.inherited_only else 0)
        self.inherited_only_files = 0
        kept = [(rights, sid) for rights, sid in self._inheritable() if sid not in BROAD_SIDS]
        if self.rdp_key is not None and self.rdp_key.inherited_only:
            self.rdp_key.inherited_only = False
            self.rdp_key.network_service_read = any(sid in ("NS", "S-1-5-20") for _, sid in kept)
            self.rdp_key.system_full = not kept or any(sid in ("SY", "BA") and rights in ("FA", "GA") for rights, sid in kept)
        return count

    @property
    def default(self) -> bool:
        """repair.ps1's `default`: the DACL is Windows' (the owner does not count)."""
        return self.dacl == MACHINEKEYS_DEFAULT_DACL

    def add_system_list_ace(self) -> None:
        """Add-SystemListAce (change.ps1): one non-inheritable ACE that lets SYSTEM list the folder
        (ListDirectory, ReadAttributes, ReadPermissions = 0x20081), added to the DACL as it is."""
        self.sddl += "(A;;0x20081;;;SY)"

    @property
    def listable(self) -> bool:
        """Can SYSTEM list the folder? Its token holds SYSTEM, Administrators and Everyone; as the
        owner it gets only READ_CONTROL and WRITE_DAC implicitly, not FILE_LIST_DIRECTORY, and
        PowerShell does not enable SeBackupPrivilege (Learn: "SID strings", "Access control
        lists": owner rights). Any Allow ACE for those SIDs is taken to grant listing."""
        aces = re.findall(r"\(([^)]*)\)", self.sddl.split("D:", 1)[-1])
        return any(ace.startswith("A;") and ace.rsplit(";", 1)[-1] in ("SY", "BA", "WD") for ace in aces)

    @property
    def writable(self) -> bool:
        """Can Windows create a new key container here? With the default DACL (Everyone may add
        files), or SYSTEM's own grant: a folder hardened to SYSTEM and Administrators renews the
        RDP certificate (measured: Azure/repair-script-library win-fix-rdp-certificate.ps1).
        Administrators alone (BROKEN_MACHINEKEYS_SDDL) is modelled as not (unverified)."""
        return self.default or bool(re.search(r"\(A;[^;]*;(FA|GA|0x1f01ff|0x12019f);;;SY\)", self.dacl, re.IGNORECASE))

    @property
    def broad_grant(self) -> bool:
        """Does Everyone, Authenticated Users or Users hold more on the folder than Windows' default
        Everyone grant 0x12019f (read, list, create files and folders)? A forum fix's Everyone:F."""
        within = ("0x12019f", "0x120089", "0x1200a9", "FR", "GR")
        return any(sid in BROAD_SIDS and rights.lower() not in {w.lower() for w in within}
                   for rights, sid in re.findall(r"\(A;[^;]*;([^;]*);;;([^)]*)\)", self.dacl))

    @property
    def files(self) -> int:
        return self.other_files + len(self.stale_rdp_keys) + (1 if self.rdp_key else 0)


@dataclass
class BackupRoot:
    r"""C:\ProgramData\azrdp. ProgramData lets every local user create folders (its inherited
    ACL: Users may create folders and files), so someone may have made it first: as a junction
    (a reparse point to elsewhere) or owned by themselves."""

    owner: str = "S-1-5-18"       # SYSTEM when absent or made by azrdp
    reparse_point: bool = False
    protected: bool = False       # azrdp's SYSTEM/Administrators-only DACL is on it
    # disconnected-by-azrdp.txt: the sign-ins (session id, user, logon time) a cert step's
    # TermService restart disconnected, with the guest time it was written (repair.ps1's
    # Save-DisconnectedRecord); a file on disk, so it outlives the payload and a reboot.
    disconnected: list[tuple[tuple[int, str | None, float | None], float]] = field(default_factory=list)

    def take(self) -> None:
        """change.ps1's Confirm-ProtectedFolder: a reparse point or a folder owned by anyone but
        SYSTEM or Administrators is refused (raises ValueError with the payload's message, nothing
        changed); otherwise SYSTEM's, protected (Learn: FileAttributes.ReparsePoint,
        FileSystemSecurity.GetOwner)."""
        if self.reparse_point:
            raise ValueError("backup folder is a reparse point; nothing was changed")
        if self.owner not in ("S-1-5-18", "S-1-5-32-544"):
            raise ValueError("backup folder has a foreign owner; nothing was changed")
        self.owner, self.protected = "S-1-5-18", True


@dataclass
class FirewallProfile:
    name: str
    enabled: bool = True
    inbound: str = "Block"
    rules_ignored: bool = False   # "block all incoming connections"


@dataclass
class FirewallRule:
    name: str
    enabled: bool = True
    port: int | None = 3389       # None: LocalPort Any
    protocol: str = "TCP"
    group: str = "Remote Desktop"
    action: str = "Allow"         # Allow | Block
    profile: str = "Any"          # Any, or the profiles it applies to ("Domain", "Domain, Private")
    program: str | None = None    # application filter (the built-in RDP rules: svchost.exe), None = Any
    service: str | None = None    # service filter (the built-in RDP rules: termservice), None = Any
    remote: str = "Any"           # RemoteAddress: Any, or addresses/prefixes ("198.51.100.0/24, 192.0.2.7")


def _remote_covers(remote: str, source: str | None, *, unknown: bool) -> bool:
    """Does a rule's RemoteAddress ("Any", or addresses and prefixes separated by commas) cover
    ``source``? ``unknown`` answers for a scoped rule when the source is not known; a keyword
    such as LocalSubnet covers no Internet source."""
    if remote == "Any":
        return True
    if source is None:
        return unknown
    address = ipaddress.ip_address(source)
    for part in remote.split(","):
        try:
            if address in ipaddress.ip_network(part.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


@dataclass
class Session:
    id: int
    name: str | None
    user: str | None
    state: str                    # Active | Disc | Conn ...
    idle_min: int | None = None
    gone_at: float | None = None  # logging off: the session disappears at this guest time
    logon_at: float | None = None         # WTSINFOW LogonTime (guest time); None: not known
    disconnected_at: float | None = None  # WTSINFOW DisconnectTime (guest time) of a Disc session

    @property
    def key(self) -> tuple[int, str | None, float | None]:
        """One sign-in (repair.ps1's Get-SessionKey): ids are reused, the logon time tells them apart."""
        return (self.id, self.user, self.logon_at)


@dataclass
class Event:
    at: float                     # simulated second it was logged
    key: str                      # rcm_1057 | rcm_1058 | schannel_36870 | schannel_36871 | scm_termservice
    event_id: int
    message: str


EVENT_IDS = {"rcm_1057": 1057, "rcm_1058": 1058, "schannel_36870": 36870, "schannel_36871": 36871,
             "scm_termservice": 7023}
EVENT_MESSAGES = {
    "rcm_1057": "The RD Session Host Server has failed to create a new self signed certificate. Keyset does not exist",
    "rcm_1058": "The RD Session Host Server has failed to replace the expired self signed certificate. Access is denied.",
    "schannel_36870": "A fatal error occurred when attempting to access the TLS server credential private key. 0x8009030D",
    "schannel_36871": "A fatal error occurred while creating a TLS server credential.",
    "scm_termservice": "The Remote Desktop Services service terminated with the following error.",
}


class WindowsGuest:
    """One Windows guest (a Windows Server 2022 Datacenter unless a profile says otherwise). All
    methods run under the emulator's state lock."""

    def __init__(self, computer_name: str, *, now: Callable[[], float], wall: Callable[[], datetime],
                 machine_guid: str):
        self.computer_name = computer_name
        self._now = now            # simulated seconds (event times, uptime)
        self._wall = wall          # real UTC time (certificate validity is judged by real clients)
        self.machine_guid = machine_guid
        self.caption = "Microsoft Windows Server 2022 Datacenter"
        self.build = "20348.2340"
        self.seat_mode = "admin"      # admin | rdsh | client | multi | avd (see schema.SEAT_MODES)
        self.windows = "2022"         # the profile (azrdp.emulator.profiles): --windows, --locale, role
        self.locale = "en-US"
        self.role: str | None = None  # None | dc | avd
        self.powershell = "5.1"
        self.wts_api = True           # False: WTSEnumerateSessions cannot be used; the payload falls back to quser
        self.dotnet: tuple[int, ...] = (4, 8)          # .NET Framework version (4.5 on an unpatched 2012 R2 image)
        self.payload_elapsed = 0.0    # seconds a running payload has spent (its sleeps and waits)
        self.up = True
        self.booted_at = now() - 3 * 86_400
        self.services: dict[str, Service] = {
            "TermService": Service("TermService", "Running", "Manual"),
            "SessionEnv": Service("SessionEnv", "Running", "Manual"),
            "UmRdpService": Service("UmRdpService", "Running", "Manual"),
            "CertPropSvc": Service("CertPropSvc", "Running", "Manual"),
            "KeyIso": Service("KeyIso", "Running", "Manual"),
            "CryptSvc": Service("CryptSvc", "Running", "Automatic"),
            "MpsSvc": Service("MpsSvc", "Running", "Automatic"),
            "WindowsAzureGuestAgent": Service("WindowsAzureGuestAgent", "Running", "Automatic"),
        }
        # HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server (+ WinStations\RDP-Tcp) and the
        # policy key HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services (None = absent).
        self.registry: dict[str, int | None] = {
            "fDenyTSConnections": 0, "policy.fDenyTSConnections": None,
            "PortNumber": 3389, "UserAuthentication": 1, "policy.UserAuthentication": None,
            "SecurityLayer": 2, "MinEncryptionLevel": 2,
            "MaxInstanceCount": 4294967295, "policy.MaxInstanceCount": None,
            "fSingleSessionPerUser": 1, "TSServerDrainMode": None,
        }
        # RD Licensing (Win32_TerminalServiceSetting): LicensingType 5 = none set (a server without
        # the Session Host role); grace_days: GetGracePeriodDays on a Session Host (0 = over).
        self.licensing_type = 5
        self.grace_days: int | None = None
        self.bound_thumbprint: str | None = None   # RDP-Tcp SSLCertificateSHA1Hash: its data (hex, or the text)
        self.bound_kind = "Binary"   # its registry type: Binary (20 bytes, as Win32_TSGeneralSetting writes it) or String
        self.certificates: list[Certificate] = []
        self.machinekeys = MachineKeys()
        self.firewall_profiles = [FirewallProfile("Domain"), FirewallProfile("Private"), FirewallProfile("Public")]
        self.firewall_rules = [FirewallRule(name) for name in RDP_FIREWALL_RULES]
        self.network_profile = "Public"   # the category of the NIC's network (Get-NetConnectionProfile)
        self.firewall_readable = True     # False: the NetSecurity cmdlets throw (WMI refused; unverified: MpsSvc stopped)
        self.ts_settings_answer = True    # False: Win32_TerminalServiceSetting times out or errs (a hung TS WMI provider)
        self.sessions: list[Session] = []
        self.events: list[Event] = []
        self.reboot_reasons: list[str] = []
        self.backup_folders: dict[str, list[str]] = {}   # azrdp's %ProgramData%\azrdp\backup\<time>: files
        self.backup_root = BackupRoot()
        self.self_signed_cert_store: str | None = None   # WinStations\SelfSignedCertStore (None = absent)
        self.attached_volumes: list[WindowsGuest] = []  # offline Windows installations on data disks
        self.sac_enabled = True   # EMS/SAC on COM1 (Azure images); off: the VM agent writes its health report there
        self._reset_sessions()
        issued = self.real_now() - timedelta(days=30)
        self.install_self_signed(issued, issued + SELF_SIGNED_VALIDITY)

    # -- time ----------------------------------------------------------------------------------
    def real_now(self) -> datetime:
        return self._wall()

    def sim_now(self) -> float:
        return self._now()

    # -- events ----------------------------------------------------------------------------------
    def log(self, key: str, *, at: float | None = None) -> None:
        self.events.append(Event(self._now() if at is None else at, key, EVENT_IDS[key], EVENT_MESSAGES[key]))

    def event_counts(self, hours: int) -> dict[str, int]:
        since = self._now() - hours * 3600
        counts = {key: 0 for key in EVENT_IDS}
        for event in self.events:
            if event.at >= since:
                counts[event.key] = min(EVENT_CAP, counts[event.key] + 1)
        return counts

    def last_event(self, hours: int) -> Event | None:
        since = self._now() - hours * 3600
        recent = [event for event in self.events if event.at >= since]
        return max(recent, key=lambda event: event.at) if recent else None

    def logged_at(self, event: Event) -> datetime:
        """The wall-clock time an event was logged."""
        return self.real_now() - timedelta(seconds=self._now() - event.at)

    # -- registry views --------------------------------------------------------------------------
    def effective(self, name: str) -> int | None:
        """A value as Windows applies it: the policy value wins over the local one."""
        policy = self.registry.get(f"policy.{name}")
        return policy if policy is not None else self.registry.get(name)

    @property
    def port(self) -> int:
        return int(self.registry.get("PortNumber") or 3389)

    # -- services --------------------------------------------------------------------------------
    def running(self, name: str) -> bool:
        service = self.services.get(name)
        return bool(self.up and service and service.state == "Running")

    def start_service(self, name: str) -> bool:
        """Start a service as the Service Control Manager would; False when it cannot start
        (Disabled, Missing, or still StopPending: the SCM refuses a start until it stopped)."""
        service = self.services[name]
        if service.state in ("Missing", "StopPending") or service.start == "Disabled":
            if name == "TermService":
                self.log("scm_termservice")
            return False
        if service.state != "Running":
            service.state = "Running"
            if name in ("TermService", "SessionEnv"):
                self._renew_self_signed()
        return True

    def stop_service(self, name: str) -> None:
        """A stop request. A service with a stop hang stays in StopPending (a known RDS failure
        with stuck sessions: review #2). Stopping TermService drops every RDP connection: Active
        sessions become Disc, the sessions themselves stay (WTSDisconnectSession semantics:
        "without closing the session"); its dependent UmRdpService stops first."""
        service = self.services[name]
        if service.state not in ("Running", "StartPending"):
            return
        if name == "TermService":
            self.stop_service("UmRdpService")
            for session in self.sessions:
                if session.state == "Active" and session.name != "console" and session.user:
                    session.state, session.name, session.idle_min = "Disc", None, 0
                    session.disconnected_at = self.clock()   # unverified: DisconnectTime set by this disconnect
        service.state = "StopPending" if service.hang == "stop" else "Stopped"

    def wait_for_status(self, name: str, want: str) -> bool:
        """ServiceController.WaitForStatus with a timeout: states here change at once or never
        (a hang), so the wait either succeeds or runs into its timeout."""
        service = self.services.get(name)
        return service is not None and service.state == want

    def restart_service(self, name: str) -> bool:
        self.stop_service(name)
        return self.start_service(name)

    @property
    def agent_ready(self) -> bool:
        return self.running("WindowsAzureGuestAgent")

    # -- certificates ----------------------------------------------------------------------------
    def rd_store(self) -> list[Certificate]:
        return [cert for cert in self.certificates if cert.store == "rd"]

    def find(self, thumbprint: str | None) -> Certificate | None:
        if not thumbprint:
            return None
        return next((c for c in self.certificates if c.thumbprint == thumbprint.upper()), None)

    def key_readable(self, cert: Certificate, *, as_network_service: bool = False) -> bool:
        """Does the certificate's private key really work (Windows' truth, not what a test of it
        says)? Self-signed RDP certificates keep it in the RDP key container; TermService opens
        it as NETWORK SERVICE."""
        if not cert.self_signed:
            return cert.key_ok and not cert.key_denied  # an admin's certificate: its key is not in the RDP container
        key = self.machinekeys.rdp_key
        if key is None or key.unusable:
            return False
        return key.network_service_read if as_network_service else key.system_full

    def binding(self) -> str | None:
        """SSLCertificateSHA1Hash as common.ps1's Get-BoundThumbprint reads it: the thumbprint,
        None when absent, MALFORMED when it is not a 20-byte REG_BINARY (a thumbprint typed as a
        REG_SZ string, a wrong length; RegistryKey.GetValueKind tells the kind)."""
        value = self.bound_thumbprint
        if value is None:
            return None
        if self.bound_kind != "Binary" or not re.fullmatch(r"[0-9A-Fa-f]{40}", value):
            return "MALFORMED"
        return value.upper()

    def serving_certificate(self) -> Certificate | None:
        """The certificate TermService presents: the bound one when it exists, else the newest
        self-signed certificate in the Remote Desktop store, as for a binding to a missing one. A
        MALFORMED binding is modelled the same way (unverified: what TermService does with a
        binding it cannot read; docs/emulator.md)."""
        bound = self.find(self.binding())
        if bound is not None:
            return bound
        store = self.rd_store()
        return max(store, key=lambda c: c.not_before) if store else None

    def _renew_self_signed(self) -> None:
        """What TermService/SessionEnv do at start: replace a missing or expired self-signed
        certificate (a valid one is kept, even when its key cannot be opened). The certificate's
        key lives in the container TSSecKeySet1 (MachineKeys\f686aace..._<MachineGuid>), and
        Windows reuses that container when it exists: an empty or ACL-broken one makes creation
        fail with 1057 ("Keyset does not exist") or 1058 (could not replace the expired one), as
        does a folder where no new container can be made (review section 2; Learn: "Remote
        Desktop disconnected, an internal error occurred"). It then carries on without one."""
        now = self.real_now()
        bound = self.find(self.binding())
        if bound is not None and not bound.expired(now):
            return
        current = self.newest_self_signed()
        if current is not None and not current.expired(now):
            return
        key = self.machinekeys.rdp_key
        broken = key is not None and (key.unusable or not key.system_full)
        if broken or (key is None and not self.machinekeys.writable):
            self.log("rcm_1057" if current is None else "rcm_1058")
            return
        self.install_self_signed(now - timedelta(minutes=5), now - timedelta(minutes=5) + SELF_SIGNED_VALIDITY)

    def newest_self_signed(self) -> Certificate | None:
        own = [c for c in self.rd_store() if c.self_signed]
        return max(own, key=lambda c: c.not_before) if own else None

    def install_self_signed(self, not_before: datetime, not_after: datetime, *, replace_all: bool = False) -> Certificate:
        """Put a new self-signed certificate in place: it replaces the expired self-signed ones in
        the Remote Desktop store (a valid one of another issuer stays), and its key goes into the
        existing RDP key container, or a new one when there is none (unverified: whether Windows
        deletes the certificate it replaces or leaves it)."""
        now = self.real_now()
        self.certificates = [c for c in self.certificates
                             if not (c.store == "rd" and c.self_signed and (replace_all or c.expired(now)))]
        cert = Certificate.make(self.computer_name, not_before, not_after)
        self.certificates.append(cert)
        if self.machinekeys.rdp_key is None:
            self.machinekeys.rdp_key = KeyFile(f"{RDP_KEY_PREFIX}_{self.machine_guid}")
        return cert

    def tls_usable(self) -> bool:
        cert = self.serving_certificate()
        return cert is not None and self.key_readable(cert, as_network_service=True)

    # -- listener and firewall -------------------------------------------------------------------
    def rdp_listening(self) -> bool:
        """Does the RDP-Tcp listener accept TCP connections on the RDP port?"""
        return (self.up and self.running("TermService") and self.effective("fDenyTSConnections") == 0)

    def firewall_allows_rdp(self, source: str | None = None) -> bool:
        """Does Windows Firewall let inbound TCP to the RDP port in (from ``source``, when given)?"""
        if not self.running("MpsSvc"):
            return True
        active = [profile for profile in self.firewall_profiles if profile.enabled]
        if not active:
            return True
        if any(profile.rules_ignored for profile in active):
            return False
        verdict = self.firewall_rule_verdict(source)
        if verdict == "Block":
            return False
        if all(profile.inbound == "Allow" for profile in active):
            return True
        return verdict == "Allow"

    def firewall_rule_verdict(self, source: str | None = None) -> str | None:
        """What the enabled inbound rules say about TCP to the RDP port: "Block" when any Block rule
        covers it (Block beats Allow: Learn, "Windows Firewall rules", rule precedence), "Allow" when
        an Allow rule does, else None. Only rules of the network's profile count (an Azure NIC's
        network is Public: unverified whether Domain on a domain-joined VM). A rule's RemoteAddress
        scope applies to ``source``; without one (what diagnose.ps1 can judge: it does not know the
        caller's address) only a Block for every address counts, and a scoped Allow counts."""
        hits = [r for r in self.firewall_rules if r.enabled and r.protocol in ("TCP", "Any")
                and r.port in (None, self.port) and (r.profile == "Any" or self.network_profile in r.profile)]
        hits = [r for r in hits if _remote_covers(r.remote, source, unknown=r.action != "Block")]
        if any(r.action == "Block" for r in hits):
            return "Block"
        return "Allow" if any(r.action == "Allow" for r in hits) else None

    # -- sessions --------------------------------------------------------------------------------
    def _reset_sessions(self) -> None:
        self.sessions = [Session(0, "services", None, "Disc"), Session(1, "console", None, "Conn")]

    def clock(self) -> float:
        """Guest time as a running payload sees it (its own sleeps and waits included)."""
        return self._now() + self.payload_elapsed

    def pass_time(self, seconds: float) -> None:
        """A payload sleeps or waits: what Windows finishes meanwhile (logoffs) finishes."""
        self.payload_elapsed += seconds
        self.settle()

    def settle(self) -> None:
        """Sessions whose logoff has completed are gone."""
        now = self.clock()
        self.sessions = [s for s in self.sessions if s.gone_at is None or s.gone_at > now]

    def log_off(self, session_id: int) -> bool:
        """logoff.exe <id>: asks Windows to end the session and returns at once; the session
        leaves the list a little later (WTSLogoffSession with bWait = FALSE)."""
        session = next((s for s in self.sessions if s.id == session_id and s.gone_at is None), None)
        if session is None:
            return False
        session.gone_at = self.clock() + LOGOFF_SECONDS
        return True

    def remote_sessions(self) -> list[Session]:
        return [s for s in self.sessions if s.id != 0 and s.name != "console" and s.state in ("Active", "Disc")]

    def seat_limit(self) -> int:
        """Seats per mode: two in remote-administration mode, one on client Windows, otherwise
        as many as MaxInstanceCount allows (Learn: "Remote Desktop Services client access
        licenses"; "Windows 10/11 Enterprise multi-session")."""
        limit = self.effective("MaxInstanceCount")
        unlimited = 4294967295
        base = {"admin": ADMIN_MODE_SEATS, "client": CLIENT_SEATS}.get(self.seat_mode, unlimited)
        return min(base, limit if limit is not None else base)

    def add_session(self, user: str, state: str = "Disc", idle_min: int | None = 1_440) -> Session:
        next_id = max(s.id for s in self.sessions) + 1
        now = self.clock()
        session = Session(next_id, None if state == "Disc" else f"rdp-tcp#{next_id}", user, state, idle_min,
                          logon_at=now - 60 * (idle_min or 0) - 3_600,
                          disconnected_at=now - 60 * (idle_min or 0) if state == "Disc" else None)
        self.sessions.append(session)
        return session

    # -- power -----------------------------------------------------------------------------------
    def shut_down(self) -> None:
        self.up = False
        for service in self.services.values():
            if service.state == "Running":
                service.state = "Stopped"
        self.sessions = []

    def boot(self) -> None:
        """Windows starts: automatic services, then the Remote Desktop services (trigger-started
        while RDP is enabled), certificate renewal, no sessions, no pending reboot."""
        self.up = True
        self.booted_at = self._now()
        self.reboot_reasons = []
        self._reset_sessions()
        for service in self.services.values():
            if service.start == "Automatic":
                self.start_service(service.name)
        # Trigger-started while RDP is enabled, in dependency order.
        for name in ("KeyIso", "CertPropSvc", "SessionEnv", "TermService", "UmRdpService"):
            self.start_service(name)

    def uptime_minutes(self) -> int:
        return max(0, int((self._now() - self.booted_at) // 60))
