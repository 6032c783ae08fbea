"""`azrdp fix` end to end: CliRunner, the REAL SDK clients against the ARM stand-in on loopback,
and a real loopback RDP listener as the VM's wire side (its certificate follows the guest).

Each test asserts the Run Commands and restarts the stand-in received, and the audit log."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

from azrdp.cli import cli
from tests.support.fake_arm import VmSpec, rule
from tests.support.fix_support import (
    DENY_RDP,
    Guest,
    SwappableRdp,
    audit_actions,
    install,
    restarts,
    run_commands,
    seed_guest,
)
from tests.support.payload_samples import broken_machinekeys_acl, expired_cert, healthy, two_disconnected_admins

pytestmark = pytest.mark.usefixtures("cli_env")

SEED_AUDIT = [("run-command", None, "sent"), ("guest-step", "machinekeys-acl", "changed"),
              ("guest-step", "cert", "changed"), ("guest-step", "sessions", "changed"),
              ("run-command", None, "done"), ("restart", None, "requested"), ("restart", None, "done"),
              ("result", None, None)]


def fix(*args: str, audit=None):
    extra = ["--audit-log", str(audit)] if audit is not None else []
    return CliRunner().invoke(cli, ["fix", "vm1", "-g", "rg1", *args, *extra])


@pytest.fixture
def rdp(certs):
    """The VM's RDP port, serving the expired certificate until the test swaps it."""
    peer = SwappableRdp(certs[0])
    yield peer
    peer.close()


@pytest.fixture
def healthy_rdp(certs):
    """The VM's RDP port, serving a valid certificate."""
    peer = SwappableRdp(certs[1])
    yield peer
    peer.close()


def restart_renews(arm, spec, rdp, certs):
    """After a restart through ARM the listener serves the fresh certificate."""
    arm.on_power[spec.vm_id.lower()] = lambda action: rdp.serve(certs[1])


def test_the_seeds_combination_is_fixed_with_one_run_command_and_one_restart(arm, rdp, certs, audit_path):
    guest = Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"})
    spec = install(arm, guest)
    restart_renews(arm, spec, rdp, certs)

    result = fix("--yes", "-o", "json", "--host", rdp.host, audit=audit_path)

    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1 and doc["verdict"] == "verified"
    plan = doc["plan"]
    assert plan["mode"] == "fused"
    assert [s["name"] for s in plan["steps"]] == ["machinekeys-acl", "cert", "sessions", "reboot"]
    assert plan["steps"][1]["why"].startswith("rdp.cert: certificate CN=expired.rdp.test")
    assert "expired 2021-01-01" in plan["steps"][1]["why"]
    assert run_commands(arm) == (0, 1) and restarts(arm) == 1
    assert guest.repairs == [{"Steps": "machinekeys-acl,cert,sessions", "LogOffActive": "false",
                              "RunId": doc["audit"]["records"][0]["run_id"], "LogOffOnlyWhenFull": "true"}]
    assert {"id": "rdp.cert", "before": "fail", "after": "pass"}.items() <= doc["changes"][0].items()
    assert doc["counts"] == {"diagnose_run_commands": 0, "repair_run_commands": 1, "restarts": 1, "starts": 0,
                             "nsg_rules": 0}
    assert set(doc["timings"]) == {"diagnose", "run_command", "restart", "rdp", "after"}
    assert audit_actions(audit_path) == SEED_AUDIT
    acl = next(r for r in doc["actions"] if r.get("step") == "machinekeys-acl")
    assert acl["backups"] == {"folder": "C:/ProgramData/azrdp/backup/20260101T000002Z"}
    assert acl["before"]["default"] is False and acl["after"]["default"] is True


def test_guest_first_reads_the_guest_and_gives_its_reasons(arm, rdp, certs, audit_path):
    guest = Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"})
    spec = install(arm, guest)
    restart_renews(arm, spec, rdp, certs)

    result = fix("--yes", "--guest-first", "--host", rdp.host, audit=audit_path)

    assert result.exit_code == 0, result.output
    assert "  1. machinekeys-acl    the MachineKeys folder SDDL is not the default (O:BAG:SYD:PAI" in result.stdout
    assert "  2. cert               guest.cert: the RDP certificate A1B2C3D4E5F60718293A4B5C6D7E8F9012345678 " \
           "expired on 2025-11-30T10:02:11Z" in result.stdout
    assert "  3. sessions           2 of 2 admin seats are held by disconnected sessions" in result.stdout
    assert "  4. reboot             machinekeys-acl requires it when it changes something [only if needed]" \
        in result.stdout
    assert run_commands(arm) == (1, 1) and restarts(arm) == 1
    assert "Verdict: verified: RDP answers on" in result.stdout
    assert audit_actions(audit_path) == SEED_AUDIT


