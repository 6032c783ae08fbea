"""How the simulated Windows of a rescue VM answers azrdp's offline payload (``rescue.ps1``).

The rescue VM's Windows sees each data disk's Windows as an attached volume
(``WindowsGuest.attached_volumes``, kept by disks.py); the payload works on the *offline* state of
that volume exactly as rescue.ps1 does on the loaded hives and the volume's files, step by step,
with the same before/after facts, and nothing else: the running guest of the VM that disk came
from is untouched (it is another copy). What the offline registry stands for:

- ``registry["fDenyTSConnections"]`` / ``policy.fDenyTSConnections``: Control\\Terminal Server and
  SOFTWARE\\Policies\\...\\Terminal Services;
- each service's ``start``: Services\\NAME\\Start (Disabled = 4; a missing service has no key);
- PortNumber, SecurityLayer, MinEncryptionLevel: WinStations\\RDP-Tcp (fEnableWinStation is not
  modelled: absent, i.e. enabled);
- ``bound_thumbprint``/``bound_kind`` and the certificates: SSLCertificateSHA1Hash (read as
  common.ps1's Get-BoundThumbprint reads it: a value that is not a 20-byte REG_BINARY is
  MALFORMED) and the SOFTWARE hive's SystemCertificates\\{MY,Remote Desktop}\\Certificates keys;
- MachineKeys and the firewall rules: the volume's files and FirewallPolicy\\FirewallRules. The
  folder ACL is set as Windows sets it (``MachineKeys.set_folder_sddl``: re-propagation leaves a
  key file whose ACEs were only inherited with an empty DACL unless they were made explicit first);
  the live RDP key container gets the ACEs the volume's ``build`` ships, as change.ps1's
  Grant-RdpKeyAccess adds them (``KeyFile.grant_as_shipped``, shared with the online model);
- ``backup_root``: <volume>\\ProgramData\\azrdp, refused as a reparse point or with a foreign owner,
  as change.ps1's Confirm-ProtectedFolder refuses it (well-known SIDs mean the same offline).

Loading and unloading the hives is not modelled beyond its result (they are always unloaded);
whether Windows really lets reg.exe unload them after PowerShell's handles are collected is listed
as unverified in docs/emulator.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from azrdp.emulator.guest import WindowsGuest
from azrdp.emulator.guest_payloads import MAX_KEY_FILES, limit_text
from azrdp.payloads import payload
from azrdp.payloads.schema import MACHINEKEYS_DEFAULT_SDDL, RESCUE_SERVICES, RESCUE_STEPS

_START_FIX = {"TermService": "Manual", "SessionEnv": "Manual", "UmRdpService": "Manual",
              "WindowsAzureGuestAgent": "Automatic", "RdAgent": "Automatic"}
_FIRST_LETTER = "F"   # C: the rescue's Windows, D: its temporary disk, E: its DVD drive


class _Failed(Exception):
    """What a step's repair throws in rescue.ps1: the step is "failed", the message its error."""


