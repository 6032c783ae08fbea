"""The fix job as a library, on a ManualClock: waits that never come true, Ctrl-C in the wait,
how soon a returning RDP is noticed, and the power operations' retry rules. No real sleeps."""

from __future__ import annotations

import json

import pytest

from azrdp.audit import AuditLog
from azrdp.azure.lro import PowerRequestUncertain
from azrdp.azure.power import restart_vm
from azrdp.errors import EXIT_AZURE
from azrdp.rdp import ProbeResult, probe
from azrdp.repair import FixOptions, fix
from azrdp.target import Target
from tests.support.fix_support import Guest, SwappableRdp, install, restarts, run_commands, seed_guest

VM = Target("vm1", "rg1")


def seed(arm, certs):
    rdp = SwappableRdp(certs[0])
    spec = install(arm, Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"}))
    return rdp, spec


def test_rdp_never_returning_ends_in_exit_1_after_the_timeout(arm, session, clock, certs, audit_path):
    rdp, spec = seed(arm, certs)
    arm.on_power[spec.vm_id.lower()] = lambda action: rdp.close()   # nothing listens after the restart
    audit = AuditLog(audit_path, clock=clock)

    result = fix(session, VM, FixOptions(host=rdp.host, fused=True, wait_timeout=120), audit=audit)

    assert result.exit_code == 1 and result.verdict == "not_verified"
    assert result.verification["outcome"] == "refused" and result.verification["attempts"] > 50
    assert 118 <= result.timings["rdp"] <= 120
    assert max(clock.sleeps) <= 2.0                     # polled at most 2 s apart
    assert any("RDP did not answer within the wait (refused)" in s for s in result.next_steps)
    # the guest is read again to say what is left (one read-only Run Command after the repair)
    assert run_commands(arm) == (1, 1) and restarts(arm) == 1
    assert [r["action"] for r in audit.records][-1] == "result"


def test_ctrl_c_in_the_wait_stops_cleanly_and_records_it(arm, session, clock, certs, audit_path):
    rdp, spec = seed(arm, certs)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    try:
        result = fix(session, VM, FixOptions(host=rdp.host, fused=True), audit=AuditLog(audit_path, clock=clock),
                     prober=interrupted)
    finally:
        rdp.close()
    assert result.exit_code == 130 and result.verdict == "interrupted"
    assert result.interrupted["in_flight"] is None          # the restart had finished
    assert "restart done" in result.interrupted["done"]
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    assert [r["action"] for r in records][-3:] == ["restart", "restart", "interrupted"]
    assert records[-1]["in_flight"] is None and run_commands(arm) == (0, 1)


def test_a_returning_rdp_is_noticed_within_2_seconds(arm, session, clock, certs, audit_path):
    rdp, spec = seed(arm, certs)
    back_at: list[float] = []
    arm.on_power[spec.vm_id.lower()] = lambda action: (rdp.serve(certs[1]), back_at.append(clock.monotonic() + 47.3))

    def booting(host, port, *, timeout, clock):
        if clock.monotonic() < back_at[0]:
            clock.sleep(min(timeout, 0.05))                 # a SYN that nothing answers yet
            return ProbeResult(host, port, "refused")
        return probe(host, port, timeout=timeout, clock=clock)

    try:
        result = fix(session, VM, FixOptions(host=rdp.host, fused=True), audit=AuditLog(audit_path, clock=clock),
                     prober=booting)
    finally:
        rdp.close()
    assert result.exit_code == 0, result.next_steps
    noticed = result.timings["rdp"]
    assert 47.3 <= noticed <= 47.3 + 2.0 + 0.05


def test_throttled_restart_is_retried_after_retry_after_on_the_clock(arm, session, clock):
    spec = install(arm, Guest())
    arm.fail(spec.vm_id + "/restart", 429, "TooManyRequests", "Too many requests", method="POST",
             headers={"Retry-After": "7"})
    outcome = restart_vm(session.compute, "rg1", "vm1", clock=clock, polling_interval=0)
    posts = [c for c in arm.calls if c.method == "POST" and c.path.endswith("/restart")]
    assert len(posts) == 2 and outcome.attempts == 2 and outcome.throttle_waits == (7.0,)
    assert 7.0 in clock.sleeps and arm.power_calls == [("restart", "vm1")]


def test_a_restart_answered_500_is_never_resent(arm, session, clock):
    spec = install(arm, Guest())
    arm.fail(spec.vm_id + "/restart", 500, "InternalServerError", "boom", method="POST", times=5)
    with pytest.raises(PowerRequestUncertain, match="may or may not have been accepted") as caught:
        restart_vm(session.compute, "rg1", "vm1", clock=clock, polling_interval=0)
    assert caught.value.exit_code == EXIT_AZURE
    assert len([c for c in arm.calls if c.method == "POST"]) == 1   # the SDK's POST retries are off


def test_plan_refuses_a_step_both_forced_and_skipped(arm, session, clock, audit_path):
    from azrdp.errors import UsageError

    install(arm, Guest())
    with pytest.raises(UsageError, match="--step and --skip both name cert"):
        fix(session, VM, FixOptions(force_steps=("cert",), skip_steps=("cert",)), audit=AuditLog(audit_path))
    assert arm.run_commands == [] and not audit_path.exists()


def test_backups_name_the_run_folder_for_every_step():
    from azrdp.repair_result import backups_of

    acl = {"name": "machinekeys-acl", "info": {"backup": "C:/ProgramData/azrdp/backup/20261121T201751Z"}}
    cert = {"name": "cert", "info": {"removed_total": 1, "cleared_binding": True}}
    assert backups_of(acl, [acl, cert], "azrdp-1") == {"folder": "C:/ProgramData/azrdp/backup/20261121T201751Z"}
    # Certificates are moved into the store azrdp-backup, not exported and deleted (review #4: a
    # .cer loses the key link); the run folder's undo.txt says how to move them back.
    assert backups_of(cert, [acl, cert], "azrdp-1") == {
        "certificates": "Cert:/LocalMachine/azrdp-backup (undo: C:/ProgramData/azrdp/backup/20261121T201751Z/undo.txt)",
        "binding": "C:/ProgramData/azrdp/backup/20261121T201751Z/SSLCertificateSHA1Hash.txt"}
    # cert alone: no step reported the folder, so it is named by the run id written in it
    assert backups_of(cert, [cert], "azrdp-1")["certificates"] == \
        "Cert:/LocalMachine/azrdp-backup (undo: undo.txt in %ProgramData%/azrdp/backup/<UTC time>/ (its run-id.txt says azrdp-1))"
    assert backups_of({"name": "cert", "info": {"removed_total": 0}}, [], "azrdp-1") == {}


def test_reboot_on_a_deallocated_vm_without_start_restarts_nothing(arm, session, clock, audit_path):
    # --reboot asks for a restart after the repair; a VM that does not run gets neither, and the
    # plan (no steps, nothing confirmed) says to pass --start
    from tests.support.fake_arm import VmSpec

    install(arm, Guest(), VmSpec(power="deallocated"))
    asked = []
    audit = AuditLog(audit_path, clock=clock)

    result = fix(session, VM, FixOptions(reboot=True, fused=True), audit=audit,
                 confirm=lambda plan: asked.append(plan) or True)

    assert arm.power_calls == [] and restarts(arm) == 0 and asked == []
    assert result.exit_code == 1 and result.counts["restarts"] == 0
    assert "pass --start" in result.plan.blockers[0]
    assert audit.records == [] and not audit_path.exists()


def test_a_repair_run_command_answered_503_is_sent_once_and_the_audit_says_it_may_have_run(
        arm, session, clock, certs, audit_path):
    rdp, spec = seed(arm, certs)
    arm.fail(spec.vm_id + "/runCommand", 503, "ServiceUnavailable", "The service is unavailable.", method="POST",
             headers={"Retry-After": "1"}, times=5)
    audit = AuditLog(audit_path, clock=clock)
    try:
        result = fix(session, VM, FixOptions(host=rdp.host, fused=True), audit=audit)
    finally:
        rdp.close()
    assert result.exit_code == EXIT_AZURE and result.verdict == "failed"
    assert len([c for c in arm.calls if c.method == "POST" and c.path.endswith("/runCommand")]) == 1
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    sent, uncertain = [r for r in records if r["action"] == "run-command"]
    assert sent["status"] == "sent" and uncertain["status"] == "may-have-run"
    assert "the command may have run" in uncertain["error"] and "the command may have run" in result.summary()
    assert restarts(arm) == 0                      # nothing more is decided on a guess


def test_a_backup_root_someone_else_made_is_reported_with_what_to_do():
    # Desk review finding 22: a C:\ProgramData\azrdp made by another account (or a junction) failed
    # every backing-up step for good ("nothing was changed") and said nothing of a way out.
    from types import SimpleNamespace

    from azrdp.repair_result import RepairResult, next_steps

    target = Target(name="vm-web-01", resource_group="rg-web")
    step = {"name": "machinekeys-acl", "status": "failed", "error": "backup folder has a foreign owner; nothing was changed"}
    result = RepairResult(target=target, verdict="not_verified",
                          repair=SimpleNamespace(steps=[step], result={"termservice": "Running"}))
    lines = next_steps(result, target)
    assert "guest step machinekeys-acl failed: backup folder has a foreign owner; nothing was changed" in lines
    advice = next(line for line in lines if line.startswith("C:\\ProgramData\\azrdp was made by someone else"))
    assert "move C:\\ProgramData\\azrdp C:\\ProgramData\\azrdp.untrusted" in advice
    assert advice.endswith("`azrdp fix vm-web-01 -g rg-web` again")
    step["error"] = "icacls /save failed (exit 5); nothing was changed"   # another failure: no such advice
    assert not any("made by someone else" in line for line in next_steps(result, target))


@pytest.mark.parametrize("name, error, advice", [
    ("cert", "held back: rdsh host; restarts only with MultiSession", "`azrdp fix vm-web-01 -g rg-web --step cert`"),
    ("sessions", "held back: avd host; logs off only with MultiSession", "`azrdp fix vm-web-01 -g rg-web --step sessions`"),
    ("sessions", "held back: azrdp disconnected 2 in 24 h; LogOffActive", "azrdp does not log them off"),
])
def test_a_session_host_or_recent_disconnect_hold_back_says_what_to_do(name, error, advice):
    # RECHECK #8 and new H-1: the payload's hold-backs name payload parameters (MultiSession,
    # LogOffActive) the caller never sees; next_steps says what to do from the command line.
    from types import SimpleNamespace

    from azrdp.repair_result import RepairResult, next_steps

    target = Target(name="vm-web-01", resource_group="rg-web")
    step = {"name": name, "status": "skipped", "error": error}
    result = RepairResult(target=target, verdict="not_verified",
                          repair=SimpleNamespace(steps=[step], result={"termservice": "Running"}))
    assert any(advice in line for line in next_steps(result, target))
