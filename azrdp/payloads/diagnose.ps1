<#
.SYNOPSIS
    Read what Windows says about Remote Desktop, for azrdp. Changes nothing.

.DESCRIPTION
    Run by azrdp through Azure Run Command (RunPowerShellScript, as SYSTEM). Reads:
    the services TermService, SessionEnv, UmRdpService, CertPropSvc, KeyIso, CryptSvc and MpsSvc;
    fDenyTSConnections (local and policy); RDP-Tcp PortNumber, UserAuthentication (NLA),
    SecurityLayer and MinEncryptionLevel; the RDP-Tcp listener; the RDP certificate (the bound
    SSLCertificateSHA1Hash and every certificate in Cert:\LocalMachine\Remote Desktop); the
    MachineKeys folder ACL against Windows' default and the RDP key container; Windows Firewall;
    sessions and free seats; recent event counts; a pending reboot; the OS build.

    Each section is read in its own try/catch: one failure is reported in "errors" and the rest
    still run. The output is exactly one line, AZRDP-RESULT:{compact json}, in the schema of
    azrdp/payloads/schema.py (DIAGNOSE), kept well under Run Command's 4,096-byte output cap.

.PARAMETER EventHours
    How many hours of the System event log to count events in (1-168, default 24).

.PARAMETER RunId
    An id of this run, echoed back in the result.

.EXAMPLE
    .\diagnose.ps1 -EventHours 24 -RunId 7f3c2a

.NOTES
    Windows PowerShell 5.1 compatible; no aliases; read-only.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $false)]
    [ValidateRange(1, 168)]
    [int]$EventHours = 24,

    [Parameter(Mandatory = $false)]
    [ValidatePattern('^[A-Za-z0-9][A-Za-z0-9._-]{0,35}$')]
    [string]$RunId = ''
)

$PayloadVersion = '2.1.0'

# azrdp:include common.ps1

if (-not (Test-FullLanguage)) {
    # Constrained Language Mode: read nothing rather than half; every section null, and why.
    $Unsupported = [ordered]@{ payload = 'diagnose'; version = $PayloadVersion; run_id = $RunId }
    foreach ($name in @('os', 'services', 'rdp', 'listener', 'cert', 'machinekeys', 'firewall', 'sessions', 'rds', 'events', 'reboot')) { $Unsupported[$name] = $null }
    $Unsupported['errors'] = @()
    $Unsupported['errors_total'] = 0
    $Unsupported['error'] = 'unsupported: PowerShell runs in Constrained Language Mode'
    Write-Result -Result $Unsupported
    return
}

$Failures = New-Object -TypeName System.Collections.ArrayList

function Add-Failure {
    param([Parameter(Mandatory = $true)][string]$Section, [Parameter(Mandatory = $true)][System.Management.Automation.ErrorRecord]$Record)
    [void]$Failures.Add([ordered]@{ section = $Section; message = (Limit-Text -Text $Record.Exception.Message -Max 60) })
}

# Every CIM call is bounded: a broken WMI repository or a blocked provider (the TerminalServices
# one while TermService hangs [unverified]) otherwise waits on (Learn: GetCimInstanceCommand /
# InvokeCimMethodCommand.OperationTimeoutSec, "the operation timeout after which the client
# operation should be canceled"; dataplat/dbatools#6498: a hang without it).

function Read-OsFacts {
    $os = Get-CimInstance -ClassName 'Win32_OperatingSystem' -OperationTimeoutSec 20
    $build = [string]$os.BuildNumber
    $ubr = Get-DWord -Path 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion' -Name 'UBR'
    if ($null -ne $ubr) { $build = '{0}.{1}' -f $build, $ubr }
    return [ordered]@{
        build = Limit-Text -Text $build -Max 24
        caption = Limit-Text -Text $os.Caption -Max 48
        uptime_min = [int64]((Get-Date) - $os.LastBootUpTime).TotalMinutes
    }
}

function Read-RdpSettings {
    return [ordered]@{
        deny = Get-DWord -Path $TerminalServerKey -Name 'fDenyTSConnections'
        deny_policy = Get-DWord -Path $TsPolicyKey -Name 'fDenyTSConnections'
        port = Get-DWord -Path $RdpTcpKey -Name 'PortNumber'
        nla = Get-DWord -Path $RdpTcpKey -Name 'UserAuthentication'
        nla_policy = Get-DWord -Path $TsPolicyKey -Name 'UserAuthentication'
        security_layer = Get-DWord -Path $RdpTcpKey -Name 'SecurityLayer'
        min_encryption = Get-DWord -Path $RdpTcpKey -Name 'MinEncryptionLevel'
    }
}

