"""`azrdp rescue` end to end against the emulator: the real SDK clients over HTTP, the real wire
probe on the VM's loopback listener, the simulated Windows on the disks. Waits go to a ManualClock
(the emulator runs 5000x faster than Azure, so its operations finish within milliseconds)."""

from __future__ import annotations

import json

import pytest
from azure.core.pipeline.transport import RequestsTransport

from azrdp.audit import AuditLog, read_audit
from azrdp.clock import Interrupted
from azrdp.emulator import Emulator
from azrdp.rescue import PHASES, RescueRefused, last_rescue, rescue, resume, undo
from tests.support.rescue_support import FAST, TARGET, StopAt, options, session_for


@pytest.fixture
def started():
    emulators: list[Emulator] = []

    def start(scenario: str) -> Emulator:
        emu = Emulator.start(scenario, speed=FAST, seed=3)
        emulators.append(emu)
        return emu

    yield start
    for emu in emulators:
        emu.stop()


def _os_disk_name(emu: Emulator) -> str:
    with emu.state.lock:
        return emu.vm().os_disk_name


@pytest.mark.parametrize("scenario", ["agent-not-ready", "no-boot-rdp-disabled"])
def test_rescue_repairs_the_disk_offline_and_rdp_answers(started, tmp_path, scenario):
    emu = started(scenario)
    original = _os_disk_name(emu)
    with emu.state.lock:
        before = emu.guest()
    audit = AuditLog(tmp_path / "audit.jsonl")

    result = rescue(session_for(emu), TARGET, options(emu), audit=audit)

    assert result.verdict == "verified" and result.exit_code == 0, result.to_dict()["error"]
    assert result.before.check("vm.agent").status.value == "fail"
    assert result.after.check("vm.agent").status.value == "pass"
    assert result.verification["ok"] and result.verification["agent_ready"]
    assert f"original OS disk {original} is kept" in result.summary()
    with emu.state.lock:
        vm = emu.vm()
        assert vm.os_disk_name == result.state["copy"] and emu.guest() is not before     # runs the repaired copy
        assert emu.guest().registry["fDenyTSConnections"] == 0 and emu.guest().agent_ready
        assert before.registry["fDenyTSConnections"] == (1 if scenario == "no-boot-rdp-disabled" else 0)
        rg = emu.state.resource_group(emu.subscription_id, "rg-azrdp-demo")
        assert rg.disks[original.lower()].managed_by is None                                 # kept, unattached
        assert result.state["snapshot"].lower() in rg.snapshots                                # kept
        assert result.state["group"].lower() not in emu.state.subscription(emu.subscription_id).resource_groups
    kinds = {(r["kind"], r["name"]) for r in result.resources()}
    assert ("disk", original) in kinds and ("snapshot", result.state["snapshot"]) in kinds
    assert all(r["remove"] for r in result.resources())
    records = read_audit(tmp_path / "audit.jsonl")
    assert [r["phase"] for r in records if r["status"] == "done"] == ["plan", *PHASES] or \
        [r["phase"] for r in records if r["status"] == "done" and r["phase"] != "plan"] == list(PHASES)
    assert "password" not in json.dumps(records).lower()
    steps = {s["name"]: s for s in result.repair["steps"]}
    if scenario == "no-boot-rdp-disabled":
        assert steps["rdp-enable"]["status"] == "changed" and steps["services"]["status"] == "changed"
        assert set(steps["services"]["before"]["disabled"]) == {"TermService", "WindowsAzureGuestAgent"}
    assert result.repair["hives_unloaded"] is True
    # ONE offline repair on the rescue VM; then the re-diagnosis reads the repaired VM's guest
    assert [(r["vm"], r["payload"]) for r in emu.state.run_commands] == [("azrdp-rescue", "rescue"),
                                                                        ("vm-web-01", "diagnose")]


def test_a_vm_without_public_ip_is_verified_from_the_guest_like_fix_does(started, tmp_path):
    """The verify phase is azrdp.verify's (the one fix uses): with no address to probe it does not
    end 'not_verified' unseen (as rescue's own loop did) but waits for the agent after the start
    and judges the guest side (listener up, certificate valid), saying the outside check was skipped."""
    emu = started("no-boot-rdp-disabled")

    def drop_public_ip(backend) -> None:
        for vm in backend.all_vms():
            for nic_id in vm.nic_ids:
                for config in backend.by_id(nic_id).ip_configurations:
                    config.public_ip_id = None

    emu.update(drop_public_ip)

    result = rescue(session_for(emu), TARGET, options(emu), audit=AuditLog(tmp_path / "audit.jsonl"))

    v = result.verification
    assert result.verdict == "verified" and result.exit_code == 0, (v, result.to_dict()["error"])
    assert v["method"] == "guest" and v["guest_ok"] is True and "no public IP" in v["outside_check"]
    assert v["agent_ready"] is True and result.after.guest is not None
    assert result.after.check("guest.listener").status.value == "pass"
    assert "verify" in result.state["done"] and result.state["verification"] == v


