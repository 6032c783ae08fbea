"""Audit first: every output path is checked before anything is read from Azure, an intent record is
on disk before each change is sent, and a failed audit write after a change never hides the change.

Through the real CLI (CliRunner) and the real SDK clients against the ARM stand-in; the full disk is
a real small tmpfs (root) and /dev/full."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import uuid

import pytest
from click.testing import CliRunner

from azrdp.cli import cli
from tests.support.fake_arm import VmSpec
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
from tests.support.payload_samples import healthy

pytestmark = pytest.mark.usefixtures("cli_env")


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


@contextlib.contextmanager
def small_tmpfs(folder, size: str = "512k", *, read_only: bool = False):
    """A real tmpfs of ``size`` at ``folder`` (needs root; skipped elsewhere), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "azrdp-test", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder, leave: int = 0) -> None:
    """Fill the file system of ``folder`` until at most ``leave`` bytes are free."""
    with open(folder / f"filler-{uuid.uuid4().hex}", "wb") as handle:
        chunk = b"\0" * 4096
        while True:
            info = os.statvfs(folder)
            if info.f_bavail * info.f_frsize <= leave:
                break
            try:
                handle.write(chunk)
                handle.flush()
            except OSError:
                break


@pytest.fixture
def rdp(certs):
    peer = SwappableRdp(certs[0])
    yield peer
    peer.close()


def nothing_read(arm) -> bool:
    return arm.calls == [] and arm.run_commands == [] and arm.rule_calls == []


# -- refused up front: nothing read, nothing changed ---------------------------------------------

@pytest.mark.parametrize("command", [
    ("fix", "vm1", "-g", "rg1", "--yes", "--allow-from", "203.0.113.7"),
    ("revoke", "vm1", "-g", "rg1"),
])
def test_dev_full_as_the_audit_log_is_refused_before_azure_is_read(arm, command):
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))
    result = run(*command, "--audit-log", "/dev/full")
    assert result.exit_code == 2, result.output
    assert "cannot write --audit-log '/dev/full': it is a device" in result.stderr
    assert "Traceback" not in result.output and nothing_read(arm)


def test_a_symlink_or_a_fifo_as_the_audit_log_is_refused(arm, tmp_path):
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))
    victim = tmp_path / "authorized_keys"
    victim.write_text("ssh-ed25519 AAAA\n")
    link = tmp_path / "audit.jsonl"
    link.symlink_to(victim)
    result = run("fix", "vm1", "-g", "rg1", "--yes", "--audit-log", str(link))
    assert result.exit_code == 2 and "it is a symbolic link" in result.stderr
    assert victim.read_text() == "ssh-ed25519 AAAA\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = run("fix", "vm1", "-g", "rg1", "--yes", "--audit-log", str(fifo))   # must not block
    assert result.exit_code == 2 and "it is a FIFO" in result.stderr
    assert nothing_read(arm)


@pytest.mark.parametrize("command, option", [
    (("fix", "vm1", "-g", "rg1", "--yes"), "--junit-xml"),
    (("check", "vm1", "-g", "rg1", "--host", "127.0.0.1:9"), "--junit-xml"),
    (("sweep",), "--junit-xml"),
    (("diagnose", "vm1", "-g", "rg1"), "--screenshot"),
])
def test_report_paths_that_cannot_be_written_are_refused_before_the_work(arm, tmp_path, command, option):
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))
    missing = tmp_path / "no-such-folder" / "out.xml"
    result = run(*command, option, str(missing), "--audit-log", str(tmp_path / "a.jsonl")) if command[0] == "fix" \
        else run(*command, option, str(missing))
    assert result.exit_code == 2, result.output
    assert f"cannot write {option}" in result.stderr and "does not exist" in result.stderr
    link = tmp_path / "link.xml"
    link.symlink_to(tmp_path / "elsewhere.xml")
    result = run(*command, option, str(link))
    assert result.exit_code == 2 and "symbolic link" in result.stderr
    assert not (tmp_path / "elsewhere.xml").exists() and nothing_read(arm)


def test_the_default_audit_log_under_a_read_only_home_is_refused_up_front(arm, tmp_path):
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))
    home = tmp_path / "home"
    with small_tmpfs(home, read_only=True):
        result = run("fix", "vm1", "-g", "rg1", "--yes", "--allow-from", "203.0.113.7",
                     env={"HOME": str(home), "XDG_DATA_HOME": ""})
    assert result.exit_code == 2, result.output
    assert "cannot write the audit log" in result.stderr and "Read-only file system" in result.stderr
    assert nothing_read(arm)


def test_a_full_disk_is_refused_before_anything_is_read(arm, tmp_path):
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))
    with small_tmpfs(tmp_path / "disk") as disk:
        fill(disk)
        result = run("fix", "vm1", "-g", "rg1", "--yes", "--allow-from", "203.0.113.7",
                     "--audit-log", str(disk / "audit.jsonl"))
    assert result.exit_code == 2, result.output
    assert "bytes free" in result.stderr and nothing_read(arm)


# -- the record on disk ------------------------------------------------------------------------------

