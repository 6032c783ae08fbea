<#
.SYNOPSIS
    Repair the guest side of Remote Desktop, for azrdp: RDP settings, MachineKeys, the RDP
    certificate, sessions.

.DESCRIPTION
    Run by azrdp through Azure Run Command (RunPowerShellScript, as SYSTEM). The steps asked for
    in -Steps always run in this fixed order, each in its own try/catch, each reporting its state
    before and after and whether it changed anything. The whole run has a deadline (8 minutes):
    every service stop/start waits at most 60 s (never for ever, as Start-Service and
    Restart-Service do on a service stuck in StopPending), steps that would start after the
    deadline are skipped, and whatever happened, TermService is started again if it stopped; the
    result reports its final state.

    rdp-config          fDenyTSConnections=0 (and says so when a policy forces it back);
                        TermService and SessionEnv not disabled, and running; the Remote
                        Desktop user-mode firewall rules enabled, plus an azrdp rule at the RDP
                        port when no enabled rule lets it in (built-in rules deleted, or a
                        non-default port).
    machinekeys-acl     Saves every ACL and owner first (icacls /save and an SDDL list into a
                        new timestamped folder under %ProgramData%\azrdp\backup), makes the
                        inherited ACEs of each key file explicit (so restoring the folder ACL
                        cannot leave a file with an empty DACL), then restores the MachineKeys
                        folder's default ACL and gives the RDP key container NETWORK SERVICE
                        read and SYSTEM full control.
    machinekeys-rename  Only when the RDP key container is definitely unusable (empty, or its key
                        fails with a CryptographicException; never on "could not test"): moves the
                        RDP key container file(s) into the backup folder (kept, readable only by
                        SYSTEM and Administrators), so Windows makes a new one. Every other key
                        stays where it is. No reboot.
    cert                Holds back unless Windows can make a new certificate (SessionEnv,
                        TermService, CertPropSvc, KeyIso and CryptSvc not disabled, the RDP key
                        container usable or absent, SelfSignedCertStore = Remote Desktop). Moves
                        every expired or definitely unusable certificate from the Remote Desktop
                        store into the store azrdp-backup (undo: move it back), clears an
                        SSLCertificateSHA1Hash that points to a missing, expired or unusable
                        certificate (saved first; a valid admin-bound certificate is left alone),
                        and restarts SessionEnv and TermService only when RDP's certificate has
                        to change. Never lowers SecurityLayer.
    sessions            Logs off sessions that were already disconnected when the payload started
                        (a TermService restart turns working users' sessions into disconnected
                        ones: they are never logged off), longest idle first, only as many as
                        free one seat with -LogOffOnlyWhenFull true. Active sessions only with
                        -LogOffActive true. On RD Session Hosts, multi-session Windows and AVD
                        session hosts it changes nothing unless -MultiSession true.

    Idempotent: on a healthy VM every step reports "unchanged" and changes nothing. The output
    is exactly one line, AZRDP-RESULT:{compact json}, in the schema of
    azrdp/payloads/schema.py (REPAIR), well under Run Command's 4,096-byte output cap. Under
    Constrained Language Mode it changes nothing and says "unsupported".

.PARAMETER Steps
    Steps: rdp-config, machinekeys-acl, machinekeys-rename, cert, sessions; one comma-separated
    string or an array. None given: a result with an error, nothing changed.

.PARAMETER LogOffActive
    'true' to let the sessions step log off active remote sessions too (default 'false').

.PARAMETER RunId
    An id of this run, echoed in the result and written beside the backups.

.PARAMETER LogOffOnlyWhenFull
    'true' to let the sessions step log off sessions only when no seat is free, and only as many
    as free one (default 'false': every session that was disconnected at the start).

.PARAMETER MultiSession
    'true' to let the sessions step act on an RD Session Host, multi-session Windows or an AVD
    session host (default 'false': it refuses there).

.EXAMPLE
    .\repair.ps1 -Steps 'rdp-config,cert' -RunId 7f3c2a

.NOTES
    Windows PowerShell 5.1 compatible; no aliases. Backups: %ProgramData%\azrdp\backup\<UTC time>.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $false)]
    [ValidatePattern('^(rdp-config|machinekeys-acl|machinekeys-rename|cert|sessions)(,(rdp-config|machinekeys-acl|machinekeys-rename|cert|sessions))*$')]
    [string[]]$Steps = @(),

    [Parameter(Mandatory = $false)]
    [ValidateSet('true', 'false')]
    [string]$LogOffActive = 'false',

    [Parameter(Mandatory = $false)]
    [ValidatePattern('^[A-Za-z0-9][A-Za-z0-9._-]{0,35}$')]
    [string]$RunId = '',

    [Parameter(Mandatory = $false)]
    [ValidateSet('true', 'false')]
    [string]$LogOffOnlyWhenFull = 'false',

    [Parameter(Mandatory = $false)]
    [ValidateSet('true', 'false')]
    [string]$MultiSession = 'false'
)

$PayloadVersion = '2.1.0'

# azrdp:include common.ps1
# azrdp:include change.ps1

if (-not (Test-FullLanguage)) {
    # Constrained Language Mode (WDAC/AppLocker) refuses .NET calls the steps need: change nothing.
    Write-Result -Result ([ordered]@{ payload = 'repair'; version = $PayloadVersion; run_id = $RunId; steps = @(); changed = $false
        reboot_pending = $false; reboot_required = $false; termservice = $null; error = 'unsupported: PowerShell runs in Constrained Language Mode' })
    return
}