def test_undo_swaps_the_original_disk_back(started, tmp_path):
    emu = started("no-boot-rdp-disabled")
    original = _os_disk_name(emu)
    path = tmp_path / "audit.jsonl"
    done = rescue(session_for(emu), TARGET, options(emu), audit=AuditLog(path))
    assert done.verdict == "verified"

    result = undo(session_for(emu), TARGET, options(emu), audit=AuditLog(path), records=read_audit(path))

    assert result.verdict == "undone" and result.exit_code == 0
    assert _os_disk_name(emu) == original
    with emu.state.lock:
        assert emu.guest().registry["fDenyTSConnections"] == 1       # the original disk, as it was
        rg = emu.state.resource_group(emu.subscription_id, "rg-azrdp-demo")
        assert rg.disks[done.state["copy"].lower()].managed_by is None   # the copy is kept, named
    assert any(r["name"] == done.state["copy"] and "az disk delete" in r["remove"] for r in result.resources())
    with pytest.raises(Exception, match="already undone"):
        undo(session_for(emu), TARGET, options(emu), audit=AuditLog(path), records=read_audit(path))


def test_dry_run_and_a_healthy_agent_change_nothing(started, tmp_path):
    emu = started("agent-not-ready")
    dry = rescue(session_for(emu), TARGET, options(emu, dry_run=True), audit=AuditLog(None))
    assert dry.verdict == "dry_run" and dry.exit_code == 0 and dry.plan.steps[0]["phase"] == "snapshot"
    assert dry.plan.why and "Run Command cannot reach" in dry.plan.why[0]
    declined = rescue(session_for(emu), TARGET, options(emu), audit=AuditLog(None), confirm=lambda plan: False)
    assert declined.verdict == "declined"
    healthy = started("healthy")
    with pytest.raises(RescueRefused, match="azrdp fix"):
        rescue(session_for(healthy), TARGET, options(healthy), audit=AuditLog(None))
    for e in (emu, healthy):
        assert not [c for c in e.calls if c.method in ("PUT", "PATCH", "DELETE") or c.operation in
                    ("VirtualMachines_PowerOff", "VirtualMachines_RunCommand")]


def test_an_encrypted_os_disk_is_refused_up_front(started):
    emu = started("agent-not-ready")

    def encrypt(backend):
        disk = backend.by_id(backend.all_vms()[0].os_disk_id)
        disk.encryption_settings = {"enabled": True, "encryptionSettingsVersion": "1.1"}
    emu.update(encrypt)
    with pytest.raises(RescueRefused, match="Azure Disk Encryption"):
        rescue(session_for(emu), TARGET, options(emu), audit=AuditLog(None))
    assert not [c for c in emu.calls if c.method in ("PUT", "PATCH", "DELETE")]


def test_a_zonal_vm_gets_its_disk_copy_in_its_zone(started, tmp_path):
    emu = started("agent-not-ready")

    def zonal(backend):
        vm = backend.all_vms()[0]
        vm.zones = ["3"]
        backend.by_id(vm.os_disk_id).zones = ["3"]
    emu.update(zonal)
    result = rescue(session_for(emu), TARGET, options(emu, keep_rescue=True), audit=AuditLog(None))
    assert result.verdict == "verified"
    with emu.state.lock:
        assert emu.state.by_id(result.state["copy_id"]).zones == ["3"]
        assert emu.vm("azrdp-rescue").zones == ["3"]            # kept with --keep-rescue
    assert any(r["kind"] == "resourceGroup" and "az group delete" in r["remove"] for r in result.resources())