def test_the_audit_file_is_private_and_each_intent_is_on_disk_before_its_change(arm, rdp, certs, tmp_path):
    guest = Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"})
    spec = install(arm, guest)
    audit = tmp_path / "logs" / "audit.jsonl"
    seen = {}

    def answer(body):   # what the disk held while the repair Run Command was being sent
        seen["run"] = audit_actions(audit)
        return guest.answer(body)

    def restarted(action):
        seen["restart"] = audit_actions(audit)
        rdp.serve(certs[1])

    arm.guest_answers[spec.vm_id.lower()] = [answer] * 10
    arm.on_power[spec.vm_id.lower()] = restarted
    result = run("fix", "vm1", "-g", "rg1", "--yes", "--host", rdp.host, "--audit-log", str(audit))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(audit).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(audit.parent).st_mode) == 0o700
    assert seen["run"] == [("run-command", None, "sent")]
    assert seen["restart"][-1] == ("restart", None, "requested")


def test_the_disk_filling_after_the_repair_never_hides_the_change(arm, rdp, certs, tmp_path):
    """The repair Run Command changed the guest, then the disk is full: the restart the ACL step
    needs is not sent unrecorded; the report still lists every guest change with its backup,
    says the audit failed and exits non-zero; the audit file holds whole lines only."""
    guest = Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"})
    spec = install(arm, guest)
    with small_tmpfs(tmp_path / "disk", size="1m") as disk:
        audit = disk / "audit.jsonl"

        def answer(body):   # the disk fills while the guest is repaired; another run's record ends a page
            line = guest.answer(body)
            fill(disk)
            slack = -audit.stat().st_size % 4096
            with open(audit, "a") as other:   # tmpfs allocates whole pages: use up the audit file's last one
                other.write(json.dumps({"action": "note", "by": "another azrdp run", "pad": "x" * max(0, slack - 60)})
                            + "\n")
            return line

        arm.guest_answers[spec.vm_id.lower()] = [answer] * 10
        result = run("fix", "vm1", "-g", "rg1", "--yes", "-o", "json", "--host", rdp.host,
                     "--audit-log", str(audit))
        lines = audit.read_bytes().splitlines(keepends=True)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "failed" and "not sending the restart" in doc["error"]["message"]
    assert doc["audit"]["error"] == "No space left on device"
    changed = [r["step"] for r in doc["audit"]["records"] if r["action"] == "guest-step"]
    assert changed == ["machinekeys-acl", "cert", "sessions"]
    assert doc["audit"]["records"][1]["backups"] == {"folder": "C:/ProgramData/azrdp/backup/20260101T000002Z"}
    assert run_commands(arm) == (0, 1) and restarts(arm) == 0
    assert all(line.endswith(b"\n") and json.loads(line) for line in lines)     # no half line
    assert json.loads(lines[0])["status"] == "sent" and json.loads(lines[-1])["action"] == "note"
    assert all(r["audit_write_failed"] == "No space left on device" for r in doc["audit"]["records"][1:])


def test_an_nsg_rule_is_never_created_without_its_intent_on_disk(arm, healthy_rdp_host, tmp_path):
    guest = Guest(healthy())
    spec = install(arm, guest, VmSpec(nic_nsg_rules=[DENY_RDP]))
    with small_tmpfs(tmp_path / "disk", size="1m") as disk:
        audit = disk / "audit.jsonl"

        def answer(body):   # the disk fills while azrdp reads the guest, before any change
            fill(disk)
            return guest.answer(body)

        arm.guest_answers[spec.vm_id.lower()] = [answer] * 10
        result = run("fix", "vm1", "-g", "rg1", "--yes", "--allow-from", "203.0.113.7", "--host", healthy_rdp_host,
                     "--audit-log", str(audit))
        assert audit.read_bytes() == b""
    assert result.exit_code == 1, result.output
    assert "not sending the nsg-rule" in result.stderr and "No space left on device" in result.stderr
    assert arm.rule_calls == [] and run_commands(arm) == (1, 0) and "Traceback" not in result.output


def test_a_junit_file_that_fails_at_the_end_still_shows_the_result(arm, rdp, certs, tmp_path):
    guest = Guest(seed_guest(), broken={"machinekeys-acl", "cert", "sessions"})
    spec = install(arm, guest)
    arm.on_power[spec.vm_id.lower()] = lambda action: rdp.serve(certs[1])
    with small_tmpfs(tmp_path / "disk", size="1m") as disk:
        def answer(body):
            line = guest.answer(body)
            fill(disk)
            return line

        arm.guest_answers[spec.vm_id.lower()] = [answer] * 10
        result = run("fix", "vm1", "-g", "rg1", "--yes", "--host", rdp.host, "--junit-xml", str(disk / "r.xml"),
                     "--audit-log", str(tmp_path / "audit.jsonl"))
    assert result.exit_code == 1, result.output
    assert "could not write --junit-xml" in result.stderr and "Verdict: verified" in result.stdout
    assert restarts(arm) == 1


@pytest.fixture
def healthy_rdp_host(certs):
    peer = SwappableRdp(certs[1])
    yield peer.host
    peer.close()
