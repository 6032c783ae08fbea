"""The least-privilege roles grant exactly the ARM actions azrdp uses.

The operations are not listed by hand: every way azrdp talks to Azure runs here end to end
against the emulator (diagnose with guest and screenshot, check, sweep --fix, fix with --start,
fix --allow-from, revoke), the emulator's request log says which operations were called, and
tests/support/arm_actions.py maps them to RBAC actions. The main role must equal what everything but
--allow-from/revoke used; the network role what those two add.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from azrdp.emulator import Emulator
from azrdp.emulator.urls import ROUTES
from azrdp.target import Target
from azrdp.ui import SILENT
from tests.support.arm_actions import ACTIONS, actions_for
from tests.support.rescue_support import StopAt
from tests.support.sweep_support import FAST, PROBE_TIMEOUT, tenant_session

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def role(name: str) -> dict:
    return json.loads((SCRIPTS / name).read_text())


def session_of(emu):
    return tenant_session(emu, clock=None).for_subscription(emu.subscription_id)


def operations(emu) -> set[str]:
    return {c.operation for c in emu.calls if c.operation and c.status is not None and c.status < 400}


@pytest.fixture(scope="module")
def used(tmp_path_factory) -> dict[str, set[str]]:
    """Operation IDs each kind of use called: {"main": ..., "network": ...}."""
    from azrdp.audit import AuditLog, read_audit
    from azrdp.clock import SYSTEM_CLOCK
    from azrdp.diagnose import diagnose
    from azrdp.repair import FixOptions, fix
    from azrdp.rescue import RescueOptions, rescue, undo
    from azrdp.revoke import revoke
    from azrdp.smoke import smoke_check
    from azrdp.sweep import FixPolicy, sweep

    shots = tmp_path_factory.mktemp("shots")
    main: set[str] = set()
    network: set[str] = set()
    fast = {"probe_timeout": PROBE_TIMEOUT}
    with Emulator.start(fleet={"healthy": 1, "0x904": 1, "nsg-blocked": 1, "agent-not-ready": 1, "deallocated": 1},
                        speed=FAST) as emu:
        client = emu.state.client_ip
        rg = "rg-azrdp-fleet"
        for vm in emu.vm_names:      # diagnose, all sides, with the screenshot
            diagnose(session_of(emu), Target(vm, rg), source_ip=client, guest=True,
                     screenshot=shots / f"{vm}.png", **fast)
        smoke_check(lambda: session_of(emu), Target("vm-nsg-blocked-001", rg), source_ip=client, **fast)
        sweep(tenant_session(emu, clock=SYSTEM_CLOCK), policy=FixPolicy.unattended(["machinekeys-acl"]),
              guest=True, source_ip=client, **fast)
        sweep(tenant_session(emu, clock=SYSTEM_CLOCK), source_ip=client, **fast)  # check only: by Resource Graph
        fix(session_of(emu), Target("vm-deallocated-001", rg),
            FixOptions(start=True, source_ip=client, wait_timeout=120, **fast), audit=AuditLog(None))
        fix(session_of(emu), Target("vm-healthy-001", rg),
            FixOptions(reboot=True, source_ip=client, wait_timeout=120, **fast), audit=AuditLog(None))
        main |= operations(emu)
        emu.load(fleet={"nsg-blocked": 1})
        fix(session_of(emu), Target("vm-nsg-blocked-001", rg),
            FixOptions(allow_from=client, source_ip=client, wait_timeout=120, **fast), audit=AuditLog(None))
        revoke(session_of(emu), Target("vm-nsg-blocked-001", rg), audit=AuditLog(None))
        network |= operations(emu)
        emu.load(fleet={"agent-not-ready": 2})   # azrdp rescue: a whole rescue and its undo, and an
        rescue_log = shots / "rescue.jsonl"       # undo of one interrupted while the rescue VM runs
        options = RescueOptions(source_ip=client, wait_timeout=30, **fast)
        for vm, progress in (("vm-agent-not-ready-001", SILENT), ("vm-agent-not-ready-002", StopAt("offline-repair"))):
            rescue(session_of(emu), Target(vm, rg), options, audit=AuditLog(rescue_log), progress=progress)
            undo(session_of(emu), Target(vm, rg), options, audit=AuditLog(rescue_log), records=read_audit(rescue_log))
        rescue_ops = operations(emu)
    return {"main": main, "network": network, "rescue": rescue_ops}


def test_every_emulated_operation_is_mapped_to_an_action():
    assert {route.operation_id for route in ROUTES} == set(ACTIONS)


def test_the_flows_really_ran(used):
    for operation in ("VirtualMachines_RunCommand", "VirtualMachines_Restart", "VirtualMachines_Start",
                      "VirtualMachines_RetrieveBootDiagnosticsData", "VirtualMachines_ListAll", "Resources"):
        assert operation in used["main"], operation
    assert {"SecurityRules_CreateOrUpdate", "SecurityRules_Delete"} <= used["network"]


def test_main_role_grants_exactly_what_azrdp_uses(used):
    granted = set(role("azrdp-role.json")["Actions"])
    needed = actions_for(used["main"])
    assert not needed - granted, f"the role misses {sorted(needed - granted)}"
    assert not granted - needed, f"the role grants what azrdp never calls: {sorted(granted - needed)}"


def test_network_role_grants_exactly_what_allow_from_and_revoke_add(used):
    granted = set(role("azrdp-network-role.json")["Actions"])
    needed = actions_for(used["network"]) - set(role("azrdp-role.json")["Actions"])
    assert not needed - granted, f"the network role misses {sorted(needed - granted)}"
    assert not granted - needed, f"the network role grants what azrdp never calls: {sorted(granted - needed)}"


def test_rescue_role_grants_exactly_what_azrdp_rescue_adds(used):
    assert {"Snapshots_CreateOrUpdate", "Disks_CreateOrUpdate", "VirtualMachines_CreateOrUpdate",
            "VirtualMachines_PowerOff", "ResourceGroups_Delete", "ResourceGroups_Get"} <= used["rescue"]
    granted = set(role("azrdp-rescue-role.json")["Actions"])
    needed = actions_for(used["rescue"]) - set(role("azrdp-role.json")["Actions"])
    assert not needed - granted, f"the rescue role misses {sorted(needed - granted)}"
    assert not granted - needed, f"the rescue role grants what azrdp rescue never calls: {sorted(granted - needed)}"


@pytest.mark.parametrize("name", ["azrdp-role.json", "azrdp-network-role.json", "azrdp-rescue-role.json"])
def test_role_files_are_custom_role_definitions(name):
    body = role(name)
    assert body["IsCustom"] is True and body["Name"] and body["Description"]
    assert body["NotActions"] == [] and body["DataActions"] == [] and body["NotDataActions"] == []
    assert body["AssignableScopes"] and all(s.startswith("/subscriptions/") for s in body["AssignableScopes"])
    assert not any("*" in action for action in body["Actions"])