@pytest.mark.parametrize("phase", PHASES)
def test_an_interruption_at_any_phase_leaves_a_record_that_resume_finishes(started, tmp_path, phase):
    emu = started("no-boot-rdp-disabled")
    original = _os_disk_name(emu)
    path = tmp_path / "audit.jsonl"
    stop = StopAt(phase)

    first = rescue(session_for(emu), TARGET, options(emu), audit=AuditLog(path), progress=stop)

    assert stop.fired and first.verdict == "interrupted" and first.exit_code == 130
    records = read_audit(path)
    last = records[-1]
    assert last["phase"] == "interrupted" and "--resume" in last["resume"] and "--undo" in last["undo"]
    assert last["state"]["done"] == list(PHASES[:PHASES.index(phase)])
    state = last_rescue(records, TARGET)
    assert state["rescue_id"] == first.state["rescue_id"]

    second = resume(session_for(emu), TARGET, options(emu), audit=AuditLog(path), records=records)

    assert second.verdict == "verified", second.to_dict()["error"]
    with emu.state.lock:
        assert emu.vm().os_disk_name == first.state["copy"] and emu.guest().registry["fDenyTSConnections"] == 0
        rg = emu.state.resource_group(emu.subscription_id, "rg-azrdp-demo")
        assert rg.disks[original.lower()].managed_by is None
    assert emu.count("VirtualMachines_PowerOff") <= 2


class _CtrlCAfterSend(RequestsTransport):
    """The HTTP transport of the job's session: once ``phase`` is announced (it is also the progress
    sink), the first change it sends (PUT, PATCH, POST, DELETE) reaches ARM and is acted on, and then
    Ctrl-C arrives before azrdp reads the answer (the real clock's sleep raises the same Interrupted
    in any thread): the phase may or may not have happened, and the record must say so."""

    def __init__(self, phase: str):
        super().__init__()
        self.word = StopAt.WORDS[phase]
        self.armed = self.fired = False
        self.sent: str | None = None

    def send(self, request, **kwargs):
        response = super().send(request, **kwargs)
        if self.armed and not self.fired and request.method in ("PUT", "PATCH", "POST", "DELETE"):
            self.fired, self.sent = True, f"{request.method} {request.url.split('?')[0]}"
            raise Interrupted("SIGINT")
        return response

    def info(self, text: str) -> None:
        self.armed = self.armed or self.word in text

    def status(self, text: str) -> None:
        pass

    def done(self) -> None:
        pass


IN_FLIGHT = [p for p in PHASES if p != "verify"]      # verify sends no change of its own


def _interrupted_in_flight(emu, path, phase):
    transport = _CtrlCAfterSend(phase)
    first = rescue(session_for(emu, transport=transport), TARGET, options(emu), audit=AuditLog(path),
                   progress=transport)
    assert transport.fired and first.verdict == "interrupted" and first.exit_code == 130, transport.sent
    last = read_audit(path)[-1]
    assert last["phase"] == "interrupted" and last["in_flight"] == phase and phase not in last["state"]["done"]
    assert last["state"]["interrupted_in"] == phase and "--resume" in last["resume"] and "--undo" in last["undo"]
    return first


def _no_rescue_group(emu) -> bool:
    with emu.state.lock:
        return not any(name.startswith("azrdp-rescue-") for name in emu.state.subscription(emu.subscription_id).resource_groups)


@pytest.mark.parametrize("phase", IN_FLIGHT)
def test_an_interruption_after_a_phase_sent_its_change_is_resumed(started, tmp_path, phase):
    """Ctrl-C after the phase's request reached ARM (acted on, its answer never read): the record
    names the phase as in flight, and --resume runs it again (each phase is safe to repeat: a PUT of
    what exists, a detach of what is detached, a power-off of a stopped VM) through to 'verified'."""
    emu = started("no-boot-rdp-disabled")
    path = tmp_path / "audit.jsonl"
    first = _interrupted_in_flight(emu, path, phase)

    second = resume(session_for(emu), TARGET, options(emu), audit=AuditLog(path), records=read_audit(path))

    assert second.verdict == "verified", second.to_dict()["error"]
    with emu.state.lock:
        assert emu.vm().os_disk_name == first.state["copy"] and emu.guest().registry["fDenyTSConnections"] == 0
        rg = emu.state.resource_group(emu.subscription_id, "rg-azrdp-demo")
        assert sorted(rg.snapshots) == [first.state["snapshot"].lower()]           # one snapshot, kept
    assert _no_rescue_group(emu)


@pytest.mark.parametrize("phase", ["network", "rescue-vm", "detach", "stop", "swap", "start", "cleanup"])
def test_an_interruption_after_a_phase_sent_its_change_is_undone(started, tmp_path, phase):
    """The same interruption, reversed: --undo puts the original OS disk back (the swap may have
    happened unrecorded), leaves the VM running and deletes the rescue group."""
    emu = started("no-boot-rdp-disabled")
    original = _os_disk_name(emu)
    path = tmp_path / "audit.jsonl"
    _interrupted_in_flight(emu, path, phase)

    result = undo(session_for(emu), TARGET, options(emu), audit=AuditLog(path), records=read_audit(path))

    assert result.verdict == "undone", result.to_dict()["error"]
    assert _os_disk_name(emu) == original and _no_rescue_group(emu)
    with emu.state.lock:
        assert emu.vm().power == "running"