class _Offline:
    def __init__(self, volume: WindowsGuest, letter: str, run_id: str):
        self.v = volume
        self.letter = letter
        self.run_id = run_id
        self.backup: str | None = None

    def backup_path(self) -> str:
        """Get-RescueBackupFolder (change.ps1's Get-BackupFolder on the volume): azrdp and backup
        protected first, then rescue-<RunId> (a suffix when taken) with run-id.txt."""
        if self.backup is None:
            try:
                self.v.backup_root.take()
            except ValueError as refused:
                raise _Failed(str(refused)) from None
            root = rf"{self.letter}\ProgramData\azrdp\backup\rescue-{self.run_id}"
            path, suffix = root, 1
            while path in self.v.backup_folders:
                suffix += 1
                path = f"{root}-{suffix}"
            self.v.backup_folders[path] = ["run-id.txt"]
            self.backup = path
        return self.backup

    def back_up(self, name: str) -> None:
        files = self.v.backup_folders[self.backup_path()]
        if name not in files:
            files.append(name)

    # -- the steps (read, repair) --------------------------------------------------------------
    def read_rdp_enable(self) -> dict[str, Any]:
        return {"deny": self.v.registry.get("fDenyTSConnections"),
                "policy_deny": self.v.registry.get("policy.fDenyTSConnections")}

    def repair_rdp_enable(self, before: dict[str, Any]) -> tuple[bool, list[str], str | None]:
        actions = []
        if before["deny"] != 0:
            self.v.registry["fDenyTSConnections"] = 0
            actions.append("deny=0")
        if before["policy_deny"] not in (None, 0):
            self.v.registry["policy.fDenyTSConnections"] = 0
            actions.append("policy:deny=0")
        return bool(actions), actions, None

    def read_services(self) -> dict[str, Any]:
        disabled, missing = [], []
        for name in RESCUE_SERVICES:
            service = self.v.services.get(name)
            if service is None or service.state == "Missing":
                missing.append(name)
            elif service.start == "Disabled":
                disabled.append(name)
        return {"disabled": disabled, "missing": missing}

    def repair_services(self, before: dict[str, Any]) -> tuple[bool, list[str], str | None]:
        for name in before["disabled"]:
            self.v.services[name].start = _START_FIX[name]
        return bool(before["disabled"]), [f"start:{n}" for n in before["disabled"]][:4], None

    def read_rdp_tcp(self) -> dict[str, Any]:
        reg = self.v.registry
        return {"port": reg.get("PortNumber"), "security_layer": reg.get("SecurityLayer"),
                "min_encryption": reg.get("MinEncryptionLevel"), "enabled": None}

    def repair_rdp_tcp(self, before: dict[str, Any]) -> tuple[bool, list[str], str | None]:
        reg, actions = self.v.registry, []
        if before["port"] is None or not 1 <= before["port"] <= 65535:
            reg["PortNumber"] = 3389
            actions.append("port=3389")
        if before["security_layer"] is not None and before["security_layer"] > 2:
            reg["SecurityLayer"] = 2
            actions.append("seclayer=2")
        if before["min_encryption"] is not None and not 1 <= before["min_encryption"] <= 4:
            reg["MinEncryptionLevel"] = 2
            actions.append("minenc=2")
        return bool(actions), actions, None

    def read_cert(self) -> dict[str, Any]:
        bound = self.v.binding()           # MALFORMED (a REG_SZ, a wrong length) is never usable
        usable = None
        if bound == "MALFORMED":
            usable = False
        elif bound:
            cert = self.v.find(bound)
            usable = cert is not None and cert.store in ("rd", "my") and not cert.expired(self.v.real_now())
        return {"bound": bound, "bound_usable": usable, "store": len(self.v.rd_store())}

    def repair_cert(self, before: dict[str, Any]) -> tuple[bool, list[str], str | None]:
        actions = []
        if before["bound"] and not before["bound_usable"]:
            self.back_up("SSLCertificateSHA1Hash.txt")   # as stored (kind:data), then the undo line
            self.back_up("undo.txt")
            self.v.bound_thumbprint, self.v.bound_kind = None, "Binary"
            actions.append("binding:cleared")
        moved = self.v.rd_store()
        if moved:
            folder = self.backup_path()
            self.v.backup_folders[folder] += [f"{cert.thumbprint}.reg" for cert in moved]
            self.back_up("undo.txt")
            for cert in moved:             # Move-Item into the offline azrdp-backup store
                cert.store = "backup"
            actions.append(f"store:moved={len(moved)}")
        return bool(actions), actions, None

    def read_machinekeys(self) -> dict[str, Any]:
        keys, key = self.v.machinekeys, self.v.machinekeys.rdp_key
        if not keys.listable:
            # Get-OfflineRdpKeyFiles lists with -ErrorAction SilentlyContinue: no file is seen
            key = None
        read: bool | None = bool(key and key.network_service_read)
        if key is not None and not key.acl_readable:
            read = None                    # Get-Acl throws: recorded unreadable, not a failed read
        return {"default": keys.default, "rdp_key": key is not None,   # the DACL alone, as online
                "network_service_read": read}

    def repair_machinekeys(self, before: dict[str, Any]) -> tuple[bool, list[str], str | None]:
        keys = self.v.machinekeys
        if before["default"] and (not before["rdp_key"] or before["network_service_read"]):
            return False, [], None
        actions = []
        if not keys.listable:
            # Add-SystemListAce (change.ps1): SYSTEM cannot list the folder, so the hold-back and
            # the save would throw (UnauthorizedAccessException, no backup semantics); the folder's
            # SDDL and the undo are saved, then one non-inheritable list ACE for SYSTEM is added.
            self.back_up("machinekeys.folder.sddl.txt")
            self.back_up("undo.txt")
            keys.add_system_list_ace()
            actions.append("acl:list")
        if keys.files > MAX_KEY_FILES:                 # Get-KeyFolderHoldBack, before any further change
            return bool(actions), actions, f"held back: MachineKeys holds over {MAX_KEY_FILES} files"
        if keys.subfolders:
            return bool(actions), actions, "held back: MachineKeys holds a subfolder"
        for name in ("machinekeys.acl", "machinekeys.sddl.txt", "undo.txt"):   # Save-MachineKeysAcl
            self.back_up(name)
        if not before["default"]:
            if keys.make_inherited_explicit():         # Protect-InheritedKeyAces
                actions.append("acl:explicit")
            keys.set_folder_sddl(MACHINEKEYS_DEFAULT_SDDL)   # Set-Acl re-propagates to the files
            actions.append("acl:folder-default")
        if keys.rdp_key is not None:
            # Grant-RdpKeyAccess (change.ps1), for the build in the disk's SOFTWARE hive
            try:
                granted = keys.rdp_key.grant_as_shipped(self.v.build)
            except PermissionError as denied:
                raise _Failed(str(denied)) from None
            if granted:
                actions.append("acl:rdp-key")
        return bool(actions), actions, None

    def _rdp_rules(self) -> list[Any]:
        return [r for r in self.v.firewall_rules if r.name.startswith("RemoteDesktop-")]

    def read_firewall(self) -> dict[str, Any]:
        rules = self._rdp_rules()
        return {"rules": len(rules), "enabled": sum(1 for r in rules if r.enabled)}

    def repair_firewall(self, before: dict[str, Any]) -> tuple[bool, list[str], str | None]:
        if before["rules"] == 0:
            return False, [], "no Remote Desktop firewall rules on the disk"
        off = [r for r in self._rdp_rules() if not r.enabled]
        for rule in off:
            rule.enabled = True
        return bool(off), ["fw:rules-on"] if off else [], None

    def step(self, name: str) -> dict[str, Any]:
        key = name.replace("-", "_")
        read: Callable[[], dict[str, Any]] = getattr(self, f"read_{key}")
        repair: Callable[[dict[str, Any]], tuple[bool, list[str], str | None]] = getattr(self, f"repair_{key}")
        before = read()
        try:
            changed, actions, skip = repair(before)
        except _Failed as failure:                     # Invoke-Step's catch: failed, no actions
            return {"name": name, "status": "failed", "before": before, "after": read(), "actions": [],
                    "error": limit_text(str(failure), 60)}
        status = "changed" if changed else "skipped" if skip else "unchanged"
        return {"name": name, "status": status, "before": before, "after": read(), "actions": actions,
                "error": limit_text(skip, 60)}


def rescue(guest: WindowsGuest, values: dict[str, Any]) -> dict[str, Any]:
    """rescue.ps1 on the rescue VM ``guest``: repair the one offline Windows attached to it."""
    volumes = [v for v in guest.attached_volumes if not v.up]
    result: dict[str, Any] = {"payload": "rescue", "version": payload("rescue").version, "run_id": values["RunId"],
                              "volume": None, "found": "none", "computer_name": None, "control_set": None,
                              "backup": None, "hives_unloaded": True, "steps": [], "changed": False,
                              "error": "no single offline Windows volume: none"}
    if len(volumes) != 1:
        if volumes:
            result.update(found="several", error="no single offline Windows volume: several")
        return result
    letter = f"{_FIRST_LETTER}:"
    work = _Offline(volumes[0], letter, values["RunId"])
    steps = [work.step(name) for name in RESCUE_STEPS]
    result.update(volume=letter, found="ok", computer_name=limit_text(volumes[0].computer_name, 15),
                  control_set="ControlSet001", backup=limit_text(work.backup, 80), steps=steps,
                  changed=any(s["status"] == "changed" for s in steps), error=None)
    return result
