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
# The DACL alone: `default` is judged on it (the owner is in the reported sddl); measured on 2012 R2
# to 2025 and Windows 11 (Azure/repair-script-library win-fix-rdp-certificate.ps1).
$MachineKeysDefaultDacl = 'D:PAI(A;;0x12019f;;;WD)(A;;FA;;;BA)'
$RdpKeyFilter = 'f686aace6942fb7f7ceb231212eef4a4_*'
$RdpCertStore = 'Cert:\LocalMachine\Remote Desktop'
$RemoteDesktopRuleGroup = '@FirewallAPI.dll,-28752'
$SidSystem = 'S-1-5-18'
$SidNetworkService = 'S-1-5-20'
$MaxKeyFiles = 20000   # more MachineKeys entries than a payload walks (IIS/.NET hosts collect 10^5 orphaned keys)
$script:KeyFailureHResult = $null

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
    # Run a console program from System32 (Sysnative from a 32-bit host: quser, qwinsta and logoff
    # exist only in the 64-bit System32); stderr lines become text instead of terminating errors.
    # A missing program is one clear error, never StrictMode's "LASTEXITCODE has not been set".
    param([Parameter(Mandatory = $true)][string]$FilePath, [string[]]$ArgumentList = @())
    $folder = 'Sysnative'
    if ([Environment]::Is64BitProcess -or -not [Environment]::Is64BitOperatingSystem) { $folder = 'System32' }
    $exe = Join-Path -Path $env:SystemRoot -ChildPath ($folder + '\' + $FilePath)
    if (-not (Test-Path -LiteralPath $exe)) { throw ('{0} is missing from {1}' -f $FilePath, $folder) }
    # -1, not 0: a program that did not run must never read as one that succeeded (logoff.exe).
    $global:LASTEXITCODE = -1
    $ErrorActionPreference = 'Continue'
    $output = & $exe @ArgumentList 2>&1
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

function ConvertTo-FileRights {
    # An ACE's access mask with the generic bits mapped as the file system maps them (GENERIC_READ
    # 0x80000000 = FILE_GENERIC_READ 0x120089, GENERIC_WRITE = 0x120116, GENERIC_EXECUTE = 0x1200A0,
    # GENERIC_ALL = FILE_ALL_ACCESS 0x1F01FF; Learn: "File Security and Access Rights").
    # Decimal masks: PowerShell reads 0x80000000 as a negative Int32.
    param([Parameter(Mandatory = $true)][int64]$Mask)
    $mapped = $Mask -band 268435455
    if ($Mask -band 2147483648) { $mapped = $mapped -bor 1179785 }
    if ($Mask -band 1073741824) { $mapped = $mapped -bor 1179926 }
    if ($Mask -band 536870912) { $mapped = $mapped -bor 1179808 }
    if ($Mask -band 268435456) { $mapped = $mapped -bor 2032127 }
    return $mapped
}

function Test-Grant {
    # Does an Allow rule (and no Deny rule) give $Sid all of $Rights on the file system item? An ACE
    # for a group every such account is in counts too: Everyone (S-1-1-0), Authenticated Users
    # (S-1-5-11) and, for the service accounts, Users (S-1-5-32-545). -Exact: only an Allow for $Sid
    # itself grants (a Deny through a group still refuses).
    param([Parameter(Mandatory = $true)][string]$Path, [Parameter(Mandatory = $true)][string]$Sid,
          [Parameter(Mandatory = $true)][System.Security.AccessControl.FileSystemRights]$Rights, [switch]$Exact)
    $covering = @($Sid, 'S-1-1-0', 'S-1-5-11', 'S-1-5-32-545')
    if ($Sid -eq $SidSystem) { $covering += 'S-1-5-32-544' }   # SYSTEM's token holds Administrators too
    $want = [int64]$Rights
    $rules = (Get-Acl -LiteralPath $Path).GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])
    $allowed = $false
    foreach ($rule in $rules) {
        if ($covering -notcontains $rule.IdentityReference.Value) { continue }
        $mask = ConvertTo-FileRights -Mask ([int64][BitConverter]::ToUInt32([BitConverter]::GetBytes([int32]$rule.FileSystemRights), 0))
        if ($rule.AccessControlType -eq [System.Security.AccessControl.AccessControlType]::Deny) {
            if (($mask -band $want) -ne 0) { return $false }
        } elseif (($mask -band $want) -eq $want -and (-not $Exact -or $rule.IdentityReference.Value -eq $Sid)) {
            $allowed = $true
        }
    }
    return $allowed
}