def test_expired_certificate_alone_needs_no_restart(arm, rdp, certs, audit_path):
    # The cert step restarts SessionEnv and TermService inside the guest: the fresh certificate is
    # served as soon as the Run Command returns.
    guest = Guest(expired_cert(), broken={"cert"}, on_repair=lambda fixed: rdp.serve(certs[1]))
    install(arm, guest)

    result = fix("--yes", "--guest-first", "--host", rdp.host, audit=audit_path)

    assert result.exit_code == 0, result.output
    assert "  1. cert               guest.cert: the RDP certificate" in result.stdout
    assert "reboot" not in result.stdout.split("Done:")[0].split("Plan")[1]
    assert run_commands(arm) == (1, 1) and restarts(arm) == 0
    assert audit_actions(audit_path) == [("run-command", None, "sent"), ("guest-step", "cert", "changed"),
                                         ("run-command", None, "done"), ("result", None, None)]


def test_broken_machinekeys_acl(arm, rdp, certs, audit_path):
    guest = Guest(broken_machinekeys_acl(), broken={"machinekeys-acl", "cert"})
    spec = install(arm, guest)
    restart_renews(arm, spec, rdp, certs)

    result = fix("--yes", "--guest-first", "-o", "json", "--host", rdp.host, audit=audit_path)

    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)["plan"]["steps"]
    assert [(s["name"], s["why"]) for s in steps[:2]] == [
        ("machinekeys-acl", "the MachineKeys folder SDDL is not the default (O:BAG:SYD:PAI(A;;FA;;;BA)); "
                            "NETWORK SERVICE cannot read the RDP key container"),
        ("cert", "guest.cert: no RDP certificate with a readable private key")]
    assert "machinekeys-rename" not in [s["name"] for s in steps]
    assert run_commands(arm) == (1, 1) and restarts(arm) == 1
    assert ("restart", None, "done") in audit_actions(audit_path)


def test_a_taken_seat_is_freed_without_touching_anything_else(arm, healthy_rdp, audit_path):
    guest = Guest(two_disconnected_admins(), broken={"sessions"})
    install(arm, guest)
    result = fix("--yes", "--host", healthy_rdp.host, audit=audit_path)
    assert result.exit_code == 0, result.output
    assert guest.repairs[0]["Steps"] == "sessions" and guest.repairs[0]["LogOffOnlyWhenFull"] == "true"
    assert "guest step sessions: changed (logged off 2, 2 seat(s) freed)" in result.stdout
    assert run_commands(arm) == (0, 1) and restarts(arm) == 0


def test_a_healthy_vm_logs_no_one_off_and_says_nothing_was_needed(arm, healthy_rdp, audit_path):
    guest = Guest(healthy())
    install(arm, guest)
    result = fix("--yes", "--host", healthy_rdp.host, audit=audit_path)
    assert result.exit_code == 0, result.output
    assert "Verdict: verified: nothing needed repair; RDP answers on" in result.stdout
    assert run_commands(arm) == (0, 1) and restarts(arm) == 0
    assert audit_actions(audit_path) == [("run-command", None, "sent"), ("run-command", None, "done"),
                                         ("result", None, None)]


def test_nsg_blocked_without_allow_from_opens_nothing(arm, healthy_rdp, audit_path):
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))

    result = fix("--yes", "--host", healthy_rdp.host, audit=audit_path)

    assert result.exit_code == 1, result.output
    assert "azrdp never opens the port by itself: pass --allow-from IP|CIDR|me" in result.stdout
    assert "outside check skipped: the NSG blocks the RDP port" in result.stdout
    assert arm.rule_calls == [] and run_commands(arm) == (1, 0) and restarts(arm) == 0
    assert audit_actions(audit_path) == []


