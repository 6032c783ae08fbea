<#
.SYNOPSIS
    Repair the guest side of Remote Desktop, for azrdp: RDP settings, MachineKeys, the RDP
    certificate, sessions.

.DESCRIPTION
    Run by azrdp through Azure Run Command (RunPowerShellScript, as SYSTEM). The steps asked for
    in -Steps always run in this fixed order, each in its own try/catch, each reporting its state
    before and after and whether it changed anything:

    rdp-config          fDenyTSConnections=0 (and says so when a policy forces it back);
                        TermService and SessionEnv not disabled, and running; the "Remote
                        Desktop" firewall rules enabled, plus a rule for a non-default port.
    machinekeys-acl     Saves the current ACLs (icacls /save into a new timestamped folder under
                        %ProgramData%\azrdp\backup) first, then restores the MachineKeys folder's
                        default ACL and gives the RDP key container NETWORK SERVICE read and
                        SYSTEM full control.
    machinekeys-rename  Only when a key is unusable: saves the ACLs, renames MachineKeys to a new
                        timestamped name (never overwriting an earlier backup, never deleting),
                        creates a fresh MachineKeys with the default ACL and copies back every key
                        file except the RDP key container, keeping each file's ACL.
    cert                Removes every expired or unusable certificate from the Remote Desktop
                        store (exported to the backup folder first), clears an
                        SSLCertificateSHA1Hash that points to a missing, expired or unusable
                        certificate (a valid admin-bound certificate is left alone), restarts
                        SessionEnv and TermService so Windows makes a fresh self-signed
                        certificate, and reports it. Never lowers SecurityLayer.
    sessions            Logs off disconnected sessions (active remote sessions only with
                        -LogOffActive true) and reports the seats freed. With
                        -LogOffOnlyWhenFull true it logs off no one while a seat is free.

    Idempotent: on a healthy VM every step reports "unchanged" and changes nothing. The output
    is exactly one line, AZRDP-RESULT:{compact json}, in the schema of
    azrdp/payloads/schema.py (REPAIR), well under Run Command's 4,096-byte output cap.

.PARAMETER Steps
    Comma-separated steps: rdp-config, machinekeys-acl, machinekeys-rename, cert, sessions.

.PARAMETER LogOffActive
    'true' to let the sessions step log off active remote sessions too (default 'false').

.PARAMETER RunId
    An id of this run, echoed in the result and written beside the backups.

.PARAMETER LogOffOnlyWhenFull
    'true' to let the sessions step log off sessions only when no seat is free (default 'false':
    always log off disconnected sessions). azrdp passes 'true' when it repairs without reading
    the guest first, so a user's disconnected session is never ended for nothing.

.EXAMPLE
    .\repair.ps1 -Steps 'rdp-config,cert' -RunId 7f3c2a

.NOTES
    Windows PowerShell 5.1 compatible; no aliases. Backups: %ProgramData%\azrdp\backup\<UTC time>.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [ValidatePattern('^(rdp-config|machinekeys-acl|machinekeys-rename|cert|sessions)(,(rdp-config|machinekeys-acl|machinekeys-rename|cert|sessions))*$')]
    [string]$Steps,

    [Parameter(Mandatory = $false)]
    [ValidateSet('true', 'false')]
    [string]$LogOffActive = 'false',

    [Parameter(Mandatory = $false)]
    [ValidatePattern('^[A-Za-z0-9][A-Za-z0-9._-]{0,35}$')]
    [string]$RunId = '',

    [Parameter(Mandatory = $false)]
    [ValidateSet('true', 'false')]
    [string]$LogOffOnlyWhenFull = 'false'
)

$PayloadVersion = '1.0.0'

# azrdp:include common.ps1

$StepOrder = @('rdp-config', 'machinekeys-acl', 'machinekeys-rename', 'cert', 'sessions')
$CustomRuleName = 'azrdp-RemoteDesktop-CustomPort-TCP-In'
$script:BackupFolder = $null

function New-Outcome {
    # What a repair function returns: whether it changed anything, needs a reboot, its info.
    param([bool]$Changed = $false, [bool]$Reboot = $false, [AllowNull()][object]$Info = $null, [AllowNull()][object]$Skip = $null)
    return [ordered]@{ changed = $Changed; reboot = $Reboot; info = $Info; skip = $Skip }
}