function Get-LiveRdpKeyPath {
    # The RDP key container Windows uses now. RDP's self-signed certificate keeps its key in the CAPI
    # container TSSecKeySet1 (PROV_RSA_FULL), whose MachineKeys file is named for the container name's
    # hash, f686aace..., then '_' and the MachineGuid (HKLM\SOFTWARE\Microsoft\Cryptography): a
    # f686aace... file of another MachineGuid (left by a cloned image) is never opened by Windows.
    # Sources: Azure/repair-script-library win-fix-rdp-certificate.ps1 (prefix and container measured
    # on 2012 R2 to 2025); the unique container name's form: docs/emulator.md. $null: no MachineGuid.
    # -Folder and -Cryptography: another Windows' MachineKeys and its Cryptography key (rescue.ps1:
    # an offline volume and its loaded SOFTWARE hive).
    param([string]$Folder = $MachineKeysPath, [string]$Cryptography = 'HKLM:\SOFTWARE\Microsoft\Cryptography')
    $guid = Get-RegValue -Path $Cryptography -Name 'MachineGuid'
    if ([string]::IsNullOrEmpty([string]$guid)) { return $null }
    return Join-Path -Path $Folder -ChildPath ($RdpKeyFilter.TrimEnd('*') + [string]$guid)
}

function Get-RdpKeyFacts {
    # The live container (Get-LiveRdpKeyPath): containers of another MachineGuid are not RDP's key;
    # without a MachineGuid, the first RDP container there is. When SYSTEM cannot list MachineKeys
    # (a broken folder DACL; PowerShell does not enable SeBackupPrivilege), the live container is
    # still reached by its name: bypass traverse checking (SeChangeNotifyPrivilege) opens a file by
    # path without list rights (Learn: "Bypass traverse checking"; File Security and Access Rights).
    $live = Get-LiveRdpKeyPath
    try {
        $files = @(Get-ChildItem -LiteralPath $MachineKeysPath -Filter $RdpKeyFilter -Force -File -ErrorAction Stop |
            Where-Object -FilterScript { $null -eq $live -or $_.FullName -eq $live })
    } catch {
        $files = @()
        if ($null -ne $live) {
            $files = @(Get-Item -LiteralPath $live -Force -ErrorAction SilentlyContinue | Where-Object -FilterScript { $null -ne $_ })
        }
    }
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

function Get-MachineKeysListing {
    # One bounded pass over MachineKeys: files = the files counted, up to $MaxKeyFiles + 1 (the walk
    # stops there); nested = $true when an entry is a folder or a reparse point (stock Windows has
    # neither there), $null when the walk stopped before the end without finding one. Through
    # DirectoryInfo.EnumerateFileSystemInfos (.NET 4.0): the attributes come with the listing, no
    # call per file. Throws (UnauthorizedAccessException) when SYSTEM may not list the folder.
    $count = 0
    $nested = $false
    $folderOrLink = [System.IO.FileAttributes]::Directory -bor [System.IO.FileAttributes]::ReparsePoint
    foreach ($entry in (New-Object -TypeName System.IO.DirectoryInfo -ArgumentList $MachineKeysPath).EnumerateFileSystemInfos()) {
        if (($entry.Attributes -band $folderOrLink) -ne 0) { $nested = $true }
        if (($entry.Attributes -band [System.IO.FileAttributes]::Directory) -eq 0) { $count += 1 }
        if ($count -gt $MaxKeyFiles) {
            if (-not $nested) { $nested = $null }
            break
        }
    }
    return [ordered]@{ files = $count; nested = $nested }
}

function Get-MachineKeysFacts {
    # The SDDL first (the owner, SYSTEM, may always read it): a folder SYSTEM cannot list is the
    # worst ACL break, and it must still be reported (files = $null) so machinekeys-acl is
    # planned, not the whole section lost (review #18). Counted by Get-MachineKeysListing, which
    # stops after $MaxKeyFiles files as the repair does (desk finding 6: a 10^5-file folder took
    # diagnose minutes), and says whether a subfolder or reparse point is there (new H-2).
    $acl = Get-Acl -LiteralPath $MachineKeysPath
    $sddl = $acl.Sddl
    $files = $null
    $nested = $null
    try {
        $listing = Get-MachineKeysListing
        $files = $listing.files
        $nested = $listing.nested
    } catch {
        $files = $null
    }
    return [ordered]@{
        sddl = Limit-Text -Text $sddl -Max 136
        default = ($acl.GetSecurityDescriptorSddlForm('Access') -eq $MachineKeysDefaultDacl)
        files = $files
        nested = $nested
        rdp_key = Get-RdpKeyFacts
    }
}

function Format-UtcTime {
    param([Parameter(Mandatory = $true)][datetime]$Time)
    return $Time.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [System.Globalization.CultureInfo]::InvariantCulture)
}