def test_nsg_blocked_with_allow_from_me_adds_one_narrow_expiring_rule(arm, healthy_rdp, audit_path):
    spec = install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[rule("Other", 199, "Allow", port="22"),
                                                                DENY_RDP]))
    result = fix("--yes", "-o", "json", "--allow-from", "me", "--source-ip", "203.0.113.7",
                 "--host", healthy_rdp.host, audit=audit_path)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    [(method, nsg, name)] = arm.rule_calls
    assert (method, nsg) == ("PUT", "vm1NSG") and name.startswith("azrdp-allow-rdp-")
    stored = arm.resources[f"{spec.nic_nsg_id}/securityRules/{name}".lower()]["properties"]
    assert {k: stored[k] for k in ("access", "direction", "protocol", "sourceAddressPrefix",
                                   "destinationAddressPrefix", "destinationPortRange", "priority")} == {
        "access": "Allow", "direction": "Inbound", "protocol": "Tcp", "sourceAddressPrefix": "203.0.113.7",
        "destinationAddressPrefix": "10.0.0.4", "destinationPortRange": "3389", "priority": 198}
    assert stored["description"].startswith("azrdp: expires ")
    assert " by os user " in stored["description"] and "; vm vm1; " in stored["description"]
    run_id = stored["description"].split("; run ", 1)[1].split(";", 1)[0]
    assert run_id.startswith("azrdp-") and doc["plan"]["steps"][0]["name"] == "nsg-rule"
    assert arm.rule_calls[0][2].endswith("-" + run_id.removeprefix("azrdp-"))   # unique per run
    assert doc["plan"]["steps"][0]["name"] == "nsg-rule"
    assert "rule DenyRDP (priority 200, Deny) blocks TCP 3389 from 203.0.113.7" in doc["plan"]["steps"][0]["why"]
    assert doc["counts"]["nsg_rules"] == 1 and run_commands(arm) == (1, 0)
    assert audit_actions(audit_path) == [("nsg-rule", None, "requested"), ("nsg-rule", None, "created"),
                                         ("result", None, None)]
    assert doc["audit"]["records"][0]["undo"] == "azrdp revoke vm1 -g rg1"
    assert next(c for c in doc["after"]["checks"] if c["id"] == "nsg.azrdp_rules")["status"] == "pass"


def test_a_failed_nsg_rule_creation_is_audited_with_the_rule_and_its_undo(arm, healthy_rdp, audit_path):
    # ARM accepted the PUT, then the operation failed: the rule may exist (provisioningState Failed),
    # so the audit names it and how to remove it, and the report still comes out (exit 5)
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))
    accepted = arm._async
    arm._async = lambda status, location=True: accepted(
        {"status": "Failed", "error": {"code": "InternalServerError", "message": "boom"}}, location)

    result = fix("--yes", "-o", "json", "--allow-from", "203.0.113.7", "--host", healthy_rdp.host, audit=audit_path)

    assert result.exit_code == 5, result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "failed" and doc["counts"]["nsg_rules"] == 0
    assert [(m, nsg) for m, nsg, _ in arm.rule_calls] == [("PUT", "vm1NSG")] and run_commands(arm) == (1, 0)
    assert audit_actions(audit_path) == [("nsg-rule", None, "requested"), ("nsg-rule", None, "failed"),
                                         ("failed", None, None)]
    record = doc["audit"]["records"][0]
    assert record["rule"]["name"] == arm.rule_calls[0][2] and record["undo"] == "azrdp revoke vm1 -g rg1"


def test_ctrl_c_while_the_nsg_rule_is_created_does_not_claim_nothing_changed(arm, healthy_rdp, audit_path):
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))

    def interrupted(method, key, request):   # Ctrl-C while ARM takes the PUT
        raise KeyboardInterrupt

    arm._security_rule = interrupted
    result = fix("--yes", "--allow-from", "203.0.113.7", "--host", healthy_rdp.host, audit=audit_path)

    assert result.exit_code == 130, result.output
    assert "nothing was changed" not in result.stdout
    assert "Interrupted (Ctrl-C): nothing was finished" in result.stdout
    assert "still in flight: the creation of NSG rule azrdp-allow-rdp-" in result.stdout
    assert audit_actions(audit_path) == [("nsg-rule", None, "requested"), ("interrupted", None, None)]


@pytest.mark.parametrize("source, message", [
    ("0.0.0.0/0", "would open Remote Desktop to the whole Internet"),
    ("Internet", "would open Remote Desktop to the whole Internet"),
    ("*", "would open Remote Desktop to the whole Internet"),
    ("::/0", "would open Remote Desktop to the whole Internet"),
    ("198.51.100.0/23", "too broad: azrdp allows one address or a range of at most /24 for IPv4"),
    ("2001:db8::/48", "too broad: azrdp allows one address or a range of at most /64 for IPv6"),
    ("AzureCloud", "is not an IP address or CIDR range"),
    ("me", "--allow-from me needs your public address"),
])
def test_broad_or_unknown_sources_are_refused_before_any_request(arm, source, message):
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))
    result = fix("--yes", "--allow-from", source)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert arm.calls == []


