"""Static tests of the shipped PowerShell payloads, through tree-sitter-pwsh (no PowerShell here).

Every payload parses without ERROR/MISSING nodes, follows the payload rules (comment-based help,
typed and validated param(), StrictMode, Stop, one result line, PowerShell 5.1-only syntax, no
aliases), and its param() block matches manifest.json."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import azrdp.payloads
from azrdp.payloads import payload, payload_ids
from tests.support import pwsh_ast

PAYLOAD_DIR = Path(azrdp.payloads.__file__).parent

# Windows PowerShell 5.1's built-in aliases (Get-Alias on Windows Server 2022), plus the
# Unix-looking ones 5.1 still defines. A payload must spell out the command instead.
PS51_ALIASES = {
    "%", "?", "ac", "asnp", "cat", "cd", "cfs", "chdir", "clc", "clear", "clhy", "cli", "clp", "cls",
    "clv", "cnsn", "compare", "copy", "cp", "cpi", "cpp", "curl", "cvpa", "dbp", "del", "diff", "dir",
    "dnsn", "ebp", "echo", "epal", "epcsv", "epsn", "erase", "etsn", "exsn", "fc", "fhx", "fl",
    "foreach", "ft", "fw", "gal", "gbp", "gc", "gcb", "gci", "gcm", "gcs", "gdr", "ghy", "gi", "gin",
    "gjb", "gl", "gm", "gmo", "gp", "gps", "gpv", "group", "gsn", "gsnp", "gsv", "gtz", "gu", "gv",
    "gwmi", "h", "history", "icm", "iex", "ihy", "ii", "ipal", "ipcsv", "ipmo", "ipsn", "irm", "ise",
    "iwmi", "iwr", "kill", "lp", "ls", "man", "md", "measure", "mi", "mount", "move", "mp", "mv",
    "nal", "ndr", "ni", "nmo", "npssc", "nsn", "nv", "ogv", "oh", "popd", "ps", "pushd", "pwd", "r",
    "rbp", "rcjb", "rcsn", "rd", "rdr", "ren", "ri", "rjb", "rm", "rmdir", "rmo", "rni", "rnp", "rp",
    "rsn", "rsnp", "rujb", "rv", "rvpa", "rwmi", "sajb", "sal", "saps", "sasv", "sbp", "sc", "scb",
    "select", "set", "shcm", "si", "sl", "sleep", "sls", "sort", "sp", "spjb", "spps", "spsv",
    "start", "stz", "sujb", "sv", "swmi", "tee", "trcm", "type", "wget", "where", "wjb", "write",
}

# Cmdlets Windows PowerShell 5.1 ships (Microsoft.PowerShell.*, NetSecurity, NetTCPIP, CimCmdlets,
# PKI, Security, Diagnostics) that the payloads may call.
PS51_CMDLETS = {
    "Add-Content", "Add-Type", "ConvertTo-Json", "Enable-NetFirewallRule", "ForEach-Object",
    "Get-Acl", "Get-ChildItem", "Get-CimInstance", "Get-Content", "Get-Date", "Get-Item", "Get-ItemProperty",
    "Get-NetConnectionProfile", "Get-NetFirewallApplicationFilter", "Get-NetFirewallPortFilter",
    "Get-NetFirewallAddressFilter", "Get-NetFirewallProfile", "Get-NetFirewallServiceFilter", "Get-NetFirewallRule", "Get-NetTCPConnection",
    "Get-Process", "Get-Service", "Get-WinEvent", "Invoke-CimMethod", "Join-Path", "Move-Item", "New-Item", "New-NetFirewallRule",
    "New-Object", "Out-Null", "Remove-ItemProperty",
    "Select-Object", "Set-Acl", "Set-Content", "Set-ItemProperty", "Set-NetFirewallPortFilter",
    "Set-Service", "Set-StrictMode", "Sort-Object", "Split-Path", "Start-Sleep",
    "Test-Path", "Where-Object", "Write-Output",
    # CIM jobs: the NetSecurity/NetTCPIP cmdlets run with -AsJob and are waited for with a timeout
    "Wait-Job", "Receive-Job", "Stop-Job", "Remove-Job",
}
# The Storage module (Windows Server 2012 and later, learn.microsoft.com/powershell/module/storage):
# only the offline rescue payload brings the attached disk online and lists volumes.
PS51_CMDLETS |= {"Get-Disk", "Set-Disk", "Get-Volume"}
# Service cmdlets that wait without limit on a Start/StopPending service (PowerShell's
# ServiceOperationBaseCommand.DoWaitForStatus loops for ever): never in a payload (review #2).
UNBOUNDED_SERVICE_CMDLETS = {"start-service", "restart-service", "stop-service", "suspend-service",
                             "resume-service"}
CHANGING = re.compile(r"^(Set|Remove|New-Item|Rename|Restart|Start-Service|Stop|Enable|Disable|Copy|Move|Export|Clear|Add)")
PAYLOADS = payload_ids()


def _source(payload_id: str) -> str:
    return payload(payload_id).script_text()


def _tree(payload_id: str):
    return pwsh_ast.parse(_source(payload_id).encode())


@pytest.mark.parametrize("payload_id", PAYLOADS)
def test_parses_without_error_nodes(payload_id):
    assert pwsh_ast.problems(_tree(payload_id)) == []


def test_the_parser_does_report_broken_powershell():
    # guard against a test that cannot fail: a broken script must show problems
    assert pwsh_ast.problems(pwsh_ast.parse(b"function F { if ($x { }\n$y = (1 + \n"))


@pytest.mark.parametrize("payload_id", PAYLOADS)
def test_calls_only_known_cmdlets_own_functions_or_exe_no_aliases(payload_id):
    tree = _tree(payload_id)
    own = set(pwsh_ast.functions(tree))
    called = set(pwsh_ast.commands(tree))
    aliases = {c for c in called if c.lower() in PS51_ALIASES}
    assert not aliases, f"aliases in {payload_id}.ps1: {sorted(aliases)}"
    unknown = called - own - PS51_CMDLETS
    assert not unknown, f"{payload_id}.ps1 calls commands that are neither its functions nor known 5.1 cmdlets: {sorted(unknown)}"
    # native programs go through Invoke-Native with an explicit .exe
    natives = re.findall(r"Invoke-Native -FilePath '([^']+)'", _source(payload_id))
    assert natives and all(n.endswith(".exe") for n in natives)


def test_alias_detection_catches_aliases():
    tree = pwsh_ast.parse(b"gci | % { $_ } | where { $_ } | select -First 1\n")
    assert {c.lower() for c in pwsh_ast.commands(tree)} <= PS51_ALIASES


@pytest.mark.parametrize("payload_id", PAYLOADS)
def test_payload_rules(payload_id):
    source = _source(payload_id)
    tree = _tree(payload_id)
    assert source.startswith("<#\n.SYNOPSIS"), "comment-based help first"
    for keyword in (".DESCRIPTION", ".PARAMETER", ".EXAMPLE", ".NOTES"):
        assert keyword in source.split("#>")[0]
    for param in pwsh_ast.param_block(tree):
        assert f".PARAMETER {param.name}" in source, f"help for -{param.name}"
        assert param.type in ("int", "string", "string[]"), f"-{param.name} must be typed"
        assert param.validate_set or param.validate_pattern or param.validate_range, f"-{param.name} must be validated"
    assert "\nSet-StrictMode -Version Latest\n" in source
    assert "\n$ErrorActionPreference = 'Stop'\n" in source
    assert source.isascii(), "Windows PowerShell 5.1 reads BOM-less scripts as ANSI"
    assert "\r" not in source and "\t" not in source
    # one place prints, and it prints the marker
    writes = [n for n in pwsh_ast.commands(tree) if n in ("Write-Output", "Write-Host", "Write-Information")]
    assert writes == ["Write-Output"]
    assert "Write-Output ('AZRDP-RESULT:' + $json)" in source
    assert "ConvertTo-Json -InputObject $Result -Compress" in source
    # nothing evaluates text as code; the one Add-Type compiles a fixed, single-quoted (never
    # interpolated) definition of the WTS API, no caller text
    for forbidden in ("Invoke-Expression", "[scriptblock]::Create", "-EncodedCommand"):
        assert forbidden not in source
    add_types = [pwsh_ast.text(c) for c in pwsh_ast.calls(tree, "Add-Type")]
    assert add_types == ["Add-Type -TypeDefinition $WtsSource -Language CSharp"]
    assert "$WtsSource = @'\n" in source and source.count("$WtsSource =") == 1
    # PowerShell 7-only syntax would fail on 5.1
    for pwsh7 in ("??", "?.", "-Parallel", " && ", " || ", "ForEach-Object -Parallel", "$PSStyle"):
        assert pwsh7 not in source, pwsh7


@pytest.mark.parametrize("payload_id", PAYLOADS)
def test_every_check_and_step_runs_inside_try_catch(payload_id):
    source = _source(payload_id)
    if payload_id == "diagnose":
        body = source.split("foreach ($name in @($Sections.Keys)) {", 1)[1]
        assert body.lstrip().startswith("$Result[$name] = $null\n    try {")
        assert "catch {\n        Add-Failure -Section $name -Record $_" in body
    else:
        runner = pwsh_ast.functions(_tree(payload_id))["Invoke-Step"]
        assert runner.count("try {") == 3 and runner.count("} catch {") == 3


def test_diagnose_changes_nothing():
    tree = _tree("diagnose")
    own = set(pwsh_ast.functions(tree))
    # Add-Type compiles the WTS API type into this process only; Remove-Job removes the
    # payload's own finished CIM jobs (Invoke-BoundedCim): none changes anything on the VM.
    changing = [c for c in pwsh_ast.commands(tree) if CHANGING.match(c) and c not in own]
    assert changing == ["Set-StrictMode", "Add-Type", "Remove-Job"]
    natives = set(re.findall(r"Invoke-Native -FilePath '([^']+)'", _source("diagnose")))
    assert natives == {"quser.exe", "qwinsta.exe"}
    assert payload("diagnose").read_only and not payload("repair").read_only
    # ... nor does it get the helpers that change things (they would pass the scan as its "own")
    changers = set(pwsh_ast.functions(pwsh_ast.parse((PAYLOAD_DIR / "change.ps1").read_bytes())))
    assert changers and not changers & own
    assert "# azrdp:include change.ps1" not in (PAYLOAD_DIR / "diagnose.ps1").read_text()


def test_repair_never_deletes_a_certificate_it_moves_them_to_a_backup_store():
    # Review #3/#4: the cert step deleted certificates (Export-Certificate kept only the public
    # part) before checking that Windows could make a new one. Nothing is deleted now: a
    # certificate is moved into Cert:\LocalMachine\azrdp-backup (key link kept; undo = move back).
    source = _source("repair")
    tree = _tree("repair")
    assert pwsh_ast.calls(tree, "Remove-Item") == [] and "Export-Certificate" not in source
    assert "-DeleteKey" not in source
    functions = pwsh_ast.functions(tree)
    mover = functions["Move-CertificateToBackup"]
    assert "Move-Item -LiteralPath (Join-Path -Path $RdpCertStore -ChildPath $Thumbprint) -Destination $BackupCertStore" in mover
    assert mover.index("Add-UndoNote") < mover.index("    Move-Item -LiteralPath")  # the undo is written before the change
    assert "$BackupCertStore = 'Cert:\\LocalMachine\\azrdp-backup'" in source
    repair_cert = functions["Repair-Certificate"]
    assert "SecurityLayer" not in repair_cert  # never lowered (only read in Read-CertState)
    # Only what is definitely broken moves: "could not test" ($null) never does.
    assert "if (-not (Test-CertificateBroken -Certificate $certificate)) { continue }" in repair_cert
    assert "($null -ne $usable -and -not $usable)" in functions["Test-CertificateBroken"]
    # The binding is saved (and its undo written) before it is removed.
    assert repair_cert.index("SSLCertificateSHA1Hash.txt") < repair_cert.index("Remove-ItemProperty")


def test_cert_step_checks_that_windows_can_make_a_certificate_before_touching_anything():
    # Review #3: SessionEnv disabled, a broken RDP key container (Windows reuses it: 1057/1058) or
    # a redirected SelfSignedCertStore leave RDP with no certificate once the old one is gone.
    functions = pwsh_ast.functions(_tree("repair"))
    body = functions["Repair-Certificate"]
    guard = body.index("$holdBack = Get-CertHoldBack")
    assert guard < body.index("Move-CertificateToBackup") and guard < body.index("Remove-ItemProperty")
    assert guard < body.index("Restart-ServiceBounded")
    assert "return New-Outcome -Skip $holdBack" in body[guard:body.index("Move-CertificateToBackup")]
    hold = functions["Get-CertHoldBack"]
    # (finding 9: the folder is judged on whether a new key container can be made, not on the exact SDDL)
    for needed in ("'SessionEnv', 'TermService', 'CertPropSvc', 'KeyIso', 'CryptSvc'", "Test-KeyFolderWritable",
                   "Test-RdpKeyUsable", "'SelfSignedCertStore'", "network_service_read"):
        assert needed in hold, needed
    assert "elseif ($null -ne $outcome.skip) { $step.status = 'skipped' }" in functions["Invoke-Step"]


def test_cert_step_restarts_termservice_only_when_the_served_certificate_must_change():
    # Review #13: a restart disconnects every RDP user; removing an unused expired certificate
    # while a valid one is served is no reason for one.
    body = pwsh_ast.functions(_tree("repair"))["Repair-Certificate"]
    # finding 8: a broken certificate moved while none usable is bound is still served from memory;
    # decided before any change (the binding it clears, the certificates it moves), so that a
    # restart a session host forbids changes nothing (RECHECK #8)
    assert "$restart = $boundBroken -or ($broken.Count -gt 0 -and -not $boundUsable) -or ($null -eq $Before.current)" in body
    assert body.index("$restart = ") < body.index("Move-CertificateToBackup") < body.index("if ($restart) {")
    assert body.index("$restart = ") < body.index("Remove-ItemProperty")
    assert body.count("Restart-ServiceBounded") == 1


def test_cert_step_restart_is_held_back_on_session_hosts_unless_asked():
    # RECHECK #8: the sessions step refused on rdsh/multi/avd, but the cert step's TermService
    # restart still disconnected every user of a session host.
    body = pwsh_ast.functions(_tree("repair"))["Repair-Certificate"]
    gate = body.index("if ($restart -and $MultiSession -ne 'true') {")
    assert "@('rdsh', 'multi', 'avd') -contains $mode" in body[gate:]
    assert gate < body.index("Move-CertificateToBackup") and gate < body.index("Remove-ItemProperty")


def test_a_restart_records_whom_it_disconnects_and_later_runs_keep_them():
    # RECHECK new H-1: the Disc-at-start snapshot protected the users the cert step's restart
    # disconnected only within that run; the next run saw them "disconnected at its start" and
    # logged the longest idle off. The record is written before the restart, in the protected root.
    source = _source("repair")
    functions = pwsh_ast.functions(_tree("repair"))
    cert = functions["Repair-Certificate"]
    assert "if ($name -eq 'TermService') { Save-DisconnectedRecord }" in cert
    assert cert.index("Save-DisconnectedRecord") < cert.index("Restart-ServiceBounded -Name $name")
    save = functions["Save-DisconnectedRecord"]
    assert save.index("$folder = Get-BackupFolder -DataRoot $env:ProgramData -RunId $RunId") < save.index("Set-Content")   # the protected root first
    assert "$ProtectHours = 24" in source and "$DisconnectedRecordName = 'disconnected-by-azrdp.txt'" in source
    # the snapshot is taken whenever the cert step may restart, not only for the sessions step
    assert "if ($wanted -contains 'sessions' -or $wanted -contains 'cert') {" in source
    sessions = functions["Repair-Sessions"]
    assert "if (-not $includeActive) {" in sessions and "$recent -notcontains (Get-SessionKey -Session $_)" in sessions
    read = functions["Read-DisconnectedRecord"]
    assert "if ($at.ToUniversalTime() -lt $since) { continue }" in read
    assert "Get-Content -LiteralPath $path -Encoding UTF8" in read and "catch" not in read   # unreadable: throws


def test_no_service_cmdlet_that_waits_for_ever_and_every_wait_is_bounded():
    # Review #2: Start-Service/Restart-Service wait without limit on a service stuck in
    # StopPending: no result line, Run Command blocked for 90 minutes, RDP down.
    for payload_id in PAYLOADS:
        used = {c.lower() for c in pwsh_ast.commands(_tree(payload_id))}
        assert not used & UNBOUNDED_SERVICE_CMDLETS, payload_id
        source = _source(payload_id)
        for call in re.findall(r"\.WaitForStatus\(([^)]*\))", source):
            assert "[TimeSpan]::FromSeconds(" in call, call
        assert ".WaitForStatus($Status)" not in source
    functions = pwsh_ast.functions(_tree("repair"))
    wait = functions["Wait-ServiceStatus"]
    assert "[Math]::Min($Seconds, (Get-SecondsLeft))" in wait and "if ($limit -lt 1) { return $false }" in wait
    assert "catch [System.ServiceProcess.TimeoutException]" in wait
    source = _source("repair")
    assert "$script:DeadlineSeconds = 480" in source and "[System.Diagnostics.Stopwatch]::StartNew()" in source
    # Steps after the deadline are skipped; TermService is started again at the end and reported.
    assert "if ((Get-SecondsLeft) -lt 1) {" in functions["Invoke-Step"]
    tail = source[source.index("foreach ($name in $StepOrder) {"):]
    assert tail.index("$termState = Confirm-TermService") < tail.index("Write-Result")
    assert "termservice = $termState" in tail


def test_sessions_step_logs_off_only_sessions_disconnected_at_the_start():
    # Review #1: the cert step's TermService restart turns Active sessions into Disc; the old
    # sessions step then logged off the users who had been working.
    source = _source("repair")
    functions = pwsh_ast.functions(_tree("repair"))
    body = functions["Repair-Sessions"]
    # Desk finding 14: keyed by id, user and logon time (ids are reused), and still disconnected
    # since before the start (a user who reconnected and was disconnected again is working).
    assert "($_.state -eq 'Disc' -and $script:DiscAtStart -contains $key -and ($null -eq $_.disc_at -or $_.disc_at -lt $script:StartFileTime))" in body
    assert "$includeActive -and $script:ActiveAtStart -contains $key" in body
    assert "return ('{0}|{1}|{2}' -f $Session.id, $Session.user, $Session.logon)" in functions["Get-SessionKey"]
    assert "logon = info.Logon; disconnect = info.Disconnect;" in _source("repair")
    snapshot = source.index("$script:DiscAtStart = @($atStart")
    assert snapshot < source.index("foreach ($name in $StepOrder) {")
    # F7: only as many as free one seat, longest idle first; multi-session hosts only when asked.
    assert "-Descending" in body and "$need = [Math]::Max(0, $Before.used - $Before.seat_limit + 1)" in body
    assert "@('rdsh', 'multi', 'avd') -contains $Before.mode -and $MultiSession -ne 'true'" in body
    assert body.index("-contains $Before.mode") < body.index("logoff.exe")


def test_machinekeys_rename_moves_only_the_rdp_key_container():
    # Review #7: the whole-folder rename took every machine key away (IIS, WinRM, LDAPS, the VM
    # agent), copied back file by file without a bound, and asked for a reboot when copies failed.
    body = pwsh_ast.functions(_tree("repair"))["Repair-MachineKeysRename"]
    for gone in ("Rename-Item", "Copy-Item", "-Reboot $true", "Set-DefaultMachineKeysAcl"):
        assert gone not in body, gone
    assert "$file = Get-Item -LiteralPath (Get-LiveRdpKeyPath) -Force" in body   # the live container only (finding 2)
    assert "Move-Item -LiteralPath $file.FullName -Destination $target" in body
    assert "$locked.SetSecurityDescriptorSddlForm($LockedFileSddl, 'Access')" in body
    # Acts only on a definite failure, never on "could not test".
    assert body.index("if ($null -eq $usable) {") < body.index("Move-Item")


def test_machinekeys_rename_judges_only_the_live_container_and_asks_the_cert_step_first():
    # Desk review of the rewrite, finding 2 (critical): any empty f686aace... file (a stale container
    # of an earlier MachineGuid) or any Remote Desktop certificate whose key test said $false (an
    # old certificate whose container is gone, KeyIso stopped, access denied) moved every
    # f686aace... file, the live healthy one included, without the cert step's preconditions: RDP
    # was left with a keyless certificate when the cert step then held back.
    functions = pwsh_ast.functions(_tree("repair"))
    live = functions["Get-LiveRdpKeyPath"]
    assert "[string]$Cryptography = 'HKLM:\\SOFTWARE\\Microsoft\\Cryptography'" in live
    assert "Get-RegValue -Path $Cryptography -Name 'MachineGuid'" in live
    assert "$RdpKeyFilter.TrimEnd('*') + [string]$guid" in live
    usable = functions["Test-RdpKeyUsable"]
    assert "$live = Get-LiveRdpKeyPath" in usable and "Get-ChildItem" not in usable
    assert "if ($certificate.Subject -ne $certificate.Issuer -or -not $certificate.HasPrivateKey) { continue }" in usable
    # access denied on the file: could not tell (moved to Test-LiveRdpKeyOpen); NTE_BAD_KEYSET is now
    # judged by Get-KeyFailureVerdict (RECHECK #7: a damaged live container reports it)
    assert "if ('opened' -ne (Test-LiveRdpKeyOpen)) { return $null }" in usable
    assert "catch [System.UnauthorizedAccessException] {\n            return $null" in functions["Test-LiveRdpKeyOpen"]
    assert "if ($true -eq $key) { return $true }" in usable               # a working key in it: never moved
    body = functions["Repair-MachineKeysRename"]
    assert "$RdpKeyFilter" not in body and "Get-ChildItem" not in body
    hold = body.index("$holdBack = Get-CertHoldBack -SkipKeyChecks")
    assert body.index("Test-RdpKeyUsable") < hold < body.index("Get-BackupFolder") < body.index("Move-Item")
    assert "return New-Outcome -Info $none -Skip $holdBack" in body
    assert "if (-not $SkipKeyChecks -and $key.present" in functions["Get-CertHoldBack"]
    facts = functions["Get-RdpKeyFacts"]
    assert "$null -eq $live -or $_.FullName -eq $live" in facts
    # Environmental failures are "could not test": access denied, KeyIso not running.
    verdict = functions["Get-KeyFailureVerdict"]
    assert "if (@(-2147024891, -2146893808) -contains $Exception.HResult) { return $null }" in verdict
    assert "Get-Service -Name 'KeyIso'" in verdict and "return $false" in verdict
    key_test = functions["Test-PrivateKey"]
    assert key_test.count("return Get-KeyFailureVerdict -Exception $_.Exception") == 2
    assert "CryptographicException] {\n        return $false" not in key_test
    assert key_test.index("$script:KeyFailureHResult = $null") < key_test.index("HasPrivateKey")


def test_key_failures_the_environment_causes_are_could_not_test_and_a_damaged_rdp_key_is_broken():
    # RECHECK #5: CNG's NTE_PERM (0x80090010) and CAPI's NTE_BAD_KEYSET on a container whose ACL
    # refuses counted as "broken": a CA certificate in My whose key SYSTEM cannot open had its
    # binding cleared. RECHECK #7: a damaged live RDP container reporting NTE_BAD_KEYSET was never
    # judged broken, so the cert step moved its certificate and RDP was left with none.
    functions = pwsh_ast.functions(_tree("repair"))
    verdict = functions["Get-KeyFailureVerdict"]
    assert "if (@(-2147024891, -2146893808) -contains $Exception.HResult) { return $null }" in verdict
    bad_keyset = verdict[verdict.index("if ($Exception.HResult -eq -2146893802) {"):]
    assert "(Test-RdpOwnCertificate -Certificate $Certificate) -and $null -ne (Test-LiveRdpKeyOpen)) { return $false }" in bad_keyset
    assert bad_keyset.index("return $false }") < bad_keyset.index("return $null")
    test = functions["Test-PrivateKey"]
    assert test.count("return Get-KeyFailureVerdict -Exception $_.Exception -Certificate $Certificate") == 2
    own = functions["Test-RdpOwnCertificate"]
    assert "$Certificate.Subject -like ('CN=' + $env:COMPUTERNAME + '*')" in own and "Remote Desktop" in own


def test_a_failed_lock_after_the_move_is_said_apart_and_the_undo_restores_the_acl():
    # Finding 18: a lock failure after a successful Move-Item counted as "could not be moved", and
    # undo.txt did not give the key its ACL back (NETWORK SERVICE could not read it after an undo).
    body = pwsh_ast.functions(_tree("repair"))["Repair-MachineKeysRename"]
    undo = body.index("Add-UndoNote")
    move = body.index("Move-Item -LiteralPath $file.FullName")
    assert undo < move                                                      # recorded before it is sent
    line = body[undo:].split("\n", 1)[0]
    assert "SetSecurityDescriptorSddlForm" in line and "Set-Acl" in line and "$sddl" in line
    lock = body[body.index("$locked = Get-Acl"):]
    assert "$outcome.skip = 'RDP key moved; locking its ACL failed'" in lock
    assert "$failed += 1" not in body


def test_machinekeys_acl_keeps_owners_and_makes_inherited_aces_explicit_first():
    # Review #9: restoring the folder ACL re-propagates to children; key files whose ACEs were only
    # inherited were left with an empty DACL. takeown changed the owner outside the backup.
    functions = pwsh_ast.functions(_tree("repair"))
    body = functions["Repair-MachineKeysAcl"]
    assert body.index("Save-MachineKeysAcl") < body.index("Protect-InheritedKeyAces") < body.index("Set-DefaultMachineKeysAcl")
    # (finding 12: the inherited ACEs become explicit without the broad ones, rebuilt from the
    # rules read, not SetAccessRuleProtection($true, $true), which kept Everyone:F explicit)
    protect = functions["Protect-InheritedKeyAces"]
    assert "$acl.SetAccessRuleProtection($true, $false)" in protect and "$keep" in protect
    save = functions["Save-MachineKeysAcl"]
    assert "'/save'" in save and "$run.ExitCode -ne 0" in save and "machinekeys.sddl.txt" in save
    assert "takeown" not in _source("repair")


def test_machinekeys_default_is_the_dacl_and_a_hardened_folder_does_not_hold_the_cert_step_back():
    # Finding 9 (#19): `default` compared owner+group+DACL, so a folder Windows' DACL but another
    # owner was "not default" (a needless rewrite and reboot); Get-CertHoldBack held the cert step
    # back on any difference, although a folder hardened to SYSTEM and Administrators renews fine.
    common = pwsh_ast.functions(_tree("diagnose"))
    facts = common["Get-MachineKeysFacts"]
    assert "default = ($acl.GetSecurityDescriptorSddlForm('Access') -eq $MachineKeysDefaultDacl)" in facts
    assert "$MachineKeysDefaultDacl = 'D:PAI(A;;0x12019f;;;WD)(A;;FA;;;BA)'" in _source("repair")
    functions = pwsh_ast.functions(_tree("repair"))
    hold = functions["Get-CertHoldBack"]
    assert "(Get-MachineKeysFacts).default" not in hold and "if (-not (Test-KeyFolderWritable))" in hold
    writable = functions["Test-KeyFolderWritable"]
    assert "-Sid $SidSystem -Rights ([System.Security.AccessControl.FileSystemRights]'ListDirectory, CreateFiles') -Exact" in writable
    grant = functions["Test-Grant"]
    assert "(-not $Exact -or $rule.IdentityReference.Value -eq $Sid)" in grant
    from azrdp.payloads.schema import MACHINEKEYS_DEFAULT_DACL, MACHINEKEYS_DEFAULT_SDDL

    assert MACHINEKEYS_DEFAULT_SDDL.endswith(MACHINEKEYS_DEFAULT_DACL)


def test_machinekeys_acl_rewrites_only_a_folder_that_cannot_take_keys_or_gives_every_user_more():
    # RECHECK #19: machinekeys-acl rewrote any non-default DACL, Microsoft's measured SYSTEM +
    # Administrators hardening included (into the Everyone-create default, and a reboot).
    functions = pwsh_ast.functions(_tree("repair"))
    body = functions["Repair-MachineKeysAcl"]
    assert "if (-not $Before.default -and (-not (Test-KeyFolderWritable) -or (Test-BroadKeyFolderGrant))) {" in body
    assert body.index("Test-BroadKeyFolderGrant") < body.index("Set-DefaultMachineKeysAcl")
    broad = functions["Test-BroadKeyFolderGrant"]
    assert "$BroadSids -notcontains $rule.IdentityReference.Value" in broad and "(4294967295 -bxor 1180063)" in broad


def test_machinekeys_acl_holds_back_when_the_folder_holds_a_subfolder_or_reparse_point():
    # RECHECK new H-2: a junction planted in MachineKeys (every user may add a folder there) could
    # carry the re-propagation of the folder ACL write into a tree the user chose.
    functions = pwsh_ast.functions(_tree("repair"))
    body = functions["Repair-MachineKeysAcl"]
    hold = body.index("$holdBack = Get-KeyFolderHoldBack -Path $MachineKeysPath")   # change.ps1's, shared with rescue
    assert hold < body.index("Save-MachineKeysAcl") < body.index("Set-DefaultMachineKeysAcl")
    check = functions["Get-KeyFolderHoldBack"]
    assert "'held back: MachineKeys holds a subfolder'" in check and "'held back: MachineKeys holds a reparse point'" in check
    listing = functions["Get-MachineKeysListing"]
    assert "[System.IO.FileAttributes]::Directory -bor [System.IO.FileAttributes]::ReparsePoint" in listing
    assert ".EnumerateFileSystemInfos()" in listing
    # diagnose reads it too (and bounds its walk as the repair does: desk finding 6)
    facts = pwsh_ast.functions(_tree("diagnose"))["Get-MachineKeysFacts"]
    assert "$listing = Get-MachineKeysListing" in facts and "nested = $nested" in facts
    assert "EnumerateFiles" not in facts


def test_inherited_aces_made_explicit_never_keep_a_broad_grant():
    # Finding 12: Protect-InheritedKeyAces kept an inherited Everyone:(OI)(CI)F (or Users:RX after
    # icacls /reset /t) as an explicit ACE on every key file: every machine private key readable by
    # any local user after a step that reported acl:folder-default.
    functions = pwsh_ast.functions(_tree("repair"))
    protect = functions["Protect-InheritedKeyAces"]
    assert "$_.IsInherited -and $BroadSids -notcontains $_.IdentityReference.Value" in protect
    assert "$acl.SetAccessRuleProtection($true, $true)" not in protect
    assert protect.index("$acl.SetAccessRuleProtection($true, $false)") < protect.index("foreach ($rule in $keep)")
    assert "if ($keep.Count -eq 0) {" in protect and "@($SidSystem, 'S-1-5-32-544')" in protect
    assert "$BroadSids = @('S-1-1-0', 'S-1-5-11', 'S-1-5-32-545')" in _source("repair")


def test_machinekeys_acl_is_bounded_checks_its_backup_and_records_unreadable_files():
    # Finding 6: no count limit and no deadline inside the per-file loops (a bloated MachineKeys ran
    # past Run Command's timeout); finding 16 (#23): a partial icacls /save passed for a full one,
    # and one key file SYSTEM could not Get-Acl aborted the step meant to fix it.
    functions = pwsh_ast.functions(_tree("repair"))
    body = functions["Repair-MachineKeysAcl"]
    # the count limit: change.ps1's Get-KeyFolderHoldBack (shared with rescue), before any backup
    assert body.index("$holdBack = Get-KeyFolderHoldBack -Path $MachineKeysPath") < body.index("Save-MachineKeysAcl")
    assert "if ($null -ne $holdBack) {\n        return New-Outcome" in body
    assert "held back: MachineKeys holds over" in functions["Get-KeyFolderHoldBack"]
    listing = functions["Get-MachineKeysListing"]   # diagnose's: one pass that stops at the limit
    assert "if ($count -gt $MaxKeyFiles) {" in listing and "break" in listing
    for name in ("Save-MachineKeysAcl", "Protect-InheritedKeyAces"):
        loop = functions[name][functions[name].index("foreach ($item in"):]
        assert "if ((Get-SecondsLeft) -lt 60) { throw 'deadline: stopped before changing the folder ACL' }" in loop, name
    save = functions["Save-MachineKeysAcl"]
    assert "Get-Content -LiteralPath $file -Encoding Unicode -TotalCount 1" in save
    assert save.index("TotalCount 1") < save.index("machinekeys.sddl.txt")
    assert "catch { $sddl = 'UNREADABLE' }" in save
    assert "try { $acl = Get-Acl -LiteralPath $item.FullName } catch { continue }" in functions["Protect-InheritedKeyAces"]


def test_a_folder_system_cannot_list_gets_one_list_ace_first_recorded_before_it_is_sent():
    # Finding 4, repair side (#18): SYSTEM could not list MachineKeys, so Save-MachineKeysAcl,
    # Protect-InheritedKeyAces and every count threw: the step failed in the worst ACL break.
    # The ACE is change.ps1's Add-SystemListAce, shared with rescue (desk review 3 M-3).
    functions = pwsh_ast.functions(_tree("repair"))
    body = functions["Repair-MachineKeysAcl"]
    block = body[body.index("if ($null -eq $Before.files) {"):]
    sent = block.index("Add-SystemListAce -Path $MachineKeysPath -Folder (Get-BackupFolder -DataRoot $env:ProgramData -RunId $RunId)")
    assert sent < block.index("Get-KeyFolderHoldBack") < block.index("Save-MachineKeysAcl")
    assert "[void]$actions.Add('acl:list')" in block
    helper = functions["Add-SystemListAce"]
    ace = helper.index("'ListDirectory, ReadAttributes, ReadPermissions', 'None', 'None', 'Allow'")
    assert helper.index("machinekeys.folder.sddl.txt") < helper.index("Add-UndoNote") < ace \
        < helper.index("Set-Acl -LiteralPath $Path -AclObject $acl")
    listable = functions["Test-FolderListable"]
    assert "EnumerateFileSystemEntries($Path)" in listable and "catch [System.UnauthorizedAccessException]" in listable


def test_rdp_key_grants_follow_the_build_and_only_add():
    # Finding 16b: the step restored NETWORK SERVICE + SYSTEM only (PurgeAccessRules first); Windows
    # ships NT SERVICE\SessionEnv full control from build 17763, Administrators read before it.
    # The two helpers live in change.ps1 (shared with rescue), the build read by each caller.
    functions = pwsh_ast.functions(_tree("repair"))
    grants = functions["Get-RdpKeyGrants"]
    assert "param([string]$Build = '')" in grants
    assert "-ge 17763" in grants and "$SidSessionEnv, 'FullControl'" in grants
    assert "@('S-1-5-32-544', 'Read')" in grants and "HKLM:" not in grants
    assert "$SidSessionEnv = 'S-1-5-80-4022436659-1090538466-1613889075-870485073-3428993833'" in _source("repair")
    body = functions["Grant-RdpKeyAccess"]
    assert "PurgeAccessRules" not in body and "$acl.AddAccessRule(" in body
    assert "RemoveAccessRuleSpecific($rule)" in body and "AccessControlType]::Deny" in body
    assert "$grants = Get-RdpKeyGrants -Build $Build" in body
    assert "Get-ChildItem -LiteralPath $Folder -Filter $RdpKeyFilter" in body
    assert "$LivePath -eq '' -or $_.FullName -eq $LivePath" in body and "= Get-LiveRdpKeyPath" not in body
    repair = functions["Repair-MachineKeysAcl"]
    assert ("$build = Get-RegValue -Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion' "
            "-Name 'CurrentBuildNumber'") in repair
    assert ("if (Grant-RdpKeyAccess -Folder $MachineKeysPath -LivePath (Get-LiveRdpKeyPath) -Build $build) "
            "{ [void]$actions.Add('acl:rdp-key') }") in repair


def test_cert_step_reports_no_new_certificate_and_starts_its_helpers_again():
    # Finding 11: no new certificate 60 s after the restart was silently "changed"; finding 13: a
    # failed SessionEnv restart left SessionEnv (it makes the next certificate) and UmRdpService stopped.
    functions = pwsh_ast.functions(_tree("repair"))
    body = functions["Repair-Certificate"]
    assert "if (-not (Wait-RdpCertificate)) { throw 'no new self-signed certificate after 60 s (RCM 1057/1058)' }" in body
    assert "return $false" in functions["Wait-RdpCertificate"]
    final = body[body.index("} finally {"):]
    assert "foreach ($name in @('SessionEnv', 'UmRdpService'))" in final and "Start-ServiceBounded -Name $name" in final
    assert "$facts.start -eq 'Disabled'" in final


def test_backup_root_refuses_reparse_points_and_foreign_owners():
    # Review #10: any local user can pre-create C:\ProgramData\azrdp (a junction, or their own ACL).
    functions = pwsh_ast.functions(_tree("repair"))
    guard = functions["Confirm-ProtectedFolder"]
    assert "[System.IO.FileAttributes]::ReparsePoint" in guard and "GetOwner(" in guard
    assert guard.index("throw") < guard.index("Set-Acl")
    assert "$BackupRootSddl = 'O:SYG:SYD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)'" in _source("repair")
    folder = functions["Get-BackupFolder"]
    assert folder.index("Confirm-ProtectedFolder -Path $root") < folder.index("New-Item")
    assert "-Force" not in folder.split("New-Item", 1)[1].split("\n", 1)[0]


def test_every_payload_answers_unsupported_under_constrained_language_mode_first():
    # Review #29: in Constrained Language Mode the .NET calls fail halfway; answer before any.
    for payload_id in PAYLOADS:
        source = _source(payload_id)
        body = source.split("# azrdp:include common.ps1", 1)[0] if False else source[source.index("function Write-Result"):]
        check = body.index("if (-not (Test-FullLanguage)) {")
        first_read = min(i for i in (body.find("Get-RebootReasons"), body.find("$Sections = [ordered]"),
                                     body.find("Find-OfflineWindows")) if i >= 0)
        assert check < first_read, payload_id
        assert "'unsupported: PowerShell runs in Constrained Language Mode'" in body[check:check + 700]


def test_steps_bind_as_one_comma_string_or_an_array_and_empty_is_an_error():
    source = _source("repair")
    assert "$wanted = @((@($Steps) -join ',').Split(',')" in source
    assert "if ($wanted.Count -eq 0) { $runError = 'no steps given" in source


def test_repair_steps_run_in_the_fixed_order():
    source = _source("repair")
    assert "$StepOrder = @('rdp-config', 'machinekeys-acl', 'machinekeys-rename', 'cert', 'sessions')" in source
    assert list(payload("repair").steps) == ["rdp-config", "machinekeys-acl", "machinekeys-rename", "cert", "sessions"]


def test_shared_helpers_have_one_copy_that_every_payload_sends():
    common = (PAYLOAD_DIR / "common.ps1").read_text()
    change = (PAYLOAD_DIR / "change.ps1").read_text()
    for payload_id in PAYLOADS:
        shipped = (PAYLOAD_DIR / f"{payload_id}.ps1").read_text()
        assert shipped.count("# azrdp:include common.ps1\n") == 1
        assert "function Write-Result" not in shipped  # the helpers live only in common.ps1
        assert "function Get-BackupFolder" not in shipped  # ... and change.ps1
        expected = shipped.replace("# azrdp:include common.ps1\n", common)
        sent = _source(payload_id)
        assert sent.count(common) == 1
        if payload(payload_id).read_only:
            assert "# azrdp:include change.ps1" not in shipped and change not in sent
        else:
            assert shipped.count("# azrdp:include change.ps1\n") == 1 and sent.count(change) == 1
            expected = expected.replace("# azrdp:include change.ps1\n", change)
        assert sent == expected
    assert {p for p in PAYLOADS if not payload(p).read_only} == {"repair", "rescue"}


def test_change_helpers_take_their_paths_as_parameters():
    # The helpers repair and rescue share work on C: and on an attached offline volume alike: none
    # reads the running Windows' MachineKeys or %ProgramData% itself.
    tree = pwsh_ast.parse((PAYLOAD_DIR / "change.ps1").read_bytes())
    functions = pwsh_ast.functions(tree)
    assert {"Confirm-ProtectedFolder", "Get-BackupFolder", "Add-UndoNote", "Save-MachineKeysAcl",
            "Set-DefaultMachineKeysAcl", "Protect-InheritedKeyAces", "Get-SecondsLeft"} <= set(functions)
    assert pwsh_ast.problems(tree) == []
    code = (PAYLOAD_DIR / "change.ps1").read_text()
    for hidden in ("$MachineKeysPath", "$env:ProgramData", "$env:SystemDrive", "HKLM:"):
        assert hidden not in code, hidden
    params = {name: re.findall(r"\]\$(\w+)", re.search(r"param\((.*?)\)\n", body, re.S).group(1))
              for name, body in functions.items() if "param(" in body}
    assert params["Get-BackupFolder"] == ["DataRoot", "RunId", "Name"]
    assert params["Save-MachineKeysAcl"] == ["Path", "Folder", "OfflineVolume"]
    assert params["Protect-InheritedKeyAces"] == ["Path"] and params["Add-UndoNote"] == ["Folder", "Line"]
    # one place per value too: what change.ps1 sets, no including payload sets again
    shared = set(re.findall(r"^\$(?:script:)?(\w+) = ", code, re.M))
    assert {"BackupRootSddl", "BroadSids", "Clock", "BackupFolder"} <= shared
    # $MaxKeyFiles is common.ps1's: diagnose bounds its MachineKeys walk with it too (desk finding 6)
    common = set(re.findall(r"^\$(?:script:)?(\w+) = ", (PAYLOAD_DIR / "common.ps1").read_text(), re.M))
    assert "MaxKeyFiles" in common and not common & shared, common & shared
    for payload_id in ("diagnose", "repair", "rescue"):
        own = set(re.findall(r"^\$(?:script:)?(\w+) = ", (PAYLOAD_DIR / f"{payload_id}.ps1").read_text(), re.M))
        assert not own & (shared | common), (payload_id, own & (shared | common))


def _includes(**files: str):
    return lambda name: files[name.replace(".", "_")]


@pytest.mark.parametrize(("source", "read_only", "message"), [
    ("x\n", False, "each include line once"),
    ("# azrdp:include common.ps1\n# azrdp:include common.ps1\n", False, "each include line once"),
    ("# azrdp:include common.ps1\n# azrdp:include ../secrets.ps1\n", False, "unknown file"),
    ("# azrdp:include common.ps1\n# azrdp:include change.ps1\n", True, "read-only"),
    ("# azrdp:include change.ps1\n# azrdp:include common.ps1\n", False, "before"),
])
def test_include_rules(source, read_only, message):
    from azrdp.payloads import expand_includes

    with pytest.raises(RuntimeError, match=message):
        expand_includes("p.ps1", source, read_only=read_only, read=_includes(common_ps1="C\n", change_ps1="X\n"))


def test_includes_expand_once_each_and_an_include_file_may_not_include():
    from azrdp.payloads import expand_includes

    read = _includes(common_ps1='C "# azrdp:include change.ps1"\n', change_ps1="X\n")
    both = "a\n# azrdp:include common.ps1\nb\n# azrdp:include change.ps1\nc\n"
    assert expand_includes("p.ps1", both, read_only=False, read=read) == 'a\nC "# azrdp:include change.ps1"\nb\nX\nc\n'
    assert expand_includes("p.ps1", "# azrdp:include common.ps1\n", read_only=True, read=read) == \
        'C "# azrdp:include change.ps1"\n'
    for nested in (_includes(common_ps1="C\n", change_ps1="# azrdp:include common.ps1\n"),
                   _includes(common_ps1="C\n# azrdp:include change.ps1\n", change_ps1="X\n")):
        with pytest.raises(RuntimeError, match="may not include"):
            expand_includes("p.ps1", both, read_only=False, read=nested)


def test_payload_versions_match_the_manifest():
    for payload_id in PAYLOADS:
        assert f"$PayloadVersion = '{payload(payload_id).version}'" in _source(payload_id)


@pytest.mark.parametrize("payload_id", PAYLOADS)
def test_manifest_parameters_match_the_param_block(payload_id):
    spec = payload(payload_id)
    script = {p.name: p for p in pwsh_ast.param_block(_tree(payload_id))}
    assert list(script) == [p.name for p in spec.parameters]
    for p in spec.parameters:
        s = script[p.name]
        # Never Mandatory in the script: a missing Mandatory parameter makes PowerShell prompt,
        # and under Run Command that prompt waits 90 minutes (review #14). "required" in the
        # manifest means azrdp always sends it; the script answers a missing one with an error.
        assert not s.mandatory, p.name
        if p.type == "int":
            assert s.type == "int" and s.validate_range == (p.min, p.max) and s.default == p.default
        elif p.type == "bool":
            assert s.type == "string" and s.validate_set == ["true", "false"]
            assert s.default == ("true" if p.default else "false")
        elif p.type == "string":
            assert s.type == "string" and s.validate_pattern == p.pattern and s.default == p.default
        elif p.type == "list":
            # string[]: one comma string (-File) or an array (-Command style) both bind (#14).
            alternatives = "|".join(p.choices)
            assert s.type == "string[]" and s.validate_pattern == f"^({alternatives})(,({alternatives}))*$"
            assert s.default == "@()"
        else:
            pytest.fail(f"unknown manifest type {p.type}")


# -- Windows PowerShell 5.1 pitfalls found reviewing the payloads (no PowerShell here to run them) --

def test_functions_that_emit_one_array_are_only_ever_assigned():
    # `return ,$list` emits the array as ONE pipeline object. Piped on, Where-Object gets the whole
    # list as a single $_ (the sessions step then ran logoff.exe with every id joined); inside @()
    # it is wrapped again, so @(Get-RebootReasons).Count was always 1 (a reboot always "pending").
    for payload_id in PAYLOADS:
        tree = _tree(payload_id)
        emitting = [name for name, body in pwsh_ast.functions(tree).items() if re.search(r"^\s*return ,", body, re.M)]
        assert emitting, "the check below must have something to check"
        for name in emitting:
            for call in pwsh_ast.calls(tree, name):
                assert pwsh_ast.is_whole_assignment_value(call), (
                    f"{payload_id}.ps1: {name} returns one array object; assign it (`$x = {name}`) "
                    f"before piping or counting it, not `{pwsh_ast.text(call.parent.parent)[:70]}`")


def test_the_one_array_check_catches_piped_and_wrapped_calls():
    tree = pwsh_ast.parse(b"$a = Get-X\n$b = @(Get-X | Where-Object { $_ })\n$c = @(Get-X).Count\nGet-X\n")
    verdicts = [pwsh_ast.is_whole_assignment_value(c) for c in pwsh_ast.calls(tree, "Get-X")]
    assert verdicts == [True, False, False, False]


def test_native_programs_that_print_nothing_do_not_throw():
    # logoff.exe and `icacls /save ... /q` print nothing on success: $output is then $null, and
    # `$null | ForEach-Object { $_.ToString() }` runs once and throws, failing the sessions and
    # both machinekeys steps on every real VM.
    body = pwsh_ast.functions(_tree("repair"))["Invoke-Native"]
    assert not re.search(r"\$output\s*\|", body), "iterate $output with foreach, never pipe it"
    assert "foreach ($item in $output)" in body and "$null -ne $item" in body


@pytest.mark.parametrize("payload_id", PAYLOADS)
def test_firewall_association_parameters_get_a_single_instance(payload_id):
    # -AssociatedNetFirewall*Filter and -AssociatedNetFirewallRule are typed [CimInstance], not
    # [CimInstance[]]: a collected array of several filters fails to bind (the whole firewall
    # section was lost). Collections go through the pipeline instead.
    source = _source(payload_id)
    for variable in re.findall(r"-AssociatedNetFirewall\w+\s+\$(\w+)", source):
        assert not re.search(rf"\${variable}\s*=\s*@\(", source), f"${variable} is a collection"


NETWORK_CIM_CMDLET = re.compile(r"^(Get|Set|New|Enable|Disable|Remove)-Net(Firewall\w*|TCPConnection|ConnectionProfile)$")


def test_every_netsecurity_and_nettcpip_cmdlet_is_a_cim_job_waited_for_with_a_timeout():
    # Desk review 2 finding 4 / RECHECK #2: the NetSecurity and NetTCPIP cmdlets are CDXML over CIM
    # with no -OperationTimeoutSec; a hung WMI or firewall provider held diagnose and rdp-config
    # with no result line.
    common = pwsh_ast.functions(_tree("repair"))["Invoke-BoundedCim"]
    assert "if ($null -eq (Wait-Job -Job $job -Timeout $Seconds)) {" in common
    assert common.index("Wait-Job -Job") < common.index("throw (") and "$CimJobSeconds = 30" in _source("repair")
    # Desk review 3 M-1: Stop-Job / Remove-Job -Force on a CDXML job wait without a bound for the
    # cancel a hung provider never confirms; a timed-out job is left alone, a finished one removed.
    assert "Stop-Job" not in pwsh_ast.commands(_tree("diagnose")) and "Stop-Job -Job" not in common
    assert "if ($null -ne $job -and @('Completed', 'Failed', 'Stopped') -contains $job.JobStateInfo.State.ToString()) " \
           "{ Remove-Job -Job $job -Force }" in common
    # M-2: started under the payload's Stop, a provider error blocks the job and Wait-Job throws
    # "jobs are blocked"; the job starts under Continue and Receive-Job rethrows on its own.
    assert common.index("$ErrorActionPreference = 'Continue'") < common.index("$job = & $Start") \
        < common.index("$ErrorActionPreference = 'Stop'") < common.index("Wait-Job -Job")
    assert "Receive-Job -Job $job -ErrorAction Stop" in common
    seen = 0
    for payload_id in PAYLOADS:
        tree = _tree(payload_id)
        for name in {c for c in pwsh_ast.commands(tree) if NETWORK_CIM_CMDLET.match(c)}:
            for call in pwsh_ast.calls(tree, name):
                text = pwsh_ast.text(call)
                assert "-AsJob" in text, f"{payload_id}.ps1: {text[:80]}"
                node, inside = call, False
                while node is not None:
                    if node.type == "command" and pwsh_ast.text(node).startswith("Invoke-BoundedCim"):
                        inside = True
                        break
                    node = node.parent
                assert inside, f"{payload_id}.ps1: {text[:80]} is not run through Invoke-BoundedCim"
                seen += 1
    assert seen >= 12


def test_rdp_config_repairs_deny_and_services_when_the_firewall_cannot_be_read():
    # RECHECK #12 / desk review 2 finding 5: with MpsSvc stopped the ActiveStore query threw, the
    # whole step was "cannot read state", and fDenyTSConnections=1 or a Disabled TermService stayed.
    functions = pwsh_ast.functions(_tree("repair"))
    read = functions["Read-RdpConfigState"]
    assert read.index("services = @(") < read.index("try {") < read.index("Get-InboundFirewallRules")
    assert "$script:FirewallReadError = $_.Exception.Message" in read
    body = functions["Repair-RdpConfig"]
    assert body.index("fDenyTSConnections") < body.index("Start-ServiceBounded") < body.index("if ($null -eq $Before.fw_rules) {")
    assert "$problem = 'firewall not readable: ' + $script:FirewallReadError" in body
    assert "return New-Outcome -Changed ($actions.Count -gt 0) -Info $info -Skip $problem" in body
    assert "($port -lt 1 -or $port -gt 65535)" in body   # desk review 2 finding 17: no port for the cmdlet


def test_private_key_check_does_not_need_sha256_support_from_the_csp():
    # A CAPI key in PROV_RSA_FULL / PROV_RSA_SCHANNEL opened as RSACryptoServiceProvider cannot
    # sign SHA-256 on older .NET; counting it as unusable would make the cert step remove a
    # working certificate. The key works if it can sign at all.
    body = pwsh_ast.functions(_tree("repair"))["Test-PrivateKey"]
    assert "$hashes = @('SHA256', 'SHA1')" in body
    assert body.index("$key.SignData($data, $hash)") > body.index("foreach ($hash in $hashes)")


def test_rescue_always_unloads_the_hives_it_loaded():
    source = _source("rescue")
    main = source[source.index("$results = New-Object"):]
    body, final = main.split("} finally {", 1)
    assert body.count("Invoke-Reg -ArgumentList @('load'") == 2, "both hives load inside the try"
    assert "Dismount-Hive -Name $hive" in final.split("$Result = [ordered]@{")[0]
    assert "@($SoftwareHive, $SystemHive)" in final
    unload = pwsh_ast.functions(_tree("rescue"))["Dismount-Hive"]
    assert "[System.GC]::Collect()" in unload and "'unload'" in unload, "handles closed before reg unload"
    assert source.count("'load'") == 2 and "Invoke-Native -FilePath 'reg.exe'" in source


def test_rescue_exports_and_saves_before_it_removes_or_changes():
    functions = pwsh_ast.functions(_tree("rescue"))
    cert = functions["Repair-Cert"]
    assert pwsh_ast.calls(_tree("rescue"), "Remove-Item") == [], "moved aside, never deleted"
    assert cert.index("'export'") < cert.index("Move-Item -LiteralPath $key.PSPath -Destination $p.backupstore"), \
        "a certificate is exported before it is moved"
    assert "if (-not (Test-Path -LiteralPath $file)) { throw" in cert
    assert cert.index("SSLCertificateSHA1Hash.txt") < cert.index("Remove-ItemProperty")
    keys = functions["Repair-MachineKeys"]
    # the key container's ACL is now set inside change.ps1's Grant-RdpKeyAccess, called last
    assert keys.index("Save-MachineKeysAcl") < keys.index("Set-DefaultMachineKeysAcl") < \
        keys.index("Grant-RdpKeyAccess -Folder $p.machinekeys"), "ACLs are saved before they change"
    assert "'/save'" in functions["Save-MachineKeysAcl"]


def test_rescue_steps_run_in_the_fixed_order_and_never_touch_the_running_windows():
    from azrdp.payloads.schema import RESCUE_STEPS

    source = _source("rescue")
    assert "$StepOrder = @('" + "', '".join(RESCUE_STEPS) + "')" in source
    code = source.split("#>", 1)[1]          # after the comment-based help
    rescue_only = code.split("# azrdp:include", 1)[0] + code[code.index("$StepOrder"):]
    assert "HKLM:\\" not in rescue_only and "CurrentControlSet" not in rescue_only
    assert "Cert:\\" not in rescue_only and "Restart-Service" not in rescue_only


def _own_code(payload_id: str) -> str:
    """A payload as shipped, without its includes and its help, comments stripped: its own code."""
    shipped = (PAYLOAD_DIR / f"{payload_id}.ps1").read_text().split("#>", 1)[1]
    return "\n".join(line.split("#", 1)[0] for line in shipped.splitlines())


def test_rescue_uses_the_shared_change_helpers_and_keeps_no_copy_of_them():
    # RECHECK #9, #10, #17, #23: rescue.ps1 repeated, in its own copies, faults repair.ps1 had fixed.
    own = set(pwsh_ast.functions(pwsh_ast.parse((PAYLOAD_DIR / "rescue.ps1").read_bytes())))
    shared = set(pwsh_ast.functions(pwsh_ast.parse((PAYLOAD_DIR / "change.ps1").read_bytes())))
    common = set(pwsh_ast.functions(pwsh_ast.parse((PAYLOAD_DIR / "common.ps1").read_bytes())))
    assert own and not own & (shared | common)
    code = _own_code("rescue")
    for copied in ("icacls", "SetSecurityDescriptorSddlForm", "New-Item -ItemType Directory", "[byte]$_",
                   "$MachineKeysDefaultSddl", "GetValueKind"):
        assert copied not in code, copied


def test_rescue_machinekeys_saves_checks_and_makes_inherited_aces_explicit_before_the_folder_acl():
    # RECHECK #9 (critical): the offline folder ACL was set without making the ACEs of inherited-only
    # key files explicit (left with an empty DACL: the repaired VM boots with unreadable machine
    # keys); #23: icacls' exit code and first line were unchecked; new H-2: a subfolder or junction.
    functions = pwsh_ast.functions(_tree("rescue"))
    body = functions["Repair-MachineKeys"]
    hold = body.index("$holdBack = Get-KeyFolderHoldBack -Path $p.machinekeys")
    save = body.index("Save-MachineKeysAcl -Path $p.machinekeys -Folder (Get-RescueBackupFolder) -OfflineVolume $script:Volume")
    explicit = body.index("if ((Protect-InheritedKeyAces -Path $p.machinekeys) -gt 0) { [void]$actions.Add('acl:explicit') }")
    folder = body.index("Set-DefaultMachineKeysAcl -Path $p.machinekeys")
    assert hold < save < explicit < folder < body.index("Grant-RdpKeyAccess -Folder $p.machinekeys")
    assert "if ($null -ne $holdBack) { return New-StepOutcome -Changed ($actions.Count -gt 0) " \
           "-Actions $actions.ToArray() -Skip $holdBack }" in body
    # desk review 3 M-3: a folder SYSTEM cannot list gets its list ACE before the hold-back lists it
    listable = body.index("if (-not (Test-FolderListable -Path $p.machinekeys)) {")
    assert listable < body.index("Add-SystemListAce -Path $p.machinekeys -Folder (Get-RescueBackupFolder) "
                                 "-OfflineVolume $script:Volume") < body.index("[void]$actions.Add('acl:list')") < hold
    holdback = functions["Get-KeyFolderHoldBack"]
    assert "[System.IO.Directory]::EnumerateFiles($Path)" in holdback
    assert holdback.index("if ($n -gt $MaxKeyFiles)") < holdback.index("Get-ChildItem -LiteralPath $Path -Force -Directory")
    assert "Get-ChildItem -LiteralPath $Path -Force -Attributes ReparsePoint" in holdback
    save_body = functions["Save-MachineKeysAcl"]
    assert "$run.ExitCode -ne 0 -or" in save_body and "Get-Content -LiteralPath $file -Encoding Unicode -TotalCount 1" in save_body
    # the undo names the folder where it will run: the disk's own Windows drive once it boots
    assert "$note.Replace(('\"' + $OfflineVolume + '\\'), '\"%SystemDrive%\\')" in save_body


def test_rescue_judges_and_grants_only_the_offline_windows_live_rdp_key_container():
    # The first f686aace... file was judged, whatever its MachineGuid: a cloned image's stale
    # container that NETWORK SERVICE can read hid a live one it cannot (nothing repaired).
    functions = pwsh_ast.functions(_tree("rescue"))
    live = functions["Get-OfflineLiveRdpKeyPath"]
    assert "Get-LiveRdpKeyPath -Folder $p.machinekeys -Cryptography ($SoftwareRoot + '\\Microsoft\\Cryptography')" in live
    files = functions["Get-OfflineRdpKeyFiles"]
    assert "$live = Get-OfflineLiveRdpKeyPath" in files
    assert "Where-Object -FilterScript { $null -eq $live -or $_.FullName -eq $live }" in files
    assert "$files = @(Get-OfflineRdpKeyFiles)" in functions["Read-MachineKeys"]
    assert "-LivePath (Get-OfflineLiveRdpKeyPath)" in functions["Repair-MachineKeys"]
    assert "-Filter $RdpKeyFilter" not in functions["Read-MachineKeys"] + functions["Repair-MachineKeys"]


def test_rescue_grants_the_rdp_key_container_what_its_build_ships_through_the_shared_helper():
    # Issue 10/16: rescue's own loop purged and re-added NETWORK SERVICE and SYSTEM only
    # (PurgeAccessRules: a deliberate ACE for them went too), whatever the disk's Windows build
    # ships (NT SERVICE\SessionEnv full control from 17763, Administrators read before it).
    functions = pwsh_ast.functions(_tree("rescue"))
    body = functions["Repair-MachineKeys"]
    assert ("$build = Get-RegValue -Path ($SoftwareRoot + '\\Microsoft\\Windows NT\\CurrentVersion') "
            "-Name 'CurrentBuildNumber'") in body
    assert ("if (Grant-RdpKeyAccess -Folder $p.machinekeys -LivePath (Get-OfflineLiveRdpKeyPath) -Build $build) "
            "{ [void]$actions.Add('acl:rdp-key') }") in body
    code = _own_code("rescue")
    for copied in ("PurgeAccessRules", "AddAccessRule", "FileSystemAccessRule", "$SidSessionEnv"):
        assert copied not in code, copied
    for payload_id in ("repair", "rescue"):      # one copy of each, in change.ps1
        shipped = (PAYLOAD_DIR / f"{payload_id}.ps1").read_text()
        assert "function Get-RdpKeyGrants" not in shipped and "function Grant-RdpKeyAccess" not in shipped
    change = pwsh_ast.functions(pwsh_ast.parse((PAYLOAD_DIR / "change.ps1").read_bytes()))
    assert {"Get-RdpKeyGrants", "Grant-RdpKeyAccess"} <= set(change)


def test_rescue_records_a_key_container_whose_acl_system_cannot_read():
    # RECHECK #18 (low), rescue side: Test-Grant's Get-Acl threw on a container denying SYSTEM
    # READ_CONTROL, so the whole step read "cannot read state" and nothing was repaired.
    read = pwsh_ast.functions(_tree("rescue"))["Read-MachineKeys"]
    block = read[read.index("try {"):]
    assert block.index("Test-Grant -Path $files[0].FullName") < block.index("} catch {") < block.index("$read = $null")


def test_rescue_reads_the_offline_binding_as_the_online_payloads_do():
    # RECHECK #17 (high): Get-OfflineBound cast each element with [byte]$_: a REG_SZ thumbprint threw
    # (the cert step became "cannot read state"), a wrong-length value read as "no binding".
    functions = pwsh_ast.functions(_tree("rescue"))
    read = functions["Read-Cert"]
    assert "$bound = Get-BoundThumbprint -Path $p.rdptcp" in read and "Get-OfflineBound" not in functions
    assert read.index("if ($bound -eq 'MALFORMED') {\n        $usable = $false") < read.index("Get-OfflineCertificate")
    repair = functions["Repair-Cert"]
    saved = repair.index("-Value (Get-BindingText -Path $p.rdptcp) -Encoding Unicode")
    assert saved < repair.index("Add-UndoNote -Folder $folder -Line ('binding:") < repair.index("Remove-ItemProperty")
    for name in ("Get-BoundThumbprint", "Get-BindingText"):
        assert "param([string]$Path = $RdpTcpKey)" in functions[name]
        assert "$key = Get-Item -LiteralPath $Path -ErrorAction SilentlyContinue" in functions[name]
    from azrdp.payloads.schema import BINDING, RESCUE_STATES

    assert RESCUE_STATES["cert"].fields["bound"].pattern == BINDING


def test_rescue_backups_go_to_a_protected_folder_on_the_offline_volume():
    # RECHECK #10/#19: <vol>\ProgramData\azrdp\backup was made with New-Item -Force: a junction, or
    # a folder a user of the broken VM had made and owns, took the backups.
    functions = pwsh_ast.functions(_tree("rescue"))
    assert "Get-BackupPath" not in functions
    body = functions["Get-RescueBackupFolder"]
    assert "Get-BackupFolder -DataRoot ($script:Volume + '\\ProgramData') -RunId $RunId -Name ('rescue-' + $RunId)" in body
    for step in ("Repair-Cert", "Repair-MachineKeys"):
        assert "Get-RescueBackupFolder" in functions[step] and "Get-BackupFolder " not in functions[step]
    assert "    backup = Limit-Text -Text $script:BackupFolder -Max 80" in _source("rescue")


def test_rescue_judges_the_machinekeys_default_on_the_dacl_like_the_online_payloads():
    # RECHECK #19: the full owner+group+DACL string was compared: Windows' DACL under another owner
    # was "not default" (rewritten, the owner changed with it).
    read = pwsh_ast.functions(_tree("rescue"))["Read-MachineKeys"]
    assert "$dacl = (Get-Acl -LiteralPath $p.machinekeys).GetSecurityDescriptorSddlForm('Access')" in read
    assert "default = ($dacl -eq $MachineKeysDefaultDacl)" in read and ".Sddl" not in read


def test_rescue_has_a_deadline_that_leaves_time_to_unload_the_hives():
    source = _source("rescue")
    assert "$script:DeadlineSeconds = 600" in source and "$ResultReserveSeconds = 60" in source
    step = pwsh_ast.functions(_tree("rescue"))["Invoke-Step"]
    assert step.index("if ((Get-SecondsLeft) -lt 1) {") < step.index("$step.before = & $functions.read")


def test_private_key_check_has_three_answers():
    # Review #5: .NET 4.5 (no RSACertificateExtensions), ECDSA and decrypt-only CNG keys made the
    # old test say "unusable" about good keys; "could not test" is $null, and only a
    # CryptographicException is "broken".
    body = pwsh_ast.functions(_tree("repair"))["Test-PrivateKey"]
    assert "'System.Security.Cryptography.X509Certificates.RSACertificateExtensions' -as [type]" in body
    assert "try { $key = $Certificate.PrivateKey } catch { return $null }" in body   # CNG on .NET 4.5
    assert "ECDsaCertificateExtensions' -as [type]" in body and "if ($null -eq $ec) { return $null }" in body
    assert "$key.Decrypt($cipher" in body
    assert body.count("catch [System.Security.Cryptography.CryptographicException]") == 3
    assert body.count("return $null") >= 3
    facts = pwsh_ast.functions(_tree("diagnose"))["Get-CertFacts"]
    assert "key_readable = ConvertTo-KeyState -Answer (Test-PrivateKey -Certificate $Certificate)" in facts


def test_sessions_and_listener_are_read_through_the_wts_api_first():
    # Review #6: quser/qwinsta print localized state words; on a German, French or Japanese VM
    # the listener read as Unknown (guest.listener FAIL on every healthy VM).
    functions = pwsh_ast.functions(_tree("diagnose"))
    sessions = functions["Get-UserSessions"]
    assert sessions.index("Get-WtsRows") < sessions.index("Get-QuserSessions")
    assert "if ($null -eq $rows) {" in sessions
    assert "Get-ListenerState" in functions["Read-Listener"] and "qwinsta" not in functions["Read-Listener"]
    assert functions["Get-ListenerState"].index("Get-WtsRows") < functions["Get-ListenerState"].index("qwinsta.exe")
    source = _source("diagnose")
    assert "WTSEnumerateSessionsW" in source and "WTSQuerySessionInformationW(IntPtr.Zero, si.Id, 24," in source


def test_native_programs_run_from_system32_and_a_missing_one_is_a_clear_error():
    # Review #22: bare names from PATH; a 32-bit host has no quser in SysWOW64, and a missing program
    # left $LASTEXITCODE unset (StrictMode then threw a confusing error).
    body = pwsh_ast.functions(_tree("repair"))["Invoke-Native"]
    assert "Join-Path -Path $env:SystemRoot -ChildPath ($folder + '\\' + $FilePath)" in body
    assert "$folder = 'Sysnative'" in body and "[Environment]::Is64BitProcess" in body
    assert body.index("if (-not (Test-Path -LiteralPath $exe)) { throw") < body.index("& $exe")
    assert body.index("$global:LASTEXITCODE = -1") < body.index("& $exe")


def test_grants_through_groups_and_generic_rights_count():
    # Review #27: an Everyone/Authenticated Users/Users grant covers NETWORK SERVICE; GENERIC_READ
    # (0x80000000) is FILE_GENERIC_READ. Missing either meant a needless key-ACL rewrite and reboot.
    functions = pwsh_ast.functions(_tree("repair"))
    grant = functions["Test-Grant"]
    assert "$covering = @($Sid, 'S-1-1-0', 'S-1-5-11', 'S-1-5-32-545')" in grant
    assert "if ($Sid -eq $SidSystem) { $covering += 'S-1-5-32-544' }" in grant
    assert "ConvertTo-FileRights -Mask" in grant
    mapping = functions["ConvertTo-FileRights"]
    for mask, mapped in ((0x80000000, 0x120089), (0x40000000, 0x120116), (0x20000000, 0x1200A0), (0x10000000, 0x1F01FF)):
        assert f"if ($Mask -band {mask}) {{ $mapped = $mapped -bor {mapped} }}" in mapping
    code = "\n".join(line.split("#", 1)[0] for line in mapping.splitlines())
    assert not re.search(r"0x[89A-Fa-f][0-9A-Fa-f]{7}", code), "PowerShell reads 0x80000000 as a negative Int32"


def test_firewall_analysis_honours_block_rules_profiles_and_scope_in_one_pass():
    # Review #11: Block rules were ignored (an enabled Block on 3389 beats every Allow), as were
    # profile and program/service scope; one association query per filter took tens of seconds;
    # with MpsSvc stopped the section (service included) was lost.
    body = pwsh_ast.functions(_tree("diagnose"))["Read-Firewall"]
    assert body.index("(Get-ServiceFacts -Name 'MpsSvc').state") < body.index("Get-NetFirewallProfile")
    assert "try { $service = (Get-ServiceFacts -Name 'MpsSvc').state }" in body
    for joined in ("$ports[$_.InstanceID]", "$apps[$_.InstanceID]", "$services[$_.InstanceID]"):
        assert joined in body
    assert "-AssociatedNetFirewall" not in body
    assert "Test-RuleProfileActive -Profile $_.Profile.ToString() -Active $active" in body
    assert "$allowed = (-not $blocked) -and" in body and "blocked = $blocked" in body


def test_termservice_is_started_at_the_end_even_after_a_stop_that_outlived_its_wait():
    # Desk review of the rewrite, finding 1: Confirm-TermService handled only Stopped and
    # StartPending; a TermService still in StopPending when the step's wait gave up finished
    # stopping after the payload ended, and nobody started it (RDP down for everyone).
    functions = pwsh_ast.functions(_tree("repair"))
    confirm = functions["Confirm-TermService"]
    assert "-eq 'StopPending'" in confirm
    assert confirm.index("WaitForStatus('Stopped'") < confirm.index("$service.Start()")
    assert "DependentServices" in confirm and ".StartType" not in confirm   # .NET 4.5 has no StartType
    restart = functions["Restart-ServiceBounded"]
    # no stop is begun without time for a whole stop and start before the deadline
    assert restart.index("Get-SecondsLeft") < restart.index("$service.Stop()")
    # the dependents that ran are started again whatever happens
    assert restart.index("} finally {") < restart.index("foreach ($dependent in $dependents)")
    source = _source("repair")
    assert "$ResultReserveSeconds = 90" in source


def test_the_simulated_guest_follows_the_scripts_service_reserve():
    from azrdp.emulator import guest_payloads

    assert f"$ResultReserveSeconds = {guest_payloads.RESERVE_SECONDS}" in _source("repair")
    assert f"$ServiceWaitSeconds = {guest_payloads.SERVICE_WAIT_SECONDS}" in _source("repair")


def test_the_repair_payload_prints_a_result_line_even_when_its_result_cannot_be_serialised():
    # Desk review of the rewrite, finding 17: when the fallback Write-Result threw too, the script
    # ended with no AZRDP-RESULT line (azrdp then knows nothing of what the steps changed).
    import json
    import re as regex

    from azrdp.payloads.schema import validate_result

    source = _source("repair")
    last_catch = source[source.rindex("} catch {"):]
    call = "Write-Result -Result ("
    expression = last_catch[last_catch.index(call) + len(call):last_catch.rindex(")")]
    assert "$flag[[bool]$changed]" in expression and "$rebootStep" in expression   # not a fixed 'nothing changed'
    # Evaluate the concatenation as PowerShell would, with sample values for the variables.
    values = {"$PayloadVersion": "2.1.0", "$RunId": "run-1"}
    text = ""
    for part in regex.split(r"\s*\+\s*", expression.strip()):
        if part.startswith("'") and part.endswith("'"):
            text += part[1:-1]
        elif part.startswith("$flag["):
            text += "true"
        else:
            text += values[part]
    validate_result("repair", json.loads(text))
    assert "if ($Result -is [string]) { $json = $Result }" in pwsh_ast.functions(_tree("repair"))["Write-Result"]