function Read-Listener {
    # The RDP-Tcp winstation through the WTS API (the text tool only as a fallback): its state
    # is a number there, the same in every display language.
    $state = Get-ListenerState
    $port = Get-RdpPort
    $listening = @()
    # Bounded (Invoke-BoundedCim); "no such connection" is an error answer, not a failure.
    if ($port -ge 1 -and $port -le 65535) { $listening = Invoke-BoundedCim -What 'TCP connection query' -IgnoreErrors -Start { Get-NetTCPConnection -LocalPort $port -State Listen -AsJob } }
    $owner = $null
    if ($listening.Count -gt 0) {
        $process = Get-Process -Id $listening[0].OwningProcess -ErrorAction SilentlyContinue
        if ($null -ne $process) { $owner = Limit-Text -Text $process.ProcessName -Max 24 }
    }
    return [ordered]@{ state = $state; tcp_listening = ($listening.Count -gt 0); owner = $owner }
}

function Read-Certificates {
    $bound = Get-BoundThumbprint
    $boundCert = $null
    if ($null -ne $bound -and $bound -ne 'MALFORMED') {
        $found = Find-Certificate -Thumbprint $bound
        if ($null -ne $found) {
            $facts = Get-CertFacts -Certificate $found.cert
            $boundCert = [ordered]@{ store = $found.store }
            foreach ($key in @('not_after', 'expired', 'key_readable', 'self_signed')) { $boundCert[$key] = $facts[$key] }
        }
    }
    $all = @(Get-RdpStoreCertificates)
    $listed = @($all | Select-Object -First 2 | ForEach-Object -Process { Get-CertFacts -Certificate $_ })
    return [ordered]@{ bound = $bound; bound_cert = $boundCert; certs = $listed; total = $all.Count }
}

function Test-RuleProfileActive {
    # 'Any', or one of the rule's profiles ('Domain, Private') is the category of a connected network.
    param([Parameter(Mandatory = $true)][string]$Profile, [AllowEmptyCollection()][string[]]$Active = @())
    if ($Profile -eq 'Any') { return $true }
    foreach ($name in $Active) { if ($Profile -match $name) { return $true } }
    return $false
}