@pytest.mark.parametrize("timeout", ["0", "-1"])
def test_a_probe_timeout_that_is_not_positive_is_a_usage_error_before_any_request(arm, timeout):
    install(arm, Guest(healthy()))
    result = fix("--yes", "--probe-timeout", timeout)
    assert result.exit_code == 2 and "--probe-timeout" in result.stderr
    assert not isinstance(result.exception, ValueError) and arm.calls == []


def test_agent_not_ready_sends_no_run_command_and_names_the_offline_route(arm, rdp, audit_path):
    install(arm, Guest(healthy()), VmSpec(agent="Not Ready"))

    result = fix("--yes", "--host", rdp.host, audit=audit_path)

    assert result.exit_code == 1, result.output
    assert "Run Command cannot reach the guest (no repair was sent)" in result.stdout
    assert "--run-id win-GA-fix" in result.stdout
    assert "`azrdp rescue vm1 -g rg1` (about 10-30 minutes and a temporary rescue VM" in result.stdout
    assert arm.run_commands == [] and restarts(arm) == 0
    assert audit_actions(audit_path) == []


def test_deallocated_vm_is_not_started_without_start(arm, audit_path):
    install(arm, Guest(healthy()), VmSpec(power="deallocated"))

    result = fix("--yes", audit=audit_path)

    assert result.exit_code == 1
    assert "the VM is deallocated: azrdp starts a VM only when asked; pass --start" in result.stdout
    assert arm.power_calls == [] and arm.run_commands == []


def test_deallocated_vm_with_start_is_started_then_checked(arm, certs, audit_path):
    from tests.support.rdp_peers import free_port

    port = free_port()
    peers = []
    spec = install(arm, Guest(healthy()), VmSpec(power="deallocated"))

    def boot(action):  # RDP answers once the VM runs
        peers.append(SwappableRdp(certs[1], port=port))

    arm.on_power[spec.vm_id.lower()] = boot
    try:
        result = fix("--yes", "--start", "--host", f"127.0.0.1:{port}", audit=audit_path)
    finally:
        for peer in peers:
            peer.close()
    assert result.exit_code == 0, result.output
    assert arm.power_calls == [("start", "vm1")]
    assert run_commands(arm) == (0, 1) and restarts(arm) == 0
    assert audit_actions(audit_path)[:2] == [("start", None, "requested"), ("start", None, "done")]


def test_a_failed_restart_ends_in_exit_5_with_a_complete_audit(arm, rdp, certs, audit_path):
    guest = Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"})
    spec = install(arm, guest)
    arm.power_failures[("restart", spec.vm_id.lower())] = {
        "code": "InternalExecutionError", "message": "An internal execution error occurred. Please retry later."}

    result = fix("--yes", "-o", "json", "--host", rdp.host, audit=audit_path)

    assert result.exit_code == 5, result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "failed" and "InternalExecutionError" in doc["error"]["message"]
    assert run_commands(arm) == (0, 1) and restarts(arm) == 1
    assert audit_actions(audit_path) == SEED_AUDIT[:6] + [("restart", None, "failed"), ("failed", None, None)]


def test_ctrl_c_during_the_restart_says_what_may_be_in_flight(arm, rdp, audit_path):
    guest = Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"})
    spec = install(arm, guest)

    def interrupt(action):
        raise KeyboardInterrupt

    arm.on_power[spec.vm_id.lower()] = interrupt
    result = fix("--yes", "--host", rdp.host, audit=audit_path)

    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert "still in flight: a restart of the VM (ARM may still be restarting it)" in result.stdout
    assert "done: run-command sent; guest-step machinekeys-acl changed;" in result.stdout
    assert audit_actions(audit_path)[-2:] == [("restart", None, "requested"), ("interrupted", None, None)]