function Get-BackupFolder {
    # One new timestamped folder per run under %ProgramData%\azrdp\backup; never reuses one.
    if ($null -ne $script:BackupFolder) { return $script:BackupFolder }
    $root = Join-Path -Path $env:ProgramData -ChildPath 'azrdp\backup'
    $stamp = (Get-Date).ToUniversalTime().ToString('yyyyMMddTHHmmssZ', [System.Globalization.CultureInfo]::InvariantCulture)
    $path = Join-Path -Path $root -ChildPath $stamp
    $suffix = 1
    while (Test-Path -LiteralPath $path) {
        $suffix += 1
        $path = Join-Path -Path $root -ChildPath ('{0}-{1}' -f $stamp, $suffix)
    }
    New-Item -ItemType Directory -Path $path -Force | Out-Null
    Set-Content -LiteralPath (Join-Path -Path $path -ChildPath 'run-id.txt') -Value $RunId -Encoding ASCII
    $script:BackupFolder = $path
    return $path
}

function Save-MachineKeysAcl {
    # icacls /save of the folder and every file in it; throws (before any change) when it fails.
    $folder = Get-BackupFolder
    $file = Join-Path -Path $folder -ChildPath 'machinekeys.acl'
    $run = Invoke-Native -FilePath 'icacls.exe' -ArgumentList @($MachineKeysPath, '/save', $file, '/t', '/c', '/q')
    if (-not (Test-Path -LiteralPath $file)) {
        throw ('icacls /save failed (exit {0}); nothing was changed' -f $run.ExitCode)
    }
    return $folder
}

function Set-DefaultMachineKeysAcl {
    # Windows' default security descriptor on a MachineKeys folder (owner SYSTEM).
    param([Parameter(Mandatory = $true)][string]$Path)
    $security = New-Object -TypeName System.Security.AccessControl.DirectorySecurity
    $security.SetSecurityDescriptorSddlForm($MachineKeysDefaultSddl)
    try {
        Set-Acl -LiteralPath $Path -AclObject $security
    } catch {
        # A broken ACL can lock out even SYSTEM: take ownership (Administrators), then retry.
        Invoke-Native -FilePath 'takeown.exe' -ArgumentList @('/f', $Path, '/a') | Out-Null
        Set-Acl -LiteralPath $Path -AclObject $security
    }
}

function Grant-RdpKeyAccess {
    # NETWORK SERVICE read and SYSTEM full control on every RDP key container file.
    $changed = $false
    foreach ($file in @(Get-ChildItem -LiteralPath $MachineKeysPath -Filter $RdpKeyFilter -Force -File)) {
        $needsRead = -not (Test-Grant -Path $file.FullName -Sid $SidNetworkService -Rights ([System.Security.AccessControl.FileSystemRights]::Read))
        $needsFull = -not (Test-Grant -Path $file.FullName -Sid $SidSystem -Rights ([System.Security.AccessControl.FileSystemRights]::FullControl))
        if (-not ($needsRead -or $needsFull)) { continue }
        $acl = Get-Acl -LiteralPath $file.FullName
        foreach ($grant in @(@($SidNetworkService, 'Read'), @($SidSystem, 'FullControl'))) {
            $sid = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList $grant[0]
            $acl.PurgeAccessRules($sid)
            $rule = New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList $sid, $grant[1], 'Allow'
            $acl.AddAccessRule($rule)
        }
        Set-Acl -LiteralPath $file.FullName -AclObject $acl
        $changed = $true
    }
    return $changed
}

# ---- rdp-config ----

function Read-RdpConfigState {
    $port = Get-RdpPort
    $rules = @(Get-RemoteDesktopRules)
    $custom = $null
    if ($port -ne 3389) {
        $rule = Get-NetFirewallRule -Name $CustomRuleName -ErrorAction SilentlyContinue
        $custom = ($null -ne $rule -and $rule.Enabled.ToString() -eq 'True' -and
            (Test-PortCovered -LocalPort (Get-NetFirewallPortFilter -AssociatedNetFirewallRule $rule).LocalPort -Port $port))
    }
    return [ordered]@{
        deny = Get-DWord -Path $TerminalServerKey -Name 'fDenyTSConnections'
        deny_policy = Get-DWord -Path $TsPolicyKey -Name 'fDenyTSConnections'
        port = Get-DWord -Path $RdpTcpKey -Name 'PortNumber'
        services = @(Get-ServiceFacts -Name 'TermService'; Get-ServiceFacts -Name 'SessionEnv')
        fw_rules = $rules.Count
        fw_rules_enabled = @($rules | Where-Object -FilterScript { $_.Enabled.ToString() -eq 'True' }).Count
        custom_rule = $custom
    }
}