function Read-Firewall {
    # MpsSvc first, in its own try: with it stopped the NetSecurity cmdlets throw, and the section
    # still says why. Rules are joined to their port, application and service filters by
    # InstanceID in one pass (one association query per rule took tens of seconds), and an
    # enabled Block rule for the port beats every Allow, as Microsoft's Windows_Firewall_Rules_
    # Validation.ps1 checks first (review #11).
    $service = 'Missing'
    try { $service = (Get-ServiceFacts -Name 'MpsSvc').state } catch { $service = 'Missing' }
    try {
        # Every NetSecurity query through Invoke-BoundedCim: CDXML cmdlets have no timeout of their own.
        $profileList = Invoke-BoundedCim -Start { Get-NetFirewallProfile -PolicyStore ActiveStore -AsJob }
        $profiles = @($profileList | ForEach-Object -Process {
            [ordered]@{
                name = $_.Name.ToString()
                enabled = ($_.Enabled.ToString() -eq 'True')
                inbound = $_.DefaultInboundAction.ToString()
                rules_ignored = ($_.AllowInboundRules.ToString() -eq 'False')
            }
        })
        $inbound = Get-InboundFirewallRules
        $rdpRules = @(Get-RemoteDesktopRules -Rules $inbound)
        $enabled = @($rdpRules | Where-Object -FilterScript { $_.Enabled.ToString() -eq 'True' -and $_.Action.ToString() -eq 'Allow' })
        $port = Get-RdpPort
        $ports = Get-PortFilters
        $apps = @{}
        $appList = Invoke-BoundedCim -Start { Get-NetFirewallApplicationFilter -PolicyStore ActiveStore -AsJob }
        foreach ($filter in $appList) { $apps[$filter.InstanceID] = $filter }
        $services = @{}
        $serviceList = Invoke-BoundedCim -Start { Get-NetFirewallServiceFilter -PolicyStore ActiveStore -AsJob }
        foreach ($filter in $serviceList) { $services[$filter.InstanceID] = $filter }
        $addresses = @{}
        $addressList = Invoke-BoundedCim -Start { Get-NetFirewallAddressFilter -PolicyStore ActiveStore -AsJob }
        foreach ($filter in $addressList) { $addresses[$filter.InstanceID] = $filter }
        $networks = Invoke-BoundedCim -What 'network profile query' -IgnoreErrors -Start { Get-NetConnectionProfile -AsJob }
        $active = @($networks | ForEach-Object -Process { $_.NetworkCategory.ToString() -replace 'DomainAuthenticated', 'Domain' })
        $hits = @($inbound | Where-Object -FilterScript {
            $p = $ports[$_.InstanceID]
            $a = $apps[$_.InstanceID]
            $s = $services[$_.InstanceID]
            $_.Enabled.ToString() -eq 'True' -and ($null -ne $p) -and (@('TCP', '6', 'Any') -contains [string]$p.Protocol) -and
                (Test-PortCovered -LocalPort $p.LocalPort -Port $port) -and
                ($null -eq $a -or @('Any', 'System') -contains [string]$a.Program -or [string]$a.Program -like '*\svchost.exe') -and
                ($null -eq $s -or @('Any', 'TermService') -contains [string]$s.Service) -and
                (Test-RuleProfileActive -Profile $_.Profile.ToString() -Active $active)
        })
        # A Block rule scoped to some remote addresses blocks only those: the guest cannot tell
        # whether the caller's is among them (the wire probe can), so only a Block for every
        # address counts; an Allow counts whatever its scope (it lets its admins in).
        $blocked = @($hits | Where-Object -FilterScript {
            $r = $addresses[$_.InstanceID]
            $_.Action.ToString() -eq 'Block' -and ($null -eq $r -or @($r.RemoteAddress) -contains 'Any')
        }).Count -gt 0
        $allowed = (-not $blocked) -and @($hits | Where-Object -FilterScript { $_.Action.ToString() -eq 'Allow' }).Count -gt 0
    } catch {
        # The rules could not be read (MpsSvc stopped, WMI refused): the service state still
        # stands, the rest is null and errors says why.
        Add-Failure -Section 'firewall' -Record $_
        return [ordered]@{ service = $service; profiles = $null; rdp_rules = $null; rdp_rules_enabled = $null; port_allowed = $null; blocked = $null }
    }
    return [ordered]@{
        service = $service
        profiles = $profiles
        rdp_rules = $rdpRules.Count
        rdp_rules_enabled = $enabled.Count
        port_allowed = $allowed
        blocked = $blocked
    }
}

function Read-Sessions {
    $sessions = Get-UserSessions
    $seats = Get-SeatFacts -Sessions $sessions
    $single = Get-DWord -Path $TerminalServerKey -Name 'fSingleSessionPerUser'
    return [ordered]@{
        # The schema's fields only (the logon and disconnect times are the repair's, not the line's).
        list = @($sessions | Select-Object -First 4 | ForEach-Object -Process {
            [ordered]@{ id = $_.id; name = $_.name; user = $_.user; state = $_.state; idle_min = $_.idle_min }
        })
        total = $sessions.Count
        server_mode = $seats.server_mode
        max_instances = $seats.max_instances
        seat_limit = $seats.seat_limit
        used = $seats.used
        free = $seats.free
        single_session = $(if ($null -eq $single) { $null } else { $single -eq 1 })
    }
}

function Read-Rds {
    # RD Licensing (Learn: Win32_TerminalServiceSetting.LicensingType, GetGracePeriodDays: "a zero
    # value indicates that the grace period is over") and drain mode (TSServerDrainMode, set by
    # `change logon /drain`). The grace period applies to RD Session Hosts only.
    # A failed GetGracePeriodDays (ReturnValue not 0) leaves DaysLeft empty, and [int64]$null is 0:
    # "grace period over". Only a successful call with a DaysLeft counts.
    $setting = Get-CimInstance -Namespace 'root/cimv2/TerminalServices' -ClassName 'Win32_TerminalServiceSetting' -OperationTimeoutSec 20 -ErrorAction SilentlyContinue
    $mode = $null
    $grace = $null
    if ($null -ne $setting) {
        $mode = [int64]$setting.LicensingType
        if ([int]$setting.TerminalServerMode -eq 1) {
            try {
                $answer = Invoke-CimMethod -InputObject $setting -MethodName 'GetGracePeriodDays' -OperationTimeoutSec 20
                if ($null -ne $answer -and [int64]$answer.ReturnValue -eq 0 -and $null -ne $answer.DaysLeft) { $grace = [int64]$answer.DaysLeft }
            } catch {
                $grace = $null
            }
        }
    }
    return [ordered]@{ lic_mode = $mode; grace_days = $grace; drain = Get-DWord -Path $TerminalServerKey -Name 'TSServerDrainMode' }
}