def test_dry_run_prints_the_plan_and_parameters_and_writes_nothing(arm, rdp, audit_path):
    install(arm, Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"}))

    result = fix("--dry-run", "--host", rdp.host, audit=audit_path)

    assert result.exit_code == 1, result.output
    assert "Run Command: repair.ps1 -Steps machinekeys-acl,cert,sessions -LogOffActive false -RunId azrdp-" \
        in result.stdout
    assert "-LogOffOnlyWhenFull true" in result.stdout
    assert "Verdict: dry_run: nothing was changed" in result.stdout and "dry run: dry run" not in result.stdout
    assert run_commands(arm) == (1, 0) and arm.power_calls == [] and arm.rule_calls == []
    assert all(call.method == "GET" or call.path.endswith("/runCommand") for call in arm.calls)
    assert not audit_path.exists()


def test_without_a_terminal_and_without_yes_nothing_is_sent(arm, audit_path):
    install(arm, Guest(healthy()))
    result = fix(audit=audit_path)
    assert result.exit_code == 2
    assert "no terminal to confirm the plan in, and no --yes" in result.stderr
    assert "add --yes to repair, or --dry-run" in result.stderr
    assert arm.calls == [] and not audit_path.exists()


class _Terminal(io.RawIOBase):
    """stdin as a terminal whose user presses Ctrl-C (or Ctrl-D: end of input) at the question."""

    def __init__(self, key):
        self.key = key

    def isatty(self):
        return True

    def readable(self):
        return True

    def readinto(self, buffer):
        if len(buffer) and self.key == "ctrl-c":
            raise KeyboardInterrupt
        return 0


@pytest.mark.parametrize("key, code, verdict", [("ctrl-c", 130, "interrupted"), ("ctrl-d", 1, "declined")])
def test_ctrl_c_or_end_of_input_at_the_question_changes_nothing_and_says_so(arm, rdp, audit_path, key, code, verdict):
    install(arm, Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"}))

    result = CliRunner().invoke(cli, ["fix", "vm1", "-g", "rg1", "--host", rdp.host, "--audit-log", str(audit_path)],
                                input=_Terminal(key))

    assert result.exit_code == code, result.output
    assert "Go ahead? [y/N]" in result.stderr and "Aborted!" not in result.output
    assert f"Verdict: {verdict}:" in result.stdout
    assert run_commands(arm) == (1, 0) and arm.power_calls == [] and arm.rule_calls == []
    assert audit_actions(audit_path) == ([("interrupted", None, None)] if key == "ctrl-c" else [])


def test_junit_has_one_testcase_per_check_before_and_after(arm, rdp, certs, tmp_path, audit_path):
    spec = install(arm, Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"}))
    restart_renews(arm, spec, rdp, certs)
    junit = tmp_path / "fix.xml"
    result = fix("--yes", "--host", rdp.host, "--junit-xml", str(junit), audit=audit_path)
    assert result.exit_code == 0
    xml = junit.read_text()
    assert '<testsuite name="before"' in xml and '<testsuite name="after"' in xml
    assert xml.count('name="rdp.cert"') == 2 and xml.count("<failure") == 1


def test_without_public_ip_rdp_is_verified_from_the_guest_side(arm, audit_path):
    guest = Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"})
    install(arm, guest, VmSpec(public_ip=None))

    result = fix("--yes", "-o", "json", audit=audit_path)

    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verification"]["method"] == "guest" and doc["verification"]["ok"] is True
    assert doc["verification"]["outside_check"].startswith("skipped: the VM has no public IP address")
    assert doc["plan"]["mode"] == "separate"            # no wire evidence: the guest is read first
    # read, repair, read again after the restart: one repair Run Command, one restart
    assert run_commands(arm) == (2, 1) and restarts(arm) == 1


def test_no_reboot_reports_the_fix_as_pending(arm, rdp, audit_path):
    install(arm, Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"}))

    result = fix("--yes", "--no-reboot", "--host", rdp.host, audit=audit_path)

    assert result.exit_code == 1, result.output
    assert "Pending: --no-reboot: machinekeys-acl takes full effect only after the VM restarts" in result.stdout
    # RDP still serves the old certificate, so the guest is read again to say what is left
    assert run_commands(arm) == (1, 1) and restarts(arm) == 0


class _Answers(io.RawIOBase):
    """stdin as a terminal whose user types ``answers`` (one line per question)."""

    def __init__(self, answers: str):
        self.data = answers.encode()

    def isatty(self):
        return True

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk, self.data = self.data[:len(buffer)], self.data[len(buffer):]
        buffer[:len(chunk)] = chunk
        return len(chunk)


def test_interactive_fix_shows_the_diagnosis_then_the_plan_once_with_its_effects_then_asks(arm, rdp, certs,
                                                                                             audit_path):
    guest = Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"})
    spec = install(arm, guest)
    restart_renews(arm, spec, rdp, certs)

    result = CliRunner().invoke(cli, ["fix", "vm1", "-g", "rg1", "--host", rdp.host, "--audit-log", str(audit_path)],
                                input=_Answers("y\n"))

    assert result.exit_code == 0, result.output
    err, out = result.stderr, result.stdout
    diagnosis, plan, question = err.index("Diagnosis of rg1/vm1:"), err.index("Plan ("), err.index("Go ahead? [y/N]")
    assert diagnosis < plan < question
    assert "FAIL rdp.cert" in err[diagnosis:plan] and "FAIL guest.cert" in err[diagnosis:plan]
    # the plan once: before the question, never again in the report
    assert (err + out).count("Plan (") == 1 and "Before:" not in out
    shown = err[plan:question]
    assert "  3. sessions           2 of 2 admin seats are held by disconnected sessions" in shown
    assert ("users: only if no seat is free, logs off sessions that were already disconnected when the repair "
            "started, longest idle first, as many as free one seat (their unsaved work is lost); the console session, "
            "and sessions the cert step's restart disconnects, are kept; reboot: no; undo: none") in shown
    assert "users: restarts Remote Desktop Services only if RDP's certificate must change: connected RDP users " \
        "are then disconnected" in shown
    assert "undo: move the certificates back from Cert:\\LocalMachine\\azrdp-backup" in shown
    assert ("users: none; reboot: yes, when it changes something; undo: icacls C:\\ProgramData\\Microsoft\\Crypto\\RSA "
            "/restore %ProgramData%\\azrdp\\backup\\<UTC time>\\machinekeys.acl") in shown
    assert "4. reboot" in shown and "users: everyone signed in is disconnected while Windows restarts" in shown
    assert shown.count("users: ") == 4
    assert "Verdict: verified: RDP answers on" in out


def test_interactive_fix_asks_about_a_start_after_showing_why(arm, audit_path):
    install(arm, Guest(healthy()), VmSpec(power="deallocated"))

    result = CliRunner().invoke(cli, ["fix", "vm1", "-g", "rg1", "--audit-log", str(audit_path)],
                                input=_Answers("n\n"))

    assert result.exit_code == 1, result.output
    err = result.stderr
    assert err.index("Diagnosis of rg1/vm1:") < err.index("1. start") < err.index("Go ahead? [y/N]")
    assert "undo: `az vm deallocate -g rg1 -n vm1`" in err
    assert "Verdict: declined: the plan was not confirmed, so nothing was changed." in result.stdout
    assert arm.power_calls == []


@pytest.mark.parametrize("args, message", [
    (["--yes", "--reboot", "--no-reboot"], "--reboot and --no-reboot contradict each other."),
    (["--dry-run", "--guest-first"], "--guest-first only changes a --yes run"),
    (["--yes", "--host", ""], "--host is empty."),
    (["--yes", "--host", "  "], "--host is empty."),
    (["--yes", "--subscription", ""], "--subscription is empty."),
    (["--yes", "--source-ip", ""], "--source-ip is empty."),
    (["--yes", "--host", "10.0.0.4:99999"], "--host: "),
    (["--yes", "--host", "10.0.0.4:rdp"], "--host: "),
    (["--yes", "--step", "cert", "--skip", "cert"], "--step and --skip both name cert."),
])
def test_conflicting_empty_or_malformed_options_are_refused_before_any_request(arm, audit_path, args, message):
    install(arm, Guest(healthy()))
    result = fix(*args, audit=audit_path)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.output
    assert arm.calls == [] and not audit_path.exists()


@pytest.mark.parametrize("command, args, message", [
    ("diagnose", ["vm1", "-g", "rg1", "--host", "127.0.0.1:0"], "--host: "),
    ("diagnose", ["vm1", "-g", "rg1", "--host", "127.0.0.1", "--no-probe"], "--no-probe says not to probe"),
    ("diagnose", ["vm1", "-g", "rg1", "--subscription", ""], "--subscription is empty."),
    ("check", ["vm1", "-g", "rg1", "--host", "[::1"], "--host: "),
    ("sweep", ["--subscription", ""], "--subscription is empty."),
    ("revoke", ["vm1", "-g", "", ], "--resource-group is empty."),
])
def test_other_commands_refuse_bad_options_before_any_request(arm, command, args, message):
    install(arm, Guest(healthy()))
    result = CliRunner().invoke(cli, [command, *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert arm.calls == []
