"""Plan a repair from a diagnosis: which steps, in which order, and why (one line each).

Pure: no I/O. ``plan(diagnosis, ...)`` reads the failed checks and returns a :class:`Plan`:

* ``start`` when the VM is stopped or deallocated (only with ``--start``, or asked in a terminal);
* ``nsg-rule`` for each NSG that blocks the RDP port, only with ``--allow-from``;
* the guest steps, in the payload's fixed order, from the guest diagnosis (``separate`` mode) or,
  in ``fused`` mode (``fix --yes``: no separate guest-diagnosis Run Command), from the wire
  evidence, each marked *conditional*: the repair payload re-checks and changes only what is
  broken. ``machinekeys-rename`` (it moves only the RDP key container aside) is chosen only when
  the RDP key is corrupt or the ACLs are right and a key test said *broken* (never on "could not
  test", ``key_readable`` null); in fused mode it is conditional, and the payload moves nothing
  unless its own key test says broken;
* ``reboot`` when a step needs it (decided from the repair result), ``--reboot`` forces it,
  ``--no-reboot`` (or ``--skip reboot``) prevents it.

What the plan cannot fix (agent not Ready, a VM that is not started, an NSG without
``--allow-from``) is listed in ``blockers`` with what to do instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azrdp.checks import Check, Status
from azrdp.errors import UsageError
from azrdp.payloads.schema import REPAIR_STEPS, machinekeys_hardened

GUEST_STEPS: tuple[str, ...] = REPAIR_STEPS
STEP_NAMES: tuple[str, ...] = (*GUEST_STEPS, "reboot")      # what --step / --skip accept
REBOOTING_STEPS = ("machinekeys-acl",)  # it needs a reboot when it changes something (the rename step does not)
STOPPED_STATES = ("deallocated", "deallocating", "stopped", "stopping")
NO_WIRE_EVIDENCE = frozenset({"connect_timeout", "unreachable", "dns_failed", "connect_error"})
# RDP spoke, but refused the way it is configured (SecurityLayer, NLA): no azrdp step changes that.
NO_STEP_OUTCOMES = frozenset({"negotiation_failure", "unexpected_protocol"})
OFFLINE_ROUTE = ("repair it offline with `azrdp rescue {vm} -g {rg}` (about 10-30 minutes and a temporary rescue "
                 "VM; the original OS disk and a snapshot are kept), or by hand: "
                 "`az vm repair create -g {rg} -n {vm} --verbose`, then "
                 "`az vm repair run -g {rg} -n {vm} --run-id win-GA-fix --run-on-repair`, then "
                 "`az vm repair restore -g {rg} -n {vm}` (or use the serial console)")


@dataclass
class PlanStep:
    name: str                 # a guest step, "reboot", "start" or "nsg-rule"
    kind: str                 # guest | power | network
    why: str
    conditional: bool = False  # re-checked in place; changes happen only if still broken
    forced: bool = False       # asked with --step / --reboot / --start

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "why": self.why, "conditional": self.conditional,
                "forced": self.forced}


@dataclass
class Plan:
    mode: str                                  # separate | fused
    steps: list[PlanStep] = field(default_factory=list)
    values: dict[str, Any] | None = None       # the repair payload's parameter values
    rules: list[Any] = field(default_factory=list)    # azrdp.azure.nsg_rules.RulePlan
    reboot: str = "auto"                       # auto | always | never
    blockers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def guest_steps(self) -> list[str]:
        return [s.name for s in self.steps if s.kind == "guest"]

    @property
    def start(self) -> bool:
        return any(s.name == "start" for s in self.steps)

    @property
    def empty(self) -> bool:
        """Nothing to change (the job then only verifies that RDP answers)."""
        return not self.steps

    def step(self, name: str) -> PlanStep | None:
        return next((s for s in self.steps if s.name == name), None)

    def parameters(self) -> list[dict[str, str]]:
        """The exact Run Command parameters the repair payload will get (validated)."""
        if not self.values:
            return []
        from azrdp.payloads import payload

        return payload("repair").run_command_parameters(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "steps": [s.to_dict() for s in self.steps],
                "payload": {"id": "repair", "parameters": self.parameters()} if self.values else None,
                "nsg_rules": [r.to_dict() for r in self.rules], "reboot": self.reboot,
                "blockers": list(self.blockers), "notes": list(self.notes)}


def _check(checks: Sequence[Check], check_id: str) -> Check | None:
    return next((c for c in checks if c.id == check_id), None)


def _status(checks: Sequence[Check], check_id: str) -> Status | None:
    check = _check(checks, check_id)
    return check.status if check else None


def fused_eligible(checks: Sequence[Check], probe_result: Any) -> bool:
    """Can the repair payload's own re-checks stand in for the guest diagnosis? Only when the VM
    runs with a Ready agent and the wire gave evidence (the probe reached the VM's own stack)."""
    return (_status(checks, "vm.power") is Status.PASS and _status(checks, "vm.agent") is Status.PASS
            and probe_result is not None and probe_result.outcome not in NO_WIRE_EVIDENCE
            and _status(checks, "nsg.effective") is not Status.FAIL)


# -- guest reasons from a guest diagnosis (separate mode) -----------------------------------------

def _seats_reason(result: dict[str, Any]) -> str | None:
    sessions = result.get("sessions")
    if not sessions or sessions["free"] > 0:
        return None
    disconnected = sum(1 for s in sessions["list"] if s["state"] == "Disc")
    if not disconnected:
        return None
    used, limit = sessions["used"], sessions["seat_limit"]
    kind = {"admin": "admin ", "client": "client "}.get(sessions.get("server_mode") or "", "")
    holders = "disconnected sessions" if disconnected >= used else \
        f"{disconnected} disconnected and {used - disconnected} active sessions"
    return f"{used} of {limit} {kind}seats are held by {holders}"


def _rdp_config_reasons(result: dict[str, Any]) -> list[str]:
    reasons = []
    services = {s["name"]: s for s in result.get("services") or []}
    for name in ("TermService", "SessionEnv"):
        service = services.get(name)
        if service and service["state"] != "Missing" and (service["state"] != "Running" or service["start"] == "Disabled"):
            reasons.append(f"{name} is {service['state']} (start type {service['start']})")
    rdp = result.get("rdp") or {}
    if rdp.get("deny") == 1 and rdp.get("deny_policy") is None:
        reasons.append("fDenyTSConnections=1 denies Remote Desktop connections")
    firewall = result.get("firewall")
    if firewall and firewall["service"] == "Running" and firewall["port_allowed"] is False and not firewall["blocked"] and \
            not any(p["enabled"] and p["rules_ignored"] for p in firewall["profiles"] or []):
        reasons.append("no enabled Windows Firewall rule lets the RDP port in")
    listener = result.get("listener")
    if listener and (listener["state"] != "Listen" or not listener["tcp_listening"]) and \
            not (listener["owner"] and listener["owner"].lower() != "svchost"):
        reasons.append(f"the RDP-Tcp listener is {listener['state'] or 'absent'}")
    return reasons


def _acl_reasons(result: dict[str, Any]) -> list[str]:
    keys = result.get("machinekeys")
    if not keys:
        return []
    reasons = []
    if keys["files"] is None:
        reasons.append("SYSTEM cannot list the MachineKeys folder")
    if not keys["default"] and not machinekeys_hardened(keys["sddl"]):   # hardened SY+BA works (#19)
        reasons.append(f"the MachineKeys folder SDDL is not the default ({keys['sddl']})")
    key = keys["rdp_key"]
    if key["present"] and not key["network_service_read"]:
        reasons.append("NETWORK SERVICE cannot read the RDP key container")
    if key["present"] and not key["system_full"]:
        reasons.append("SYSTEM lacks full control of the RDP key container")
    return reasons


def _rename_reason(result: dict[str, Any], acl_reasons: list[str]) -> str | None:
    keys = result.get("machinekeys")
    if not keys or not keys["rdp_key"]["present"]:
        return None
    if keys["rdp_key"]["size"] == 0:
        return f"the RDP key container {keys['rdp_key']['file']} is empty (corrupt)"
    # `is False`: null is "could not test" (an API this .NET lacks, ECDSA on .NET 4.5, access denied,
    # KeyIso not running): never a reason. Only self-signed certificates: Windows makes them in the
    # RDP key container; an admin certificate's key lives elsewhere and says nothing about it.
    unreadable = [c for c in (result.get("cert") or {}).get("certs") or []
                  if c["key_readable"] is False and c["self_signed"]]
    if unreadable and not acl_reasons:
        return "the ACLs are right, yet the RDP certificate's private key cannot be used (a corrupt key)"
    return None


def _cert_reason(checks: Sequence[Check]) -> str | None:
    guest = _check(checks, "guest.cert")
    if guest is not None and (guest.status is Status.FAIL or
                              (guest.status is Status.WARN and guest.details.get("total") == 0)):
        return f"guest.cert: {guest.summary}"
    wire = _check(checks, "rdp.cert")
    if wire is not None and wire.status is Status.FAIL:
        return f"rdp.cert: {wire.summary}"
    return None


def _separate_steps(diagnosis: Any) -> tuple[list[PlanStep], list[str], list[str]]:
    result = diagnosis.guest.result
    checks = diagnosis.checks
    steps: list[PlanStep] = []
    blockers: list[str] = []
    config = _rdp_config_reasons(result)
    if config:
        steps.append(PlanStep("rdp-config", "guest", "; ".join(config)))
    acl = _acl_reasons(result)
    if acl and (result.get("machinekeys") or {}).get("nested"):
        # The payload would hold the step back (RECHECK new H-2): not planned, said what to do instead.
        from azrdp.guest.checks import NESTED_MACHINEKEYS_REMEDY

        blockers.append(f"{'; '.join(acl)}, and MachineKeys holds a subfolder or reparse point: "
                        f"{NESTED_MACHINEKEYS_REMEDY}")
    elif acl:
        steps.append(PlanStep("machinekeys-acl", "guest", "; ".join(acl)))
    rename = _rename_reason(result, acl)
    if rename:
        steps.append(PlanStep("machinekeys-rename", "guest", rename))
    cert = _cert_reason(checks)
    if cert:
        steps.append(PlanStep("cert", "guest", cert))
    elif (acl or rename) and _status(checks, "guest.cert") is not Status.PASS:
        steps.append(PlanStep("cert", "guest", "after the MachineKeys repair Windows must make a usable "
                                               "certificate"))
    seats = _seats_reason(result)
    if seats:
        steps.append(PlanStep("sessions", "guest", seats))
    notes = []
    sessions = _check(checks, "guest.sessions")
    if sessions is not None and sessions.status is Status.FAIL and not seats:
        notes.append("only active sessions hold the seats: azrdp logs no one off who is working")
    return steps, notes, blockers


def _fused_steps(diagnosis: Any) -> list[PlanStep]:
    """Guest steps from the wire evidence alone; the payload re-checks each before changing it."""
    probe = diagnosis.probe_result
    seats = PlanStep("sessions", "guest", "re-checked in the guest: disconnected sessions are logged off only "
                                          "if no seat is free", conditional=True)
    if probe.ok or probe.outcome in NO_STEP_OUTCOMES:
        return [seats]
    outcome = f"RDP on the wire: {probe.outcome}"
    acl = PlanStep("machinekeys-acl", "guest", "re-checked in the guest: repaired only if the folder SDDL is not "
                                               "the default or the RDP key is unreadable (backup first)",
                   conditional=True)
    cert_check = _check(diagnosis.checks, "rdp.cert")
    if probe.outcome == "cert_expired" and cert_check is not None:
        cert = PlanStep("cert", "guest", f"rdp.cert: {cert_check.summary}")
    else:
        cert = PlanStep("cert", "guest", f"{outcome}; expired or unusable certificates are replaced, a valid "
                                         "one is left alone", conditional=True)
    rename = PlanStep("machinekeys-rename", "guest", "re-checked in the guest: the RDP key container is moved aside "
                                                    "(kept) only if its key test says broken", conditional=True)
    keys = [acl] if probe.outcome == "cert_expired" else [acl, rename]   # an expired certificate is no key fault
    if probe.answers:  # an RDP stack spoke: services, deny and firewall are fine; the certificate is not
        return [*keys, cert, seats]
    config = PlanStep("rdp-config", "guest", f"{outcome}; TermService, fDenyTSConnections and the firewall rules "
                                             "are re-checked and fixed only if off", conditional=True)
    return [config, *keys, cert, seats]


def check_steps(force_steps: Sequence[str], skip_steps: Sequence[str], reboot: bool | None) -> None:
    """UsageError for step options that cannot all hold (checked before anything is read)."""
    unknown = sorted((set(force_steps) | set(skip_steps)) - set(STEP_NAMES))
    if unknown:
        raise UsageError(f"unknown step {', '.join(unknown)}.", hint=f"Steps: {', '.join(STEP_NAMES)}.")
    both = sorted(set(force_steps) & set(skip_steps))
    if both:
        raise UsageError(f"--step and --skip both name {', '.join(both)}.", hint="Name each step once.")
    if reboot is True and "reboot" in skip_steps or reboot is False and "reboot" in force_steps:
        raise UsageError("--reboot/--no-reboot contradict --step/--skip reboot.", hint="Choose one.")


def plan(diagnosis: Any, *, force_steps: Sequence[str] = (), skip_steps: Sequence[str] = (),
         reboot: bool | None = None, start: bool | None = False, allow_from: str | None = None,
         allow_for: timedelta | None = None, network: Any = None, who: str = "unknown user",
         now: datetime | None = None, run_id: str | None = None, log_off_active: bool = False,
         advice: str = "fix") -> Plan:
    """The plan for ``diagnosis`` (an azrdp.diagnose.Diagnosis).

    ``reboot``: None = when a step needs it, True = always (--reboot), False = never (--no-reboot).
    ``start``: True = start a stopped VM, None = ask (a terminal), False = never. ``allow_from`` is
    a source prefix from ``parse_allow_from``; its NSG rules are placed on the inventory and network
    path the diagnosis read (``diagnosis.inventory``, ``diagnosis.path``), or on ``network``, an
    (inventory, path) pair a caller built without a diagnosis (the planner's tests). ``advice`` is the command that prints the plan: its blockers name options as
    "pass --start" only for ``fix``; elsewhere (``sweep``) as the `azrdp fix ...` command that has
    them. The plan is ``fused`` when the diagnosis holds no guest reading although Run
    Command could work (the caller skipped it on purpose: see :func:`fused_eligible`).
    """
    from azrdp.azure.nsg_rules import DEFAULT_ALLOW_FOR, plan_allow_rules

    check_steps(force_steps, skip_steps, reboot)
    checks = diagnosis.checks
    vm = diagnosis.vm
    where = {"rg": vm.get("resource_group"), "vm": vm.get("name")}
    result = Plan(mode="separate")
    result.reboot = ("always" if reboot is True or "reboot" in force_steps
                     else "never" if reboot is False or "reboot" in skip_steps else "auto")

    # Network: a rule only when asked, only where an NSG blocks.
    effective = _check(checks, "nsg.effective")
    if network is None and getattr(diagnosis, "inventory", None) is not None:
        network = (diagnosis.inventory, diagnosis.path)
    if allow_from and network is not None:
        inventory, path = network
        rules, why_not = plan_allow_rules(inventory, path, source=allow_from, port=diagnosis.port, who=who,
                                          vm=vm.get("name") or "?", now=now or datetime.now().astimezone(),
                                          allow_for=allow_for or DEFAULT_ALLOW_FOR, run_id=run_id)
        for rule in rules:
            result.rules.append(rule)
            beaten = rule.beats
            result.steps.append(PlanStep("nsg-rule", "network",
                                         f"{rule.level} NSG {rule.nsg_name} rule {beaten.get('name')} (priority "
                                         f"{beaten.get('priority')}, Deny) blocks TCP {rule.port} from "
                                         f"{rule.source}: allow it at priority {rule.priority} until "
                                         f"{rule.expires:%Y-%m-%d %H:%M} UTC", forced=True))
        if why_not and effective is not None and effective.status is Status.FAIL:
            result.blockers.append(f"--allow-from: {why_not}")
        elif why_not:
            result.notes.append(f"--allow-from: {why_not}; no rule added")
    elif effective is not None and effective.status is Status.FAIL:
        how = ("pass --allow-from IP|CIDR|me (me with --source-ip YOUR_PUBLIC_IP)" if advice == "fix" else
               "pass --allow-from me (the demo knows your address)" if advice == "demo" else
               f"run `azrdp fix {where['vm']} -g {where['rg']} --allow-from me --source-ip YOUR_PUBLIC_IP` "
               "(or an IP or CIDR instead of me)")
        result.blockers.append(f"{effective.summary}. azrdp never opens the port by itself: {how} for a temporary "
                               "rule, or use just-in-time access")

    # Power: a stopped VM is started only when asked.
    power = vm.get("power_state")
    if _status(checks, "vm.power") is not Status.PASS:
        if power in STOPPED_STATES and start is not False:
            result.steps.insert(0, PlanStep("start", "power", f"the VM is {power}: nothing answers RDP until it "
                                            "runs" + (" (you are asked: --start was not given)" if start is None
                                                      else ""), forced=start is True))
            result.notes.append("the guest is read and repaired once the VM runs")
        elif power in STOPPED_STATES:
            result.blockers.append(f"the VM is {power}: azrdp starts a VM only when asked; " +
                                   ("pass --start" if advice in ("fix", "demo") else
                                    f"run `azrdp fix {where['vm']} -g {where['rg']} --start`"))
        else:
            result.blockers.append(f"the VM is {power or 'in an unknown power state'}: wait for it, then run "
                                   "azrdp fix again")
        return result

    # Guest: Run Command needs a Ready agent.
    if _status(checks, "vm.agent") is not Status.PASS:
        agent = _check(checks, "vm.agent")
        status = agent.summary if agent else "not reported: Run Command cannot reach the guest"
        if agent is not None and agent.status is Status.WARN and agent.details.get("last_operation"):
            # a restart Windows has not answered yet (someone's, or this run's): not a broken agent
            blocker = f"{status} (no repair was sent): wait a few minutes for Windows to boot, then run azrdp again"
        else:
            # the guest's own word from the serial log, when it names what is broken (boot.health)
            health = _check(checks, "boot.health")
            seen = f"{health.summary} (boot.health); " if health is not None and health.status is Status.FAIL else ""
            blocker = f"the VM agent is {status} (no repair was sent); {seen}" + OFFLINE_ROUTE.format(**where)
        if result.reboot == "always":
            blocker += "; the --reboot restart may revive the agent"
        result.blockers.append(blocker)
        if result.reboot == "always":
            result.steps.append(PlanStep("reboot", "power", "asked with --reboot", forced=True))
        return result

    guest = getattr(diagnosis, "guest", None)
    if guest is not None:
        steps, notes, blockers = _separate_steps(diagnosis)
        result.notes += notes
        result.blockers += blockers
    elif fused_eligible(checks, diagnosis.probe_result):
        result.mode = "fused"
        steps = _fused_steps(diagnosis)
    else:
        run = _check(checks, "guest.run")
        steps = []
        if run is not None and run.status is Status.ERROR:
            result.blockers.append(f"guest.run: {run.summary}")
    chosen = {s.name: s for s in steps}
    for name in force_steps:
        if name in GUEST_STEPS:
            if name in chosen:
                chosen[name].forced = True
                chosen[name].conditional = False
            else:
                chosen[name] = PlanStep(name, "guest", "asked with --step", forced=True)
    for name in skip_steps:
        chosen.pop(name, None)
    guest_steps = [chosen[name] for name in GUEST_STEPS if name in chosen]
    result.steps += guest_steps

    # Reboot.
    rebooting = [s.name for s in guest_steps if s.name in REBOOTING_STEPS]
    pending = _check(checks, "guest.reboot")
    pending_reason = (pending.summary if pending is not None and pending.status is Status.WARN else None)
    if result.reboot == "always":
        result.steps.append(PlanStep("reboot", "power", "asked with --reboot", forced=True))
    elif result.reboot == "auto" and guest_steps:
        reasons = [f"{', '.join(rebooting)} requires it when it changes something"] if rebooting else []
        if pending_reason:
            reasons.append(f"Windows has {pending_reason}")
        if reasons:
            result.steps.append(PlanStep("reboot", "power", "; ".join(reasons), conditional=True))
    elif result.reboot == "never" and rebooting:
        result.notes.append(f"--no-reboot: {', '.join(rebooting)} takes full effect only after a restart; the fix "
                            "stays pending until then")

    if guest_steps:
        seats_step = chosen.get("sessions")
        cert_step = chosen.get("cert")
        forced_seats = seats_step is not None and seats_step.forced
        result.values = {"Steps": [s.name for s in guest_steps], "LogOffActive": bool(log_off_active),
                         "LogOffOnlyWhenFull": bool(seats_step is not None and not seats_step.forced)}
        # Asked with --step sessions (it logs off) or --step cert (its TermService restart disconnects
        # every user): also on RD Session Hosts / multi-session / AVD hosts, which refuse otherwise.
        if forced_seats or (cert_step is not None and cert_step.forced):
            result.values["MultiSession"] = True
        if run_id:
            result.values["RunId"] = run_id
    return result


BACKUP = r"%ProgramData%\azrdp\backup\<UTC time>"


def step_effects(step: PlanStep, plan: Plan, *, vm: str = "VM", resource_group: str = "RG") -> dict[str, str]:
    """What one step does to the people signed in, whether it needs a reboot, and how to undo it:
    what an operator weighs before saying yes. ``vm`` and ``resource_group`` go into the undo commands.

    The cert step restarts TermService, which turns every active RDP session into a disconnected
    one (the sessions stay, the connections drop: /work/shared/reference/payload-review.md #1)."""
    values = plan.values or {}
    name = step.name
    if name == "sessions":
        whom = ("sessions that were disconnected or active when the repair started" if values.get("LogOffActive")
                else "sessions that were already disconnected when the repair started")
        how = (f"only if no seat is free, logs off {whom}, longest idle first, as many as free one seat"
               if values.get("LogOffOnlyWhenFull") else f"logs off {whom}")
        return {"users": f"{how} (their unsaved work is lost); the console session, and sessions the cert "
                         "step's restart disconnects, are kept",
                "reboot": "no", "undo": "none: a logged-off session cannot be brought back"}
    effects = {
        "rdp-config": {"users": "none (it starts Remote Desktop Services only if they are stopped)", "reboot": "no",
                       "undo": "the audit records each change (fDenyTSConnections, services, firewall rules); "
                               "set them back by hand"},
        "machinekeys-acl": {"users": "none",
                            "reboot": "yes, when it changes something" if "machinekeys-acl" in REBOOTING_STEPS else "no",
                            "undo": "icacls C:\\ProgramData\\Microsoft\\Crypto\\RSA /restore "
                                    f"{BACKUP}\\machinekeys.acl"},
        "machinekeys-rename": {"users": "none",
                               "reboot": "yes, when it changes something" if "machinekeys-rename" in REBOOTING_STEPS
                               else "no",
                               "undo": f"move the RDP key container back from {BACKUP} (its undo.txt says how)"},
        "cert": {"users": "restarts Remote Desktop Services only if RDP's certificate must change: connected RDP "
                          "users are then disconnected (their sessions stay; they can reconnect)",
                 "reboot": "no",
                 "undo": "move the certificates back from Cert:\\LocalMachine\\azrdp-backup (they keep their keys); "
                         f"the old binding and undo.txt are in {BACKUP}"},
        "reboot": {"users": "everyone signed in is disconnected while Windows restarts", "reboot": "it is the reboot",
                   "undo": "none needed"},
        "start": {"users": "none (the VM is not running); a running VM is billed for compute", "reboot": "no",
                  "undo": f"`az vm deallocate -g {resource_group} -n {vm}`"},
        "nsg-rule": {"users": "none", "reboot": "no", "undo": f"`azrdp revoke {vm} -g {resource_group}`"},
    }
    return effects.get(name, {"users": "none", "reboot": "no", "undo": "see the audit"})