function Repair-RdpConfig {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $actions = New-Object -TypeName System.Collections.ArrayList
    if ($Before.deny -ne 0) {
        Set-ItemProperty -LiteralPath $TerminalServerKey -Name 'fDenyTSConnections' -Value 0 -Type DWord
        [void]$actions.Add('deny=0')
    }
    foreach ($service in $Before.services) {
        if ($service.state -eq 'Missing') { throw ('service {0} is missing' -f $service.name) }
        if ($service.start -eq 'Disabled') {
            Set-Service -Name $service.name -StartupType Manual
            [void]$actions.Add('demand:' + $service.name)
        }
        if ($service.state -ne 'Running') {
            Start-Service -Name $service.name
            [void]$actions.Add('start:' + $service.name)
        }
    }
    $disabled = @(Get-NetFirewallRule -Direction Inbound | Where-Object -FilterScript {
        $_.Group -eq $RemoteDesktopRuleGroup -and $_.Enabled.ToString() -ne 'True'
    })
    if ($disabled.Count -gt 0) {
        $disabled | Enable-NetFirewallRule
        [void]$actions.Add('fw:group')
    }
    $port = Get-RdpPort
    if ($port -ne 3389 -and $Before.custom_rule -ne $true) {
        $rule = Get-NetFirewallRule -Name $CustomRuleName -ErrorAction SilentlyContinue
        if ($null -eq $rule) {
            New-NetFirewallRule -Name $CustomRuleName -DisplayName ('Remote Desktop - azrdp custom port {0} (TCP-In)' -f $port) -Direction Inbound -Protocol TCP -LocalPort $port -Action Allow -Profile Any | Out-Null
        } else {
            Get-NetFirewallPortFilter -AssociatedNetFirewallRule $rule | Set-NetFirewallPortFilter -Protocol TCP -LocalPort $port
            Enable-NetFirewallRule -Name $CustomRuleName
        }
        [void]$actions.Add('fw:custom-port')
    }
    $info = [ordered]@{ policy_forces_deny = ($Before.deny_policy -eq 1); actions = @($actions | Select-Object -First 4) }
    return New-Outcome -Changed ($actions.Count -gt 0) -Info $info
}

# ---- machinekeys-acl ----

function Read-MachineKeysState {
    # The state both MachineKeys steps report before and after.
    $facts = Get-MachineKeysFacts
    return [ordered]@{
        default = $facts.default
        files = $facts.files
        rdp_key = [ordered]@{
            present = $facts.rdp_key.present
            network_service_read = $facts.rdp_key.network_service_read
            system_full = $facts.rdp_key.system_full
        }
    }
}

function Repair-MachineKeysAcl {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $keyOk = (-not $Before.rdp_key.present) -or ($Before.rdp_key.network_service_read -and $Before.rdp_key.system_full)
    if ($Before.default -and $keyOk) {
        return New-Outcome -Info ([ordered]@{ backup = $null; actions = @() })
    }
    $backup = Save-MachineKeysAcl
    $actions = New-Object -TypeName System.Collections.ArrayList
    if (-not $Before.default) {
        Set-DefaultMachineKeysAcl -Path $MachineKeysPath
        [void]$actions.Add('acl:folder-default')
    }
    if (Grant-RdpKeyAccess) { [void]$actions.Add('acl:rdp-key') }
    $info = [ordered]@{ backup = Limit-Text -Text $backup -Max 80; actions = @($actions | Select-Object -First 4) }
    return New-Outcome -Changed ($actions.Count -gt 0) -Reboot ($actions.Count -gt 0) -Info $info
}

# ---- machinekeys-rename ----

function Test-RdpKeyUsable {
    # Every RDP key container file opens, and every Remote Desktop certificate's key works.
    foreach ($file in @(Get-ChildItem -LiteralPath $MachineKeysPath -Filter $RdpKeyFilter -Force -File)) {
        if ($file.Length -eq 0) { return $false }
        try {
            $stream = [System.IO.File]::OpenRead($file.FullName)
            $stream.Dispose()
        } catch {
            return $false
        }
    }
    foreach ($certificate in @(Get-RdpStoreCertificates)) {
        if (-not (Test-PrivateKey -Certificate $certificate)) { return $false }
    }
    return $true
}

