"""Static tests (tree-sitter-pwsh) of how the payloads read Windows: diagnose.ps1 and the
Read-*/Get-* helpers of common.ps1 (desk review of the payloads, findings 3, 4, 5, 7, 15, 19-25).
Each fails on the script before its fix."""

from __future__ import annotations

import pytest

from azrdp.payloads import payload
from azrdp.payloads.schema import ResultSchemaError, validate_result
from tests.support import pwsh_ast


def _functions(payload_id: str = "diagnose") -> dict[str, str]:
    return pwsh_ast.functions(pwsh_ast.parse(payload(payload_id).script_text().encode()))


def _code(body: str) -> str:
    """The body without comments."""
    return "\n".join(line.split("#", 1)[0] for line in body.splitlines())


# -- finding 3 (review #17): SSLCertificateSHA1Hash that is not a 20-byte REG_BINARY --------------

def test_a_binding_that_is_not_twenty_bytes_of_binary_reads_malformed_not_absent():
    # The old reader cast every element with [byte]$_: a REG_SZ thumbprint threw (the whole cert
    # section lost), and a wrong-length binary value read as "no binding".
    body = _code(_functions()["Get-BoundThumbprint"])
    assert "[byte]$_" not in body
    assert "GetValueKind('SSLCertificateSHA1Hash').ToString() -ne 'Binary') { return 'MALFORMED' }" in body
    assert "if ($bytes.Count -ne 20) { return 'MALFORMED' }" in body
    assert body.index("GetValueNames() -notcontains 'SSLCertificateSHA1Hash') { return $null }") < body.index("GetValueKind")


def test_the_schema_takes_malformed_as_a_binding_and_nothing_else():
    from tests.support.payload_samples import healthy, healthy_repair

    doc = healthy()
    doc["cert"]["bound"] = "MALFORMED"
    validate_result("diagnose", doc)
    doc["cert"]["bound"] = "0123"
    with pytest.raises(ResultSchemaError):
        validate_result("diagnose", doc)
    repair = healthy_repair()
    cert = next(step for step in repair["steps"] if step["name"] == "cert")
    cert["before"]["bound"] = "MALFORMED"
    validate_result("repair", repair)


def test_the_cert_step_saves_a_malformed_binding_as_stored_before_clearing_it():
    body = _functions("repair")["Repair-Certificate"]
    assert "if ($bound -ne 'MALFORMED') { $found = Find-Certificate -Thumbprint $bound }" in body
    assert body.index("-Value (Get-BindingText) -Encoding Unicode") < body.index("Remove-ItemProperty")
    text = _functions("repair")["Get-BindingText"]
    assert "GetValueKind('SSLCertificateSHA1Hash')" in text and "'{0}:{1}' -f $kind" in text
    assert "$bound -ne 'MALFORMED'" in _functions()["Read-Certificates"]


# -- finding 4 (review #18): a MachineKeys folder SYSTEM cannot list -------------------------------

def test_machinekeys_facts_read_the_sddl_first_and_files_is_null_when_listing_fails():
    body = _code(_functions()["Get-MachineKeysFacts"])
    assert body.index("$acl = Get-Acl -LiteralPath $MachineKeysPath") < body.index("$sddl = $acl.Sddl") < body.index("Get-MachineKeysListing")
    assert "} catch {\n        $files = $null" in body and "files = $files" in body
    assert "@(Get-ChildItem -LiteralPath $MachineKeysPath -Force -File).Count" not in body
    key = _code(_functions()["Get-RdpKeyFacts"])
    # the live container by name (its path from the MachineGuid, one helper for every reader)
    assert "-ErrorAction Stop" in key and "Get-Item -LiteralPath $live" in key
    assert "$live = Get-LiveRdpKeyPath" in key and "'MachineGuid'" in _code(_functions()["Get-LiveRdpKeyPath"])
    from tests.support.payload_samples import healthy

    doc = healthy()
    doc["machinekeys"]["files"] = None
    validate_result("diagnose", doc)


# -- finding 7 (review #2, the rest): bounded reads ------------------------------------------------

def test_sessions_are_read_only_while_termservice_runs():
    functions = _functions()
    rows = _code(functions["Get-WtsRows"])
    assert rows.index("if (-not (Test-TermServiceRunning)) { return ,@() }") < rows.index("Add-AzRdpWtsType")
    assert "$service.Status.ToString() -eq 'Running'" in functions["Test-TermServiceRunning"]
    # the quser fallback is reached only when the API itself failed ($null), not on an empty table
    assert "if ($null -eq $rows) {" in functions["Get-UserSessions"]


@pytest.mark.parametrize("payload_id", ["diagnose", "repair", "rescue"])
def test_every_cim_call_has_an_operation_timeout(payload_id):
    tree = pwsh_ast.parse(payload(payload_id).script_text().encode())
    cim = pwsh_ast.calls(tree, "Get-CimInstance") + pwsh_ast.calls(tree, "Invoke-CimMethod")
    if payload_id == "diagnose":
        assert len(cim) >= 4
    for call in cim:
        assert "-OperationTimeoutSec 20" in pwsh_ast.text(call), pwsh_ast.text(call)


def test_a_failed_grace_period_call_is_not_read_as_zero_days_left():
    # [int64]$null is 0, "the grace period is over": the old Read-Rds read DaysLeft without
    # looking at ReturnValue.
    body = _code(_functions()["Read-Rds"])
    assert "[int64](Invoke-CimMethod" not in body
    assert "[int64]$answer.ReturnValue -eq 0 -and $null -ne $answer.DaysLeft) { $grace = [int64]$answer.DaysLeft }" in body


# -- finding 5 (review #11, the rest) and finding 15 (review #22) ----------------------------------

