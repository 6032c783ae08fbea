# Helpers shared by every azrdp payload. azrdp.payloads puts this file in place of the line
# "# azrdp:include common.ps1" of each payload before it is sent, so there is one copy of them.
# Windows PowerShell 5.1 compatible; no aliases; ASCII only.
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'

$TerminalServerKey = 'HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server'
$RdpTcpKey = 'HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp'
$TsPolicyKey = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services'
$MachineKeysPath = Join-Path -Path $env:ProgramData -ChildPath 'Microsoft\Crypto\RSA\MachineKeys'
$MachineKeysDefaultSddl = 'O:SYG:SYD:PAI(A;;0x12019f;;;WD)(A;;FA;;;BA)'
$RdpKeyFilter = 'f686aace6942fb7f7ceb231212eef4a4_*'
$RdpCertStore = 'Cert:\LocalMachine\Remote Desktop'
$RemoteDesktopRuleGroup = '@FirewallAPI.dll,-28752'
$SidSystem = 'S-1-5-18'
$SidNetworkService = 'S-1-5-20'

function Limit-Text {
    # Plain printable ASCII, without the characters ConvertTo-Json (5.1) escapes, at most $Max long.
    param([AllowNull()][object]$Text, [Parameter(Mandatory = $true)][int]$Max)
    if ($null -eq $Text) { return $null }
    $clean = ([string]$Text) -replace '[\r\n\t]+', ' ' -replace '[^\x20-\x7E]', '?'
    $clean = $clean -replace "['""]", '`' -replace '<', '(' -replace '>', ')' -replace '&', '+'
    $clean = $clean.Replace('\', '/').Trim()
    if ($clean.Length -gt $Max) { $clean = $clean.Substring(0, $Max) }
    return $clean
}

function Get-RegValue {
    # A registry value, or $null when the key or the value is absent.
    param([Parameter(Mandatory = $true)][string]$Path, [Parameter(Mandatory = $true)][string]$Name)
    $item = Get-ItemProperty -LiteralPath $Path -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $item) { return $null }
    return $item.$Name
}

function Get-DWord {
    # A REG_DWORD as an unsigned number (4294967295 stays 4294967295), or $null.
    param([Parameter(Mandatory = $true)][string]$Path, [Parameter(Mandatory = $true)][string]$Name)
    $value = Get-RegValue -Path $Path -Name $Name
    if ($null -eq $value) { return $null }
    return [int64][BitConverter]::ToUInt32([BitConverter]::GetBytes([int32]$value), 0)
}

function Invoke-Native {
    # Run a console program; stderr lines become text instead of terminating errors.
    param([Parameter(Mandatory = $true)][string]$FilePath, [string[]]$ArgumentList = @())
    $ErrorActionPreference = 'Continue'
    $output = & $FilePath @ArgumentList 2>&1
    # foreach, not a pipeline: a program that prints nothing (logoff.exe, icacls /q) leaves $output
    # $null, and `$null | ForEach-Object` runs once with $_ = $null ($null.ToString() throws).
    $lines = @(foreach ($item in $output) { if ($null -ne $item) { $item.ToString() } })
    return [pscustomobject]@{ ExitCode = $LASTEXITCODE; Lines = $lines }
}

function Get-ServiceFacts {
    param([Parameter(Mandatory = $true)][string]$Name)
    $service = Get-Service -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $service) { return [ordered]@{ name = $Name; state = 'Missing'; start = $null } }
    $startTypes = @{ 0 = 'Boot'; 1 = 'System'; 2 = 'Automatic'; 3 = 'Manual'; 4 = 'Disabled' }
    $start = Get-DWord -Path "HKLM:\SYSTEM\CurrentControlSet\Services\$Name" -Name 'Start'
    $startName = $null
    if ($null -ne $start -and $startTypes.ContainsKey([int]$start)) { $startName = $startTypes[[int]$start] }
    return [ordered]@{ name = $Name; state = $service.Status.ToString(); start = $startName }
}

function Test-Grant {
    # Does an Allow rule (and no Deny rule) give $Sid all of $Rights on the file system item?
    param([Parameter(Mandatory = $true)][string]$Path, [Parameter(Mandatory = $true)][string]$Sid,
          [Parameter(Mandatory = $true)][System.Security.AccessControl.FileSystemRights]$Rights)
    $rules = (Get-Acl -LiteralPath $Path).GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])
    $allowed = $false
    foreach ($rule in $rules) {
        if ($rule.IdentityReference.Value -ne $Sid) { continue }
        $covers = ($rule.FileSystemRights -band $Rights) -eq $Rights
        if ($rule.AccessControlType -eq [System.Security.AccessControl.AccessControlType]::Deny) {
            if (($rule.FileSystemRights -band $Rights) -ne 0) { return $false }
        } elseif ($covers) {
            $allowed = $true
        }
    }
    return $allowed
}