function Repair-MachineKeysRename {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    if ($Before.default -and (Test-RdpKeyUsable)) {
        return New-Outcome -Info ([ordered]@{ backup = $null; acl_backup = $null; copied = 0; skipped = @(); skipped_total = 0 })
    }
    $aclBackup = Save-MachineKeysAcl
    $parent = Split-Path -Path $MachineKeysPath -Parent
    $stamp = (Get-Date).ToUniversalTime().ToString('yyyyMMddTHHmmssZ', [System.Globalization.CultureInfo]::InvariantCulture)
    $newName = 'MachineKeys.azrdp-' + $stamp
    $suffix = 1
    while (Test-Path -LiteralPath (Join-Path -Path $parent -ChildPath $newName)) {
        $suffix += 1
        $newName = 'MachineKeys.azrdp-{0}-{1}' -f $stamp, $suffix
    }
    $oldPath = Join-Path -Path $parent -ChildPath $newName
    Rename-Item -LiteralPath $MachineKeysPath -NewName $newName
    try {
        New-Item -ItemType Directory -Path $MachineKeysPath | Out-Null
        Set-DefaultMachineKeysAcl -Path $MachineKeysPath
    } catch {
        # Put the original back; the half-made folder is moved aside, not deleted.
        $failure = $_
        if (Test-Path -LiteralPath $MachineKeysPath) {
            Rename-Item -LiteralPath $MachineKeysPath -NewName ($newName + '-unused')
        }
        Rename-Item -LiteralPath $oldPath -NewName 'MachineKeys'
        throw $failure
    }
    $copied = 0
    $failed = 0
    $skipped = New-Object -TypeName System.Collections.ArrayList
    foreach ($file in @(Get-ChildItem -LiteralPath $oldPath -Force -File)) {
        if ($file.Name -like $RdpKeyFilter) {
            [void]$skipped.Add($file.Name)
            continue
        }
        try {
            $target = Join-Path -Path $MachineKeysPath -ChildPath $file.Name
            Copy-Item -LiteralPath $file.FullName -Destination $target
            $access = New-Object -TypeName System.Security.AccessControl.FileSecurity
            $access.SetSecurityDescriptorSddlForm((Get-Acl -LiteralPath $file.FullName).GetSecurityDescriptorSddlForm('Access'), 'Access')
            Set-Acl -LiteralPath $target -AclObject $access
            $copied += 1
        } catch {
            $failed += 1
        }
    }
    $info = [ordered]@{
        backup = Limit-Text -Text $oldPath -Max 80
        acl_backup = Limit-Text -Text $aclBackup -Max 80
        copied = $copied
        skipped = @($skipped | Select-Object -First 1 | ForEach-Object -Process { Limit-Text -Text $_ -Max 72 })
        skipped_total = $skipped.Count
    }
    $outcome = New-Outcome -Changed $true -Reboot $true -Info $info
    if ($failed -gt 0) { $outcome.skip = ('{0} key files could not be copied back; they are in the backup' -f $failed) }
    return $outcome
}

# ---- cert ----