$StepOrder = @('rdp-config', 'machinekeys-acl', 'machinekeys-rename', 'cert', 'sessions')
$CustomRuleName = 'azrdp-RemoteDesktop-CustomPort-TCP-In'
$UserModeRules = @('RemoteDesktop-UserMode-In-TCP', 'RemoteDesktop-UserMode-In-UDP')
$BackupCertStore = 'Cert:\LocalMachine\azrdp-backup'
$LockedFileSddl = 'D:P(A;;FA;;;SY)(A;;FA;;;BA)'
$ServiceWaitSeconds = 60
# The final TermService guarantee (up to 30 s for a StopPending to end, 30 s for the start) and
# the result line always fit in the reserve.
$ResultReserveSeconds = 90
$script:DeadlineSeconds = 480   # the clock is change.ps1's ($script:Clock, Get-SecondsLeft)
$script:FirewallReadError = $null
# Sessions at the start, keyed id|user|logon time (Get-SessionKey): a session id is reused, and
# only the same sign-in counts as the same session.
$script:DiscAtStart = @()
$script:ActiveAtStart = @()
$script:ActiveRowsAtStart = @()
$script:StartFileTime = [DateTime]::UtcNow.ToFileTimeUtc()
# Sessions the cert step's TermService restart disconnected are recorded in the protected backup
# root, and no later run logs them off for this long unless LogOffActive is true: their users were
# working (their clients may not reconnect on their own to a new self-signed certificate).
$DisconnectedRecordName = 'disconnected-by-azrdp.txt'
$ProtectHours = 24

function New-Outcome {
    # What a repair function returns: whether it changed anything, needs a reboot, its info.
    param([bool]$Changed = $false, [bool]$Reboot = $false, [AllowNull()][object]$Info = $null, [AllowNull()][object]$Skip = $null)
    return [ordered]@{ changed = $Changed; reboot = $Reboot; info = $Info; skip = $Skip }
}

# ---- bounded service control ----
# Start-Service and Restart-Service wait without limit while a service is Start/StopPending
# (PowerShell's ServiceOperationBaseCommand.DoWaitForStatus loops in 2-s slices for ever): a
# TermService hung in StopPending would hold Run Command for its 90 minutes with no result. Every
# wait here is ServiceController.WaitForStatus with a timeout, inside the payload-wide deadline.

function Wait-ServiceStatus {
    param([Parameter(Mandatory = $true)][object]$Service, [Parameter(Mandatory = $true)][string]$Status, [int]$Seconds = $ServiceWaitSeconds)
    $limit = [Math]::Min($Seconds, (Get-SecondsLeft))
    if ($limit -lt 1) { return $false }
    try {
        $Service.WaitForStatus($Status, [TimeSpan]::FromSeconds($limit))
        return $true
    } catch [System.ServiceProcess.TimeoutException] {
        return $false
    }
}

function Start-ServiceBounded {
    param([Parameter(Mandatory = $true)][string]$Name)
    $service = Get-Service -Name $Name
    $service.Refresh()
    if ($service.Status.ToString() -eq 'Running') { return }
    if ($service.Status.ToString() -eq 'StopPending' -and -not (Wait-ServiceStatus -Service $service -Status 'Stopped')) {
        throw ('{0} is stuck in StopPending; a reboot is needed' -f $Name)
    }
    $service.Refresh()
    if ($service.Status.ToString() -ne 'StartPending') { $service.Start() }
    if (-not (Wait-ServiceStatus -Service $service -Status 'Running')) { throw ('{0} did not start in time' -f $Name) }
}

function Restart-ServiceBounded {
    # Stop (ServiceController.Stop stops running dependents first, each waited for at most 30 s),
    # then start it and the dependents that ran.
    # A stop is never begun without time for a whole stop and start before the deadline; the
    # dependents that ran are started again whatever happens (finally).
    param([Parameter(Mandatory = $true)][string]$Name)
    $service = Get-Service -Name $Name
    $dependents = @($service.DependentServices | Where-Object -FilterScript { $_.Status.ToString() -eq 'Running' } | ForEach-Object -Process { $_.Name })
    try {
        if ($service.Status.ToString() -ne 'Stopped') {
            if ($service.Status.ToString() -ne 'StopPending') {
                if ((Get-SecondsLeft) -lt (2 * $ServiceWaitSeconds)) { throw ('{0} not restarted: too little time before the deadline' -f $Name) }
                $service.Stop()
            }
            if (-not (Wait-ServiceStatus -Service $service -Status 'Stopped')) { throw ('{0} could not be restarted: stuck in StopPending' -f $Name) }
        }
        Start-ServiceBounded -Name $Name
    } finally {
        foreach ($dependent in $dependents) { try { Start-ServiceBounded -Name $dependent } catch { } }
    }
}

function Confirm-TermService {
    # Whatever the steps did: TermService runs at the end. A StopPending is waited out (30 s, from
    # the reserve), a Stopped TermService is started, and so are its stopped dependents
    # (UmRdpService) that are not Disabled. Its final state is reported; $null when it cannot be read.
    try {
        $service = Get-Service -Name 'TermService' -ErrorAction Stop
    } catch {
        return 'Missing'
    }
    try {
        $service.Refresh()
        if ($service.Status.ToString() -eq 'StopPending') {
            try { $service.WaitForStatus('Stopped', [TimeSpan]::FromSeconds(30)) } catch [System.ServiceProcess.TimeoutException] { }
            $service.Refresh()
        }
        if ($service.Status.ToString() -eq 'Stopped') { try { $service.Start() } catch { } }
        try { $service.WaitForStatus('Running', [TimeSpan]::FromSeconds(30)) } catch { }
        $service.Refresh()
        if ($service.Status.ToString() -eq 'Running') {
            foreach ($dependent in @($service.DependentServices)) {
                if ($dependent.Status.ToString() -eq 'Stopped' -and (Get-ServiceFacts -Name $dependent.ServiceName).start -ne 'Disabled') {
                    try { $dependent.Start() } catch { }
                }
            }
        }
        return $service.Status.ToString()
    } catch {
        return $null
    }
}

# ---- rdp-config ----