@pytest.mark.parametrize("phase", ["rescue-vm", "swap", "verify"])
def test_an_interrupted_rescue_can_be_undone(started, tmp_path, phase):
    emu = started("no-boot-rdp-disabled")
    original = _os_disk_name(emu)
    path = tmp_path / "audit.jsonl"
    rescue(session_for(emu), TARGET, options(emu), audit=AuditLog(path), progress=StopAt(phase))

    result = undo(session_for(emu), TARGET, options(emu), audit=AuditLog(path), records=read_audit(path))

    assert result.verdict == "undone"
    assert _os_disk_name(emu) == original
    with emu.state.lock:
        groups = emu.state.subscription(emu.subscription_id).resource_groups
        assert not any(name.startswith("azrdp-rescue-") for name in groups)


def test_an_audit_log_that_cannot_be_written_stops_the_rescue_before_its_first_change(started, tmp_path):
    """A record of each change is written before it is sent: the rescue's phases are intents, so an
    audit log that cannot be written stops it before the snapshot (it once ran through to
    'verified' with every record failed), and the result says why, with the audit failure."""
    from azrdp.render.rescue import render_rescue

    emu = started("agent-not-ready")
    (tmp_path / "not-a-directory").write_text("")
    audit = AuditLog(tmp_path / "not-a-directory" / "audit.jsonl")

    result = rescue(session_for(emu), TARGET, options(emu), audit=audit)

    assert result.verdict == "failed" and audit.error
    assert result.error is not None and result.error.message.startswith("not sending")
    assert result.audit_error == audit.error and result.exit_code != 0
    assert result.to_dict()["audit"]["error"] == audit.error
    assert f"Audit: FAILED to write {tmp_path / 'not-a-directory' / 'audit.jsonl'}" in render_rescue(result)
    for op in ("Snapshots_CreateOrUpdate", "Disks_CreateOrUpdate", "VirtualMachines_CreateOrUpdate"):
        assert emu.count(op) == 0, op                                        # nothing was made


def test_a_vm_whose_managed_os_disk_is_not_found_is_refused_not_a_crash():
    # The VM names a managed disk that ARM does not return (deleted, or unreadable for this sign-in):
    # the rescue once went on with no state and crashed with a TypeError.
    from azrdp.rescue import plan_rescue

    vm = {"properties": {"storageProfile": {"osDisk": {"managedDisk": {
        "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/vm1_OsDisk_1"}}}}}
    plan = plan_rescue(None, vm, None, None, force=True)
    assert plan.blockers == ["the VM's OS disk vm1_OsDisk_1 was not found (deleted, or in a resource group this "
                             "sign-in cannot read): nothing to copy"]


def test_a_resource_asked_for_before_an_interruption_is_waited_for_within_the_timeout():
    """Arm.provisioned: the resumed phase polls the snapshot or disk an interrupted run asked for
    until Succeeded, on the job's clock, and stops at the operation timeout; Failed or gone is an
    Azure error (it cannot be reused)."""
    from azrdp.azure.disks import Arm
    from azrdp.clock import ManualClock
    from azrdp.errors import AzureOperationError, OperationTimeout

    arm = Arm.__new__(Arm)
    arm.clock, arm.timeout, arm.polling_interval = ManualClock(), 10.0, 0
    states = iter(["Updating", "Updating", "Succeeded"])
    body = arm.provisioned(lambda: {"properties": {"provisioningState": next(states)}}, what="snapshot s1")
    assert body["properties"]["provisioningState"] == "Succeeded" and arm.clock.sleeps == [1.0, 1.0]
    with pytest.raises(OperationTimeout, match="still Updating after 10 s"):
        arm.provisioned(lambda: {"properties": {"provisioningState": "Updating"}}, what="snapshot s1")
    assert len(arm.clock.sleeps) == 2 + 10
    with pytest.raises(AzureOperationError, match="is Failed"):
        arm.provisioned(lambda: {"properties": {"provisioningState": "Failed"}}, what="disk d1")
    with pytest.raises(AzureOperationError, match="is gone"):
        arm.provisioned(lambda: None, what="disk d1")
