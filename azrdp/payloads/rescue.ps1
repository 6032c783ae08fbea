<#
.SYNOPSIS
    Repair Remote Desktop on an offline Windows disk attached to a rescue VM, for azrdp rescue.

.DESCRIPTION
    Run by azrdp through Azure Run Command (RunPowerShellScript, as SYSTEM) on a rescue VM whose
    data disk is a copy of a broken VM's OS disk. It brings the attached disk online (Set-Disk),
    finds the one volume that holds an offline Windows (\Windows\System32\config\SYSTEM) other
    than the running one, refuses a BitLocker-locked volume, loads that Windows' SYSTEM and
    SOFTWARE hives under temporary names with reg.exe load (HKLM\AZRDP_SYSTEM,
    HKLM\AZRDP_SOFTWARE), finds the control set Windows boots (SYSTEM\Select, value Current),
    and runs these steps in this fixed order, each in its own try/catch, each reporting its
    state before and after:

    rdp-enable   fDenyTSConnections=0 under Control\Terminal Server and, when present, in the
                 Terminal Services policy key of the offline SOFTWARE hive.
    services     Start of TermService, SessionEnv and UmRdpService 4 (Disabled) -> 3 (Manual,
                 their default); WindowsAzureGuestAgent and RdAgent 4 -> 2 (Automatic).
    rdp-tcp      WinStations\RDP-Tcp: PortNumber outside 1-65535 -> 3389, SecurityLayer outside
                 0-2 -> 2, MinEncryptionLevel outside 1-4 -> 2, fEnableWinStation 0 -> 1.
    cert         Clears SSLCertificateSHA1Hash when it points to a certificate that is in neither
                 the offline LocalMachine My nor Remote Desktop store, or has expired, or is not a
                 20-byte REG_BINARY (MALFORMED: a thumbprint typed as a string, a wrong length);
                 the value is saved as stored to the backup folder first; moves every entry of the offline Remote
                 Desktop store aside (reg.exe export to the backup folder, then moved into the
                 offline azrdp-backup store, Cert:\LocalMachine\azrdp-backup once the disk boots),
                 so TermService makes a fresh self-signed certificate at its next start.
    machinekeys  Holds back when the offline MachineKeys holds a subfolder or reparse point, or
                 too many files to walk. Saves every ACL and owner first (icacls /save, checked,
                 and an SDDL list), makes the inherited ACEs of each key file explicit (so
                 restoring the folder ACL cannot leave a file with an empty DACL), then restores
                 the folder's default ACL when its DACL is not Windows' default, and adds to the
                 RDP key container (the live one, named for the offline MachineGuid) the ACEs
                 that Windows' build ships (SYSTEM full, NETWORK SERVICE read, and NT SERVICE\
                 SessionEnv full from build 17763, Administrators read before it), as repair's
                 machinekeys-acl does. A container whose ACL SYSTEM cannot read is reported so.
    firewall     The Remote Desktop rules (RemoteDesktop-*) in the offline
                 FirewallPolicy\FirewallRules: Active=FALSE -> Active=TRUE.

    The hives are always unloaded (finally), after a garbage collection that closes the
    handles PowerShell's registry provider keeps; a failed unload is retried and reported.
    Backups go to <volume>\ProgramData\azrdp\backup\rescue-<RunId> on the OFFLINE disk, so they
    travel with it; azrdp and backup are refused when they are a reparse point or owned by anyone
    but SYSTEM or Administrators, and made readable only by them. Nothing is deleted. The run has
    a deadline (10 minutes): steps that would start after it are skipped, so the hives are
    unloaded and the result is printed in time. The output is exactly one
    line, AZRDP-RESULT:{compact json}, in the schema of azrdp/payloads/schema.py (RESCUE).

.PARAMETER RunId
    The id of this rescue, echoed in the result and used in the backup folder's name.

.EXAMPLE
    .\rescue.ps1 -RunId azrdp-rescue-7f3c2a