function Test-RdpGroupCoversPort {
    # Does an enabled inbound Allow rule of the Remote Desktop group, or azrdp's own rule, let TCP
    # $Port in? (Hardening scripts delete the built-in rules; they cover 3389 only.) $Rules: the
    # ActiveStore's inbound rules (a group policy's included; the default store is the local
    # PersistentStore only), $Ports: their port filters by InstanceID (Get-PortFilters).
    param([Parameter(Mandatory = $true)][int64]$Port, [Parameter(Mandatory = $true)][AllowEmptyCollection()][object[]]$Rules,
          [Parameter(Mandatory = $true)][hashtable]$Ports)
    foreach ($rule in $Rules) {
        if (-not (($rule.Group -eq $RemoteDesktopRuleGroup -or $rule.Name -eq $CustomRuleName) -and $rule.Enabled.ToString() -eq 'True' -and $rule.Action.ToString() -eq 'Allow')) { continue }
        $filter = $Ports[$rule.InstanceID]
        if ($null -ne $filter -and @('TCP', '6') -contains [string]$filter.Protocol -and (Test-PortCovered -LocalPort $filter.LocalPort -Port $Port)) { return $true }
    }
    return $false
}

function Read-RdpConfigState {
    # deny and the services first, the firewall in its own try: with MpsSvc stopped (or WMI
    # refusing) the NetSecurity queries throw, and that must not leave fDenyTSConnections=1 or a
    # Disabled TermService unrepaired (RECHECK #12). The firewall fields are then null and
    # $script:FirewallReadError says why.
    $port = Get-RdpPort
    $state = [ordered]@{
        deny = Get-DWord -Path $TerminalServerKey -Name 'fDenyTSConnections'
        deny_policy = Get-DWord -Path $TsPolicyKey -Name 'fDenyTSConnections'
        port = Get-DWord -Path $RdpTcpKey -Name 'PortNumber'
        services = @(Get-ServiceFacts -Name 'TermService'; Get-ServiceFacts -Name 'SessionEnv')
        fw_rules = $null
        fw_rules_enabled = $null
        custom_rule = $null
    }
    try {
        $inbound = Get-InboundFirewallRules
        $rules = @(Get-RemoteDesktopRules -Rules $inbound)
        $custom = $null
        $rule = @($inbound | Where-Object -FilterScript { $_.Name -eq $CustomRuleName })
        if ($rule.Count -gt 0) {
            $filter = (Get-PortFilters)[$rule[0].InstanceID]
            $custom = ($rule[0].Enabled.ToString() -eq 'True' -and $null -ne $filter -and (Test-PortCovered -LocalPort $filter.LocalPort -Port $port))
        } elseif ($port -ne 3389) {
            $custom = $false
        }
        $state.fw_rules = $rules.Count
        $state.fw_rules_enabled = @($rules | Where-Object -FilterScript { $_.Enabled.ToString() -eq 'True' }).Count
        $state.custom_rule = $custom
        $script:FirewallReadError = $null
    } catch {
        $script:FirewallReadError = $_.Exception.Message
    }
    return $state
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
            Start-ServiceBounded -Name $service.name
            [void]$actions.Add('start:' + $service.name)
        }
    }
    $info = [ordered]@{ policy_forces_deny = ($Before.deny_policy -eq 1); actions = @() }
    $port = Get-RdpPort
    $problem = $null
    if ($null -eq $Before.fw_rules) {
        # What could be repaired is; the firewall part is reported as not readable.
        $problem = 'firewall not readable: ' + $script:FirewallReadError
    } elseif ($port -lt 1 -or $port -gt 65535) {
        $problem = ('PortNumber {0} is no TCP port; firewall not changed' -f $port)
    } else {
        try {
            # The user-mode rules only (not RemoteDesktop-Shadow-In-TCP, which netsh's group command
            # also enables), in the local store the changes are made in. Every call bounded.
            $persistent = Invoke-BoundedCim -Start { Get-NetFirewallRule -Direction Inbound -AsJob }
            $disabled = @($persistent | Where-Object -FilterScript { $UserModeRules -contains $_.Name -and $_.Enabled.ToString() -ne 'True' })
            if ($disabled.Count -gt 0) {
                $null = Invoke-BoundedCim -What 'firewall change' -Start { $disabled | Enable-NetFirewallRule -AsJob }
                [void]$actions.Add('fw:group')
            }
            $inbound = Get-InboundFirewallRules
            $ports = Get-PortFilters
            if (-not (Test-RdpGroupCoversPort -Port $port -Rules $inbound -Ports $ports)) {
                $own = @($persistent | Where-Object -FilterScript { $_.Name -eq $CustomRuleName })
                if ($own.Count -eq 0) {
                    # Scoped as the built-in RemoteDesktop-UserMode-In-TCP (App=%SystemRoot%\system32\svchost.exe,
                    # Svc=termservice; Learn: "Enable or disable a firewall rule on an Azure VM guest OS"): the
                    # port opens for TermService only, not for any process that binds it.
                    $null = Invoke-BoundedCim -What 'firewall change' -Start { New-NetFirewallRule -Name $CustomRuleName -DisplayName ('Remote Desktop - azrdp port {0} (TCP-In)' -f $port) -Direction Inbound -Protocol TCP -LocalPort $port -Action Allow -Profile Any -Program '%SystemRoot%\system32\svchost.exe' -Service 'TermService' -AsJob }
                } else {
                    $ownFilter = Invoke-BoundedCim -Start { $own[0] | Get-NetFirewallPortFilter -AsJob }
                    $null = Invoke-BoundedCim -What 'firewall change' -Start { $ownFilter | Set-NetFirewallPortFilter -Protocol TCP -LocalPort $port -AsJob }
                    $null = Invoke-BoundedCim -What 'firewall change' -Start { Enable-NetFirewallRule -Name $CustomRuleName -AsJob }
                }
                [void]$actions.Add('fw:custom-port')
            }
        } catch {
            $problem = 'firewall not changed: ' + $_.Exception.Message
        }
    }
    $info.actions = @($actions | Select-Object -First 4)
    return New-Outcome -Changed ($actions.Count -gt 0) -Info $info -Skip $problem
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
    $actions = New-Object -TypeName System.Collections.ArrayList
    if ($null -eq $Before.files) {
        # SYSTEM cannot list the folder (review #18): one list ACE first (change.ps1, shared with rescue).
        Add-SystemListAce -Path $MachineKeysPath -Folder (Get-BackupFolder -DataRoot $env:ProgramData -RunId $RunId)
        [void]$actions.Add('acl:list')
    }
    # Get-KeyFolderHoldBack (change.ps1, shared with rescue), before any further change: a
    # bloated MachineKeys (10^5 orphaned keys on IIS/.NET hosts) cannot be walked inside the
    # deadline, and a subfolder or reparse point is where a junction planted by any user (the
    # default DACL's 0x12019f holds FILE_ADD_SUBDIRECTORY) could carry the re-propagation of the
    # folder ACL write (SetNamedSecurityInfo) into a tree of that user's choosing [unverified
    # whether it follows it] (RECHECK new H-2).
    $holdBack = Get-KeyFolderHoldBack -Path $MachineKeysPath
    if ($null -ne $holdBack) {
        return New-Outcome -Changed ($actions.Count -gt 0) -Info ([ordered]@{ backup = Limit-Text -Text $script:BackupFolder -Max 80; actions = @($actions) }) -Skip $holdBack
    }
    $backup = Save-MachineKeysAcl -Path $MachineKeysPath -Folder (Get-BackupFolder -DataRoot $env:ProgramData -RunId $RunId)
    # Only a folder that cannot take a new key, or that gives every user more than Windows' default
    # does, is rewritten: one hardened to SYSTEM and Administrators works and renews (Azure/repair-
    # script-library win-fix-rdp-certificate.ps1), and rewriting it would undo the hardening (#19).
    if (-not $Before.default -and (-not (Test-KeyFolderWritable) -or (Test-BroadKeyFolderGrant))) {
        if ((Protect-InheritedKeyAces -Path $MachineKeysPath) -gt 0) { [void]$actions.Add('acl:explicit') }
        Set-DefaultMachineKeysAcl -Path $MachineKeysPath
        [void]$actions.Add('acl:folder-default')
    }
    # change.ps1's, shared with rescue: this Windows' live container and build.
    $build = Get-RegValue -Path 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion' -Name 'CurrentBuildNumber'
    if (Grant-RdpKeyAccess -Folder $MachineKeysPath -LivePath (Get-LiveRdpKeyPath) -Build $build) { [void]$actions.Add('acl:rdp-key') }
    $info = [ordered]@{ backup = Limit-Text -Text $backup -Max 80; actions = @($actions | Select-Object -First 4) }
    return New-Outcome -Changed ($actions.Count -gt 0) -Reboot ($actions.Count -gt 0) -Info $info
}

