# Helpers shared by the azrdp payloads that change things (repair.ps1 online, rescue.ps1 on an
# offline volume). azrdp.payloads puts this file in place of the line "# azrdp:include change.ps1"
# of those payloads only (after common.ps1, whose names it uses); the read-only diagnose payload
# never gets it. Every path is a parameter: nothing here assumes the running Windows'
# %ProgramData% or MachineKeys, so the same code works on C: and on an attached offline volume.
# The including payload sets $script:DeadlineSeconds and $ResultReserveSeconds (its time budget).
# Windows PowerShell 5.1 compatible; no aliases; ASCII only.

$BackupRootSddl = 'O:SYG:SYD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)'
$BroadSids = @('S-1-1-0', 'S-1-5-11', 'S-1-5-32-545')   # Everyone, Authenticated Users, Users
$SidSessionEnv = 'S-1-5-80-4022436659-1090538466-1613889075-870485073-3428993833'   # NT SERVICE\SessionEnv
# A monotonic clock, not Get-Date: a time-sync jump on a VM just restored or resumed would move a
# wall-clock deadline (Learn: Stopwatch measures elapsed time with the performance counter).
$script:Clock = [System.Diagnostics.Stopwatch]::StartNew()
$script:BackupFolder = $null

function Get-SecondsLeft {
    # Seconds a step may still spend; the last $ResultReserveSeconds belong to the result line.
    return [int][Math]::Floor($script:DeadlineSeconds - $script:Clock.Elapsed.TotalSeconds) - $ResultReserveSeconds
}

# ---- backups ----

function Confirm-ProtectedFolder {
    # A folder only SYSTEM and Administrators may use. Any local user can create folders in
    # ProgramData: a reparse point (a junction to elsewhere) or a folder someone else owns is
    # refused, so SYSTEM never writes backups where a user points it, nor where a user can delete them.
    param([Parameter(Mandatory = $true)][string]$Path)
    if (Test-Path -LiteralPath $Path) {
        $item = Get-Item -LiteralPath $Path -Force
        if (($item.Attributes -band [System.IO.FileAttributes]::ReparsePoint) -ne 0) { throw 'backup folder is a reparse point; nothing was changed' }
        $owner = (Get-Acl -LiteralPath $Path).GetOwner([System.Security.Principal.SecurityIdentifier]).Value
        if (@($SidSystem, 'S-1-5-32-544') -notcontains $owner) { throw 'backup folder has a foreign owner; nothing was changed' }
    } else {
        New-Item -ItemType Directory -Path $Path | Out-Null
    }
    $security = New-Object -TypeName System.Security.AccessControl.DirectorySecurity
    $security.SetSecurityDescriptorSddlForm($BackupRootSddl)
    Set-Acl -LiteralPath $Path -AclObject $security
}

function Get-BackupFolder {
    # One new folder per run under <DataRoot>\azrdp\backup (DataRoot: the ProgramData folder of the
    # Windows being repaired), both protected; named -Name (default: the UTC time), never reused.
    param([Parameter(Mandatory = $true)][string]$DataRoot, [Parameter(Mandatory = $true)][string]$RunId,
          [string]$Name = '')
    if ($null -ne $script:BackupFolder) { return $script:BackupFolder }
    $root = Join-Path -Path $DataRoot -ChildPath 'azrdp'
    Confirm-ProtectedFolder -Path $root
    $base = Join-Path -Path $root -ChildPath 'backup'
    Confirm-ProtectedFolder -Path $base
    $stamp = $Name
    if ($stamp -eq '') { $stamp = (Get-Date).ToUniversalTime().ToString('yyyyMMddTHHmmssZ', [System.Globalization.CultureInfo]::InvariantCulture) }
    $path = Join-Path -Path $base -ChildPath $stamp
    $suffix = 1
    while (Test-Path -LiteralPath $path) {
        $suffix += 1
        $path = Join-Path -Path $base -ChildPath ('{0}-{1}' -f $stamp, $suffix)
    }
    New-Item -ItemType Directory -Path $path | Out-Null
    Set-Content -LiteralPath (Join-Path -Path $path -ChildPath 'run-id.txt') -Value $RunId -Encoding ASCII
    $script:BackupFolder = $path
    return $path
}

