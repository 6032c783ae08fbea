"""Guest profiles: which Windows the simulated guest is (``--windows``), in which display language
(``--locale``), and in which role (a domain controller, an AVD session host).

A profile changes what the payloads meet, never what they are told: the seat model, the .NET
Framework version (which key tests it allows), the PowerShell version, the product name and
build, the localized text Windows prints (quser/qwinsta, icacls, service display names), extra
machine keys a domain controller holds, the AVD agent service. ``GuestProfile.apply(guest)`` runs
right after a VM's guest is made, before a scenario's problems are planted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azrdp.emulator.guest import Service, WindowsGuest


@dataclass(frozen=True)
class Windows:
    caption: str
    build: str
    seat_mode: str                # schema.SEAT_MODES
    dotnet: tuple[int, ...]       # the .NET Framework an Azure Marketplace image of it runs
    powershell: str               # Windows PowerShell version


# Builds: the Marketplace images' OS builds (Learn: "Windows Server release information", "Windows 11
# release information"). .NET: 2012 R2 shipped 4.5.1 (an image never patched past 4.5.2 is the case
# review #5 names); 2016 ships 4.6.2, 2019 4.7.2, 2022 4.8, 2025 and Windows 11 4.8.1 (Learn: ".NET
# Framework versions and dependencies"). PowerShell: 2012 R2 ships WMF 4.0, the others 5.1 (Learn:
# "Windows PowerShell System Requirements"). Seats: see WindowsGuest.seat_limit.
WINDOWS: dict[str, Windows] = {
    "2012r2": Windows("Microsoft Windows Server 2012 R2 Datacenter", "9600.21620", "admin", (4, 5, 2), "4.0"),
    "2016": Windows("Microsoft Windows Server 2016 Datacenter", "14393.7515", "admin", (4, 6, 2), "5.1"),
    "2019": Windows("Microsoft Windows Server 2019 Datacenter", "17763.6532", "admin", (4, 7, 2), "5.1"),
    "2022": Windows("Microsoft Windows Server 2022 Datacenter", "20348.2340", "admin", (4, 8), "5.1"),
    "2025": Windows("Microsoft Windows Server 2025 Datacenter", "26100.2605", "admin", (4, 8, 1), "5.1"),
    "win11": Windows("Microsoft Windows 11 Enterprise", "22631.4602", "client", (4, 8, 1), "5.1"),
    "win11-multisession": Windows("Microsoft Windows 11 Enterprise multi-session", "22631.4602", "multi",
                                  (4, 8, 1), "5.1"),
}


@dataclass(frozen=True)
class Locale:
    """What Windows prints in one display language. ``states`` maps WTS state names to the words
    quser/qwinsta print; ``none`` is quser's idle word for "no idle time"."""

    quser_header: str
    qwinsta_header: str
    states: dict[str, str]
    none: str
    services: dict[str, str]      # service name -> display name (Get-Service DisplayName, SCM event text)
    icacls_summary: str           # icacls' last line, {ok} and {failed} files
    verified: bool                # True only where real Windows output was seen (docs/emulator.md)