# ---- machinekeys-rename: the RDP key container moved aside ----

function Test-RdpKeyUsable {
    # Judges the live RDP key container only (Get-LiveRdpKeyPath): a f686aace... file of another
    # MachineGuid is one Windows never opens, and a certificate whose key is elsewhere (or gone)
    # says nothing about it. $true usable, or absent (nothing to move; Windows makes a new one).
    # $false definitely broken: the file is empty, or a self-signed Remote Desktop certificate
    # (Windows makes them in TSSecKeySet1, which is this file) fails from the key itself and none
    # works; "keyset does not exist" (NTE_BAD_KEYSET) counts for RDP's own certificate now that
    # SYSTEM opened the file (Get-KeyFailureVerdict: a damaged container reports it, RECHECK #7).
    # $null could not tell: no MachineGuid, SYSTEM refused (the ACL is machinekeys-acl's to fix,
    # moving the key would not), the file stays locked, or a key test that could not run.
    $live = Get-LiveRdpKeyPath
    if ($null -eq $live) { return $null }
    if (-not (Test-Path -LiteralPath $live)) { return $true }
    if ((Get-Item -LiteralPath $live -Force).Length -eq 0) { return $false }
    if ('opened' -ne (Test-LiveRdpKeyOpen)) { return $null }
    $answer = $true
    $broken = $false
    foreach ($certificate in @(Get-RdpStoreCertificates)) {
        if ($certificate.Subject -ne $certificate.Issuer -or -not $certificate.HasPrivateKey) { continue }
        $key = Test-PrivateKey -Certificate $certificate
        if ($true -eq $key) { return $true }
        if ($null -eq $key) { $answer = $null; continue }
        $broken = $true
    }
    if ($broken -and $null -ne $answer) { return $false }
    return $answer
}

