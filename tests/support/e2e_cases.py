"""Every emulator scenario and every fault, as `azrdp fix VM -g RG --yes -o json` (and `azrdp demo`)
runs them. What each must end in is asserted in test_e2e_fix.py / test_e2e_demo.py."""

from __future__ import annotations

from tests.support.e2e_support import Case, interrupt_once_run_command_polls, terminate_once_run_command_polls

SCENARIO_CASES = [
    Case("healthy", "healthy"),
    Case("expired-cert", "expired-cert"),
    Case("machinekeys-acl", "machinekeys-acl"),
    Case("corrupt-key", "corrupt-key"),
    Case("seat-taken", "seat-taken"),
    Case("rdp-disabled", "rdp-disabled"),
    Case("firewall", "firewall"),
    Case("nsg-blocked", "nsg-blocked"),
    Case("nsg-blocked-allow-from", "nsg-blocked", args=("--allow-from", "me")),
    Case("agent-not-ready", "agent-not-ready"),
    Case("deallocated", "deallocated"),
    Case("deallocated-start", "deallocated", args=("--start",)),
    Case("0x904", "0x904"),
    Case("active-users", "active-users"),
    # RECHECK new H-1: a second `azrdp fix` after the one whose cert step's restart disconnected both admins
    Case("active-users-again", "active-users", runs=2),
    Case("hung-termservice", "hung-termservice"),
    Case("ecc-cert", "ecc-cert"),
    Case("0x904-guest-first", "0x904", args=("--guest-first",)),
]

FAULT_CASES = [
    Case("throttled", "0x904", faults=(
        {"kind": "throttle", "operation": "VirtualMachines_Get", "count": 2, "retry_after": 1},
        {"kind": "throttle", "operation": "VirtualMachines_RunCommand", "count": 1, "retry_after": 1})),
    Case("server-errors", "0x904", faults=(
        {"kind": "server_error", "status": 500, "operation": "VirtualMachines_Get", "count": 2},
        {"kind": "server_error", "status": 503, "operation": "ComputeOperations_Get", "count": 3, "retry_after": 1})),
    Case("run-command-conflict", "0x904", faults=({"kind": "run_command_conflict", "count": 1},)),
    Case("run-command-hang", "0x904", faults=({"kind": "run_command_hang"},), during=interrupt_once_run_command_polls),
    Case("run-command-sigterm", "0x904", faults=({"kind": "run_command_hang"},), during=terminate_once_run_command_polls),
    Case("full-audit-disk", "0x904", args=("--audit-log", "/dev/full")),
    Case("run-command-timeout", "0x904", args=("--run-command-timeout", "2s"), faults=({"kind": "run_command_hang"},)),
    Case("restart-failure", "0x904", faults=({"kind": "restart_failure"},)),
    Case("rdp-never-returns", "0x904", args=("--wait-timeout", "3s"), faults=({"kind": "rdp_never_returns"},)),
    Case("connection-reset", "0x904", faults=({"kind": "connection_reset", "count": 2},)),
]

DEMO_CASES = [
    Case("demo", "healthy", command="demo", args=("--speed", "1000")),
    Case("demo-json", "healthy", command="demo", args=("--speed", "1000", "-o", "json", "--scenario", "rdp-disabled")),
    Case("demo-rescue", "healthy", command="demo", args=("--speed", "1000", "-o", "json", "--scenario", "agent-not-ready")),
]

CASES = {case.name: case for case in SCENARIO_CASES + FAULT_CASES + DEMO_CASES}