LOCALES: dict[str, Locale] = {
    "en-US": Locale(" USERNAME              SESSIONNAME        ID  STATE   IDLE TIME  LOGON TIME",
                    " SESSIONNAME       USERNAME                 ID  STATE   TYPE        DEVICE",
                    {"Active": "Active", "Disc": "Disc", "Listen": "Listen", "Conn": "Conn"}, "none",
                    {"TermService": "Remote Desktop Services", "SessionEnv": "Remote Desktop Configuration"},
                    "Successfully processed {ok} files; Failed processing {failed} files", True),
    # A real French quser (GitHub, a PsExec transcript): " UTILISATEUR           SESSION            ID
    # ÉTAT    TEMPS INACT TEMPS SESSION" / "Actif       aucun". The rest of fr-FR, and de-DE and
    # ja-JP entirely, are listed under "unverified" in docs/emulator.md.
    "fr-FR": Locale(" UTILISATEUR           SESSION            ID  \u00c9TAT    TEMPS INACT TEMPS SESSION",
                    " SESSION           UTILISATEUR              ID  \u00c9TAT    TYPE        P\u00c9RIPH\u00c9RIQUE",
                    {"Active": "Actif", "Disc": "D\u00e9co", "Listen": "\u00c9couter", "Conn": "Conn."}, "aucun",
                    {"TermService": "Services Bureau \u00e0 distance",
                     "SessionEnv": "Configuration des services Bureau \u00e0 distance"},
                    "{ok} fichiers correctement trait\u00e9s\u00a0; \u00e9chec du traitement de {failed} fichiers",
                    True),
    "de-DE": Locale(" BENUTZERNAME          SITZUNGSNAME       ID  STATUS  LEERLAUF   ANMELDEZEIT",
                    " SITZUNGSNAME      BENUTZERNAME             ID  STATUS  TYP         GER\u00c4T",
                    {"Active": "Aktiv", "Disc": "Getr.", "Listen": "Abh.", "Conn": "Verb."}, "Kein",
                    {"TermService": "Remotedesktopdienste", "SessionEnv": "Konfiguration f\u00fcr Remotedesktops"},
                    "{ok} Dateien erfolgreich verarbeitet, bei {failed} Dateien ist ein Fehler aufgetreten.",
                    False),
    "ja-JP": Locale(" \u30e6\u30fc\u30b6\u30fc\u540d            \u30bb\u30c3\u30b7\u30e7\u30f3\u540d       ID  \u72b6\u614b    \u30a2\u30a4\u30c9\u30eb\u6642\u9593   \u30ed\u30b0\u30aa\u30f3\u6642\u523b",
                    " \u30bb\u30c3\u30b7\u30e7\u30f3\u540d      \u30e6\u30fc\u30b6\u30fc\u540d                ID  \u72b6\u614b    \u7a2e\u985e        \u30c7\u30d0\u30a4\u30b9",
                    {"Active": "\u30a2\u30af\u30c6\u30a3\u30d6", "Disc": "\u5207\u65ad",
                     "Listen": "\u30ea\u30c3\u30b9\u30f3", "Conn": "\u63a5\u7d9a"}, "\u306a\u3057",
                    {"TermService": "Remote Desktop Services", "SessionEnv": "Remote Desktop Configuration"},
                    "{ok} \u500b\u306e\u30d5\u30a1\u30a4\u30eb\u304c\u6b63\u5e38\u306b\u51e6\u7406\u3055\u308c\u307e\u3057\u305f\u3002"
                    "{failed} \u500b\u306e\u30d5\u30a1\u30a4\u30eb\u3092\u51e6\u7406\u3067\u304d\u307e\u305b\u3093\u3067\u3057\u305f",
                    False),
}

ROLES = ("dc", "avd")
DC_MACHINE_KEYS = 9   # a domain controller's extra machine keys: LDAPS, KDC, DFSR, ... (never the RDP key)


@dataclass(frozen=True)
class GuestProfile:
    windows: str = "2022"
    locale: str = "en-US"
    role: str | None = None       # None | dc | avd

    def __post_init__(self) -> None:
        if self.windows not in WINDOWS:
            raise ValueError(f"unknown Windows {self.windows!r}; choose one of {', '.join(WINDOWS)}")
        if self.locale not in LOCALES:
            raise ValueError(f"unknown locale {self.locale!r}; choose one of {', '.join(LOCALES)}")
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; choose one of {', '.join(ROLES)}")
        if self.role == "avd" and WINDOWS[self.windows].seat_mode not in ("multi", "admin"):
            raise ValueError("an AVD session host runs multi-session Windows or Windows Server, not single-session Windows 11")

    def apply(self, guest: WindowsGuest) -> None:
        windows = WINDOWS[self.windows]
        guest.caption, guest.build, guest.seat_mode = windows.caption, windows.build, windows.seat_mode
        guest.dotnet, guest.powershell = windows.dotnet, windows.powershell
        guest.locale = self.locale
        guest.windows = self.windows
        if self.role == "dc":
            guest.role = "dc"
            guest.machinekeys.other_files += DC_MACHINE_KEYS
        elif self.role == "avd":
            guest.role = "avd"
            guest.seat_mode = "avd"
            guest.services["RDAgentBootLoader"] = Service("RDAgentBootLoader", "Running", "Automatic")

    def to_dict(self) -> dict[str, Any]:
        return {"windows": self.windows, "locale": self.locale, "role": self.role}


DEFAULT_PROFILE = GuestProfile()


def quser_text(guest: WindowsGuest) -> list[str]:
    """What `quser` prints on this guest, in its display language (the payload's fallback)."""
    words = LOCALES[guest.locale]
    lines = [words.quser_header]
    for s in guest.sessions:
        if not s.user:
            continue
        idle = words.none if not s.idle_min else (f"{s.idle_min // 60}:{s.idle_min % 60:02d}" if s.idle_min >= 60
                                                   else str(s.idle_min))
        state = words.states.get(s.state, s.state)
        lines.append(f" {s.user:<22}{(s.name or ''):<19}{s.id:>2}  {state:<8}{idle:>9}  12/1/2026 9:04 AM")
    return lines