function Repair-MachineKeysRename {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $none = [ordered]@{ backup = $null; moved = 0; failed = 0 }
    $usable = Test-RdpKeyUsable
    if ($null -eq $usable) { return New-Outcome -Info $none -Skip 'held back: the RDP key could not be tested' }
    if ($usable) { return New-Outcome -Info $none }
    # Never move a key the cert step could not replace: its preconditions first (services not
    # Disabled, the folder writable, SelfSignedCertStore), or RDP is left with a keyless certificate.
    $holdBack = Get-CertHoldBack -SkipKeyChecks
    if ($null -ne $holdBack) { return New-Outcome -Info $none -Skip $holdBack }
    # Only the live RDP key container: every other machine key (IIS, WinRM, the VM agent's
    # transport certificate, LDAPS on a DC) stays where its service finds it, and so do stale RDP
    # containers of another MachineGuid. Same volume: a move is a rename that keeps the file; its
    # ACL is saved, then it is locked to SYSTEM and Administrators.
    $folder = Get-BackupFolder -DataRoot $env:ProgramData -RunId $RunId
    $dest = Join-Path -Path $folder -ChildPath 'rdp-key'
    New-Item -ItemType Directory -Path $dest | Out-Null
    $file = Get-Item -LiteralPath (Get-LiveRdpKeyPath) -Force
    $target = Join-Path -Path $dest -ChildPath $file.Name
    $sddl = (Get-Acl -LiteralPath $file.FullName).GetSecurityDescriptorSddlForm('Access')
    Add-Content -LiteralPath (Join-Path -Path $dest -ChildPath 'acl.txt') -Value ('{0}|{1}' -f $file.Name, $sddl) -Encoding ASCII
    # The undo puts the file back and its ACL with it (the lock below would leave NETWORK SERVICE unable to read it).
    Add-UndoNote -Folder $folder -Line ('RDP key: Move-Item "{0}" "{1}"; $a = Get-Acl "{1}\{2}"; $a.SetSecurityDescriptorSddlForm(''{3}'', ''Access''); Set-Acl "{1}\{2}" $a' -f $target, $MachineKeysPath, $file.Name, $sddl)
    try {
        Move-Item -LiteralPath $file.FullName -Destination $target
    } catch {
        return New-Outcome -Info ([ordered]@{ backup = Limit-Text -Text $dest -Max 80; moved = 0; failed = 1 }) -Skip 'the RDP key container could not be moved'
    }
    $outcome = New-Outcome -Changed $true -Info ([ordered]@{ backup = Limit-Text -Text $dest -Max 80; moved = 1; failed = 0 })
    try {
        $locked = Get-Acl -LiteralPath $target
        $locked.SetSecurityDescriptorSddlForm($LockedFileSddl, 'Access')
        Set-Acl -LiteralPath $target -AclObject $locked
    } catch {
        # Moved, but its old (possibly permissive) ACL stays: said apart, never counted as "not moved".
        $outcome.skip = 'RDP key moved; locking its ACL failed'
    }
    return $outcome
}

# ---- cert ----

