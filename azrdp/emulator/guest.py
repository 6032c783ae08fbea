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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from azrdp.payloads.schema import MACHINEKEYS_DEFAULT_SDDL

RDP_KEY_PREFIX = "f686aace6942fb7f7ceb231212eef4a4"
"""The RDP self-signed certificate's key container file name prefix in MachineKeys."""

BROKEN_MACHINEKEYS_SDDL = "O:BAG:SYD:PAI(A;;FA;;;BA)"
"""A damaged folder ACL seen in the field: owner changed, Everyone's read/write removed."""

SELF_SIGNED_VALIDITY = timedelta(days=182)  # Windows makes the RDP certificate valid for 6 months
ADMIN_MODE_SEATS = 2                        # Windows Server without the Session Host role
EVENT_CAP = 500
RDP_FIREWALL_RULES = ("RemoteDesktop-UserMode-In-TCP", "RemoteDesktop-UserMode-In-UDP",
                      "RemoteDesktop-Shadow-In-TCP")


@functools.lru_cache(maxsize=1)
def _rsa_key():
    """One RSA-2048 key per process (making one takes ~0.1 s; fleets have hundreds of VMs).
    Every certificate still has its own serial number, dates and thumbprint."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Certificate:
    subject_cn: str
    not_before: datetime
    not_after: datetime
    store: str = "rd"             # rd = Cert:\LocalMachine\Remote Desktop, my = Cert:\LocalMachine\My
    self_signed: bool = True
    der: bytes = b""
    cert_pem: bytes = b""
    key_pem: bytes = b""

    @classmethod
    def make(cls, subject_cn: str, not_before: datetime, not_after: datetime, *, store: str = "rd") -> "Certificate":
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = _rsa_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(not_before).not_valid_after(not_after)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=True, data_encipherment=True,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(subject_cn, not_before, not_after, store=store,
                   der=cert.public_bytes(serialization.Encoding.DER),
                   cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                   key_pem=key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption()))

    @property
    def thumbprint(self) -> str:
        return hashlib.sha1(self.der).hexdigest().upper()  # noqa: S324 - Windows' thumbprint

    def expired(self, now: datetime) -> bool:
        return self.not_after <= now


@dataclass
class Service:
    name: str
    state: str = "Running"      # Running | Stopped | Missing
    start: str | None = "Manual"


@dataclass
class KeyFile:
    """The RDP key container file MachineKeys\\f686aace6942fb7f7ceb231212eef4a4_<machine GUID>."""

    name: str
    size: int = 2_040
    network_service_read: bool = True
    system_full: bool = True

    @property
    def corrupt(self) -> bool:
        return self.size == 0


@dataclass
class MachineKeys:
    path: str = r"C:\ProgramData\Microsoft\Crypto\RSA\MachineKeys"
    sddl: str = MACHINEKEYS_DEFAULT_SDDL
    other_files: int = 6          # the VM agent's transport key, IIS, ... (never the RDP key)
    rdp_key: KeyFile | None = None
    backups: list[str] = field(default_factory=list)

    @property
    def default(self) -> bool:
        return self.sddl == MACHINEKEYS_DEFAULT_SDDL

    @property
    def writable(self) -> bool:
        """Can Windows create a new key container here (Everyone: write, as the default ACL)?"""
        return self.default

    @property
    def files(self) -> int:
        return self.other_files + (1 if self.rdp_key else 0)


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
    port: int = 3389
    protocol: str = "TCP"
    group: str = "Remote Desktop"


@dataclass
class Session:
    id: int
    name: str | None
    user: str | None
    state: str                    # Active | Disc | Conn ...
    idle_min: int | None = None


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
    """One Windows Server 2022 guest. All methods run under the emulator's state lock."""

    def __init__(self, computer_name: str, *, now: Callable[[], float], wall: Callable[[], datetime],
                 machine_guid: str):
        self.computer_name = computer_name
        self._now = now            # simulated seconds (event times, uptime)
        self._wall = wall          # real UTC time (certificate validity is judged by real clients)
        self.machine_guid = machine_guid
        self.caption = "Microsoft Windows Server 2022 Datacenter"
        self.build = "20348.2340"
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
            "fSingleSessionPerUser": 1,
        }
        self.bound_thumbprint: str | None = None   # RDP-Tcp SSLCertificateSHA1Hash
        self.certificates: list[Certificate] = []
        self.machinekeys = MachineKeys()
        self.firewall_profiles = [FirewallProfile("Domain"), FirewallProfile("Private"), FirewallProfile("Public")]
        self.firewall_rules = [FirewallRule(name) for name in RDP_FIREWALL_RULES]
        self.sessions: list[Session] = []
        self.events: list[Event] = []
        self.reboot_reasons: list[str] = []
        self.backup_folders: dict[str, list[str]] = {}   # azrdp's %ProgramData%\azrdp\backup\<time>: files
        self.attached_volumes: list["WindowsGuest"] = []  # offline Windows installations on data disks
        self._reset_sessions()
        now = self.real_now() - timedelta(days=30)
        self.install_self_signed(now, now + SELF_SIGNED_VALIDITY)

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
        """Start a service as the Service Control Manager would; False when it cannot start."""
        service = self.services[name]
        if service.state == "Missing" or service.start == "Disabled":
            if name == "TermService":
                self.log("scm_termservice")
            return False
        if service.state != "Running":
            service.state = "Running"
            if name in ("TermService", "SessionEnv"):
                self._renew_self_signed()
        return True

    def stop_service(self, name: str) -> None:
        service = self.services[name]
        if service.state == "Running":
            service.state = "Stopped"

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
        """Can the certificate's private key be opened? Self-signed RDP certificates keep it in
        the RDP key container; TermService opens it as NETWORK SERVICE."""
        if cert.store == "my" and not cert.self_signed:
            return True  # an admin-installed certificate: its key is not in the RDP container
        key = self.machinekeys.rdp_key
        if key is None or key.corrupt:
            return False
        return key.network_service_read if as_network_service else key.system_full

    def serving_certificate(self) -> Certificate | None:
        """The certificate TermService presents: the bound one when it exists, else the newest
        self-signed certificate in the Remote Desktop store."""
        bound = self.find(self.bound_thumbprint)
        if bound is not None:
            return bound
        store = self.rd_store()
        return max(store, key=lambda c: c.not_before) if store else None

    def _renew_self_signed(self) -> None:
        """What TermService/SessionEnv do at start: replace a missing or expired self-signed
        certificate (a valid one is kept, even when its key cannot be opened). Making one needs a
        new key container in MachineKeys; when the folder's ACL forbids it, Windows logs 1057
        (could not create) or 1058 (could not replace the expired one) and carries on."""
        now = self.real_now()
        bound = self.find(self.bound_thumbprint)
        if bound is not None and not bound.expired(now):
            return
        current = self.newest_self_signed()
        if current is not None and not current.expired(now):
            return
        if not self.machinekeys.writable:
            self.log("rcm_1057" if current is None else "rcm_1058")
            return
        self.install_self_signed(now - timedelta(minutes=5), now - timedelta(minutes=5) + SELF_SIGNED_VALIDITY)

    def newest_self_signed(self) -> Certificate | None:
        own = [c for c in self.rd_store() if c.self_signed]
        return max(own, key=lambda c: c.not_before) if own else None

    def install_self_signed(self, not_before: datetime, not_after: datetime) -> Certificate:
        """Put a new self-signed certificate (and a fresh RDP key container) in place."""
        self.certificates = [c for c in self.certificates if not (c.store == "rd" and c.self_signed)]
        cert = Certificate.make(self.computer_name, not_before, not_after)
        self.certificates.append(cert)
        self.machinekeys.rdp_key = KeyFile(f"{RDP_KEY_PREFIX}_{self.machine_guid}")
        return cert

    def tls_usable(self) -> bool:
        cert = self.serving_certificate()
        return cert is not None and self.key_readable(cert, as_network_service=True)

    # -- listener and firewall -------------------------------------------------------------------
    def rdp_listening(self) -> bool:
        """Does the RDP-Tcp listener accept TCP connections on the RDP port?"""
        return (self.up and self.running("TermService") and self.effective("fDenyTSConnections") == 0)

    def firewall_allows_rdp(self) -> bool:
        """Does Windows Firewall let inbound TCP to the RDP port in?"""
        if not self.running("MpsSvc"):
            return True
        active = [profile for profile in self.firewall_profiles if profile.enabled]
        if not active:
            return True
        if any(profile.rules_ignored for profile in active):
            return False
        if all(profile.inbound == "Allow" for profile in active):
            return True
        return any(rule.enabled and rule.protocol == "TCP" and rule.port == self.port for rule in self.firewall_rules)

    # -- sessions --------------------------------------------------------------------------------
    def _reset_sessions(self) -> None:
        self.sessions = [Session(0, "services", None, "Disc"), Session(1, "console", None, "Conn")]

    def remote_sessions(self) -> list[Session]:
        return [s for s in self.sessions if s.id != 0 and s.name != "console" and s.state in ("Active", "Disc")]

    def seat_limit(self) -> int:
        limit = self.effective("MaxInstanceCount")
        return min(ADMIN_MODE_SEATS, limit if limit is not None else ADMIN_MODE_SEATS)

    def add_session(self, user: str, state: str = "Disc", idle_min: int | None = 1_440) -> Session:
        next_id = max(s.id for s in self.sessions) + 1
        session = Session(next_id, None if state == "Disc" else f"rdp-tcp#{next_id}", user, state, idle_min)
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