function Get-RdpKeyFacts {
    $files = @(Get-ChildItem -LiteralPath $MachineKeysPath -Filter $RdpKeyFilter -Force -File -ErrorAction SilentlyContinue)
    if ($files.Count -eq 0) {
        return [ordered]@{ present = $false; file = $null; size = $null; network_service_read = $false; system_full = $false }
    }
    $first = $files[0]
    return [ordered]@{
        present = $true
        file = Limit-Text -Text $first.Name -Max 72
        size = [int64]$first.Length
        network_service_read = [bool](Test-Grant -Path $first.FullName -Sid $SidNetworkService -Rights ([System.Security.AccessControl.FileSystemRights]::Read))
        system_full = [bool](Test-Grant -Path $first.FullName -Sid $SidSystem -Rights ([System.Security.AccessControl.FileSystemRights]::FullControl))
    }
}

function Get-MachineKeysFacts {
    $sddl = (Get-Acl -LiteralPath $MachineKeysPath).Sddl
    return [ordered]@{
        sddl = Limit-Text -Text $sddl -Max 160
        default = ($sddl -eq $MachineKeysDefaultSddl)
        files = @(Get-ChildItem -LiteralPath $MachineKeysPath -Force -File).Count
        rdp_key = Get-RdpKeyFacts
    }
}

function Format-UtcTime {
    param([Parameter(Mandatory = $true)][datetime]$Time)
    return $Time.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [System.Globalization.CultureInfo]::InvariantCulture)
}