function Test-CertificateUsable {
    # $true not expired and its key works, $false expired or its key definitely broken, $null the key could not be tested.
    param([Parameter(Mandatory = $true)][System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    if ($Certificate.NotAfter.ToUniversalTime() -le (Get-Date).ToUniversalTime()) { return $false }
    return Test-PrivateKey -Certificate $Certificate
}

function Test-CertificateBroken {
    param([Parameter(Mandatory = $true)][System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    $usable = Test-CertificateUsable -Certificate $Certificate
    return ($null -ne $usable -and -not $usable)
}

function Read-CertState {
    $bound = Get-BoundThumbprint
    $all = @(Get-RdpStoreCertificates)
    $current = $null
    if ($null -ne $bound) {
        $found = $null
        if ($bound -ne 'MALFORMED') { $found = Find-Certificate -Thumbprint $bound }
        if ($null -ne $found) { $current = $found.cert }
    } else {
        $usable = @($all | Where-Object -FilterScript { -not (Test-CertificateBroken -Certificate $_) })
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
        bad = @($all | Where-Object -FilterScript { Test-CertificateBroken -Certificate $_ }).Count
        current = $currentThumbprint
        current_not_after = $currentNotAfter
        security_layer = Get-DWord -Path $RdpTcpKey -Name 'SecurityLayer'
    }
}

function Test-KeyFolderWritable {
    # Can Windows make a new key container in MachineKeys? With the default DACL (Everyone may add
    # files), or with SYSTEM's own grant: a folder hardened to SYSTEM and Administrators was
    # measured to keep RDP working and to renew the certificate through it (Azure/repair-script-
    # library win-fix-rdp-certificate.ps1), so it does not hold the cert step back. Any other form
    # (Administrators only, ...) is unmeasured: held back (docs/emulator.md, unverified).
    if ((Get-Acl -LiteralPath $MachineKeysPath).GetSecurityDescriptorSddlForm('Access') -eq $MachineKeysDefaultDacl) { return $true }
    return [bool](Test-Grant -Path $MachineKeysPath -Sid $SidSystem -Rights ([System.Security.AccessControl.FileSystemRights]'ListDirectory, CreateFiles') -Exact)
}

function Test-BroadKeyFolderGrant {
    # Does Everyone, Authenticated Users or Users hold more on the MachineKeys folder than Windows'
    # default Everyone grant 0x12019f (a forum fix's Everyone:F, Users:Modify)? Generic bits mapped.
    foreach ($rule in @((Get-Acl -LiteralPath $MachineKeysPath).GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier]))) {
        if ($rule.AccessControlType -ne [System.Security.AccessControl.AccessControlType]::Allow -or $BroadSids -notcontains $rule.IdentityReference.Value) { continue }
        $mask = ConvertTo-FileRights -Mask ([int64][BitConverter]::ToUInt32([BitConverter]::GetBytes([int32]$rule.FileSystemRights), 0))
        if (($mask -band (4294967295 -bxor 1180063)) -ne 0) { return $true }
    }
    return $false
}

function Get-CertHoldBack {
    # Why Windows could not make a new self-signed certificate now, or $null. SessionEnv makes it
    # in the key container TSSecKeySet1 (MachineKeys\f686aace..._<MachineGuid>), reusing the
    # existing one: a broken container fails with RCM 1057/1058 and RDP is left with none.
    # -SkipKeyChecks: machinekeys-rename asks before it moves that container (whose fault it fixes).
    param([switch]$SkipKeyChecks)
    foreach ($name in @('SessionEnv', 'TermService', 'CertPropSvc', 'KeyIso', 'CryptSvc')) {
        $facts = Get-ServiceFacts -Name $name
        if ($facts.state -eq 'Missing') { return ('held back: {0} is missing' -f $name) }
        if ($facts.start -eq 'Disabled') {
            # rdp-config sets TermService and SessionEnv back to Manual; the other three it never touches.
            if (@('SessionEnv', 'TermService') -contains $name) { return ('held back: {0} is disabled; run rdp-config' -f $name) }
            return ('held back: {0} is disabled; set it to Manual' -f $name)
        }
    }
    if (-not (Test-KeyFolderWritable)) { return 'held back: MachineKeys ACL not default; run machinekeys-acl' }
    $key = Get-RdpKeyFacts
    if ($key.present -and -not ($key.network_service_read -and $key.system_full)) { return 'held back: RDP key ACL broken; run machinekeys-acl' }
    if (-not $SkipKeyChecks -and $key.present -and ($key.size -eq 0 -or $false -eq (Test-RdpKeyUsable))) { return 'held back: RDP key unusable; run machinekeys-rename' }
    $store = Get-RegValue -Path ($TerminalServerKey + '\WinStations') -Name 'SelfSignedCertStore'
    if ($null -ne $store -and [string]$store -ne 'Remote Desktop') { return 'held back: SelfSignedCertStore is not Remote Desktop' }
    return $null
}

function Move-CertificateToBackup {
    # Into Cert:\LocalMachine\azrdp-backup (a store RDP never reads): the certificate keeps its
    # properties and its link to the private key. Undo: Move-Item it back.
    param([Parameter(Mandatory = $true)][string]$Thumbprint)
    if (-not (Test-Path -LiteralPath $BackupCertStore)) { New-Item -Path $BackupCertStore | Out-Null }
    Add-UndoNote -Folder (Get-BackupFolder -DataRoot $env:ProgramData -RunId $RunId) -Line ('certificate: Move-Item "{0}\{1}" "{2}"' -f $BackupCertStore, $Thumbprint, $RdpCertStore)
    Move-Item -LiteralPath (Join-Path -Path $RdpCertStore -ChildPath $Thumbprint) -Destination $BackupCertStore
}

function Wait-RdpCertificate {
    # Windows makes the new self-signed certificate shortly after the restart: wait up to 60 s.
    # $true when a usable one is there, $false when none came (the caller reports it).
    for ($attempt = 0; $attempt -lt 30 -and (Get-SecondsLeft) -gt 2; $attempt += 1) {
        $usable = @(Get-RdpStoreCertificates | Where-Object -FilterScript { -not (Test-CertificateBroken -Certificate $_) })
        if ($usable.Count -gt 0) { return $true }
        Start-Sleep -Seconds 2
    }
    return $false
}

function Repair-Certificate {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $removed = New-Object -TypeName System.Collections.ArrayList
    $bound = Get-BoundThumbprint
    $boundUsable = $false
    $boundBroken = $false
    if ($null -ne $bound) {
        $found = $null
        if ($bound -ne 'MALFORMED') { $found = Find-Certificate -Thumbprint $bound }
        $boundBroken = ($null -eq $found) -or (Test-CertificateBroken -Certificate $found.cert)
        $boundUsable = -not $boundBroken
    }
    $info = [ordered]@{ removed = @(); removed_total = 0; cleared_binding = $false; kept_bound = $boundUsable; restarted = @() }
    $wouldAct = ($Before.bad -gt 0) -or $boundBroken -or ($null -eq $Before.current)
    if (-not $wouldAct) { return New-Outcome -Info $info }
    $holdBack = Get-CertHoldBack
    if ($null -ne $holdBack) { return New-Outcome -Skip $holdBack }
    # Loop over every certificate: Microsoft's one-liner breaks when the store holds several.
    $broken = New-Object -TypeName System.Collections.ArrayList
    foreach ($certificate in @(Get-RdpStoreCertificates)) {
        if (-not (Test-CertificateBroken -Certificate $certificate)) { continue }
        [void]$broken.Add($certificate)
    }
    # Restart only when the certificate RDP serves must change: every restart of TermService
    # disconnects every RDP user (their sessions stay, as Disc). A broken certificate moved while
    # no usable one is bound is still the one TermService serves from memory: that too needs the
    # restart (review #13). Decided before any change, so a restart the host forbids changes nothing.
    $restart = $boundBroken -or ($broken.Count -gt 0 -and -not $boundUsable) -or ($null -eq $Before.current)
    if ($restart -and $MultiSession -ne 'true') {
        # On an RD Session Host, multi-session Windows or an AVD session host the restart
        # disconnects every user of the host, as the sessions step would (RECHECK #8): only when asked.
        $mode = Get-SeatMode
        if (@('rdsh', 'multi', 'avd') -contains $mode) {
            return New-Outcome -Info $info -Skip ('held back: {0} host; restarts only with MultiSession' -f $mode)
        }
    }
    foreach ($certificate in $broken) {
        Move-CertificateToBackup -Thumbprint $certificate.Thumbprint
        [void]$removed.Add($certificate.Thumbprint.ToUpperInvariant())
    }
    $cleared = $false
    if ($boundBroken) {
        $folder = Get-BackupFolder -DataRoot $env:ProgramData -RunId $RunId
        # As stored (kind:data): a MALFORMED one (a REG_SZ thumbprint) is kept as its own text.
        Set-Content -LiteralPath (Join-Path -Path $folder -ChildPath 'SSLCertificateSHA1Hash.txt') -Value (Get-BindingText) -Encoding Unicode
        Add-UndoNote -Folder $folder -Line ('binding: SSLCertificateSHA1Hash = {0} (kind:data in SSLCertificateSHA1Hash.txt)' -f $bound)
        Remove-ItemProperty -LiteralPath $RdpTcpKey -Name 'SSLCertificateSHA1Hash'
        $cleared = $true
    }
    $problem = $null
    $restarted = New-Object -TypeName System.Collections.ArrayList
    if ($restart) {
        try {
            foreach ($name in @('SessionEnv', 'TermService')) {
                # Written before the restart is sent: the users it is about to disconnect, so that
                # no later run logs them off (a failed write is a restart not made).
                if ($name -eq 'TermService') { Save-DisconnectedRecord }
                Restart-ServiceBounded -Name $name
                [void]$restarted.Add($name)
            }
            if (-not (Wait-RdpCertificate)) { throw 'no new self-signed certificate after 60 s (RCM 1057/1058)' }
        } catch {
            $problem = $_.Exception.Message
        } finally {
            # SessionEnv makes the next certificate, UmRdpService (it needs TermService) redirects
            # drives and the clipboard: started again whatever happened, unless Disabled.
            foreach ($name in @('SessionEnv', 'UmRdpService')) {
                $facts = Get-ServiceFacts -Name $name
                if ($facts.state -eq 'Running' -or $facts.state -eq 'Missing' -or $facts.start -eq 'Disabled') { continue }
                if ($name -eq 'UmRdpService' -and (Get-ServiceFacts -Name 'TermService').state -ne 'Running') { continue }
                try { Start-ServiceBounded -Name $name } catch { }
            }
        }
    }
    $info.removed = @($removed | Select-Object -First 2)
    $info.removed_total = $removed.Count
    $info.cleared_binding = $cleared
    $info.restarted = @($restarted)
    return New-Outcome -Changed ($removed.Count -gt 0 -or $cleared -or $restarted.Count -gt 0) -Info $info -Skip $problem
}

# ---- sessions ----

function Get-SessionKey {
    # One sign-in: session id, user and logon time (FILETIME; empty when unknown). Session ids are
    # reused; the logon time tells a later sign-in in the same id apart.
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Session)
    return ('{0}|{1}|{2}' -f $Session.id, $Session.user, $Session.logon)
}

function Get-DisconnectedRecordPath {
    return Join-Path -Path (Join-Path -Path $env:ProgramData -ChildPath 'azrdp') -ChildPath $DisconnectedRecordName
}

function Read-DisconnectedRecord {
    # The sessions a cert step's TermService restart disconnected in the last $ProtectHours hours:
    # @{ key; at; line }. Lines are `<id>|<user>|<logon>|<UTC time, round-trip format>`; a line
    # that does not parse is dropped. Throws when the file is there but cannot be read: no
    # session is then logged off (the step fails, and says why).
    $path = Get-DisconnectedRecordPath
    if (-not (Test-Path -LiteralPath $path)) { return ,@() }
    $since = [DateTime]::UtcNow.AddHours(-$ProtectHours)
    $entries = New-Object -TypeName System.Collections.ArrayList
    foreach ($line in @(Get-Content -LiteralPath $path -Encoding UTF8)) {
        $cut = ([string]$line).LastIndexOf('|')
        if ($cut -lt 1) { continue }
        $at = [DateTime]::MinValue
        if (-not [DateTime]::TryParse($line.Substring($cut + 1), [System.Globalization.CultureInfo]::InvariantCulture, [System.Globalization.DateTimeStyles]::RoundtripKind, [ref]$at)) { continue }
        if ($at.ToUniversalTime() -lt $since) { continue }
        [void]$entries.Add([ordered]@{ key = $line.Substring(0, $cut); at = $at; line = [string]$line })
    }
    return ,$entries.ToArray()
}

function Save-DisconnectedRecord {
    # Just before the cert step restarts TermService: every remote session Active now (or, when
    # they cannot be read now, Active at the start) is about to be disconnected by azrdp. Recorded
    # in the protected root %ProgramData%\azrdp (Get-BackupFolder makes and checks it), with the
    # entries of the last $ProtectHours hours kept and older ones dropped. Throws when it cannot
    # write: the restart is then not made.
    $rows = $script:ActiveRowsAtStart
    try {
        $current = Get-UserSessions
        $rows = @($current | Where-Object -FilterScript { $_.state -eq 'Active' })
    } catch { }
    $rows = @($rows | Where-Object -FilterScript { $_.id -ne 0 -and $_.name -ne 'console' })
    if ($rows.Count -eq 0) { return }
    $folder = Get-BackupFolder -DataRoot $env:ProgramData -RunId $RunId
    $now = [DateTime]::UtcNow.ToString('o', [System.Globalization.CultureInfo]::InvariantCulture)
    $record = Read-DisconnectedRecord
    $lines = @(@($record | ForEach-Object -Process { $_.line }) + @($rows | ForEach-Object -Process { '{0}|{1}' -f (Get-SessionKey -Session $_), $now }))
    Set-Content -LiteralPath (Get-DisconnectedRecordPath) -Value $lines -Encoding UTF8
    Add-UndoNote -Folder $folder -Line ('sessions: {0} disconnected by the TermService restart (kept from logoff for {1} h: {2})' -f $rows.Count, $ProtectHours, (Get-DisconnectedRecordPath))
}

function Read-SessionsState {
    $sessions = Get-UserSessions
    $seats = Get-SeatFacts -Sessions $sessions
    return [ordered]@{
        total = $sessions.Count
        disconnected = @($sessions | Where-Object -FilterScript { $_.state -eq 'Disc' }).Count
        active = @($sessions | Where-Object -FilterScript { $_.state -eq 'Active' -and $_.name -ne 'console' }).Count
        mode = $seats.server_mode
        seat_limit = $seats.seat_limit
        used = $seats.used
        free = $seats.free
    }
}

function Repair-Sessions {
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Before)
    $includeActive = ($LogOffActive -eq 'true')
    $onlyWhenFull = ($LogOffOnlyWhenFull -eq 'true')
    $info = [ordered]@{ logged_off = @(); logged_off_total = 0; seats_freed = 0; include_active = $includeActive; kept_recent = 0 }
    if ($onlyWhenFull -and $Before.free -gt 0) { return New-Outcome -Info $info }
    # Only sessions that were already disconnected when this payload started (or active then,
    # with LogOffActive): the cert step's TermService restart turns working users' sessions into
    # Disc, and they are never logged off for it. The same sign-in (id, user and logon time: ids
    # are reused), still disconnected since before the start (a user who reconnected and was
    # disconnected again during the run is working).
    $sessions = Get-UserSessions
    $candidates = @($sessions | Where-Object -FilterScript {
        $key = Get-SessionKey -Session $_
        $_.id -ne 0 -and $_.name -ne 'console' -and (
            ($_.state -eq 'Disc' -and $script:DiscAtStart -contains $key -and ($null -eq $_.disc_at -or $_.disc_at -lt $script:StartFileTime)) -or
            ($includeActive -and $script:ActiveAtStart -contains $key -and @('Active', 'Disc') -contains $_.state))
    })
    # Nor, for 24 h unless LogOffActive, the sessions an earlier run's cert step disconnected
    # (new H-1): to this run they look disconnected at the start, yet their users were working.
    $recent = @()
    if (-not $includeActive) {
        $record = Read-DisconnectedRecord
        $recent = @($record | ForEach-Object -Process { $_.key })
    }
    $targets = @($candidates | Where-Object -FilterScript { $recent -notcontains (Get-SessionKey -Session $_) } |
        Sort-Object -Property @{ Expression = { if ($null -eq $_.idle_min) { -1 } else { $_.idle_min } } } -Descending)
    $info.kept_recent = $candidates.Count - $targets.Count
    if ($onlyWhenFull) {
        # Longest idle first, only as many as free one seat.
        $need = [Math]::Max(0, $Before.used - $Before.seat_limit + 1)
        $targets = @($targets | Select-Object -First $need)
    }
    if ($targets.Count -eq 0) {
        if ($info.kept_recent -gt 0) { return New-Outcome -Info $info -Skip ('held back: azrdp disconnected {0} in 24 h; LogOffActive' -f $info.kept_recent) }
        return New-Outcome -Info $info
    }
    if (@('rdsh', 'multi', 'avd') -contains $Before.mode -and $MultiSession -ne 'true') {
        return New-Outcome -Info $info -Skip ('held back: {0} host; logs off only with MultiSession' -f $Before.mode)
    }
    $loggedOff = New-Object -TypeName System.Collections.ArrayList
    $failed = 0
    foreach ($session in $targets) {
        $run = Invoke-Native -FilePath 'logoff.exe' -ArgumentList @([string]$session.id)
        if ($run.ExitCode -eq 0) { [void]$loggedOff.Add([int]$session.id) } else { $failed += 1 }
    }
    # logoff returns before the session is gone: wait up to 10 s for the sessions to leave.
    for ($attempt = 0; $attempt -lt 10 -and $loggedOff.Count -gt 0 -and (Get-SecondsLeft) -gt 1; $attempt += 1) {
        $now = Get-UserSessions
        if (@($now | Where-Object -FilterScript { $loggedOff -contains $_.id }).Count -eq 0) { break }
        Start-Sleep -Seconds 1
    }
    $info.logged_off = @($loggedOff | Select-Object -First 4)
    $info.logged_off_total = $loggedOff.Count
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
    if ((Get-SecondsLeft) -lt 1) {
        $step.status = 'skipped'
        $step.error = 'skipped: the payload deadline passed'
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

# One comma string (-File) or an array (-Command style): the same list either way.
$wanted = @((@($Steps) -join ',').Split(',') | Where-Object -FilterScript { $_ } | ForEach-Object -Process { $_.ToLowerInvariant() })
$runError = $null
if ($wanted.Count -eq 0) { $runError = 'no steps given: pass -Steps rdp-config,cert,...' }
# Whenever the cert step may restart TermService, not only for the sessions step: what was
# Active at the start is recorded if that restart comes (Save-DisconnectedRecord).
if ($wanted -contains 'sessions' -or $wanted -contains 'cert') {
    try {
        $atStart = Get-UserSessions
        $script:DiscAtStart = @($atStart | Where-Object -FilterScript { $_.state -eq 'Disc' } | ForEach-Object -Process { Get-SessionKey -Session $_ })
        $script:ActiveAtStart = @($atStart | Where-Object -FilterScript { $_.state -eq 'Active' } | ForEach-Object -Process { Get-SessionKey -Session $_ })
        $script:ActiveRowsAtStart = @($atStart | Where-Object -FilterScript { $_.state -eq 'Active' })
    } catch {
        $script:DiscAtStart = @()
        $script:ActiveAtStart = @()
    }
}
$results = New-Object -TypeName System.Collections.ArrayList
foreach ($name in $StepOrder) {
    if ($wanted -notcontains $name) { continue }
    [void]$results.Add((Invoke-Step -Name $name))
}
$termState = Confirm-TermService

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
    termservice = $termState
    error = $runError
}
try {
    Write-Result -Result $Result
} catch {
    try {
        $Result['steps'] = @($results | ForEach-Object -Process {
            [ordered]@{ name = $_.name; status = $_.status; before = $null; after = $null; info = $null; reboot_required = $_.reboot_required; error = (Limit-Text -Text ('result: ' + $_.error) -Max 60) }
        })
        Write-Result -Result $Result
    } catch {
        # Never end without a result line: a literal one, from values the script made itself
        # (RunId is pattern-validated; the booleans say what the steps changed and need).
        $flag = @{ $true = 'true'; $false = 'false' }
        Write-Result -Result ('{"payload":"repair","version":"' + $PayloadVersion + '","run_id":"' + $RunId +
            '","steps":[],"changed":' + $flag[[bool]$changed] + ',"reboot_pending":' + $flag[[bool]$pendingBefore] +
            ',"reboot_required":' + $flag[[bool]($rebootStep -or $pendingBefore)] + ',"termservice":null,' +
            '"error":"result could not be serialised; see the audit"}')
    }
}