function Test-CertificateUsable {
    param([Parameter(Mandatory = $true)][System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    return ($Certificate.NotAfter.ToUniversalTime() -gt (Get-Date).ToUniversalTime()) -and (Test-PrivateKey -Certificate $Certificate)
}

function Read-CertState {
    $bound = Get-BoundThumbprint
    $all = @(Get-RdpStoreCertificates)
    $current = $null
    if ($null -ne $bound) {
        $found = Find-Certificate -Thumbprint $bound
        if ($null -ne $found) { $current = $found.cert }
    } else {
        $usable = @($all | Where-Object -FilterScript { Test-CertificateUsable -Certificate $_ })
        if ($usable.Count -gt 0) { $current = $usable[0] }
    }
    $currentThumbprint = $null
    $currentNotAfter = $null
    if ($null -ne $current) {
        $currentThumbprint = $current.Thumbprint.ToUpperInvariant()
        $currentNotAfter = Format-UtcTime -Time $current.NotAfter
    }
    return [ordered]@{
        bound = $bound
        total = $all.Count
        bad = @($all | Where-Object -FilterScript { -not (Test-CertificateUsable -Certificate $_) }).Count
        current = $currentThumbprint
        current_not_after = $currentNotAfter
        security_layer = Get-DWord -Path $RdpTcpKey -Name 'SecurityLayer'
    }
}

function Restart-RdpServices {
    # SessionEnv, then TermService; services that depended on TermService and ran are started again.
    $dependents = @(Get-Service -Name 'TermService' -DependentServices | Where-Object -FilterScript { $_.Status.ToString() -eq 'Running' })
    Restart-Service -Name 'SessionEnv' -Force
    Restart-Service -Name 'TermService' -Force
    foreach ($dependent in $dependents) {
        if ((Get-Service -Name $dependent.Name).Status.ToString() -ne 'Running') { Start-Service -Name $dependent.Name }
    }
    return @('SessionEnv', 'TermService')
}

function Wait-RdpCertificate {
    # Windows makes the new self-signed certificate shortly after the restart: wait up to 60 s.
    for ($attempt = 0; $attempt -lt 30; $attempt += 1) {
        $usable = @(Get-RdpStoreCertificates | Where-Object -FilterScript { Test-CertificateUsable -Certificate $_ })
        if ($usable.Count -gt 0) { return }
        Start-Sleep -Seconds 2
    }
}

function Repair-Certificate {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $removed = New-Object -TypeName System.Collections.ArrayList
    $bound = Get-BoundThumbprint
    $boundUsable = $false
    if ($null -ne $bound) {
        $found = Find-Certificate -Thumbprint $bound
        $boundUsable = ($null -ne $found) -and (Test-CertificateUsable -Certificate $found.cert)
    }
    # Windows makes the new certificate's key in MachineKeys. With the folder ACL broken it cannot
    # (event 1058), so removing the old certificate would leave RDP with none at all: hold back
    # until machinekeys-acl (which runs before this step) has restored the default ACL.
    $wouldAct = ($Before.bad -gt 0) -or ($null -ne $bound -and -not $boundUsable) -or ($null -eq $Before.current)
    if ($wouldAct -and -not (Get-MachineKeysFacts).default) {
        return New-Outcome -Skip 'held back: MachineKeys ACL not default; run machinekeys-acl'
    }
    # Loop over every certificate: Microsoft's one-liner breaks when the store holds several.
    foreach ($certificate in @(Get-RdpStoreCertificates)) {
        if (Test-CertificateUsable -Certificate $certificate) { continue }
        if ($boundUsable -and $certificate.Thumbprint -eq $bound) { continue }
        $folder = Get-BackupFolder
        Export-Certificate -Cert $certificate -FilePath (Join-Path -Path $folder -ChildPath ($certificate.Thumbprint + '.cer')) | Out-Null
        Remove-Item -LiteralPath (Join-Path -Path $RdpCertStore -ChildPath $certificate.Thumbprint)
        [void]$removed.Add($certificate.Thumbprint.ToUpperInvariant())
    }
    $cleared = $false
    if ($null -ne $bound -and -not $boundUsable) {
        $folder = Get-BackupFolder
        Set-Content -LiteralPath (Join-Path -Path $folder -ChildPath 'SSLCertificateSHA1Hash.txt') -Value $bound -Encoding ASCII
        Remove-ItemProperty -LiteralPath $RdpTcpKey -Name 'SSLCertificateSHA1Hash'
        $cleared = $true
    }
    $restarted = @()
    if ($removed.Count -gt 0 -or $cleared -or $null -eq $Before.current) {
        $restarted = Restart-RdpServices
        Wait-RdpCertificate
    }
    $info = [ordered]@{
        removed = @($removed | Select-Object -First 2)
        removed_total = $removed.Count
        cleared_binding = $cleared
        kept_bound = $boundUsable
        restarted = @($restarted)
    }
    return New-Outcome -Changed ($removed.Count -gt 0 -or $cleared -or $restarted.Count -gt 0) -Info $info
}

# ---- sessions ----

function Read-SessionsState {
    $sessions = Get-UserSessions
    $seats = Get-SeatFacts -Sessions $sessions
    return [ordered]@{
        total = $sessions.Count
        disconnected = @($sessions | Where-Object -FilterScript { $_.state -eq 'Disc' }).Count
        active = @($sessions | Where-Object -FilterScript { $_.state -eq 'Active' -and $_.name -ne 'console' }).Count
        seat_limit = $seats.seat_limit
        used = $seats.used
        free = $seats.free
    }
}

function Repair-Sessions {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $includeActive = ($LogOffActive -eq 'true')
    $onlyWhenFull = ($LogOffOnlyWhenFull -eq 'true')
    $targets = @()
    if (-not ($onlyWhenFull -and $Before.free -gt 0)) {
        # Assigned first: Get-UserSessions emits its array as ONE object (return ,...), so piping
        # the call would hand Where-Object the whole list as one $_ (and logoff.exe every id at once).
        $sessions = Get-UserSessions
        $targets = @($sessions | Where-Object -FilterScript {
            $_.id -ne 0 -and ($_.state -eq 'Disc' -or ($includeActive -and $_.state -eq 'Active' -and $_.name -ne 'console'))
        })
    }
    $loggedOff = New-Object -TypeName System.Collections.ArrayList
    $failed = 0
    foreach ($session in $targets) {
        $run = Invoke-Native -FilePath 'logoff.exe' -ArgumentList @([string]$session.id)
        if ($run.ExitCode -eq 0) { [void]$loggedOff.Add([int]$session.id) } else { $failed += 1 }
    }
    $info = [ordered]@{
        logged_off = @($loggedOff | Select-Object -First 4)
        logged_off_total = $loggedOff.Count
        seats_freed = 0
        include_active = $includeActive
    }
    $outcome = New-Outcome -Changed ($loggedOff.Count -gt 0) -Info $info
    if ($failed -gt 0) { $outcome.skip = ('{0} sessions could not be logged off' -f $failed) }
    return $outcome
}

# ---- the step runner ----

$StepFunctions = @{
    'rdp-config' = @{ read = { Read-RdpConfigState }; repair = { param($Before) Repair-RdpConfig -Before $Before } }
    'machinekeys-acl' = @{ read = { Read-MachineKeysState }; repair = { param($Before) Repair-MachineKeysAcl -Before $Before } }
    'machinekeys-rename' = @{ read = { Read-MachineKeysState }; repair = { param($Before) Repair-MachineKeysRename -Before $Before } }
    'cert' = @{ read = { Read-CertState }; repair = { param($Before) Repair-Certificate -Before $Before } }
    'sessions' = @{ read = { Read-SessionsState }; repair = { param($Before) Repair-Sessions -Before $Before } }
}

function Invoke-Step {
    param([Parameter(Mandatory = $true)][string]$Name)
    $functions = $StepFunctions[$Name]
    $step = [ordered]@{ name = $Name; status = 'failed'; before = $null; after = $null; info = $null; reboot_required = $false; error = $null }
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
        $step.info = $outcome.info
        $step.reboot_required = [bool]$outcome.reboot
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
    if ($Name -eq 'sessions' -and $null -ne $step.info -and $null -ne $step.after) {
        $step.info.seats_freed = [Math]::Max(0, $step.after.free - $step.before.free)
    }
    return $step
}

$pendingBefore = $false
try {
    # Assigned first: @(Get-RebootReasons) would wrap the one array it emits, so Count is always 1.
    $reasons = Get-RebootReasons
    $pendingBefore = ($reasons.Count -gt 0)
} catch {
    $pendingBefore = $false
}

$wanted = @($Steps.Split(','))
$results = New-Object -TypeName System.Collections.ArrayList
foreach ($name in $StepOrder) {
    if ($wanted -notcontains $name) { continue }
    [void]$results.Add((Invoke-Step -Name $name))
}

$changed = @($results | Where-Object -FilterScript { $_.status -eq 'changed' }).Count -gt 0
$rebootStep = @($results | Where-Object -FilterScript { $_.reboot_required }).Count -gt 0
$Result = [ordered]@{
    payload = 'repair'
    version = $PayloadVersion
    run_id = $RunId
    steps = @($results)
    changed = $changed
    reboot_pending = $pendingBefore
    reboot_required = ($rebootStep -or $pendingBefore)
}
try {
    Write-Result -Result $Result
} catch {
    $Result['steps'] = @($results | ForEach-Object -Process {
        [ordered]@{ name = $_.name; status = $_.status; before = $null; after = $null; info = $null; reboot_required = $_.reboot_required; error = (Limit-Text -Text ('result: ' + $_.error) -Max 60) }
    })
    Write-Result -Result $Result
}