.NOTES
    Windows PowerShell 5.1 compatible; no aliases. reg.exe load/unload: "reg load KeyName
    FileName" loads a hive file under HKLM or HKU; "reg unload KeyName" fails while any handle
    to the key is open (learn.microsoft.com windows-commands reg-load, reg-unload). The offline
    firewall and registry edits follow Microsoft's offline troubleshooting articles ("Enable or
    disable a firewall rule on an Azure VM guest OS", "RDP general error", "Remote Desktop
    Services isn't starting"), which load BROKENSYSTEM/BROKENSOFTWARE the same way.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $false)]
    [ValidatePattern('^[A-Za-z0-9][A-Za-z0-9._-]{0,35}$')]
    [string]$RunId = ''
)

$PayloadVersion = '1.2.0'

# azrdp:include common.ps1
# azrdp:include change.ps1

if (-not (Test-FullLanguage)) {
    # Constrained Language Mode (WDAC/AppLocker) refuses .NET calls the steps need: change nothing.
    Write-Result -Result ([ordered]@{ payload = 'rescue'; version = $PayloadVersion; run_id = $RunId; volume = $null
        found = 'none'; computer_name = $null; control_set = $null; backup = $null; hives_unloaded = $true; steps = @()
        changed = $false; error = 'unsupported: PowerShell runs in Constrained Language Mode' })
    return
}

$StepOrder = @('rdp-enable', 'services', 'rdp-tcp', 'cert', 'machinekeys', 'firewall')
$SystemHive = 'AZRDP_SYSTEM'
$SoftwareHive = 'AZRDP_SOFTWARE'
$SystemRoot = 'Registry::HKEY_LOCAL_MACHINE\' + $SystemHive
$SoftwareRoot = 'Registry::HKEY_LOCAL_MACHINE\' + $SoftwareHive
$RdpServices = @{ TermService = 3; SessionEnv = 3; UmRdpService = 3; WindowsAzureGuestAgent = 2; RdAgent = 2 }
$ServiceOrder = @('TermService', 'SessionEnv', 'UmRdpService', 'WindowsAzureGuestAgent', 'RdAgent')
$script:Volume = $null
$script:ControlSet = $null
$script:DeadlineSeconds = 600   # the clock is change.ps1's ($script:Clock, Get-SecondsLeft)
# Unloading the hives (up to five tries, 2 s apart) and the result line always fit in the reserve.
$ResultReserveSeconds = 60

function Get-OfflinePaths {
    $cs = $SystemRoot + '\' + $script:ControlSet
    return [ordered]@{
        ts = $cs + '\Control\Terminal Server'
        rdptcp = $cs + '\Control\Terminal Server\WinStations\RDP-Tcp'
        policy = $SoftwareRoot + '\Policies\Microsoft\Windows NT\Terminal Services'
        services = $cs + '\Services'
        rules = $cs + '\Services\SharedAccess\Parameters\FirewallPolicy\FirewallRules'
        rdstore = $SoftwareRoot + '\Microsoft\SystemCertificates\Remote Desktop\Certificates'
        mystore = $SoftwareRoot + '\Microsoft\SystemCertificates\MY\Certificates'
        backupstore = $SoftwareRoot + '\Microsoft\SystemCertificates\azrdp-backup\Certificates'
        machinekeys = $script:Volume + '\ProgramData\Microsoft\Crypto\RSA\MachineKeys'
    }
}

function New-StepOutcome {
    param([bool]$Changed = $false, [string[]]$Actions = @(), [AllowNull()][object]$Skip = $null)
    return [ordered]@{ changed = $Changed; actions = @($Actions | Select-Object -First 4); skip = $Skip }
}

function Get-RescueBackupFolder {
    # This rescue's folder on the offline volume, protected like the online one (Get-BackupFolder):
    # <volume>\ProgramData\azrdp\backup\rescue-<RunId>; a second run of the same RunId adds a suffix.
    return Get-BackupFolder -DataRoot ($script:Volume + '\ProgramData') -RunId $RunId -Name ('rescue-' + $RunId)
}