function Test-LiveRdpKeyOpen {
    # Can SYSTEM open the live RDP key container file (Get-LiveRdpKeyPath)? 'opened', 'absent', or
    # $null: no MachineGuid, SYSTEM refused (UnauthorizedAccessException: the ACL, machinekeys-acl's
    # to fix), or the file stayed locked (three tries, a second apart).
    $live = Get-LiveRdpKeyPath
    if ($null -eq $live) { return $null }
    if (-not (Test-Path -LiteralPath $live)) { return 'absent' }
    for ($attempt = 0; $attempt -lt 3; $attempt += 1) {
        try {
            $stream = [System.IO.File]::Open($live, 'Open', 'Read', 'ReadWrite')
            $stream.Dispose()
            return 'opened'
        } catch [System.UnauthorizedAccessException] {
            return $null
        } catch {
            Start-Sleep -Seconds 1
        }
    }
    return $null
}

function Test-RdpOwnCertificate {
    # RDP's own self-signed certificate (Windows makes it in TSSecKeySet1, the live RDP container):
    # self-signed, issued to this computer (CN=<name>, or its FQDN), in the Remote Desktop store.
    param([Parameter(Mandatory = $true)][System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    $parent = $Certificate.PSObject.Properties['PSParentPath']
    return ($Certificate.Subject -eq $Certificate.Issuer -and $Certificate.Subject -like ('CN=' + $env:COMPUTERNAME + '*') -and
        $null -ne $parent -and [string]$parent.Value -like '*\Remote Desktop')
}

function Get-KeyFailureVerdict {
    # A CryptographicException from a key test: $false (the key itself is broken) or $null (could
    # not test: the environment refused, not the key). Refusals: E_ACCESSDENIED (0x80070005) and
    # CNG's NTE_PERM (0x80090010, "Access denied": Learn, "COM Error Codes (Security and Setup)"),
    # the key's ACL, which machinekeys-acl repairs for RDP's key; with KeyIso (CNG Key Isolation,
    # which performs private-key operations for LSA and CNG) not running, a good key fails too.
    # NTE_BAD_KEYSET (0x80090016, "Keyset does not exist") is the container missing or damaged, but
    # CAPI gives it too when the container's ACL refuses the caller [unverified: docs/emulator.md]:
    # broken only for RDP's own certificate while SYSTEM can open its container file, or the file
    # is gone (RECHECK #5, #7); could not test for any other certificate (an admin's, whose key
    # azrdp cannot judge). The HResult is kept in $script:KeyFailureHResult.
    param([Parameter(Mandatory = $true)][System.Exception]$Exception,
          [AllowNull()][System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate = $null)
    $script:KeyFailureHResult = $Exception.HResult
    if (@(-2147024891, -2146893808) -contains $Exception.HResult) { return $null }
    $isolation = Get-Service -Name 'KeyIso' -ErrorAction SilentlyContinue
    if ($null -eq $isolation -or $isolation.Status.ToString() -ne 'Running') { return $null }
    if ($Exception.HResult -eq -2146893802) {
        if ($null -ne $Certificate -and (Test-RdpOwnCertificate -Certificate $Certificate) -and $null -ne (Test-LiveRdpKeyOpen)) { return $false }
        return $null
    }
    return $false
}

function Test-PrivateKey {
    # Can the private key really be used? $true = it signs (or decrypts), $false = definitely
    # broken (no key, or a CryptographicException from the key itself), $null = could not test
    # (an API this .NET lacks, access denied, KeyIso not running, an unexpected error: see
    # Get-KeyFailureVerdict). Callers act (move, clear, rename) only on $false.
    # RSACertificateExtensions/HashAlgorithmName need .NET 4.6, ECDsaCertificateExtensions
    # 4.6.1 (Learn: "RSACertificateExtensions Class", "ECDsaCertificateExtensions Class"); on
    # .NET 4.5 an RSA key is reached through the CAPI-only X509Certificate2.PrivateKey.
    param([Parameter(Mandatory = $true)][System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    $script:KeyFailureHResult = $null
    if (-not $Certificate.HasPrivateKey) { return $false }
    $data = [System.Text.Encoding]::ASCII.GetBytes('azrdp')
    $key = $null
    try {
        if ($Certificate.PublicKey.Oid.Value -ne '1.2.840.113549.1.1.1') {
            $ec = 'System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions' -as [type]
            if ($null -eq $ec) { return $null }
            $ecKey = $ec::GetECDsaPrivateKey($Certificate)
            if ($null -eq $ecKey) { return $false }
            return ($ecKey.SignData($data, [System.Security.Cryptography.HashAlgorithmName]::SHA256).Length -gt 0)
        }
        $rx = 'System.Security.Cryptography.X509Certificates.RSACertificateExtensions' -as [type]
        if ($null -eq $rx) {
            # .NET 4.5: X509Certificate2.PrivateKey reaches CAPI keys only; a CNG key throws
            # "Invalid provider type specified" although it works: could not test, not broken.
            try { $key = $Certificate.PrivateKey } catch { return $null }
        } else {
            $key = $rx::GetRSAPrivateKey($Certificate)
        }
        if ($null -eq $key) { return $false }
    } catch [System.Security.Cryptography.CryptographicException] {
        return Get-KeyFailureVerdict -Exception $_.Exception -Certificate $Certificate
    } catch {
        return $null
    }
    # SHA-1 too: a key in a legacy CSP (PROV_RSA_FULL, PROV_RSA_SCHANNEL, as CAPI keys such as
    # RDP's TSSecKeySet1 can be) opened as RSACryptoServiceProvider cannot sign SHA-256 on older
    # .NET ("Invalid algorithm specified") yet works for TLS: it is not an unusable key. A CNG key
    # allowed to decrypt only refuses to sign: a decrypt round trip proves it works.
    $hashes = @('SHA256', 'SHA1')
    $csp = $key -is [System.Security.Cryptography.RSACryptoServiceProvider]
    foreach ($hash in $hashes) {
        try {
            if ($csp) { $signature = $key.SignData($data, $hash) }
            else { $signature = $key.SignData($data, [System.Security.Cryptography.HashAlgorithmName]::$hash, [System.Security.Cryptography.RSASignaturePadding]::Pkcs1) }
            if ($signature.Length -gt 0) { return $true }
        } catch [System.Security.Cryptography.CryptographicException] {
            continue
        } catch {
            return $null
        }
    }
    try {
        $cipher = $Certificate.PublicKey.Key.Encrypt($data, $false)
        if ($csp) { $plain = $key.Decrypt($cipher, $false) }
        else { $plain = $key.Decrypt($cipher, [System.Security.Cryptography.RSAEncryptionPadding]::Pkcs1) }
        return ([Convert]::ToBase64String($plain) -eq [Convert]::ToBase64String($data))
    } catch [System.Security.Cryptography.CryptographicException] {
        return Get-KeyFailureVerdict -Exception $_.Exception -Certificate $Certificate
    } catch {
        return $null
    }
}

function ConvertTo-KeyState {
    # Test-PrivateKey's answer as the result reports it: true, false, or null (could not test).
    param([AllowNull()][object]$Answer)
    if ($null -eq $Answer) { return $null }
    return [bool]$Answer
}

function Get-CertFacts {
    param([Parameter(Mandatory = $true)][System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    return [ordered]@{
        thumbprint = $Certificate.Thumbprint.ToUpperInvariant()
        not_after = Format-UtcTime -Time $Certificate.NotAfter
        expired = ($Certificate.NotAfter.ToUniversalTime() -lt (Get-Date).ToUniversalTime())
        key_readable = ConvertTo-KeyState -Answer (Test-PrivateKey -Certificate $Certificate)
        self_signed = ($Certificate.Subject -eq $Certificate.Issuer)
    }
}

function Get-RdpStoreCertificates {
    # Certificates in Cert:\LocalMachine\Remote Desktop, newest first.
    if (-not (Test-Path -LiteralPath $RdpCertStore)) { return @() }
    return @(Get-ChildItem -LiteralPath $RdpCertStore | Sort-Object -Property NotAfter -Descending)
}

function Get-BoundThumbprint {
    # SSLCertificateSHA1Hash as RDP reads it: 40 hex digits, $null when the value is absent, or
    # 'MALFORMED' when it is not a 20-byte REG_BINARY (a thumbprint typed as a REG_SZ string, a
    # wrong length): a binding RDP cannot use, never "no binding" (review #17). The value is
    # REG_BINARY as Win32_TSGeneralSetting writes it; RegistryKey.GetValueKind tells the kind
    # without converting (Learn: RegistryKey.GetValueKind, RegistryValueKind). -Path: the RDP-Tcp
    # key (rescue.ps1 reads an offline hive's).
    param([string]$Path = $RdpTcpKey)
    $key = Get-Item -LiteralPath $Path -ErrorAction SilentlyContinue
    if ($null -eq $key -or $key.GetValueNames() -notcontains 'SSLCertificateSHA1Hash') { return $null }
    if ($key.GetValueKind('SSLCertificateSHA1Hash').ToString() -ne 'Binary') { return 'MALFORMED' }
    $bytes = @($key.GetValue('SSLCertificateSHA1Hash'))
    if ($bytes.Count -ne 20) { return 'MALFORMED' }
    return (@(foreach ($byte in $bytes) { ([byte]$byte).ToString('X2') }) -join '')
}

function Get-BindingText {
    # SSLCertificateSHA1Hash as stored, for the backup before the cert step clears it: its kind
    # and its data (hex for binary, the text itself for a string), $null when absent.
    param([string]$Path = $RdpTcpKey)
    $key = Get-Item -LiteralPath $Path -ErrorAction SilentlyContinue
    if ($null -eq $key -or $key.GetValueNames() -notcontains 'SSLCertificateSHA1Hash') { return $null }
    $kind = $key.GetValueKind('SSLCertificateSHA1Hash').ToString()
    $data = $key.GetValue('SSLCertificateSHA1Hash')
    if ($kind -eq 'Binary') { $data = @(foreach ($byte in @($data)) { ([byte]$byte).ToString('X2') }) -join '' }
    return ('{0}:{1}' -f $kind, (@($data) -join ','))
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
    # quser idle time: minutes, 'h:mm', or 'd+h:mm'; 'none'/'.' and their translations (fr 'aucun',
    # de 'Kein', ...) are anything without a digit: 0.
    param([Parameter(Mandatory = $true)][string]$Idle)
    if ($Idle -match '^(?:(\d+)\+)?(\d+):(\d+)$') {
        $days = 0
        if ($Matches[1]) { $days = [int]$Matches[1] }
        return [Math]::Min(99999, $days * 1440 + [int]$Matches[2] * 60 + [int]$Matches[3])
    }
    if ($Idle -match '^\d+$') { return [Math]::Min(99999, [int]$Idle) }
    if ($Idle -notmatch '\d') { return 0 }
    return $null
}

# WTS_CONNECTSTATE_CLASS values (wtsapi32.h): the same numbers in every display language.
$WtsStates = @('Active', 'Conn', 'ConnQ', 'Shadow', 'Disc', 'Idle', 'Listen', 'Reset', 'Down', 'Init')

# The Remote Desktop Services API (Learn: WTSEnumerateSessionsW, WTSQuerySessionInformationW with
# WTSSessionInfo = 24 -> WTSINFOW). A fixed definition, no caller text; Add-Type is refused in
# Constrained Language Mode, where the payload stops before reaching it (Test-FullLanguage).
$WtsSource = @'
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
public static class AzRdpWts {
    [StructLayout(LayoutKind.Sequential, CharSet = CharSet.Unicode)]
    struct SessionInfo { public int Id; public IntPtr Station; public int State; }
    [StructLayout(LayoutKind.Sequential, CharSet = CharSet.Unicode)]
    struct Info {
        public int State; public int Id; public int InBytes; public int OutBytes; public int InFrames; public int OutFrames;
        public int InCompressed; public int OutCompressed;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 32)] public string Station;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 17)] public string Domain;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 21)] public string User;
        public long Connect; public long Disconnect; public long LastInput; public long Logon; public long Now;
    }
    [DllImport("wtsapi32.dll", SetLastError = true)]
    static extern bool WTSEnumerateSessionsW(IntPtr server, int reserved, int version, out IntPtr info, out int count);
    [DllImport("wtsapi32.dll", SetLastError = true)]
    static extern bool WTSQuerySessionInformationW(IntPtr server, int id, int infoClass, out IntPtr buffer, out int bytes);
    [DllImport("wtsapi32.dll")]
    static extern void WTSFreeMemory(IntPtr memory);
    // One row per session: id, winstation name, state number, user name, idle minutes (-1 unknown),
    // logon and disconnect times (FILETIME UTC, 0 unknown: WTSINFOW LogonTime, DisconnectTime).
    public static object[][] Sessions() {
        IntPtr list; int count;
        if (!WTSEnumerateSessionsW(IntPtr.Zero, 0, 1, out list, out count)) { throw new System.ComponentModel.Win32Exception(); }
        List<object[]> rows = new List<object[]>();
        try {
            int size = Marshal.SizeOf(typeof(SessionInfo));
            for (int i = 0; i < count; i++) {
                SessionInfo si = (SessionInfo)Marshal.PtrToStructure(new IntPtr(list.ToInt64() + i * size), typeof(SessionInfo));
                string user = null; long idle = -1; long logon = 0; long disconnect = 0; IntPtr buffer; int bytes;
                if (WTSQuerySessionInformationW(IntPtr.Zero, si.Id, 24, out buffer, out bytes)) {
                    try {
                        Info info = (Info)Marshal.PtrToStructure(buffer, typeof(Info));
                        user = info.User; logon = info.Logon; disconnect = info.Disconnect;
                        long since = si.State == 4 ? info.Disconnect : info.LastInput;
                        if (since > 0) { if (info.Now >= since) { idle = (info.Now - since) / 600000000L; } }
                    } finally { WTSFreeMemory(buffer); }
                }
                rows.Add(new object[] { si.Id, Marshal.PtrToStringUni(si.Station), si.State, user, idle, logon, disconnect });
            }
        } finally { WTSFreeMemory(list); }
        return rows.ToArray();
    }
}
'@

function Test-TermServiceRunning {
    # The WTS API and quser are RPC to TermService: stopped, they fail (quser: error 0x6BA, RPC
    # server unavailable); hung in StopPending, the call may block with no timeout [unverified].
    $service = Get-Service -Name 'TermService' -ErrorAction SilentlyContinue
    return ($null -ne $service -and $service.Status.ToString() -eq 'Running')
}

function Get-WtsRows {
    # The WTS session table, or $null when the API cannot be used (then quser is the fallback).
    # No rows unless TermService runs: an empty table is the safe answer (nobody is logged off on
    # it), and neither the API nor quser is called into a TermService that is not up.
    if (-not (Test-TermServiceRunning)) { return ,@() }
    try {
        if ($null -eq ('AzRdpWts' -as [type])) { Add-AzRdpWtsType }
        return ,@([AzRdpWts]::Sessions())
    } catch {
        return $null
    }
}

function Add-AzRdpWtsType {
    # Add-Type runs csc.exe on files in the temp folder (CodeDom's TempFileCollection, which takes
    # Path.GetTempPath: TMP, then TEMP). As SYSTEM under Run Command that is C:\Windows\Temp, where
    # any user may create files: compile in SYSTEM's own profile temp folder instead when it is
    # there (desk review finding 21), and put TMP/TEMP back whatever happens.
    $own = Join-Path -Path $env:SystemRoot -ChildPath 'System32\config\systemprofile\AppData\Local\Temp'
    $savedTmp = $env:TMP
    $savedTemp = $env:TEMP
    try {
        if ([System.Security.Principal.WindowsIdentity]::GetCurrent().User.Value -eq $SidSystem -and (Test-Path -LiteralPath $own -PathType Container)) {
            $env:TMP = $own
            $env:TEMP = $own
        }
        Add-Type -TypeDefinition $WtsSource -Language CSharp
    } finally {
        $env:TMP = $savedTmp
        $env:TEMP = $savedTemp
    }
}

# quser/qwinsta state words in the display languages azrdp knows (the fallback only), as ASCII
# patterns: a non-ASCII letter is matched by '.', Japanese words are built from their code points
# (the script stays ASCII). fr-FR from real output (`Actif`, `aucun`); the others are listed under
# "unverified" in docs/emulator.md.
$LocalizedStates = @(
    @('^(Active|Aktiv|Actif)$', 'Active'), @('^(Disc|Getr\.|Getrennt|D.co|D.connect.)$', 'Disc'),
    @('^(Conn|Verb\.|Conn\.)$', 'Conn'), @('^(Listen|Abh\.|Abh.ren|.couter)$', 'Listen'),
    @('^Down$', 'Down'), @('^Idle$', 'Idle'),
    @(('^' + (-join [char[]](0x30A2, 0x30AF, 0x30C6, 0x30A3, 0x30D6)) + '$'), 'Active'),
    @(('^' + (-join [char[]](0x5207, 0x65AD)) + '$'), 'Disc'),
    @(('^' + (-join [char[]](0x30EA, 0x30C3, 0x30B9, 0x30F3)) + '$'), 'Listen')
)

function ConvertFrom-QuserState {
    param([Parameter(Mandatory = $true)][string]$Word)
    foreach ($pair in $LocalizedStates) {
        if ($Word -cmatch $pair[0]) { return $pair[1] }
    }
    return 'Unknown'
}

function Get-QuserSessions {
    # quser's table: the user name may hold a space ("John Smith"), so the session name is only a
    # word that looks like one (console, rdp-tcp#3). Header and state words are localized.
    $run = Invoke-Native -FilePath 'quser.exe'
    $sessions = New-Object -TypeName System.Collections.ArrayList
    foreach ($line in @($run.Lines | Select-Object -Skip 1)) {
        if ($line -notmatch '^[ >](.+?)\s+(?:(console|\S+#\d+)\s+)?(\d+)\s+(\S+)\s+(\S+)\s+\S') { continue }
        $name = $null
        if ($Matches[2]) { $name = Limit-Text -Text $Matches[2] -Max 12 }
        [void]$sessions.Add([ordered]@{
            id = [int]$Matches[3]
            name = $name
            user = Limit-Text -Text $Matches[1].Trim() -Max 24
            state = ConvertFrom-QuserState -Word $Matches[4]
            idle_min = ConvertTo-IdleMinutes -Idle $Matches[5]
            logon = $null     # quser's LOGON TIME is in the display language's date format: not read
            disc_at = $null
        })
    }
    return ,$sessions.ToArray()
}

function Get-UserSessions {
    # Sessions with a signed-in user: id, name, user, state, idle_min, logon, disc_at. Through the WTS API
    # (language-independent state numbers); quser only when the API cannot be used.
    $rows = Get-WtsRows
    if ($null -eq $rows) {
        $fallback = Get-QuserSessions
        return ,$fallback
    }
    $sessions = New-Object -TypeName System.Collections.ArrayList
    foreach ($row in $rows) {
        if ([string]::IsNullOrEmpty([string]$row[3])) { continue }
        $idle = $null
        if ([int64]$row[4] -ge 0) { $idle = [int][Math]::Min(99999, [int64]$row[4]) }
        $name = $null
        if (-not [string]::IsNullOrEmpty([string]$row[1])) { $name = Limit-Text -Text ([string]$row[1]).ToLowerInvariant() -Max 12 }
        $state = 'Unknown'
        if ([int]$row[2] -ge 0 -and [int]$row[2] -lt $WtsStates.Count) { $state = $WtsStates[[int]$row[2]] }
        # logon/disc_at: FILETIME UTC ($null unknown), what tells one sign-in of a user in a session
        # id apart from a later one, and a disconnect before this payload from one during it.
        $logon = $null
        if ([int64]$row[5] -gt 0) { $logon = [int64]$row[5] }
        $discAt = $null
        if ([int64]$row[6] -gt 0) { $discAt = [int64]$row[6] }
        [void]$sessions.Add([ordered]@{ id = [int]$row[0]; name = $name; user = Limit-Text -Text $row[3] -Max 24; state = $state; idle_min = $idle; logon = $logon; disc_at = $discAt })
    }
    return ,$sessions.ToArray()
}

function Get-ListenerState {
    # The RDP-Tcp winstation's state (Listen when healthy), $null when it is not there.
    $rows = Get-WtsRows
    if ($null -ne $rows) {
        foreach ($row in $rows) {
            if ([string]$row[1] -eq 'RDP-Tcp' -and [int]$row[2] -ge 0 -and [int]$row[2] -lt $WtsStates.Count) { return $WtsStates[[int]$row[2]] }
        }
        return $null
    }
    $run = Invoke-Native -FilePath 'qwinsta.exe'
    foreach ($line in $run.Lines) {
        if ($line -match '^[ >]rdp-tcp\s+(\d+)\s+(\S+)') { return ConvertFrom-QuserState -Word $Matches[2] }
    }
    return $null
}

function Get-SeatMode {
    # admin: a server without the Session Host role (two remote sessions); rdsh: RD Session Host;
    # client: Windows 10/11 single-session (one interactive session); multi: Windows 10/11
    # Enterprise multi-session (OperatingSystemSKU 175); avd: an Azure Virtual Desktop session
    # host (its agent RDAgentBootLoader; users come through the reverse-connect listener).
    $os = Get-CimInstance -ClassName 'Win32_OperatingSystem' -OperationTimeoutSec 20
    if ($null -ne (Get-Service -Name 'RDAgentBootLoader' -ErrorAction SilentlyContinue)) { return 'avd' }
    if ([int]$os.OperatingSystemSKU -eq 175) { return 'multi' }
    if ([int]$os.ProductType -eq 1) { return 'client' }
    # Fail closed: a provider that times out or errs is not "no Session Host role". Read as 'admin',
    # an RD Session Host would lose its guard and its disconnected users their sessions; thrown,
    # the caller's section (diagnose) or step (repair: "cannot read state") reports it instead.
    # Win32_TerminalServiceSetting exists on every edition with TermService; TerminalServerMode 1
    # is an RD Session Host, 0 remote administration (Learn: Win32_TerminalServiceSetting class).
    $setting = Get-CimInstance -Namespace 'root/cimv2/TerminalServices' -ClassName 'Win32_TerminalServiceSetting' -OperationTimeoutSec 20 -ErrorAction Stop
    if ($null -eq $setting) { throw 'Win32_TerminalServiceSetting gave no answer: Session Host or not is unknown' }
    if ([int]$setting.TerminalServerMode -eq 1) { return 'rdsh' }
    return 'admin'
}

function Get-SeatFacts {
    # Seats per mode: admin 2, client 1, rdsh/multi/avd unlimited; MaxInstanceCount at most.
    param([Parameter(Mandatory = $true)][AllowEmptyCollection()][object[]]$Sessions)
    $mode = Get-SeatMode
    $maxInstances = Get-DWord -Path $TsPolicyKey -Name 'MaxInstanceCount'
    if ($null -eq $maxInstances) { $maxInstances = Get-DWord -Path $RdpTcpKey -Name 'MaxInstanceCount' }
    $limit = [int64]4294967295
    if ($mode -eq 'admin') { $limit = 2 }
    if ($mode -eq 'client') { $limit = 1 }
    if ($null -ne $maxInstances -and $maxInstances -lt $limit) { $limit = $maxInstances }
    # On client Windows the console session holds the one seat too.
    $used = @($Sessions | Where-Object -FilterScript {
        $_.id -ne 0 -and ($_.state -eq 'Active' -or $_.state -eq 'Disc') -and ($mode -eq 'client' -or $_.name -ne 'console')
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
    # [int64]: PortNumber is any DWORD, and [int] of one above 2147483647 throws; one above 65535
    # is no TCP port (callers check before they hand it to a cmdlet that takes a UInt16).
    $port = Get-DWord -Path $RdpTcpKey -Name 'PortNumber'
    if ($null -eq $port) { return [int64]3389 }
    return [int64]$port
}

function Test-PortCovered {
    # Does a firewall LocalPort list ('Any', '3389', '3000-4000', 'RPC', ...) cover $Port?
    param([AllowNull()][object]$LocalPort, [Parameter(Mandatory = $true)][int64]$Port)
    foreach ($entry in @($LocalPort)) {
        $text = [string]$entry
        if ($text -eq 'Any' -or $text -eq [string]$Port) { return $true }
        if ($text -match '^(\d+)-(\d+)$' -and [int]$Matches[1] -le $Port -and $Port -le [int]$Matches[2]) { return $true }
    }
    return $false
}

$CimJobSeconds = 30

function Invoke-BoundedCim {
    # The NetSecurity and NetTCPIP cmdlets (Get-NetFirewallRule and its filters, Enable-/New-/
    # Set-NetFirewall*, Get-NetConnectionProfile, Get-NetTCPConnection) are CDXML over CIM and take
    # no -OperationTimeoutSec (Learn: their syntax lists -CimSession, -ThrottleLimit and -AsJob
    # only): a hung WMI or firewall provider would hold the payload with no result line. Each is
    # started with -AsJob in $Start (a CIM job, run in this process) and waited for at most
    # $Seconds: Wait-Job -Timeout returns nothing when the time is up (Learn: Wait-Job).
    # A job that timed out is left alone and the call throws: Stop-Job and Remove-Job -Force stop
    # a CDXML job synchronously and wait, without a bound, for the CIM operation to confirm the
    # cancel (PowerShell's ThrottlingJob.StopJob waits on Finished; PowerShell/PowerShell#12897),
    # which a hung provider may never do. The job runs on in-process threads that end with the
    # process when the script ends. Only a finished job is removed.
    # The job is started under ErrorAction Continue: under the payload's Stop, the CDXML adapter
    # reports a provider error as a blocking write that sets the job to Blocked until a
    # Receive-Job, and Wait-Job then throws "jobs are blocked" (localized) instead of the
    # provider's message, -IgnoreErrors included (PowerShell's CimChildJobBase.WriteErrorCallback,
    # WaitJobCommand). Receive-Job then rethrows a failed job's error (-ErrorAction Stop) unless
    # -IgnoreErrors ("no such object" answers). Returns one array: assign it.
    param([Parameter(Mandatory = $true)][scriptblock]$Start, [string]$What = 'firewall query', [int]$Seconds = $CimJobSeconds,
          [switch]$IgnoreErrors)
    $ErrorActionPreference = 'Continue'   # this function's scope only: the job reports, never blocks
    $job = & $Start
    $ErrorActionPreference = 'Stop'
    try {
        if ($null -eq (Wait-Job -Job $job -Timeout $Seconds)) {
            throw ('{0} gave no answer in {1} s' -f $What, $Seconds)
        }
        if ($IgnoreErrors) { $received = @(Receive-Job -Job $job -ErrorAction SilentlyContinue) }
        else { $received = @(Receive-Job -Job $job -ErrorAction Stop) }
        return ,$received
    } finally {
        if ($null -ne $job -and @('Completed', 'Failed', 'Stopped') -contains $job.JobStateInfo.State.ToString()) { Remove-Job -Job $job -Force }
    }
}

function Get-InboundFirewallRules {
    # Every inbound rule Windows applies (the ActiveStore: a group policy's included), bounded.
    $rules = Invoke-BoundedCim -Start { Get-NetFirewallRule -PolicyStore ActiveStore -Direction Inbound -AsJob }
    return ,$rules
}

function Get-PortFilters {
    # Every port filter of the ActiveStore by InstanceID (the rule's): one bounded bulk query
    # instead of one association query per rule.
    $filters = Invoke-BoundedCim -Start { Get-NetFirewallPortFilter -PolicyStore ActiveStore -AsJob }
    $byRule = @{}
    foreach ($filter in $filters) { $byRule[$filter.InstanceID] = $filter }
    return $byRule
}

function Get-RemoteDesktopRules {
    # Inbound rules of the Remote Desktop group (language-independent group id), of $Rules
    # (Get-InboundFirewallRules).
    param([Parameter(Mandatory = $true)][AllowEmptyCollection()][object[]]$Rules)
    return @($Rules | Where-Object -FilterScript { $_.Group -eq $RemoteDesktopRuleGroup })
}

function Test-FullLanguage {
    # Constrained Language Mode (WDAC, AppLocker) refuses the .NET calls and Add-Type the payloads
    # need (Learn: about_Language_Modes): they then answer "unsupported" instead of failing halfway.
    return ([string]$ExecutionContext.SessionState.LanguageMode -eq 'FullLanguage')
}

function Write-Result {
    # Print the one result line; nothing may follow it. [object]: a typed IDictionary parameter
    # would itself fail to bind in Constrained Language Mode.
    # A [string] is a literal JSON line a payload made itself, its last resort when its result
    # could not be serialised.
    param([Parameter(Mandatory = $true)][object]$Result)
    if ($Result -is [string]) { $json = $Result } else { $json = ConvertTo-Json -InputObject $Result -Compress -Depth 10 }
    Write-Output ('AZRDP-RESULT:' + $json)
}

