"""The rescue job: repair a VM whose guest Run Command cannot reach, offline, through a rescue VM.

    rescue(session, target, RescueOptions(...), audit=AuditLog(...), confirm=ask) -> RescueResult
    resume(session, target, options, audit=..., records=read_audit(path))
    undo(session, target, options, audit=..., records=read_audit(path))

1. diagnose (Azure side and wire; the guest cannot be read) and plan: refused up front for a
   non-managed or encrypted (ADE/BitLocker, confidential) OS disk, for Linux, and - unless
   ``force`` - for a VM whose agent is Ready (``azrdp fix`` is the way there);
2. ``confirm(plan)``; ``dry_run`` stops here;
3. the phases, each an audited step with its undo, each safe to run again (``resume``):
   snapshot the OS disk (kept) -> copy it (the repair target) -> a resource group of the rescue's
   own -> its network (no public IP) -> the rescue VM with the copy as data disk -> ONE offline
   repair Run Command on it -> detach the copy -> stop the VM -> swap the copy in as its OS disk
   -> start -> wait until RDP answers, re-diagnose -> delete the rescue group (unless
   ``keep_rescue``).

The original OS disk and the snapshot are never deleted. Every audit record of a rescue carries
the whole rescue state (``state``), so the last record alone says which resources exist; an
interrupted or failed rescue is continued by ``resume`` and reversed by ``undo`` (the original
disk swapped back, the rescue group deleted; the snapshot and the copy are kept and named with how
to remove them).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from azrdp.checks import Status
from azrdp.clock import Clock
from azrdp.errors import EXIT_OK, EXIT_PROBLEM, AzrdpError, NotFoundError, UsageError
from azrdp.job import Job, JobResult
from azrdp.logsafe import printable
from azrdp.target import Target
from azrdp.ui import SILENT, ProgressSink
from azrdp.verify import Verifier

if TYPE_CHECKING:
    from azrdp.azure.vm import AzureVm, Session

PHASES = ("snapshot", "copy", "group", "network", "rescue-vm", "offline-repair", "detach", "stop", "swap",
          "start", "verify", "cleanup")
COST = ("about 10-30 minutes, a temporary Standard_B2s Windows VM with a StandardSSD disk in a resource group "
        "of its own (deleted at the end unless --keep-rescue), a snapshot and a full copy of the OS disk "
        "(both kept), and the VM stopped for the disk swap")


class RescueRefused(AzrdpError):
    """The VM cannot (or need not) be rescued offline; nothing was changed."""


@dataclass
class RescueOptions:
    port: int = 3389
    host: str | None = None
    source_ip: str | None = None
    probe_timeout: float = 5.0
    wait_timeout: float = 900.0
    operation_timeout: float = 1800.0
    run_command_timeout: float = 1800.0
    keep_rescue: bool = False
    dry_run: bool = False
    force: bool = False
    rescue_id: str | None = None
    agent_poll_interval: float = 5.0


@dataclass
class RescuePlan:
    state: dict[str, Any]
    why: list[str]
    blockers: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[dict[str, str]]:
        s = self.state
        vm = f"{s['vm']} -g {s['resource_group']}"
        return [
            {"phase": "snapshot", "what": f"snapshot OS disk {s['original_disk']['name']} as {s['snapshot']} (kept)",
             "undo": f"az snapshot delete -g {s['resource_group']} -n {s['snapshot']}"},
            {"phase": "copy", "what": f"copy the snapshot to disk {s['copy']}"
                                      + (f" in zone {s['zones'][0]}" if s["zones"] else ""),
             "undo": f"az disk delete -g {s['resource_group']} -n {s['copy']}"},
            {"phase": "group", "what": f"resource group {s['group']} in {s['location']} for the rescue VM",
             "undo": f"az group delete -n {s['group']}"},
            {"phase": "network", "what": f"a VNet and a NIC without public IP in {s['group']}",
             "undo": f"az group delete -n {s['group']}"},
            {"phase": "rescue-vm", "what": f"rescue VM {s['rescue_vm']} ({s['generation']}) with {s['copy']} as data disk",
             "undo": f"az group delete -n {s['group']}"},
            {"phase": "offline-repair", "what": "ONE Run Command on the rescue VM: load the copy's hives, repair "
                                                "Remote Desktop offline, unload", "undo": "the copy is not the VM's "
                                                "disk until the swap"},
            {"phase": "detach", "what": f"detach {s['copy']} from the rescue VM", "undo": "-"},
            {"phase": "stop", "what": f"stop VM {s['vm']}", "undo": f"az vm start {vm.replace(' -g', ' -g')}"},
            {"phase": "swap", "what": f"make {s['copy']} the OS disk of {s['vm']} (the original stays, unattached)",
             "undo": f"azrdp rescue {vm} --undo"},
            {"phase": "start", "what": f"start VM {s['vm']}", "undo": "-"},
            {"phase": "verify", "what": "wait until RDP answers, re-diagnose", "undo": "-"},
            {"phase": "cleanup", "what": ("keep" if s["keep_rescue"] else "delete") + f" resource group {s['group']}",
             "undo": "-"},
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"why": list(self.why), "blockers": list(self.blockers), "steps": self.steps, "cost": COST,
                "state": public_state(self.state)}


@dataclass
class RescueResult(JobResult):
    """What a rescue, resume or undo did (azrdp.job.JobResult; the verdict may also be ``undone``)."""

    plan: RescuePlan | None = None
    state: dict[str, Any] | None = None
    repair: dict[str, Any] | None = None

    OK_VERDICTS: ClassVar[tuple[str, ...]] = ("verified", "undone")

    def dry_run_code(self) -> int:
        return EXIT_PROBLEM if self.plan is not None and self.plan.blockers else EXIT_OK

    def resources(self) -> list[dict[str, str]]:
        return resources(self.state) if self.state else []

    def summary(self) -> str:
        s = self.state or {}
        kept = (f"; the original OS disk {s['original_disk']['name']} is kept (unattached) and snapshot "
                f"{s['snapshot']} is kept") if s.get("done") and "swap" in s["done"] else ""
        return {
            "verified": f"RDP answers after the offline repair{kept}",
            "undone": f"undone: VM {self.target.name} runs its original OS disk again",
            "dry_run": "dry run: nothing was changed",
            "declined": "not confirmed: nothing was changed",
            "interrupted": f"interrupted: `azrdp rescue {self.target.name} -g {self.target.resource_group} --resume` "
                           "continues, `--undo` reverses",
            "failed": f"failed: {self.error.one_line() if self.error else ''}",
        }.get(self.verdict, f"RDP still does not answer{kept}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "vm": {"name": self.target.name, "resource_group": self.target.resource_group},
            "verdict": self.verdict, "exit_code": self.exit_code, "summary": self.summary(),
            "before": self.before.to_dict() if self.before is not None else None,
            "plan": self.plan.to_dict() if self.plan else None,
            "state": public_state(self.state) if self.state else None,
            "resources": self.resources(),
            "actions": self.actions, "repair": self.repair, "verification": self.verification,
            "after": self.after.to_dict() if self.after is not None else None,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "interrupted": self.interrupted,
            "error": self.error_dict(),
            "audit": {"path": self.audit_path, "error": self.audit_error},
        }


def public_state(state: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (state or {}).items() if k != "password"}


def resources(state: dict[str, Any]) -> list[dict[str, str]]:
    """Every resource this rescue created (or keeps), with how to remove it."""
    s, rg, done = state, state["resource_group"], set(state.get("done", ()))
    out = []
    if "snapshot" in done:
        out.append({"kind": "snapshot", "name": s["snapshot"], "resource_group": rg, "kept_by_azrdp": "yes",
                    "remove": f"az snapshot delete -g {rg} -n {s['snapshot']}"})
    if "copy" in done:
        swapped = "swap" in done and not s.get("undone")
        out.append({"kind": "disk", "name": s["copy"], "resource_group": rg, "kept_by_azrdp": "yes",
                    "remove": (f"it is the OS disk of {s['vm']} now; `azrdp rescue {s['vm']} -g {rg} --undo` swaps "
                               "the original back" if swapped else f"az disk delete -g {rg} -n {s['copy']}")})
    if "swap" in done and not s.get("undone"):
        out.append({"kind": "disk", "name": s["original_disk"]["name"], "resource_group": rg, "kept_by_azrdp": "yes",
                    "remove": f"the VM's original OS disk (unattached): az disk delete -g {rg} -n "
                              f"{s['original_disk']['name']} once you no longer need it"})
    if "group" in done and not s.get("group_deleted"):
        out.append({"kind": "resourceGroup", "name": s["group"], "resource_group": s["group"], "kept_by_azrdp": "no",
                    "remove": f"az group delete -n {s['group']} (the rescue VM, its disk, NIC and VNet)"})
    return out


def _password() -> str:
    """A throwaway admin password for the rescue VM (never recorded or shown: it is reached only
    through Run Command). Azure wants 12-123 characters from 3 of 4 classes."""
    alphabet = string.ascii_letters + string.digits + "-_.!"
    body = "".join(secrets.choice(alphabet) for _ in range(20))
    return f"Az{secrets.choice(string.digits)}!{body}"


def new_state(vm: dict[str, Any], os_disk: dict[str, Any], target: Target, rescue_id: str,
              keep_rescue: bool) -> dict[str, Any]:
    props = os_disk.get("properties") or {}
    short = target.name[:40]
    return {
        "rescue_id": rescue_id, "vm": target.name, "resource_group": target.resource_group,
        "vm_id": vm.get("id"), "location": vm.get("location"), "zones": list(vm.get("zones") or []),
        "generation": props.get("hyperVGeneration") or "V1",
        "original_disk": {"id": os_disk["id"], "name": os_disk["name"],
                          "sku": (os_disk.get("sku") or {}).get("name")},
        "snapshot": f"{short}-azrdp-snap-{rescue_id}", "copy": f"{short}-azrdp-fixed-{rescue_id}",
        "group": f"azrdp-rescue-{short}-{rescue_id}", "rescue_vm": "azrdp-rescue",
        "keep_rescue": keep_rescue, "done": [], "power_before": None,
    }


def plan_rescue(diagnosis: Any, vm: dict[str, Any], os_disk: dict[str, Any] | None, state: dict[str, Any] | None,
                *, force: bool) -> RescuePlan:
    """Why a rescue is the way (or what stops it), from what was read; no I/O."""
    from azrdp.azure.disks import encryption_of

    blockers, why = [], []
    agent = diagnosis.check("vm.agent") if diagnosis is not None else None
    boot = diagnosis.check("boot.health") if diagnosis is not None else None
    if agent is not None and agent.status is Status.FAIL:
        why.append(f"the VM agent is {agent.summary}: Run Command cannot reach the guest, so azrdp fix cannot repair it")
    if boot is not None and boot.status is Status.FAIL:
        why.append(f"boot diagnostics: {boot.summary}")
    managed = ((((vm.get("properties") or {}).get("storageProfile") or {}).get("osDisk") or {})
               .get("managedDisk") or {}).get("id")
    if not managed:
        blockers.append("the OS disk is not a managed disk: azrdp rescue works on managed disks only "
                        "(migrate with `az vm convert`)")
    elif os_disk is None:
        blockers.append(f"the VM's OS disk {printable(managed.rsplit('/', 1)[-1])} was not found (deleted, or in a "
                        "resource group this sign-in cannot read): nothing to copy")
    encrypted = encryption_of(vm, os_disk)
    if encrypted:
        blockers.append(f"{encrypted}: an offline copy cannot be read without unlocking it; repair through the "
                        "serial console, or unlock the copy with its BitLocker key on a rescue VM yourself")
    if not why and not force:
        blockers.append("the VM agent is Ready: `azrdp fix` repairs the guest through Run Command, without a rescue "
                        "VM (pass --force to rescue offline anyway)")
    if force and not why:
        why.append("asked with --force")
    return RescuePlan(state or {}, why, blockers)


class _Job(Job[RescueResult], Verifier):
    """One rescue, resume or undo. Its ``verify`` phase is azrdp.verify's, as fix's is: the wire
    wait after the start on the repaired disk, then the re-diagnosis (the hooks below)."""

    def __init__(self, session: Session, target: Target, options: RescueOptions, *, audit: Any, clock: Clock,
                 progress: ProgressSink, prober: Any):
        from azrdp.azure.disks import Arm

        super().__init__(target, audit=audit, clock=clock, progress=progress,
                         result=RescueResult(target, audit_path=str(audit.path) if audit.path else None))
        self.session = session
        self.vm = session.vm(target, clock=clock)     # the VM being rescued (azrdp.verify's handle)
        self.options = options
        self.prober = prober
        self.arm = Arm(session, clock=clock, timeout=options.operation_timeout)
        self.state: dict[str, Any] = {}
        # what azrdp.verify reads: the OS disk was swapped (a change), the VM started (not restarted)
        self.changed_something = True
        self.power_changed_at: Any = None
        self.restarted_at: Any = None
        self.agent: Any = None          # the agent wait before the re-diagnosis (azrdp.azure.power.AgentWait)

    def rescued_vm(self) -> AzureVm:
        """The handle of the VM being rescued, as its rescue state names it."""
        return self.session.vm(Target(self.state["vm"], self.state["resource_group"]), clock=self.clock)

    def rescue_vm(self) -> AzureVm:
        """The handle of the rescue VM in the rescue's own resource group."""
        return self.session.vm(Target(self.state["rescue_vm"], self.state["group"]), clock=self.clock)

    def record(self, phase: str, status: str, *, intent: bool = False, **fields: Any) -> dict[str, Any]:
        entry = self.audit.record("rescue", intent=intent, phase=phase, status=status,
                                  rescue_id=self.state.get("rescue_id"), state=public_state(self.state), **fields)
        self.result.actions.append(entry)
        return entry

    # -- how a run ends (azrdp.job.Job.guarded) -------------------------------------------------
    def changed(self) -> bool:
        return bool(self.state)      # the rescue began: its state is in the audit log

    def _where_now(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "resources": self.result.resources(),
                "resume": f"azrdp rescue {self.target.name} -g {self.target.resource_group} --resume",
                "undo": f"azrdp rescue {self.target.name} -g {self.target.resource_group} --undo"}

    def on_interrupted(self) -> None:
        self.result.interrupted = {"done": list(self.state.get("done", [])), "in_flight": self.in_flight}
        if self.state:
            self.state["interrupted_in"] = self.in_flight
            self.record("interrupted", "interrupted", **self._where_now())

    def on_failed(self, error: AzrdpError) -> None:
        self.state["interrupted_in"] = self.in_flight
        self.record("failed", "failed", error=error.message, **self._where_now())


    # -- reads -----------------------------------------------------------------------------------
    def diagnose(self, *, guest: str = "never") -> Any:
        """``guest``: ``always`` (read it through Run Command) or ``never`` (azrdp.verify's words)."""
        from azrdp.diagnose import diagnose

        o = self.options
        return diagnose(self.session, self.target, port=o.port, source_ip=o.source_ip, host=o.host,
                        probe_timeout=o.probe_timeout, guest=guest == "always", progress=self.progress)

    # -- what azrdp.verify asks of the job --------------------------------------------------------
    def powered_on(self) -> bool:
        return True        # the start phase ran before verify (a resume after it too)

    def guest_after(self, need_guest: bool) -> str:
        """The agent is what a rescue revives: it is waited for (from the start on the repaired disk,
        at most 10 minutes) whether RDP answered or not, and the guest is read once it is Ready."""
        self.agent = self.wait_for_agent_after_change(timeout=min(self.options.wait_timeout, 600.0),
                                                      interval=self.options.agent_poll_interval)
        return "always" if self.agent.ready else "never"

    def verified(self) -> None:
        assert self.result.verification is not None
        self.result.verification["agent_ready"] = bool(self.agent is not None and self.agent.ready)

    def read_vm(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        rg, name = self.target.resource_group, self.target.name
        vm = self.arm.vm(rg, name)
        if vm is None:
            raise NotFoundError(f"VM {self.target} was not found.")
        os_ref = (((vm.get("properties") or {}).get("storageProfile") or {}).get("osDisk") or {})
        disk_id = (os_ref.get("managedDisk") or {}).get("id")
        disk = None
        if disk_id:
            disk = self.arm.disk(_rg_of(disk_id), disk_id.rsplit("/", 1)[-1])
        return vm, disk

    # -- the run ---------------------------------------------------------------------------------
    def start(self, confirm: Callable[[RescuePlan], bool]) -> RescueResult:
        begun = self.clock.monotonic()
        self.say("Diagnosing Azure and the wire (the guest cannot be read through Run Command) ...")
        self.result.before = diagnosis = self.diagnose(guest="never")
        vm, disk = self.read_vm()
        self.timed("diagnose", begun)
        rescue_id = self.options.rescue_id or secrets.token_hex(3)
        state = new_state(vm, disk, self.target, rescue_id, self.options.keep_rescue) if disk else None
        plan = plan_rescue(diagnosis, vm, disk, state, force=self.options.force)
        self.result.plan = plan
        if plan.blockers:
            raise RescueRefused(plan.blockers[0], hint="Nothing was changed.")
        if self.options.dry_run:
            self.result.verdict = "dry_run"
            return self.result
        if not confirm(plan):
            self.result.verdict = "declined"
            return self.result
        assert state is not None     # plan_rescue blocks a VM whose OS disk could not be read
        self.state = self.result.state = state
        self.state["power_before"] = _power(diagnosis)
        self.record("plan", "confirmed", why=plan.why)
        return self.run_phases()

    def run_phases(self) -> RescueResult:
        for phase in PHASES:
            if phase in self.state["done"]:
                continue
            self.in_flight = phase
            # an intent, fsynced before the phase sends anything: when it cannot be written, the
            # phase is not started (AuditWriteError) and the report says what earlier phases made
            self.record(phase, "started", intent=phase != "verify")
            begun = self.clock.monotonic()
            extra = getattr(self, "phase_" + phase.replace("-", "_"))() or {}
            self.timed(phase, begun)
            self.state["done"].append(phase)
            self.in_flight = None
            self.record(phase, "done", **extra)
        self.record("finished", self.result.verdict, resources=self.result.resources())
        return self.result

    # -- phases ----------------------------------------------------------------------------------
    def _tags(self) -> dict[str, str]:
        return {"azrdp-rescue-of": str(self.state["vm_id"]), "azrdp-rescue-id": self.state["rescue_id"]}

    def _ours(self, resource: dict[str, Any] | None) -> bool:
        """A snapshot or disk this rescue asked for before an interruption (tagged with its id): a
        resumed phase waits for it instead of sending the create again."""
        tags = (resource or {}).get("tags") or {}
        return resource is not None and tags.get("azrdp-rescue-id") == self.state["rescue_id"]

    def phase_snapshot(self) -> dict[str, Any]:
        s = self.state
        self.say(f"Snapshotting OS disk {s['original_disk']['name']} as {s['snapshot']} (kept) ...")
        rg = s["resource_group"]
        if self._ours(self.arm.snapshot(rg, s["snapshot"])):     # asked for before an interruption
            snap = self.arm.provisioned(lambda: self.arm.snapshot(rg, s["snapshot"]), what=f"snapshot {s['snapshot']}")
        else:
            snap = self.arm.snapshot_disk(rg, s["snapshot"], source_id=s["original_disk"]["id"],
                                          location=s["location"], tags=self._tags())
        return {"resource": {"kind": "snapshot", "id": snap.get("id"),
                             "remove": f"az snapshot delete -g {s['resource_group']} -n {s['snapshot']}"}}

    def phase_copy(self) -> dict[str, Any]:
        s = self.state
        self.say(f"Copying the snapshot to disk {s['copy']} (the one azrdp repairs) ...")
        snap_id = f"/subscriptions/{self.arm.subscription}/resourceGroups/{s['resource_group']}/providers/" \
                  f"Microsoft.Compute/snapshots/{s['snapshot']}"
        rg = s["resource_group"]
        if self._ours(self.arm.disk(rg, s["copy"])):
            disk = self.arm.provisioned(lambda: self.arm.disk(rg, s["copy"]), what=f"disk {s['copy']}")
        else:
            disk = self.arm.copy_disk(rg, s["copy"], source_id=snap_id, location=s["location"],
                                      zones=s["zones"], sku=s["original_disk"]["sku"], tags=self._tags())
        s["copy_id"] = disk.get("id")
        return {"resource": {"kind": "disk", "id": disk.get("id"),
                             "remove": f"az disk delete -g {s['resource_group']} -n {s['copy']}"}}

    def phase_group(self) -> dict[str, Any]:
        s = self.state
        self.say(f"Creating resource group {s['group']} for the rescue VM ...")
        self.arm.create_group(s["group"], location=s["location"], tags=self._tags())
        return {"resource": {"kind": "resourceGroup", "name": s["group"], "remove": f"az group delete -n {s['group']}"}}

    def phase_network(self) -> dict[str, Any]:
        s = self.state
        self.say("Creating the rescue VM's network (no public IP) ...")
        s["nic_id"] = self.arm.create_network(s["group"], location=s["location"], name="azrdp-rescue")
        return {}

    def phase_rescue_vm(self) -> dict[str, Any]:
        s = self.state
        self.say(f"Creating rescue VM {s['rescue_vm']} with {s['copy']} attached (about 2-5 minutes) ...")
        existing = self.arm.vm(s["group"], s["rescue_vm"])
        if existing is None:
            self.arm.create_rescue_vm(s["group"], s["rescue_vm"], location=s["location"], zones=s["zones"],
                                      nic_id=s["nic_id"], data_disk_id=s["copy_id"], password=_password(),
                                      generation=s["generation"], tags=self._tags())
        self.say("Waiting for the rescue VM's agent ...")
        agent = self.rescue_vm().wait_for_agent(timeout=self.options.wait_timeout,
                                                interval=self.options.agent_poll_interval)
        if not agent.ready:
            raise _azure_error(f"the rescue VM's agent did not become Ready within {self.options.wait_timeout:g} s "
                               f"({agent.why}).")
        return {}

    def phase_offline_repair(self) -> dict[str, Any]:
        from azrdp.guest import run_payload

        s = self.state
        self.say("Running the offline repair on the rescue VM through Run Command (about 20-60 s) ...")
        result, run = run_payload(self.rescue_vm(), "rescue", {"RunId": _run_id(s)},
                                  timeout=self.options.run_command_timeout)
        self.result.repair = result
        if result["found"] != "ok" or not result["hives_unloaded"] or result["error"]:
            problem = result["error"] or ("the offline hives could not be unloaded" if not result["hives_unloaded"]
                                          else f"offline Windows volume: {result['found']}")
            raise RescueRefused(f"the offline repair did not run cleanly: {problem}",
                                hint=f"The VM is unchanged; `azrdp rescue {s['vm']} -g {s['resource_group']} --undo` "
                                     "removes the rescue VM.")
        return {"payload": {"volume": result["volume"], "control_set": result["control_set"],
                            "backup": result["backup"], "changed": result["changed"],
                            "steps": [{"name": st["name"], "status": st["status"], "actions": st["actions"],
                                       "error": st["error"]} for st in result["steps"]]}}

    def phase_detach(self) -> dict[str, Any]:
        s = self.state
        self.say(f"Detaching {s['copy']} from the rescue VM ...")
        if self.arm.vm(s["group"], s["rescue_vm"]) is not None:
            self.arm.detach_data_disks(s["group"], s["rescue_vm"])
        return {}

    def phase_stop(self) -> dict[str, Any]:
        s = self.state
        self.say(f"Stopping VM {s['vm']} for the disk swap ...")
        self.arm.power_off(s["resource_group"], s["vm"])
        return {"undo": f"az vm start -g {s['resource_group']} -n {s['vm']}"}

    def phase_swap(self) -> dict[str, Any]:
        s = self.state
        self.say(f"Swapping in {s['copy']} as the OS disk of {s['vm']} (the original {s['original_disk']['name']} "
                 "stays, unattached) ...")
        self.arm.swap_os_disk(s["resource_group"], s["vm"], disk_id=s["copy_id"], disk_name=s["copy"])
        return {"original_disk": s["original_disk"], "undo": f"azrdp rescue {s['vm']} -g {s['resource_group']} --undo"}

    def phase_start(self) -> dict[str, Any]:
        s = self.state
        self.say(f"Starting VM {s['vm']} on the repaired disk ...")
        outcome = self.rescued_vm().start(timeout=self.options.operation_timeout)
        self.power_changed_at = outcome.started
        return {}

    def phase_verify(self) -> dict[str, Any]:
        """azrdp.verify: wait until RDP answers (or judge the guest side without an address),
        wait for the agent, re-diagnose."""
        self.verify(self.diagnose(guest="never"))
        self.state["verification"] = self.result.verification
        return {"verification": self.result.verification}

    def phase_cleanup(self) -> dict[str, Any]:
        s = self.state
        if s["keep_rescue"]:
            self.say(f"Keeping resource group {s['group']} (--keep-rescue): az group delete -n {s['group']}")
            return {"kept": s["group"]}
        self.say(f"Deleting resource group {s['group']} (the rescue VM and its network) ...")
        self.arm.delete_group(s["group"])
        s["group_deleted"] = True
        return {"deleted": s["group"]}

    # -- undo -------------------------------------------------------------------------------------
    def undo(self) -> RescueResult:
        s = self.state
        done = set(s["done"])
        if "swap" in done or self.in_swap():
            vm, _ = self.read_vm()
            current = (((vm.get("properties") or {}).get("storageProfile") or {}).get("osDisk") or {}) \
                .get("managedDisk", {}).get("id", "")
            if current.lower() != s["original_disk"]["id"].lower():
                self.step_undo("stop", lambda: self.arm.power_off(s["resource_group"], s["vm"]),
                               f"Stopping VM {s['vm']} to swap its original OS disk back ...")
                self.step_undo("swap-back", lambda: self.arm.swap_os_disk(
                    s["resource_group"], s["vm"], disk_id=s["original_disk"]["id"], disk_name=s["original_disk"]["name"]),
                    f"Swapping the original OS disk {s['original_disk']['name']} back ...")
                if s.get("power_before") != "deallocated":
                    self.step_undo("start", lambda: self.rescued_vm().start(timeout=self.options.operation_timeout),
                                   f"Starting VM {s['vm']} on its original disk ...")
        elif ("stop" in done or s.get("interrupted_in") == "stop") and "start" not in done \
                and s.get("power_before") == "running":     # a stop in flight may have stopped it
            self.step_undo("start", lambda: self.rescued_vm().start(timeout=self.options.operation_timeout),
                           f"Starting VM {s['vm']} again ...")
        if "group" in done or "group" == self.state.get("interrupted_in"):
            if not s.get("group_deleted") and self.arm.group(s["group"]) is not None:
                self.step_undo("delete-group", lambda: self.arm.delete_group(s["group"]),
                               f"Deleting resource group {s['group']} ...")
            s["group_deleted"] = True
        s["undone"] = True
        self.result.verdict = "undone"
        self.record("undone", "done", resources=self.result.resources())
        return self.result

    def in_swap(self) -> bool:
        return self.state.get("interrupted_in") == "swap"

    def step_undo(self, what: str, call: Callable[[], Any], text: str) -> None:
        self.say(text)
        self.in_flight = f"undo {what}"
        self.record(f"undo-{what}", "started", intent=True)
        call()
        self.in_flight = None
        self.record(f"undo-{what}", "done")


def _rg_of(resource_id: str) -> str:
    parts = resource_id.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    return parts[lowered.index("resourcegroups") + 1]


def _power(diagnosis: Any) -> str | None:
    return (diagnosis.vm or {}).get("power_state") if diagnosis is not None else None


def _run_id(state: dict[str, Any]) -> str:
    return f"azrdp-rescue-{state['rescue_id']}"


def _azure_error(message: str) -> AzrdpError:
    from azrdp.errors import AzureOperationError

    return AzureOperationError(message, hint="`azrdp rescue VM --resume` continues once Azure has caught up; "
                                             "`--undo` reverses.")


def rescue(session: Session, target: Target, options: RescueOptions | None = None, *, audit: Any,
           confirm: Callable[[RescuePlan], bool] = lambda plan: True, clock: Clock | None = None,
           progress: ProgressSink = SILENT, prober: Any = None) -> RescueResult:
    """Diagnose, plan, confirm and run a rescue. Raises typed errors only for what stops it before
    any change (sign-in, not found, refused); afterwards errors and Ctrl-C end up in the result."""
    options = options or RescueOptions()
    job = _Job(session, target, options, audit=audit, clock=clock or session.clock, progress=progress, prober=prober)
    result = job.guarded(lambda: job.start(confirm))
    result.state = job.state or None
    return result


def last_rescue(records: Sequence[dict[str, Any]], target: Target) -> dict[str, Any] | None:
    """The state of the newest rescue of ``target`` in an audit log (None when there is none)."""
    key = (target.name.lower(), target.resource_group.lower())
    for record in reversed(list(records)):
        if record.get("action") != "rescue":
            continue
        state = record.get("state") or {}
        if (str(state.get("vm", "")).lower(), str(state.get("resource_group", "")).lower()) == key:
            return dict(state, done=list(state.get("done", [])), last_phase=record.get("phase"))
    return None


def _resumable(records: Sequence[dict[str, Any]], target: Target, what: str) -> dict[str, Any]:
    state = last_rescue(records, target)
    if state is None:
        raise UsageError(f"no rescue of {target} in the audit log to {what}.",
                         hint="Pass the --audit-log the rescue wrote to, or start one with `azrdp rescue VM -g RG`.")
    return state


def resume(session: Session, target: Target, options: RescueOptions | None = None, *, audit: Any,
           records: Sequence[dict[str, Any]], clock: Clock | None = None, progress: ProgressSink = SILENT,
           prober: Any = None) -> RescueResult:
    """Continue the newest unfinished rescue of ``target`` from its audit record."""
    options = options or RescueOptions()
    state = _resumable(records, target, "resume")
    if state.get("undone") or state.pop("last_phase", None) == "finished":
        raise UsageError(f"the last rescue of {target} ({state['rescue_id']}) has ended; nothing to resume.",
                         hint="Start a new one with `azrdp rescue VM -g RG`.")
    job = _Job(session, target, options, audit=audit, clock=clock or session.clock, progress=progress, prober=prober)
    job.state = job.result.state = state
    if options.keep_rescue:
        state["keep_rescue"] = True
    if state.get("verification"):   # verified before the interruption: the verdict stands
        job.result.verification = state["verification"]
        job.result.verdict = "verified" if state["verification"]["ok"] else "not_verified"
    job.say(f"Resuming rescue {state['rescue_id']} of {target}: done {', '.join(state['done']) or 'nothing'} ...")
    result = job.guarded(job.run_phases)
    result.state = job.state
    return result


def undo(session: Session, target: Target, options: RescueOptions | None = None, *, audit: Any,
         records: Sequence[dict[str, Any]], clock: Clock | None = None, progress: ProgressSink = SILENT) -> RescueResult:
    """Reverse the newest rescue of ``target``: swap the original OS disk back, delete the rescue group.
    The snapshot and the copy are kept (the report says how to remove them)."""
    options = options or RescueOptions()
    state = _resumable(records, target, "undo")
    state.pop("last_phase", None)
    if state.get("undone"):
        raise UsageError(f"the last rescue of {target} ({state['rescue_id']}) is already undone.")
    job = _Job(session, target, options, audit=audit, clock=clock or session.clock, progress=progress, prober=None)
    job.state = job.result.state = state
    result = job.guarded(job.undo)
    result.state = job.state
    return result