function Find-OfflineWindows {
    # The one volume (not the running Windows') holding \Windows\System32\config\SYSTEM.
    foreach ($disk in @(Get-Disk | Where-Object -FilterScript { -not $_.IsBoot -and -not $_.IsSystem })) {
        if ($disk.IsOffline) { Set-Disk -Number $disk.Number -IsOffline $false }
        if ($disk.IsReadOnly) { Set-Disk -Number $disk.Number -IsReadOnly $false }
    }
    $found = New-Object -TypeName System.Collections.ArrayList
    $locked = $false
    $running = $env:SystemDrive.ToUpperInvariant()
    foreach ($volume in @(Get-Volume | Where-Object -FilterScript { $_.DriveLetter })) {
        $letter = ([string]$volume.DriveLetter).ToUpperInvariant() + ':'
        if ($letter -eq $running) { continue }
        if ([string]$volume.FileSystemType -eq 'Unknown') { $locked = $true; continue }
        if (Test-Path -LiteralPath ($letter + '\Windows\System32\config\SYSTEM')) { [void]$found.Add($letter) }
    }
    if ($found.Count -eq 1) { return [ordered]@{ found = 'ok'; volume = $found[0] } }
    if ($found.Count -gt 1) { return [ordered]@{ found = 'several'; volume = $null } }
    if ($locked) { return [ordered]@{ found = 'locked'; volume = $null } }
    return [ordered]@{ found = 'none'; volume = $null }
}

function Invoke-Reg {
    param([Parameter(Mandatory = $true)][string[]]$ArgumentList)
    $run = Invoke-Native -FilePath 'reg.exe' -ArgumentList $ArgumentList
    if ($run.ExitCode -ne 0) { throw ('reg {0} failed (exit {1})' -f $ArgumentList[0], $run.ExitCode) }
}