function Find-Events {
    # Events of one provider in the System log since $Since (at most 500); none is not an error.
    param([Parameter(Mandatory = $true)][string]$Provider, [Parameter(Mandatory = $true)][int[]]$Id,
          [Parameter(Mandatory = $true)][datetime]$Since)
    try {
        return @(Get-WinEvent -FilterHashtable @{ LogName = 'System'; ProviderName = $Provider; Id = $Id; StartTime = $Since } -MaxEvents 500 -ErrorAction Stop)
    } catch {
        if ($_.FullyQualifiedErrorId -like 'NoMatchingEventsFound*') { return @() }
        throw
    }
}

function Read-Events {
    $since = (Get-Date).AddHours(-$EventHours)
    $rcm = @(Find-Events -Provider 'Microsoft-Windows-TerminalServices-RemoteConnectionManager' -Id @(1057, 1058) -Since $since)
    $schannel = @(Find-Events -Provider 'Schannel' -Id @(36870, 36871) -Since $since)
    $termName = (Get-Service -Name 'TermService').DisplayName
    $scm = @(Find-Events -Provider 'Service Control Manager' -Id @(7000, 7001, 7022, 7023, 7024, 7031, 7034) -Since $since | Where-Object -FilterScript {
        $_.Properties.Count -gt 0 -and [string]$_.Properties[0].Value -eq $termName
    })
    $newest = @($rcm + $schannel + $scm | Sort-Object -Property TimeCreated -Descending | Select-Object -First 1)
    $last = $null
    if ($newest.Count -gt 0) {
        $message = ''
        if ($null -ne $newest[0].Message) { $message = $newest[0].Message }
        $last = Limit-Text -Text ('{0} {1} {2}' -f $newest[0].Id, (Format-UtcTime -Time $newest[0].TimeCreated), $message) -Max 64
    }
    return [ordered]@{
        hours = $EventHours
        rcm_1057 = @($rcm | Where-Object -FilterScript { $_.Id -eq 1057 }).Count
        rcm_1058 = @($rcm | Where-Object -FilterScript { $_.Id -eq 1058 }).Count
        schannel_36870 = @($schannel | Where-Object -FilterScript { $_.Id -eq 36870 }).Count
        schannel_36871 = @($schannel | Where-Object -FilterScript { $_.Id -eq 36871 }).Count
        scm_termservice = $scm.Count
        last = $last
    }
}

function Read-Reboot {
    $reasons = Get-RebootReasons
    return [ordered]@{ pending = ($reasons.Count -gt 0); reasons = @($reasons) }
}

$Result = [ordered]@{
    payload = 'diagnose'
    version = $PayloadVersion
    run_id = $RunId
}
$Sections = [ordered]@{
    os = { Read-OsFacts }
    services = { ,@('TermService', 'SessionEnv', 'UmRdpService', 'CertPropSvc', 'KeyIso', 'CryptSvc', 'MpsSvc' | ForEach-Object -Process { Get-ServiceFacts -Name $_ }) }
    rdp = { Read-RdpSettings }
    listener = { Read-Listener }
    cert = { Read-Certificates }
    machinekeys = { Get-MachineKeysFacts }
    firewall = { Read-Firewall }
    sessions = { Read-Sessions }
    rds = { Read-Rds }
    events = { Read-Events }
    reboot = { Read-Reboot }
}
foreach ($name in @($Sections.Keys)) {
    $Result[$name] = $null
    try {
        $value = & $Sections[$name]
        # A fresh array: Windows PowerShell 5.1 serialises a PSObject-wrapped array as {"value":[...],"Count":n}.
        if ($value -is [System.Array]) { $value = @($value) }
        $Result[$name] = $value
    } catch {
        Add-Failure -Section $name -Record $_
    }
}
$Result['errors'] = @($Failures | Select-Object -First 3)
$Result['errors_total'] = $Failures.Count
$Result['error'] = $null

try {
    Write-Result -Result $Result
} catch {
    # Last resort: the result itself could not be serialised; report that instead of nothing.
    $fallback = [ordered]@{ payload = 'diagnose'; version = $PayloadVersion; run_id = $RunId }
    foreach ($name in @($Sections.Keys)) { $fallback[$name] = $null }
    $fallback['errors'] = @([ordered]@{ section = 'os'; message = (Limit-Text -Text ('result: ' + $_.Exception.Message) -Max 60) })
    $fallback['errors_total'] = 1
    $fallback['error'] = $null
    Write-Result -Result $fallback
}