def test_the_firewall_rules_are_read_in_their_own_try_after_the_service():
    body = _code(_functions()["Read-Firewall"])
    service = body.index("try { $service = (Get-ServiceFacts -Name 'MpsSvc').state }")
    rules = body.index("    try {\n        \n        $profileList = Invoke-BoundedCim")
    assert rules < body.index("Get-NetFirewallProfile -PolicyStore ActiveStore -AsJob")
    fallback = body.index("return [ordered]@{ service = $service; profiles = $null; rdp_rules = $null;")
    assert service < rules < body.index("Add-Failure -Section 'firewall' -Record $_") < fallback
    from tests.support.payload_samples import healthy

    doc = healthy()
    doc["firewall"].update(profiles=None, rdp_rules=None, rdp_rules_enabled=None, port_allowed=None, blocked=None)
    validate_result("diagnose", doc)
    from azrdp.plan import _rdp_config_reasons

    assert _rdp_config_reasons(doc) == []   # rules not read is not "no rule lets RDP in"


def test_a_native_program_that_did_not_run_never_reads_as_success():
    body = _code(_functions()["Invoke-Native"])
    assert "$global:LASTEXITCODE = 0" not in body
    assert body.index("$global:LASTEXITCODE = -1") < body.index("& $exe @ArgumentList")


# -- findings 20, 23, 24, 25 -----------------------------------------------------------------------

def test_the_azrdp_rule_is_scoped_to_termservice_and_the_port_test_reads_the_active_store():
    # Finding 20: the rule opened the port for any process, and the test read the local
    # PersistentStore only (a rule delivered by group policy was not seen).
    functions = _functions("repair")
    create = next(line for line in functions["Repair-RdpConfig"].splitlines() if "New-NetFirewallRule" in line)
    assert "-Program '%SystemRoot%\\system32\\svchost.exe' -Service 'TermService'" in create
    # the active store: Get-InboundFirewallRules, whose rules the test is given
    assert "Get-NetFirewallRule -PolicyStore ActiveStore -Direction Inbound -AsJob" in functions["Get-InboundFirewallRules"]
    repair = functions["Repair-RdpConfig"]
    assert repair.index("$inbound = Get-InboundFirewallRules") < repair.index("Test-RdpGroupCoversPort -Port $port -Rules $inbound")


def test_the_deadline_runs_on_a_monotonic_clock():
    # Finding 23: a wall-clock deadline (Get-Date) moves with a time-sync jump.
    from azrdp.emulator.guest_payloads import DEADLINE_SECONDS

    body = _code(_functions("repair")["Get-SecondsLeft"])
    assert "Get-Date" not in body and "$script:Clock.Elapsed.TotalSeconds" in body
    assert f"$script:DeadlineSeconds = {DEADLINE_SECONDS}" in payload("repair").script_text()


def test_a_port_number_above_65535_is_reported_not_a_schema_failure():
    # Finding 24: PortNumber is any DWORD; hi=65535 made a misconfigured one fail the whole result,
    # and [int]$port threw above 2147483647.
    from azrdp.checks import Status
    from azrdp.guest.checks import check_port
    from tests.support.payload_samples import healthy

    doc = healthy()
    doc["rdp"]["port"] = 4294967295
    validate_result("diagnose", doc)
    check = check_port(doc, 3389)
    assert check.status is Status.FAIL and "no TCP port" in check.summary
    assert "[int64]$port" in _functions()["Get-RdpPort"] and "[int]$port" not in _code(_functions()["Get-RdpPort"])
    assert "if ($port -ge 1 -and $port -le 65535) {" in _functions()["Read-Listener"]


def test_the_manifest_says_that_logoffactive_logs_off_active_sessions():
    # Finding 25: the description promised never to log off a session not disconnected at the start.
    assert "disconnected when it started (unless LogOffActive is true)" in payload("repair").description


def test_the_wts_type_is_compiled_outside_the_shared_windows_temp_folder():
    # Finding 21: Add-Type's csc.exe worked in C:\Windows\Temp (SYSTEM's TEMP), where any user may
    # create files; TMP/TEMP now point at SYSTEM's own profile temp folder for the compile only.
    functions = _functions()
    add = _code(functions["Add-AzRdpWtsType"])
    assert add.index("$env:TMP = $own") < add.index("Add-Type -TypeDefinition $WtsSource")
    assert add.index("} finally {") > add.index("Add-Type") and "$env:TMP = $savedTmp" in add.split("} finally {")[1]
    assert "Add-Type" not in _code(functions["Get-WtsRows"])


def test_a_session_host_provider_that_does_not_answer_fails_closed():
    # Desk review 2, row 1: Win32_TerminalServiceSetting read with -OperationTimeoutSec and
    # SilentlyContinue turned a timeout into $null, and $null into 'admin' (two seats): an RD Session
    # Host lost its guard and the sessions step could log off its disconnected users.
    body = _code(_functions()["Get-SeatMode"])
    call = next(line for line in body.splitlines() if "Win32_TerminalServiceSetting" in line)
    assert "-ErrorAction Stop" in call and "SilentlyContinue" not in call
    assert "if ($null -eq $setting) { throw " in body
    assert body.index("if ($null -eq $setting) { throw ") < body.index("return 'admin'")


def test_only_a_block_rule_for_every_remote_address_counts_as_blocked():
    body = _code(_functions()["Read-Firewall"])
    assert "$addresses[$filter.InstanceID] = $filter" in body and "Get-NetFirewallAddressFilter -PolicyStore ActiveStore" in body
    assert "$_.Action.ToString() -eq 'Block' -and ($null -eq $r -or @($r.RemoteAddress) -contains 'Any')" in body