function Dismount-Hive {
    # reg unload fails while a handle is open: collect PowerShell's, then try a few times.
    param([Parameter(Mandatory = $true)][string]$Name)
    if (-not (Test-Path -LiteralPath ('Registry::HKEY_LOCAL_MACHINE\' + $Name))) { return $true }
    for ($try = 0; $try -lt 5; $try++) {
        [System.GC]::Collect()
        [System.GC]::WaitForPendingFinalizers()
        $run = Invoke-Native -FilePath 'reg.exe' -ArgumentList @('unload', ('HKLM\' + $Name))
        if ($run.ExitCode -eq 0) { return $true }
        Start-Sleep -Seconds 2
    }
    return $false
}

function Get-DWordAt {
    param([Parameter(Mandatory = $true)][string]$Path, [Parameter(Mandatory = $true)][string]$Name)
    if (-not (Test-Path -LiteralPath $Path)) { return $null }
    return Get-DWord -Path $Path -Name $Name
}

function Set-DWordAt {
    param([Parameter(Mandatory = $true)][string]$Path, [Parameter(Mandatory = $true)][string]$Name,
          [Parameter(Mandatory = $true)][int]$Value)
    Set-ItemProperty -LiteralPath $Path -Name $Name -Value $Value -Type DWord
}

# ---- rdp-enable ----

function Read-RdpEnable {
    $p = Get-OfflinePaths
    return [ordered]@{ deny = Get-DWordAt -Path $p.ts -Name 'fDenyTSConnections'; policy_deny = Get-DWordAt -Path $p.policy -Name 'fDenyTSConnections' }
}

function Repair-RdpEnable {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $p = Get-OfflinePaths
    $actions = New-Object -TypeName System.Collections.ArrayList
    if ($Before.deny -ne 0) { Set-DWordAt -Path $p.ts -Name 'fDenyTSConnections' -Value 0; [void]$actions.Add('deny=0') }
    if ($null -ne $Before.policy_deny -and $Before.policy_deny -ne 0) {
        Set-DWordAt -Path $p.policy -Name 'fDenyTSConnections' -Value 0
        [void]$actions.Add('policy:deny=0')
    }
    return New-StepOutcome -Changed ($actions.Count -gt 0) -Actions $actions.ToArray()
}

# ---- services ----

function Read-Services {
    $p = Get-OfflinePaths
    $disabled = New-Object -TypeName System.Collections.ArrayList
    $missing = New-Object -TypeName System.Collections.ArrayList
    foreach ($name in $ServiceOrder) {
        $start = Get-DWordAt -Path ($p.services + '\' + $name) -Name 'Start'
        if ($null -eq $start) { [void]$missing.Add($name) } elseif ($start -eq 4) { [void]$disabled.Add($name) }
    }
    return [ordered]@{ disabled = $disabled.ToArray(); missing = $missing.ToArray() }
}

function Repair-Services {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $p = Get-OfflinePaths
    $actions = New-Object -TypeName System.Collections.ArrayList
    foreach ($name in @($Before.disabled)) {
        Set-DWordAt -Path ($p.services + '\' + $name) -Name 'Start' -Value $RdpServices[$name]
        [void]$actions.Add(('start:' + $name))
    }
    return New-StepOutcome -Changed ($actions.Count -gt 0) -Actions $actions.ToArray()
}

# ---- rdp-tcp ----

function Read-RdpTcp {
    $p = Get-OfflinePaths
    return [ordered]@{
        port = Get-DWordAt -Path $p.rdptcp -Name 'PortNumber'
        security_layer = Get-DWordAt -Path $p.rdptcp -Name 'SecurityLayer'
        min_encryption = Get-DWordAt -Path $p.rdptcp -Name 'MinEncryptionLevel'
        enabled = Get-DWordAt -Path $p.rdptcp -Name 'fEnableWinStation'
    }
}

function Repair-RdpTcp {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $p = Get-OfflinePaths
    if (-not (Test-Path -LiteralPath $p.rdptcp)) { return New-StepOutcome -Skip 'the RDP-Tcp listener key is missing' }
    $actions = New-Object -TypeName System.Collections.ArrayList
    if ($null -eq $Before.port -or $Before.port -lt 1 -or $Before.port -gt 65535) {
        Set-DWordAt -Path $p.rdptcp -Name 'PortNumber' -Value 3389; [void]$actions.Add('port=3389')
    }
    if ($null -ne $Before.security_layer -and $Before.security_layer -gt 2) {
        Set-DWordAt -Path $p.rdptcp -Name 'SecurityLayer' -Value 2; [void]$actions.Add('seclayer=2')
    }
    if ($null -ne $Before.min_encryption -and ($Before.min_encryption -lt 1 -or $Before.min_encryption -gt 4)) {
        Set-DWordAt -Path $p.rdptcp -Name 'MinEncryptionLevel' -Value 2; [void]$actions.Add('minenc=2')
    }
    if ($Before.enabled -eq 0) { Set-DWordAt -Path $p.rdptcp -Name 'fEnableWinStation' -Value 1; [void]$actions.Add('winstation=1') }
    return New-StepOutcome -Changed ($actions.Count -gt 0) -Actions $actions.ToArray()
}

# ---- cert ----

function Get-OfflineCertificate {
    # A certificate from an offline store key's Blob (a serialized certificate, which the
    # X509Certificate2 constructor reads through CryptQueryObject), or $null.
    param([Parameter(Mandatory = $true)][string]$Key)
    $blob = Get-RegValue -Path $Key -Name 'Blob'
    if ($null -eq $blob) { return $null }
    try {
        return New-Object -TypeName System.Security.Cryptography.X509Certificates.X509Certificate2 -ArgumentList (,[byte[]]$blob)
    } catch {
        return $null
    }
}

function Read-Cert {
    $p = Get-OfflinePaths
    # A thumbprint, $null, or MALFORMED (not a 20-byte REG_BINARY: never usable), as online.
    $bound = Get-BoundThumbprint -Path $p.rdptcp
    $usable = $null
    if ($bound -eq 'MALFORMED') {
        $usable = $false
    } elseif ($null -ne $bound) {
        $usable = $false
        foreach ($store in @($p.mystore, $p.rdstore)) {
            $certificate = Get-OfflineCertificate -Key ($store + '\' + $bound)
            if ($null -ne $certificate -and $certificate.NotAfter.ToUniversalTime() -gt (Get-Date).ToUniversalTime()) { $usable = $true }
        }
    }
    $count = 0
    if (Test-Path -LiteralPath $p.rdstore) { $count = @(Get-ChildItem -LiteralPath $p.rdstore).Count }
    return [ordered]@{ bound = $bound; bound_usable = $usable; store = $count }
}

function Repair-Cert {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $p = Get-OfflinePaths
    $actions = New-Object -TypeName System.Collections.ArrayList
    if ($null -ne $Before.bound -and -not $Before.bound_usable) {
        $folder = Get-RescueBackupFolder
        # As stored (kind:data): a MALFORMED one (a REG_SZ thumbprint) is kept as its own text.
        Set-Content -LiteralPath (Join-Path -Path $folder -ChildPath 'SSLCertificateSHA1Hash.txt') -Value (Get-BindingText -Path $p.rdptcp) -Encoding Unicode
        Add-UndoNote -Folder $folder -Line ('binding: SSLCertificateSHA1Hash = {0} (kind:data in SSLCertificateSHA1Hash.txt)' -f $Before.bound)
        Remove-ItemProperty -LiteralPath $p.rdptcp -Name 'SSLCertificateSHA1Hash'
        [void]$actions.Add('binding:cleared')
    }
    if ($Before.store -gt 0) {
        # Moved, not deleted: into the offline azrdp-backup store (LocalMachine\azrdp-backup once the
        # disk boots, where `azrdp fix` keeps the certificates it moves aside; RDP never reads it),
        # each exported with reg.exe first.
        $folder = Get-RescueBackupFolder
        if (-not (Test-Path -LiteralPath $p.backupstore)) { New-Item -Path $p.backupstore -Force | Out-Null }
        $moved = 0
        foreach ($key in @(Get-ChildItem -LiteralPath $p.rdstore)) {
            $file = Join-Path -Path $folder -ChildPath ($key.PSChildName + '.reg')
            $native = 'HKLM\' + $SoftwareHive + '\Microsoft\SystemCertificates\Remote Desktop\Certificates\' + $key.PSChildName
            Invoke-Reg -ArgumentList @('export', $native, $file, '/y')
            if (-not (Test-Path -LiteralPath $file)) { throw 'reg export wrote nothing; the certificate was kept' }
            Add-UndoNote -Folder $folder -Line ('certificate {0}: moved from LocalMachine Remote Desktop to azrdp-backup; once this disk boots, Move-Item it back ({0}.reg: its export)' -f $key.PSChildName)
            Move-Item -LiteralPath $key.PSPath -Destination $p.backupstore
            $moved += 1
        }
        [void]$actions.Add(('store:moved=' + $moved))
    }
    return New-StepOutcome -Changed ($actions.Count -gt 0) -Actions $actions.ToArray()
}

# ---- machinekeys ----

function Get-OfflineLiveRdpKeyPath {
    # The offline Windows' live RDP key container (Get-LiveRdpKeyPath with its MachineGuid, from the
    # loaded SOFTWARE hive), or $null when the hive has no MachineGuid.
    $p = Get-OfflinePaths
    return Get-LiveRdpKeyPath -Folder $p.machinekeys -Cryptography ($SoftwareRoot + '\Microsoft\Cryptography')
}

function Get-OfflineRdpKeyFiles {
    # The live container (Get-OfflineLiveRdpKeyPath): a f686aace... file of another MachineGuid (a
    # cloned image's) is never opened by that Windows; every f686aace... file when the hive has no
    # MachineGuid.
    $p = Get-OfflinePaths
    $live = Get-OfflineLiveRdpKeyPath
    return @(Get-ChildItem -LiteralPath $p.machinekeys -Filter $RdpKeyFilter -Force -File -ErrorAction SilentlyContinue |
        Where-Object -FilterScript { $null -eq $live -or $_.FullName -eq $live })
}

function Read-MachineKeys {
    $p = Get-OfflinePaths
    $files = @(Get-OfflineRdpKeyFiles)
    $read = $false
    if ($files.Count -gt 0) {
        # A container whose ACL SYSTEM may not read (a Deny of READ_CONTROL: Get-Acl throws) is
        # recorded as unreadable ($null), as Save-MachineKeysAcl records it UNREADABLE: it is what
        # the step repairs, never a reason to lose the step's read.
        try {
            $read = [bool](Test-Grant -Path $files[0].FullName -Sid $SidNetworkService -Rights ([System.Security.AccessControl.FileSystemRights]::Read))
        } catch {
            $read = $null
        }
    }
    # `default` is the DACL alone, as the online payloads judge it (common.ps1 Get-MachineKeysFacts):
    # a folder with Windows' DACL and another owner is not rewritten.
    $dacl = (Get-Acl -LiteralPath $p.machinekeys).GetSecurityDescriptorSddlForm('Access')
    return [ordered]@{ default = ($dacl -eq $MachineKeysDefaultDacl); rdp_key = ($files.Count -gt 0); network_service_read = $read }
}

function Repair-MachineKeys {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $p = Get-OfflinePaths
    if ($Before.default -and ((-not $Before.rdp_key) -or $Before.network_service_read)) { return New-StepOutcome }
    $actions = New-Object -TypeName System.Collections.ArrayList
    if (-not (Test-FolderListable -Path $p.machinekeys)) {
        # SYSTEM cannot list the offline folder (review #18; desk review 3 M-3): the hold-back and
        # the save below list it, so one list ACE first, as online repair does (change.ps1).
        Add-SystemListAce -Path $p.machinekeys -Folder (Get-RescueBackupFolder) -OfflineVolume $script:Volume
        [void]$actions.Add('acl:list')
    }
    $holdBack = Get-KeyFolderHoldBack -Path $p.machinekeys
    if ($null -ne $holdBack) { return New-StepOutcome -Changed ($actions.Count -gt 0) -Actions $actions.ToArray() -Skip $holdBack }
    Save-MachineKeysAcl -Path $p.machinekeys -Folder (Get-RescueBackupFolder) -OfflineVolume $script:Volume | Out-Null
    if (-not $Before.default) {
        if ((Protect-InheritedKeyAces -Path $p.machinekeys) -gt 0) { [void]$actions.Add('acl:explicit') }
        Set-DefaultMachineKeysAcl -Path $p.machinekeys
        [void]$actions.Add('acl:folder-default')
    }
    # change.ps1's Grant-RdpKeyAccess, as repair's machinekeys-acl: the ACEs the offline Windows'
    # build ships (CurrentBuildNumber from its SOFTWARE hive), added; only a Deny for them goes.
    $build = Get-RegValue -Path ($SoftwareRoot + '\Microsoft\Windows NT\CurrentVersion') -Name 'CurrentBuildNumber'
    if (Grant-RdpKeyAccess -Folder $p.machinekeys -LivePath (Get-OfflineLiveRdpKeyPath) -Build $build) { [void]$actions.Add('acl:rdp-key') }
    return New-StepOutcome -Changed ($actions.Count -gt 0) -Actions $actions.ToArray()
}

# ---- firewall ----

function Get-RdpRuleValues {
    $p = Get-OfflinePaths
    if (-not (Test-Path -LiteralPath $p.rules)) { return @() }
    $item = Get-Item -LiteralPath $p.rules
    return @($item.GetValueNames() | Where-Object -FilterScript { $_ -like 'RemoteDesktop-*' })
}

function Read-Firewall {
    $p = Get-OfflinePaths
    $names = Get-RdpRuleValues
    $enabled = 0
    foreach ($name in $names) {
        if ([string](Get-RegValue -Path $p.rules -Name $name) -match '\|Active=TRUE\|') { $enabled += 1 }
    }
    return [ordered]@{ rules = $names.Count; enabled = $enabled }
}

function Repair-Firewall {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $p = Get-OfflinePaths
    if ($Before.rules -eq 0) { return New-StepOutcome -Skip 'no Remote Desktop firewall rules on the disk' }
    $count = 0
    foreach ($name in (Get-RdpRuleValues)) {
        $value = [string](Get-RegValue -Path $p.rules -Name $name)
        if ($value -match '\|Active=FALSE\|') {
            Set-ItemProperty -LiteralPath $p.rules -Name $name -Value ($value -replace '\|Active=FALSE\|', '|Active=TRUE|') -Type String
            $count += 1
        }
    }
    $actions = @()
    if ($count -gt 0) { $actions = @('fw:rules-on') }
    return New-StepOutcome -Changed ($count -gt 0) -Actions $actions
}

$StepFunctions = @{
    'rdp-enable' = @{ read = ${function:Read-RdpEnable}; repair = ${function:Repair-RdpEnable} }
    'services' = @{ read = ${function:Read-Services}; repair = ${function:Repair-Services} }
    'rdp-tcp' = @{ read = ${function:Read-RdpTcp}; repair = ${function:Repair-RdpTcp} }
    'cert' = @{ read = ${function:Read-Cert}; repair = ${function:Repair-Cert} }
    'machinekeys' = @{ read = ${function:Read-MachineKeys}; repair = ${function:Repair-MachineKeys} }
    'firewall' = @{ read = ${function:Read-Firewall}; repair = ${function:Repair-Firewall} }
}

function Invoke-Step {
    param([Parameter(Mandatory = $true)][string]$Name)
    $functions = $StepFunctions[$Name]
    $step = [ordered]@{ name = $Name; status = 'failed'; before = $null; after = $null; actions = @(); error = $null }
    if ((Get-SecondsLeft) -lt 1) {
        $step.status = 'skipped'
        $step.error = 'deadline: not started'
        return $step
    }
    try {
        $step.before = & $functions.read
    } catch {
        $step.status = 'skipped'
        $step.error = Limit-Text -Text ('cannot read state: ' + $_.Exception.Message) -Max 60
        return $step
    }
    $outcome = $null
    try {
        $outcome = & $functions.repair $step.before
        $step.actions = @($outcome.actions)
        $step.error = Limit-Text -Text $outcome.skip -Max 60
    } catch {
        $step.error = Limit-Text -Text $_.Exception.Message -Max 60
    }
    try {
        $step.after = & $functions.read
    } catch {
        if ($null -eq $step.error) { $step.error = Limit-Text -Text ('cannot read state after: ' + $_.Exception.Message) -Max 60 }
    }
    if ($null -ne $outcome) {
        if ($outcome.changed) { $step.status = 'changed' }
        elseif ($null -ne $outcome.skip) { $step.status = 'skipped' }
        else { $step.status = 'unchanged' }
    }
    return $step
}

$results = New-Object -TypeName System.Collections.ArrayList
$problem = $null
if ($RunId -eq '') {
    # Not Mandatory (a missing Mandatory parameter would prompt, and under Run Command wait 90 min).
    Write-Result -Result ([ordered]@{ payload = 'rescue'; version = $PayloadVersion; run_id = ''; volume = $null
        found = 'none'; computer_name = $null; control_set = $null; backup = $null; hives_unloaded = $true; steps = @()
        changed = $false; error = 'no RunId given: azrdp always sends one' })
    return
}
$found = 'none'
$computerName = $null
$loaded = @()
try {
    $where = Find-OfflineWindows
    $found = $where.found
    if ($found -ne 'ok') {
        $problem = 'no single offline Windows volume: ' + $found
    } else {
        $script:Volume = $where.volume
        Invoke-Reg -ArgumentList @('load', ('HKLM\' + $SystemHive), ($script:Volume + '\Windows\System32\config\SYSTEM'))
        $loaded += $SystemHive
        Invoke-Reg -ArgumentList @('load', ('HKLM\' + $SoftwareHive), ($script:Volume + '\Windows\System32\config\SOFTWARE'))
        $loaded += $SoftwareHive
        $current = Get-DWord -Path ($SystemRoot + '\Select') -Name 'Current'
        if ($null -eq $current) { throw 'the offline SYSTEM hive has no Select\Current' }
        $script:ControlSet = 'ControlSet{0:D3}' -f [int]$current
        $computerName = Limit-Text -Text (Get-RegValue -Path ($SystemRoot + '\' + $script:ControlSet + '\Control\ComputerName\ComputerName') -Name 'ComputerName') -Max 15
        foreach ($name in $StepOrder) {
            [void]$results.Add((Invoke-Step -Name $name))
        }
    }
} catch {
    $problem = $_.Exception.Message
} finally {
    $unloaded = $true
    foreach ($hive in @($SoftwareHive, $SystemHive)) {
        if (-not (Dismount-Hive -Name $hive)) { $unloaded = $false }
    }
}

$Result = [ordered]@{
    payload = 'rescue'
    version = $PayloadVersion
    run_id = $RunId
    volume = $script:Volume
    found = $found
    computer_name = $computerName
    control_set = $script:ControlSet
    backup = Limit-Text -Text $script:BackupFolder -Max 80
    hives_unloaded = $unloaded
    steps = @($results)
    changed = (@($results | Where-Object -FilterScript { $_.status -eq 'changed' }).Count -gt 0)
    error = Limit-Text -Text $problem -Max 80
}
try {
    Write-Result -Result $Result
} catch {
    $Result['steps'] = @($results | ForEach-Object -Process {
        [ordered]@{ name = $_.name; status = $_.status; before = $null; after = $null; actions = @(); error = (Limit-Text -Text ('result: ' + $_.error) -Max 60) }
    })
    Write-Result -Result $Result
}