function Add-UndoNote {
    # One line of undo.txt in the run's backup folder: what was changed and how to put it back.
    param([Parameter(Mandatory = $true)][string]$Folder, [Parameter(Mandatory = $true)][string]$Line)
    Add-Content -LiteralPath (Join-Path -Path $Folder -ChildPath 'undo.txt') -Value $Line -Encoding ASCII
}

# ---- MachineKeys ACLs ----

function Save-MachineKeysAcl {
    # icacls /save of the MachineKeys folder $Path and every file (DACLs) into the backup folder
    # $Folder, plus every item's full SDDL (owners too, which icacls /save does not keep); throws,
    # before any change, when either fails. -OfflineVolume: the letter of the offline volume both
    # paths are on ('F:'); the undo note then says %SystemDrive% instead (that disk's own Windows
    # drive once it boots, where the undo will run).
    param([Parameter(Mandatory = $true)][string]$Path, [Parameter(Mandatory = $true)][string]$Folder,
          [string]$OfflineVolume = '')
    $file = Join-Path -Path $Folder -ChildPath 'machinekeys.acl'
    $run = Invoke-Native -FilePath 'icacls.exe' -ArgumentList @($Path, '/save', $file, '/t', '/c', '/q')
    if ($run.ExitCode -ne 0 -or -not (Test-Path -LiteralPath $file)) {
        throw ('icacls /save failed (exit {0}); nothing was changed' -f $run.ExitCode)
    }
    # icacls /save writes UTF-16: the folder's own name first, then each item (relative names). A
    # file that does not start with it is a partial save, never a backup to rely on.
    if ([string](Get-Content -LiteralPath $file -Encoding Unicode -TotalCount 1) -ne (Split-Path -Path $Path -Leaf)) {
        throw 'icacls /save incomplete; nothing was changed'
    }
    $lines = New-Object -TypeName System.Collections.ArrayList
    [void]$lines.Add(('{0}|{1}' -f $Path, (Get-Acl -LiteralPath $Path).Sddl))
    foreach ($item in @(Get-ChildItem -LiteralPath $Path -Force -File)) {
        if ((Get-SecondsLeft) -lt 60) { throw 'deadline: stopped before changing the folder ACL' }
        # A file that denies SYSTEM READ_CONTROL is recorded, not a reason to give up: it is what
        # the step repairs (the owner's rights through Administrators still allow WRITE_DAC).
        try { $sddl = (Get-Acl -LiteralPath $item.FullName).Sddl } catch { $sddl = 'UNREADABLE' }
        [void]$lines.Add(('{0}|{1}' -f $item.Name, $sddl))
    }
    Set-Content -LiteralPath (Join-Path -Path $Folder -ChildPath 'machinekeys.sddl.txt') -Value $lines.ToArray() -Encoding ASCII
    $note = 'MachineKeys ACLs: icacls "{0}" /restore "{1}" /c (owners: machinekeys.sddl.txt)' -f (Split-Path -Path $Path -Parent), $file
    if ($OfflineVolume -ne '') { $note = $note.Replace(('"' + $OfflineVolume + '\'), '"%SystemDrive%\') }
    Add-UndoNote -Folder $Folder -Line $note
    return $Folder
}

function Test-FolderListable {
    # Can this process list $Path? .NET enumerates without backup semantics (PowerShell does not
    # enable SeBackupPrivilege): a DACL that gives SYSTEM no List throws UnauthorizedAccessException.
    param([Parameter(Mandatory = $true)][string]$Path)
    try {
        [void][System.IO.Directory]::EnumerateFileSystemEntries($Path).GetEnumerator().MoveNext()
        return $true
    } catch [System.UnauthorizedAccessException] {
        return $false
    }
}

function Add-SystemListAce {
    # SYSTEM cannot list the MachineKeys folder $Path (review #18), and every later action lists it.
    # ADD one non-inheritable ACE that lets SYSTEM list: the folder's own, so re-propagation gives
    # the children nothing new and strips nothing of theirs (Learn: "Automatic Propagation of
    # Inheritable ACEs"). The folder's SDDL and the undo are written into $Folder before it is
    # sent; the default DACL the step sets next replaces it. -OfflineVolume as Save-MachineKeysAcl.
    param([Parameter(Mandatory = $true)][string]$Path, [Parameter(Mandatory = $true)][string]$Folder,
          [string]$OfflineVolume = '')
    $acl = Get-Acl -LiteralPath $Path
    Set-Content -LiteralPath (Join-Path -Path $Folder -ChildPath 'machinekeys.folder.sddl.txt') -Value $acl.Sddl -Encoding ASCII
    $note = 'MachineKeys folder before the list ACE: $a = Get-Acl "{0}"; $a.SetSecurityDescriptorSddlForm(''{1}''); Set-Acl "{0}" $a' -f $Path, $acl.Sddl
    if ($OfflineVolume -ne '') { $note = $note.Replace(('"' + $OfflineVolume + '\'), '"%SystemDrive%\') }
    Add-UndoNote -Folder $Folder -Line $note
    $acl.AddAccessRule((New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList ([System.Security.Principal.SecurityIdentifier]$SidSystem), 'ListDirectory, ReadAttributes, ReadPermissions', 'None', 'None', 'Allow'))
    Set-Acl -LiteralPath $Path -AclObject $acl
}

function Get-KeyFolderHoldBack {
    # Why no ACL change may start on the MachineKeys folder $Path, or $null. Over $MaxKeyFiles
    # files (10^5 orphaned keys on IIS/.NET hosts): too many to walk inside the deadline
    # (EnumerateFiles stops at the limit). A subfolder or a reparse point: setting the folder's
    # DACL re-propagates inheritance to every child (SetNamedSecurityInfo), and the default DACL
    # lets Everyone add a subdirectory, so a local user could plant a junction for SYSTEM's
    # propagation to walk into; stock Windows keeps no subfolder there.
    param([Parameter(Mandatory = $true)][string]$Path)
    $n = 0
    foreach ($file in [System.IO.Directory]::EnumerateFiles($Path)) {
        $n += 1
        if ($n -gt $MaxKeyFiles) { return ('held back: MachineKeys holds over {0} files' -f $MaxKeyFiles) }
    }
    if (@(Get-ChildItem -LiteralPath $Path -Force -Directory).Count -gt 0) { return 'held back: MachineKeys holds a subfolder' }
    if (@(Get-ChildItem -LiteralPath $Path -Force -Attributes ReparsePoint).Count -gt 0) { return 'held back: MachineKeys holds a reparse point' }
    return $null
}

function Set-DefaultMachineKeysAcl {
    # Windows' default security descriptor on a MachineKeys folder (owner SYSTEM). Set-Acl enables
    # SeRestorePrivilege itself; the owner is never changed (taking ownership would change it outside the backup).
    param([Parameter(Mandatory = $true)][string]$Path)
    $security = New-Object -TypeName System.Security.AccessControl.DirectorySecurity
    $security.SetSecurityDescriptorSddlForm($MachineKeysDefaultSddl)
    Set-Acl -LiteralPath $Path -AclObject $security
}

function Protect-InheritedKeyAces {
    # Setting the folder's DACL re-propagates inheritance to every child (SetNamedSecurityInfo):
    # a key file whose ACEs were only inherited would be left with an empty DACL, because the
    # default folder ACEs are not inheritable. Make such files' inherited ACEs explicit first, but
    # never the broad ones (Everyone, Authenticated Users, Users: a forum fix's Everyone:(OI)(CI)F,
    # or Users:RX after `icacls /reset /t`), which would leave every machine private key readable
    # by any local user for good; a file left with nothing gets SYSTEM and Administrators full
    # control. A file with explicit ACEs too only drops its inherited ones (propagation would).
    # Files Get-Acl cannot read are skipped (recorded UNREADABLE by Save-MachineKeysAcl).
    # $Path: the MachineKeys folder. Returns how many files it changed.
    param([Parameter(Mandatory = $true)][string]$Path)
    $count = 0
    foreach ($item in @(Get-ChildItem -LiteralPath $Path -Force -File)) {
        if ((Get-SecondsLeft) -lt 60) { throw 'deadline: stopped before changing the folder ACL' }
        try { $acl = Get-Acl -LiteralPath $item.FullName } catch { continue }
        $rules = @($acl.GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier]))
        $inherited = @($rules | Where-Object -FilterScript { $_.IsInherited }).Count
        if ($inherited -eq 0) { continue }
        $keep = @($rules | Where-Object -FilterScript { $_.IsInherited -and $BroadSids -notcontains $_.IdentityReference.Value })
        # Protected, inherited rules removed (Learn: ObjectSecurity.SetAccessRuleProtection,
        # preserveInheritance false); an inherited-only file then gets the kept ones as its own.
        $acl.SetAccessRuleProtection($true, $false)
        if ($inherited -eq $rules.Count) {
            foreach ($rule in $keep) {
                $acl.AddAccessRule((New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList $rule.IdentityReference, $rule.FileSystemRights, $rule.AccessControlType))
            }
            if ($keep.Count -eq 0) {
                foreach ($sid in @($SidSystem, 'S-1-5-32-544')) {
                    $acl.AddAccessRule((New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList ([System.Security.Principal.SecurityIdentifier]$sid), 'FullControl', 'Allow'))
                }
            }
        }
        Set-Acl -LiteralPath $item.FullName -AclObject $acl
        $count += 1
    }
    return $count
}

function Get-RdpKeyGrants {
    # The RDP key container's ACEs as build $Build ships them (CurrentBuildNumber of the Windows
    # being repaired, read by the caller: the running one's HKLM, or an offline SOFTWARE hive; ''
    # when absent): SYSTEM full control and NETWORK SERVICE read everywhere; from build 17763
    # NT SERVICE\SessionEnv full control, before it Administrators read (measured per build:
    # Azure/repair-script-library win-fix-rdp-certificate.ps1, Get-RequiredContainerAce).
    param([string]$Build = '')
    $grants = New-Object -TypeName System.Collections.ArrayList
    [void]$grants.Add(@($SidSystem, 'FullControl'))
    [void]$grants.Add(@($SidNetworkService, 'Read'))
    if ($Build -ne '' -and [int]$Build -ge 17763) { [void]$grants.Add(@($SidSessionEnv, 'FullControl')) }
    else { [void]$grants.Add(@('S-1-5-32-544', 'Read')) }
    return ,$grants.ToArray()
}

function Grant-RdpKeyAccess {
    # The RDP key container's ACEs for its build (Get-RdpKeyGrants -Build $Build), added to what is
    # there: an ACE someone added on purpose stays; only a Deny for an account being granted goes
    # (a Deny beats every Allow). $Folder: the MachineKeys folder; $LivePath: the live container
    # (Get-LiveRdpKeyPath for that Windows), '' when it has no MachineGuid: then every RDP
    # container there. Returns whether it changed an ACL.
    param([Parameter(Mandatory = $true)][string]$Folder, [string]$LivePath = '', [string]$Build = '')
    $grants = Get-RdpKeyGrants -Build $Build
    $changed = $false
    foreach ($file in @(Get-ChildItem -LiteralPath $Folder -Filter $RdpKeyFilter -Force -File | Where-Object -FilterScript { $LivePath -eq '' -or $_.FullName -eq $LivePath })) {
        $missing = @($grants | Where-Object -FilterScript { -not (Test-Grant -Path $file.FullName -Sid $_[0] -Rights ([System.Security.AccessControl.FileSystemRights]$_[1])) })
        if ($missing.Count -eq 0) { continue }
        $acl = Get-Acl -LiteralPath $file.FullName
        foreach ($grant in $missing) {
            $sid = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList $grant[0]
            foreach ($rule in @($acl.GetAccessRules($true, $false, [System.Security.Principal.SecurityIdentifier]))) {
                if ($rule.IdentityReference.Value -eq $grant[0] -and $rule.AccessControlType -eq [System.Security.AccessControl.AccessControlType]::Deny) { [void]$acl.RemoveAccessRuleSpecific($rule) }
            }
            $acl.AddAccessRule((New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList $sid, $grant[1], 'Allow'))
        }
        Set-Acl -LiteralPath $file.FullName -AclObject $acl
        $changed = $true
    }
    return $changed
}
