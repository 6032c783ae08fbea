"""Checks: the stable vocabulary every diagnosis speaks.

A check has a stable ID (listed once, here, and documented in README.md), a status, a one-line
summary, structured details, and a remedy when it did not pass. Scripts, the CI smoke check and
JUnit reports depend on the IDs: add new ones, never rename.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"  # the check itself could not be completed
    SKIP = "skip"

    def __str__(self) -> str:  # "pass", not "Status.PASS"
        return self.value


# Severity order used to compute a verdict: higher is worse. SKIP never decides a verdict.
_SEVERITY = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.ERROR: 3, Status.FAIL: 4}

# The sides a check belongs to, in the order reports show them.
SIDES = ("azure", "network", "wire", "guest")

# Every check ID azrdp can emit: ID -> (side, what it checks). Documented in README.md.
CHECK_IDS: dict[str, tuple[str, str]] = {
    # Azure side: the VM resource and its platform state
    "vm.os": ("azure", "the VM runs Windows"),
    "vm.power": ("azure", "the VM is running"),
    "vm.provisioning": ("azure", "the VM's provisioning state succeeded"),
    "vm.agent": ("azure", "the VM agent is Ready (Run Command needs it); power state decides first: SKIP on a "
                          "stopped or deallocated VM (its last report says nothing about now), WARN when its last "
                          "report is older than the VM's last operation (still rebooting)"),
    "boot.diagnostics": ("azure", "boot diagnostics are enabled (screenshot, serial log)"),
    "boot.health": ("azure", "the guest's own VM Health Report in the serial log (RDP enabled, TermService, "
                             "firewall); read only for a running VM whose agent is not Ready or whose RDP does not "
                             "answer (absent otherwise); a stale report (over 24 h) warns"),
    # Network side: addresses and NSG rules for the RDP port
    "net.public_ip": ("network", "the VM has a public IP address"),
    "nsg.subnet": ("network", "the subnet's NSG allows inbound RDP"),
    "nsg.nic": ("network", "the NIC's NSG allows inbound RDP"),
    "nsg.effective": ("network", "subnet and NIC NSGs together allow inbound RDP"),
    "nsg.azrdp_rules": ("network", "temporary rules azrdp created (and whether they expired)"),
    # Wire side: what the RDP port really answers
    "rdp.tcp": ("wire", "a TCP connection to the RDP port opens"),
    "rdp.negotiation": ("wire", "the X.224 / RDP negotiation succeeds"),
    "rdp.tls": ("wire", "the TLS handshake completes"),
    "rdp.cert": ("wire", "the certificate RDP serves is currently valid"),
    # Guest side: what Windows says, read through Run Command
    "guest.run": ("guest", "the read-only guest diagnosis ran through Run Command"),
    "guest.termservice": ("guest", "Remote Desktop Services and its dependencies run"),
    "guest.rdp_enabled": ("guest", "Remote Desktop connections are allowed (fDenyTSConnections)"),
    "guest.port": ("guest", "the RDP-Tcp listener port"),
    "guest.nla": ("guest", "Network Level Authentication and security layer settings"),
    "guest.listener": ("guest", "the RDP-Tcp listener is listening"),
    "guest.cert": ("guest", "the RDP certificate is valid and its private key readable"),
    "guest.machinekeys": ("guest", "MachineKeys folder ACL and the RDP key container"),
    "guest.firewall": ("guest", "Windows Firewall lets the RDP port in"),
    "guest.sessions": ("guest", "a session seat is free"),
    "guest.licensing": ("guest", "RD Licensing lets users sign in (grace period, licensing mode)"),
    "guest.drain": ("guest", "the host accepts new logons (no drain mode)"),
    "guest.events": ("guest", "recent RDP certificate, Schannel and TermService errors"),
    "guest.reboot": ("guest", "no reboot is pending"),
}


def side_of(check_id: str) -> str:
    try:
        return CHECK_IDS[check_id][0]
    except KeyError:
        raise KeyError(f"unregistered check id {check_id!r}: add it to azrdp.checks.CHECK_IDS") from None


@dataclass(frozen=True)
class Check:
    id: str
    status: Status
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    remedy: str | None = None

    def __post_init__(self) -> None:
        side_of(self.id)  # fail fast on a typo'd ID
        if not isinstance(self.status, Status):
            object.__setattr__(self, "status", Status(self.status))

    @property
    def side(self) -> str:
        return side_of(self.id)

    @property
    def ok(self) -> bool:
        return self.status in (Status.PASS, Status.WARN, Status.SKIP)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "side": self.side,
            "status": self.status.value,
            "summary": self.summary,
            "details": self.details,
            "remedy": self.remedy,
        }


def worst(statuses: Iterable[Status]) -> Status:
    """The worst status among ``statuses`` (PASS when there is nothing to judge)."""
    result = Status.PASS
    for status in statuses:
        if _SEVERITY[status] > _SEVERITY[result]:
            result = status
    return result


def verdict(checks: Iterable[Check]) -> Status:
    return worst(check.status for check in checks)
