"""The offline guest (guest_offline.py) answers rescue.ps1 as Windows would, on the Windows of a
disk attached to a rescue VM: the faults repair.ps1 had fixed and rescue.ps1 repeated (RECHECK
#9, #10/#19, #17) are modelled, so a rescue that skipped the fix would show them."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from azrdp.emulator.guest import KeyFile, WindowsGuest
from azrdp.emulator.guest_offline import rescue
from azrdp.payloads.schema import MACHINEKEYS_DEFAULT_SDDL, validate_result

NOW = datetime(2026, 12, 2, tzinfo=timezone.utc)
# After `icacls /reset /t` on MachineKeys: the folder inherits ProgramData's ACEs (Users read
# included) and every key file holds only inherited ones.
RESET_SDDL = "O:SYG:SYD:AI(A;OICIID;FA;;;SY)(A;OICIID;FA;;;BA)(A;OICIID;0x1200a9;;;BU)"
BACKUP = r"F:\ProgramData\azrdp\backup\rescue-azrdp-rescue-1"


def _guest(name: str) -> WindowsGuest:
    return WindowsGuest(name, now=lambda: 0.0, wall=lambda: NOW, machine_guid=f"{name}-guid")


@pytest.fixture
def volume():
    """The broken VM's Windows, offline on the rescue VM's data disk."""
    disk = _guest("vm-web-01")
    disk.up = False
    return disk


def _rescue(volume: WindowsGuest) -> tuple[dict, dict[str, dict]]:
    rescue_vm = _guest("azrdp-rescue")
    rescue_vm.attached_volumes = [volume]
    result = rescue(rescue_vm, {"RunId": "azrdp-rescue-1"})
    validate_result("rescue", result)
    return result, {step["name"]: step for step in result["steps"]}


def test_inherited_only_key_files_keep_their_aces_when_the_folder_acl_is_restored(volume):
    # RECHECK #9 (critical): Set-Acl on the folder re-propagates; the default MachineKeys ACEs are
    # not inheritable, so a key file with only inherited ACEs was left with an empty DACL.
    keys = volume.machinekeys
    keys.sddl, keys.inherited_only_files = RESET_SDDL, 3
    keys.rdp_key = KeyFile("f686aace6942fb7f7ceb231212eef4a4_vm-web-01-guid", network_service_read=False,
                           inherited_only=True)
    _, steps = _rescue(volume)
    step = steps["machinekeys"]
    assert step["status"] == "changed" and step["actions"] == ["acl:explicit", "acl:folder-default", "acl:rdp-key"]
    assert keys.empty_dacl_files == 0 and keys.exposed_files == 0      # nothing unreadable, Users' read not kept
    assert keys.sddl == MACHINEKEYS_DEFAULT_SDDL and keys.rdp_key.network_service_read and keys.rdp_key.system_full
    assert {"machinekeys.acl", "machinekeys.sddl.txt", "undo.txt"} <= set(volume.backup_folders[BACKUP])


def test_only_the_live_rdp_key_container_is_judged_and_granted(volume):
    # A cloned image's container (another MachineGuid) is never opened by that Windows: a readable
    # stale one does not hide a live one NETWORK SERVICE cannot read, and it is left as it is.
    keys = volume.machinekeys
    keys.rdp_key = KeyFile("f686aace6942fb7f7ceb231212eef4a4_vm-web-01-guid", network_service_read=False)
    stale = KeyFile("f686aace6942fb7f7ceb231212eef4a4_image-guid", network_service_read=False, system_full=False)
    keys.stale_rdp_keys = [stale]
    _, steps = _rescue(volume)
    assert steps["machinekeys"]["before"]["network_service_read"] is False
    assert steps["machinekeys"]["actions"] == ["acl:rdp-key"] and keys.rdp_key.network_service_read
    assert not stale.network_service_read and not stale.system_full


def test_the_offline_folder_acl_propagates_as_windows_does():
    # The model the test above relies on: the same Set-Acl without making the ACEs explicit first
    # (the old rescue.ps1) leaves every inherited-only key file with an empty DACL.
    disk = _guest("vm-web-01")
    keys = disk.machinekeys
    keys.sddl, keys.inherited_only_files = RESET_SDDL, 3
    keys.set_folder_sddl(MACHINEKEYS_DEFAULT_SDDL)
    assert keys.empty_dacl_files == 3


@pytest.mark.parametrize(("kind", "data"), [("String", "AB" * 20), ("Binary", "AB" * 19)])
def test_a_malformed_binding_is_saved_and_cleared_not_a_failed_step(volume, kind, data):
    # RECHECK #17 (high): [byte]$_ on a REG_SZ thumbprint threw ("cannot read state"); a
    # wrong-length binary value read as "no binding" and was never cleared.
    cert = volume.newest_self_signed()
    volume.bound_thumbprint, volume.bound_kind = (cert.thumbprint if kind == "String" else data), kind
    result, steps = _rescue(volume)
    step = steps["cert"]
    assert step["before"]["bound"] == "MALFORMED" and step["before"]["bound_usable"] is False
    assert step["status"] == "changed" and step["actions"][0] == "binding:cleared"
    assert step["after"]["bound"] is None and volume.binding() is None
    assert {"SSLCertificateSHA1Hash.txt", "undo.txt"} <= set(volume.backup_folders[BACKUP])
    assert result["backup"] == BACKUP.replace("\\", "/")


@pytest.mark.parametrize(("fault", "message"), [("reparse_point", "backup folder is a reparse point"),
                                                ("owner", "backup folder has a foreign owner")])
def test_a_backup_root_someone_made_first_is_refused_and_nothing_changes(volume, fault, message):
    # RECHECK #10/#19: New-Item -Force used a <vol>\ProgramData\azrdp a user of the broken VM had made
    # (a junction to elsewhere, or their own folder they could empty) for the backups.
    if fault == "owner":
        volume.backup_root.owner = "S-1-5-21-1-2-3-1001"
    else:
        volume.backup_root.reparse_point = True
    volume.bound_thumbprint = "CD" * 20                                # a binding to a missing certificate
    volume.machinekeys.sddl = RESET_SDDL
    result, steps = _rescue(volume)
    for name in ("cert", "machinekeys"):
        assert steps[name]["status"] == "failed" and steps[name]["error"].startswith(message), name
        assert steps[name]["actions"] == []
    assert volume.bound_thumbprint == "CD" * 20 and volume.rd_store()      # kept: nothing was backed up
    assert volume.machinekeys.sddl == RESET_SDDL and volume.backup_folders == {}
    assert result["backup"] is None and not volume.backup_root.protected


def test_the_backup_root_is_taken_and_protected_before_the_first_backup(volume):
    volume.bound_thumbprint = "CD" * 20
    _, steps = _rescue(volume)
    assert steps["cert"]["status"] == "changed"
    assert volume.backup_root.protected and volume.backup_root.owner == "S-1-5-18"
    assert volume.backup_folders[BACKUP][0] == "run-id.txt"


def test_the_machinekeys_default_is_the_dacl_alone(volume):
    # RECHECK #19: the full owner+group+DACL string was compared, so Windows' DACL under another
    # owner was rewritten (and its owner changed) for nothing.
    volume.machinekeys.sddl = "O:BAG:SYD:PAI(A;;0x12019f;;;WD)(A;;FA;;;BA)"
    _, steps = _rescue(volume)
    assert steps["machinekeys"]["before"]["default"] is True and steps["machinekeys"]["status"] == "unchanged"
    assert volume.machinekeys.sddl.startswith("O:BA")


@pytest.mark.parametrize(("setup", "reason"), [
    ({"subfolders": 1}, "held back: MachineKeys holds a subfolder"),
    ({"other_files": 20_001}, "held back: MachineKeys holds over 20000 files"),
])
def test_the_folder_acl_is_held_back_when_it_cannot_be_set_safely(volume, setup, reason):
    # RECHECK new H-2: a junction planted in MachineKeys would take SYSTEM's re-propagation with it;
    # a bloated folder cannot be walked inside the deadline. Both before any change.
    keys = volume.machinekeys
    keys.sddl = RESET_SDDL
    for name, value in setup.items():
        setattr(keys, name, value)
    _, steps = _rescue(volume)
    assert steps["machinekeys"]["status"] == "skipped" and steps["machinekeys"]["error"] == reason
    assert keys.sddl == RESET_SDDL
    assert not any("machinekeys.acl" in files for files in volume.backup_folders.values())


@pytest.mark.parametrize(("build", "granted", "untouched"), [("20348.2340", "session_env_full", "admins_read"),
                                                           ("17763.6532", "session_env_full", "admins_read"),
                                                           ("14393.7428", "admins_read", "session_env_full")])
def test_the_rdp_key_container_gets_the_aces_its_build_ships(volume, build, granted, untouched):
    # Issues 10/16: rescue purged and re-added NETWORK SERVICE and SYSTEM only, whatever the disk's
    # build ships: NT SERVICE\SessionEnv full control from 17763, Administrators read before it.
    volume.build = build
    volume.machinekeys.rdp_key = KeyFile("f686aace6942fb7f7ceb231212eef4a4_vm-web-01-guid", network_service_read=False,
                                         session_env_full=False, admins_read=False)
    _, steps = _rescue(volume)
    key = volume.machinekeys.rdp_key
    assert steps["machinekeys"]["actions"] == ["acl:rdp-key"] and steps["machinekeys"]["after"]["network_service_read"]
    assert key.network_service_read and key.system_full and getattr(key, granted)
    assert not getattr(key, untouched)     # only what that build ships is added


def test_a_container_that_already_holds_its_aces_is_not_rewritten(volume):
    # Grant-RdpKeyAccess only adds what is missing (an ACE added on purpose stays): with the folder
    # repaired and the container as Windows ships it, the container's ACL is not set again.
    volume.machinekeys.sddl = RESET_SDDL
    volume.machinekeys.rdp_key = KeyFile("f686aace6942fb7f7ceb231212eef4a4_vm-web-01-guid")
    _, steps = _rescue(volume)
    assert steps["machinekeys"]["status"] == "changed" and steps["machinekeys"]["actions"] == ["acl:folder-default"]


def test_a_container_system_cannot_read_is_recorded_and_the_step_still_runs(volume):
    # RECHECK #18 (low): Get-Acl threw inside the read, so the step was "cannot read state" and
    # skipped. Now it reads null (unreadable), saves every ACL first, and its grant fails on the
    # container it cannot read, the failure said.
    volume.machinekeys.sddl = RESET_SDDL
    volume.machinekeys.rdp_key = KeyFile("f686aace6942fb7f7ceb231212eef4a4_vm-web-01-guid", acl_readable=False)
    _, steps = _rescue(volume)
    step = steps["machinekeys"]
    assert step["before"] == {"default": False, "rdp_key": True, "network_service_read": None}
    assert step["status"] == "failed" and step["error"] == "Attempted to perform an unauthorized operation."
    assert step["after"]["default"] is True and step["after"]["network_service_read"] is None
    assert {"machinekeys.acl", "machinekeys.sddl.txt", "undo.txt"} <= set(volume.backup_folders[BACKUP])


def test_a_folder_system_cannot_list_gets_one_list_ace_first_then_the_default_acl(volume):
    """Desk review 3 M-3 (review #18 offline): rescue went straight to the hold-back and the save,
    which list the folder: on a MachineKeys locked to one admin account the step failed with
    nothing repaired, on exactly the VM only rescue can reach. The list ACE comes first, its undo
    saved before it is sent, then the default DACL replaces it."""
    from azrdp.emulator.guest import UNLISTABLE_MACHINEKEYS_SDDL

    keys = volume.machinekeys
    keys.sddl = UNLISTABLE_MACHINEKEYS_SDDL
    assert not keys.listable
    _, steps = _rescue(volume)
    step = steps["machinekeys"]
    assert step["status"] == "changed", step
    assert step["before"]["rdp_key"] is False          # the unlistable folder showed no container
    assert step["actions"][0] == "acl:list" and "acl:folder-default" in step["actions"]
    assert keys.sddl == MACHINEKEYS_DEFAULT_SDDL and keys.listable
    saved = volume.backup_folders[BACKUP]
    assert saved.index("machinekeys.folder.sddl.txt") < saved.index("machinekeys.acl")
