"""The "Microsoft Azure VM Health Report" a simulated Windows guest writes to its serial log.

Windows VMs with the Azure VM agent write a health report to COM1 when SAC is not enabled: a
``======== Microsoft Azure VM Health Report - Start <time> ========`` line, one JSON line and an
``- End`` line (MicrosoftDocs SupportArticles, "serial console shows VM health information but does
not respond"; Azure/azure-support-scripts ``Get-AzureRmVMHealth.ps1`` and ``Get-VMHealth`` read
``reportTime``, ``services[]`` and ``remoteAccess.windows.{rdpEnabled, rdpFirewallAccess, rdpPort}``).

Modelled: the agent writes it while Windows runs and its service is not Disabled; the report
carries the guest's state, timed at the last boot when the agent has stopped since (the log keeps
the last report). Unverified (docs/emulator.md): how often a real agent rewrites it, and whether
it is written when the agent never started.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any


def health_report_lines(vm: Any) -> list[str]:
    guest = vm.guest
    agent = guest.services.get("WindowsAzureGuestAgent")
    if getattr(guest, "sac_enabled", True):
        return []        # written only while SAC is not enabled (the SupportArticles page above)
    if vm.power != "running" or not guest.up or agent is None or agent.start == "Disabled":
        return []
    seconds_ago = 0.0 if agent.state == "Running" else max(0.0, guest.sim_now() - guest.booted_at)
    at = (guest.real_now() - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    firewall = "Allowed" if guest.firewall_allows_rdp() else "Blocked"
    report = {
        "reportTime": at,
        "services": [{"name": name, "state": s.state} for name, s in guest.services.items()
                     if name in ("TermService", "SessionEnv", "UmRdpService", "MpsSvc", "WindowsAzureGuestAgent")],
        "remoteAccess": {"windows": {"rdpEnabled": guest.effective("fDenyTSConnections") == 0,
                                     "rdpFirewallAccess": firewall, "rdpPort": guest.port}},
    }
    return [f"======== Microsoft Azure VM Health Report - Start {at} ========",
            json.dumps(report, separators=(",", ":")),
            f"======== Microsoft Azure VM Health Report - End {at} ========"]