function Test-PrivateKey {
    # Can the private key really be used (opened and made to sign)? False for a missing,
    # corrupt or unreadable key container.
    param([Parameter(Mandatory = $true)][System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    if (-not $Certificate.HasPrivateKey) { return $false }
    try {
        $key = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Certificate)
        if ($null -eq $key) { return $false }
        $data = [System.Text.Encoding]::ASCII.GetBytes('azrdp')
        $hashes = @([System.Security.Cryptography.HashAlgorithmName]::SHA256, [System.Security.Cryptography.HashAlgorithmName]::SHA1)
    } catch {
        return $false
    }
    # SHA-1 too: a key in a legacy CSP (PROV_RSA_FULL, PROV_RSA_SCHANNEL, as CAPI keys such as
    # RDP's TSSecKeySet1 can be) opened as RSACryptoServiceProvider cannot sign SHA-256 on older
    # .NET ("Invalid algorithm specified") yet works for TLS: it is not an unusable key.
    foreach ($hash in $hashes) {
        try {
            $signature = $key.SignData($data, $hash, [System.Security.Cryptography.RSASignaturePadding]::Pkcs1)
            if ($signature.Length -gt 0) { return $true }
        } catch {
            continue
        }
    }
    return $false
}

function Get-CertFacts {
    param([Parameter(Mandatory = $true)][System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    return [ordered]@{
        thumbprint = $Certificate.Thumbprint.ToUpperInvariant()
        not_after = Format-UtcTime -Time $Certificate.NotAfter
        expired = ($Certificate.NotAfter.ToUniversalTime() -lt (Get-Date).ToUniversalTime())
        key_readable = [bool](Test-PrivateKey -Certificate $Certificate)
        self_signed = ($Certificate.Subject -eq $Certificate.Issuer)
    }
}

function Get-RdpStoreCertificates {
    # Certificates in Cert:\LocalMachine\Remote Desktop, newest first.
    if (-not (Test-Path -LiteralPath $RdpCertStore)) { return @() }
    return @(Get-ChildItem -LiteralPath $RdpCertStore | Sort-Object -Property NotAfter -Descending)
}

function Get-BoundThumbprint {
    $hash = Get-RegValue -Path $RdpTcpKey -Name 'SSLCertificateSHA1Hash'
    if ($null -eq $hash) { return $null }
    $hex = (@($hash) | ForEach-Object -Process { ([byte]$_).ToString('X2') }) -join ''
    if ($hex -notmatch '^[0-9A-F]{40}$') { return $null }
    return $hex
}

function Find-Certificate {
    # The certificate with this thumbprint in the Remote Desktop or My store: @{ store; cert }.
    param([Parameter(Mandatory = $true)][string]$Thumbprint)
    foreach ($store in @(@('rd', $RdpCertStore), @('my', 'Cert:\LocalMachine\My'))) {
        if (-not (Test-Path -LiteralPath $store[1])) { continue }
        $match = @(Get-ChildItem -LiteralPath $store[1] | Where-Object -FilterScript { $_.Thumbprint -eq $Thumbprint })
        if ($match.Count -gt 0) { return @{ store = $store[0]; cert = $match[0] } }
    }
    return $null
}

function ConvertTo-IdleMinutes {
    # quser idle time: 'none' or '.', minutes, 'h:mm', or 'd+h:mm'.
    param([Parameter(Mandatory = $true)][string]$Idle)
    if ($Idle -match '^(?:(\d+)\+)?(\d+):(\d+)$') {
        $days = 0
        if ($Matches[1]) { $days = [int]$Matches[1] }
        return [Math]::Min(99999, $days * 1440 + [int]$Matches[2] * 60 + [int]$Matches[3])
    }
    if ($Idle -match '^\d+$') { return [Math]::Min(99999, [int]$Idle) }
    if ($Idle -eq 'none' -or $Idle -eq '.') { return 0 }
    return $null
}

function Get-UserSessions {
    # User sessions from quser: id, name, user, state, idle_min.
    $run = Invoke-Native -FilePath 'quser.exe'
    $sessions = New-Object -TypeName System.Collections.ArrayList
    $states = @('Active', 'Disc', 'Conn', 'Listen', 'Shadow', 'Idle', 'Down', 'Init', 'Reset', 'ConnQ')
    foreach ($line in @($run.Lines | Select-Object -Skip 1)) {
        if ($line -notmatch '^[ >](\S+)\s+(?:(\S+)\s+)?(\d+)\s+(\S+)\s+(\S+)\s') { continue }
        $state = $Matches[4]
        if ($states -notcontains $state) { $state = 'Unknown' }
        $name = $null
        if ($Matches[2]) { $name = Limit-Text -Text $Matches[2] -Max 12 }
        [void]$sessions.Add([ordered]@{
            id = [int]$Matches[3]
            name = $name
            user = Limit-Text -Text $Matches[1] -Max 24
            state = $state
            idle_min = ConvertTo-IdleMinutes -Idle $Matches[5]
        })
    }
    return ,$sessions.ToArray()
}

function Get-SeatFacts {
    # Seats: two remote sessions in remote-administration mode, MaxInstanceCount at most.
    param([Parameter(Mandatory = $true)][AllowEmptyCollection()][object[]]$Sessions)
    $mode = 'admin'
    $setting = Get-CimInstance -Namespace 'root/cimv2/TerminalServices' -ClassName 'Win32_TerminalServiceSetting' -ErrorAction SilentlyContinue
    if ($null -ne $setting -and [int]$setting.TerminalServerMode -eq 1) { $mode = 'rdsh' }
    $maxInstances = Get-DWord -Path $TsPolicyKey -Name 'MaxInstanceCount'
    if ($null -eq $maxInstances) { $maxInstances = Get-DWord -Path $RdpTcpKey -Name 'MaxInstanceCount' }
    $limit = [int64]4294967295
    if ($mode -eq 'admin') { $limit = 2 }
    if ($null -ne $maxInstances -and $maxInstances -lt $limit) { $limit = $maxInstances }
    $used = @($Sessions | Where-Object -FilterScript {
        $_.id -ne 0 -and $_.name -ne 'console' -and ($_.state -eq 'Active' -or $_.state -eq 'Disc')
    }).Count
    return [ordered]@{
        server_mode = $mode
        max_instances = $maxInstances
        seat_limit = $limit
        used = $used
        free = [Math]::Max(0, $limit - $used)
    }
}

function Get-RebootReasons {
    $reasons = New-Object -TypeName System.Collections.ArrayList
    if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') { [void]$reasons.Add('cbs') }
    if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') { [void]$reasons.Add('windows_update') }
    $renames = Get-RegValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' -Name 'PendingFileRenameOperations'
    if ($null -ne $renames -and @($renames | Where-Object -FilterScript { $_ }).Count -gt 0) { [void]$reasons.Add('file_rename') }
    $active = Get-RegValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ActiveComputerName' -Name 'ComputerName'
    $pending = Get-RegValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ComputerName' -Name 'ComputerName'
    if ($null -ne $active -and $null -ne $pending -and $active -ne $pending) { [void]$reasons.Add('computer_rename') }
    return ,$reasons.ToArray()
}

function Get-RdpPort {
    $port = Get-DWord -Path $RdpTcpKey -Name 'PortNumber'
    if ($null -eq $port) { return 3389 }
    return [int]$port
}

function Test-PortCovered {
    # Does a firewall LocalPort list ('Any', '3389', '3000-4000', 'RPC', ...) cover $Port?
    param([AllowNull()][object]$LocalPort, [Parameter(Mandatory = $true)][int]$Port)
    foreach ($entry in @($LocalPort)) {
        $text = [string]$entry
        if ($text -eq 'Any' -or $text -eq [string]$Port) { return $true }
        if ($text -match '^(\d+)-(\d+)$' -and [int]$Matches[1] -le $Port -and $Port -le [int]$Matches[2]) { return $true }
    }
    return $false
}

function Get-RemoteDesktopRules {
    # Inbound rules of the Remote Desktop group (language-independent group id).
    return @(Get-NetFirewallRule -PolicyStore ActiveStore -Direction Inbound | Where-Object -FilterScript { $_.Group -eq $RemoteDesktopRuleGroup })
}

function Write-Result {
    # Print the one result line; nothing may follow it.
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Result)
    $json = ConvertTo-Json -InputObject $Result -Compress -Depth 10
    Write-Output ('AZRDP-RESULT:' + $json)
}

