"""azrdp.plan, rule by rule: each row is one diagnosis (real ARM bodies through the real Azure
checks, a diagnose result through the real guest checks, a wire outcome) and the plan it must give.

Columns: ``steps`` the plan's step names in order; ``why`` a phrase each named step's reason holds;
``conditional``/``forced`` the steps so marked (every other step is neither); ``blockers``/``notes``
a phrase each line holds (and no other lines); ``values`` the repair payload's parameters (None: no
repair). Guest rows read the guest (``separate`` mode) unless they say ``fused``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from azrdp.plan import plan
from tests.support import payload_samples as samples
from tests.support.diagnoses import DENY_RDP, RG, VM, Layout, diagnosis, rule

NOW = datetime(2026, 4, 1, 10, 0, tzinfo=timezone.utc)


def changed(*edits: Callable[[dict[str, Any]], None], base: Callable[[], dict[str, Any]] = samples.healthy):
    """A diagnose result: ``base`` with each edit applied."""
    def build() -> dict[str, Any]:
        result = base()
        for edit in edits:
            edit(result)
        return result
    return build


def service(name: str, state: str, start: str = "Manual") -> Callable[[dict[str, Any]], None]:
    def edit(r: dict[str, Any]) -> None:
        for s in r["services"]:
            if s["name"] == name:
                s.update(state=state, start=start)
    return edit


def rdp(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda r: r["rdp"].update(values)


def listener(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda r: r["listener"].update(values)


def keys(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda r: r["machinekeys"].update(values)


def rdp_key(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda r: r["machinekeys"]["rdp_key"].update(values)


def key_readable(value: bool | None) -> Callable[[dict[str, Any]], None]:
    return lambda r: r["cert"]["certs"][0].update(key_readable=value)


def no_certs(r: dict[str, Any]) -> None:
    r["cert"].update(certs=[], total=0)


def reboot_pending(r: dict[str, Any]) -> None:
    r["reboot"] = {"pending": True, "reasons": ["windows_update"]}


def shields_up(r: dict[str, Any]) -> None:
    """Windows Firewall's "Block all incoming connections" on the Public profile: rules are ignored."""
    r["firewall"]["profiles"][2]["rules_ignored"] = True


def seats(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda r: r["sessions"].update(values)


def all_seats_active(r: dict[str, Any]) -> None:
    r["sessions"] = {"list": [{"id": 2, "name": "rdp-tcp#4", "user": "azureuser", "state": "Active", "idle_min": 0},
                              {"id": 3, "name": "rdp-tcp#5", "user": "opsadmin", "state": "Active", "idle_min": 3}],
                     "total": 2, "server_mode": "admin", "max_instances": 4294967295, "seat_limit": 2,
                     "used": 2, "free": 0, "single_session": True}


BAD_SDDL = keys(sddl="O:BAG:SYD:PAI(A;;FA;;;BA)", default=False)
EMPTY_KEY = rdp_key(size=0)
NO_KEY = rdp_key(present=False, file=None, size=None, network_service_read=None, system_full=None)


@dataclass
class Row:
    id: str
    guest: Callable[[], dict[str, Any]] | None = samples.healthy
    layout: Layout = field(default_factory=Layout)
    wire: str | None = "answers"
    run_error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)
    conditional: set[str] = field(default_factory=set)
    forced: set[str] = field(default_factory=set)
    blockers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mode: str = "separate"
    values: dict[str, Any] | None = None


def repair(*steps: str, **extra: Any) -> dict[str, Any]:
    """The repair payload's parameters for ``steps`` (sessions among them: logged off only when full)."""
    return {"Steps": list(steps), "LogOffActive": False, "LogOffOnlyWhenFull": "sessions" in steps, **extra}


REBOOT_FOR_ACL = "machinekeys-acl requires it when it changes something"

ROWS = [
    # -- nothing to do ------------------------------------------------------------------------------
    Row("healthy"),
    # -- rdp-config: services, deny, firewall, listener (and what it leaves alone) ------------------
    Row("termservice-stopped", changed(service("TermService", "Stopped")), steps=["rdp-config"],
        why={"rdp-config": "TermService is Stopped (start type Manual)"}, values=repair("rdp-config")),
    Row("sessionenv-disabled", changed(service("SessionEnv", "Running", "Disabled")), steps=["rdp-config"],
        why={"rdp-config": "SessionEnv is Running (start type Disabled)"}, values=repair("rdp-config")),
    Row("termservice-missing-is-no-step", changed(service("TermService", "Missing", None))),
    Row("deny-local", changed(rdp(deny=1)), steps=["rdp-config"],
        why={"rdp-config": "fDenyTSConnections=1 denies"}, values=repair("rdp-config")),
    Row("deny-by-policy-is-held-back", changed(rdp(deny=1, deny_policy=1))),
    Row("firewall-blocks-rdp", samples.firewall_blocks_rdp, steps=["rdp-config"],
        why={"rdp-config": "no enabled Windows Firewall rule lets the RDP port in"}, values=repair("rdp-config")),
    Row("firewall-off-is-no-step", samples.firewall_off),
    Row("firewall-rules-unread-is-no-step", changed(lambda r: r["firewall"].update(port_allowed=None),
                                                    base=samples.firewall_blocks_rdp)),
    Row("firewall-ignoring-rules-is-held-back", changed(shields_up, base=samples.firewall_blocks_rdp)),
    Row("listener-down", changed(listener(state="Down", tcp_listening=False)), steps=["rdp-config"],
        why={"rdp-config": "the RDP-Tcp listener is Down"}, values=repair("rdp-config")),
    Row("port-taken-by-another-program-is-held-back",
        changed(listener(state="Down", tcp_listening=False, owner="nginx"))),
    # -- MachineKeys: acl vs rename, and the certificate Windows then makes -------------------------
    Row("machinekeys-sddl", changed(BAD_SDDL), steps=["machinekeys-acl", "reboot"],
        why={"machinekeys-acl": "the MachineKeys folder SDDL is not the default", "reboot": REBOOT_FOR_ACL},
        conditional={"reboot"}, values=repair("machinekeys-acl")),
    # RECHECK #19: Microsoft's measured SYSTEM + Administrators hardening works and renews: no step
    Row("machinekeys-hardened-is-no-fault", changed(keys(sddl="O:SYG:SYD:PAI(A;;FA;;;SY)(A;;FA;;;BA)", default=False)),
        steps=[]),
    # RECHECK new H-2: the payload would hold machinekeys-acl back; not planned, said what to do
    Row("machinekeys-nested-is-a-blocker", changed(BAD_SDDL, keys(nested=True)), steps=[],
        blockers=["MachineKeys holds a subfolder or reparse point: azrdp's machinekeys-acl step holds back"]),
    Row("network-service-cannot-read", changed(rdp_key(network_service_read=False)),
        steps=["machinekeys-acl", "reboot"], conditional={"reboot"},
        why={"machinekeys-acl": "NETWORK SERVICE cannot read the RDP key container"},
        values=repair("machinekeys-acl")),
    Row("system-lacks-full-control", changed(rdp_key(system_full=False)),
        steps=["machinekeys-acl", "reboot"], conditional={"reboot"},
        why={"machinekeys-acl": "SYSTEM lacks full control of the RDP key container"},
        values=repair("machinekeys-acl")),
    Row("machinekeys-unlistable", changed(keys(files=None)), steps=["machinekeys-acl", "reboot"],
        conditional={"reboot"}, why={"machinekeys-acl": "SYSTEM cannot list the MachineKeys folder"},
        values=repair("machinekeys-acl")),
    Row("acl-repair-with-an-untested-cert-brings-cert", changed(BAD_SDDL, key_readable(None)),
        steps=["machinekeys-acl", "cert", "reboot"], conditional={"reboot"},
        why={"cert": "after the MachineKeys repair Windows must make a usable certificate"},
        values=repair("machinekeys-acl", "cert")),
    Row("acl-broken-and-key-unusable-is-acl-not-rename", samples.broken_machinekeys_acl,
        steps=["machinekeys-acl", "cert", "reboot"], conditional={"reboot"},
        why={"cert": "guest.cert: no RDP certificate with a readable private key"},
        values=repair("machinekeys-acl", "cert")),
    Row("empty-key-container-is-rename", changed(EMPTY_KEY), steps=["machinekeys-rename"],
        why={"machinekeys-rename": "is empty (corrupt)"}, values=repair("machinekeys-rename")),
    Row("empty-key-with-no-cert-brings-cert", changed(EMPTY_KEY, no_certs), steps=["machinekeys-rename", "cert"],
        why={"cert": "guest.cert: no RDP certificate yet"}, values=repair("machinekeys-rename", "cert")),
    Row("acls-right-key-broken-is-rename", samples.corrupt_key, steps=["machinekeys-rename", "cert"],
        why={"machinekeys-rename": "the ACLs are right, yet the RDP certificate's private key cannot be used",
             "cert": "guest.cert: no RDP certificate with a readable private key"},
        values=repair("machinekeys-rename", "cert")),
    Row("key-untestable-is-never-rename", changed(key_readable(None))),
    Row("admin-certs-broken-key-is-no-rename", changed(key_readable(False), lambda r: r["cert"]["certs"][0].update(
        self_signed=False, thumbprint=samples.CA_CERT)), steps=["cert"],
        why={"cert": "guest.cert: no RDP certificate with a readable private key"}, values=repair("cert")),
    Row("no-key-container-is-no-rename", changed(NO_KEY, key_readable(False)), steps=["cert"],
        why={"cert": "guest.cert: no RDP certificate with a readable private key"}, values=repair("cert")),
    # -- certificate --------------------------------------------------------------------------------
    Row("guest-cert-expired", samples.expired_cert, steps=["cert"],
        why={"cert": "guest.cert: the RDP certificate A1B2C3D4E5F60718293A4B5C6D7E8F9012345678 expired"},
        values=repair("cert")),
    Row("no-certificate-yet", changed(no_certs), steps=["cert"],
        why={"cert": "guest.cert: no RDP certificate yet"}, values=repair("cert")),
    Row("wire-serves-expired-cert", samples.expired_cert, wire="cert_expired", steps=["cert"],
        why={"cert": "guest.cert: "}, values=repair("cert")),
    Row("wire-serves-a-cert-the-guest-does-not-list", wire="cert_expired", steps=["cert"],
        why={"cert": "rdp.cert: certificate CN=vm-plan"}, values=repair("cert")),
    # -- sessions: disconnected ones are logged off, active ones never ------------------------------
    Row("seats-held-by-disconnected", samples.two_disconnected_admins, steps=["sessions"],
        why={"sessions": "2 of 2 admin seats are held by disconnected sessions"}, values=repair("sessions")),
    Row("a-free-seat-logs-no-one-off", changed(seats(seat_limit=3, free=1), base=samples.two_disconnected_admins)),
    Row("seats-held-by-active-users-is-a-note", changed(all_seats_active),
        notes=["only active sessions hold the seats: azrdp logs no one off who is working"]),
    # -- ordering: the payload's fixed order, whatever the evidence's order -------------------------
    Row("order-is-the-payloads", changed(service("TermService", "Stopped"), BAD_SDDL,
                                         base=samples.two_disconnected_admins),
        steps=["rdp-config", "machinekeys-acl", "sessions", "reboot"], conditional={"reboot"},
        values=repair("rdp-config", "machinekeys-acl", "sessions")),
    # -- reboot: when a step needs it, --reboot, --no-reboot, --skip reboot -------------------------
    Row("rename-needs-no-reboot", changed(EMPTY_KEY), options={"reboot": None},
        steps=["machinekeys-rename"], values=repair("machinekeys-rename")),
    Row("pending-reboot-with-a-step", changed(reboot_pending, rdp(deny=1)), steps=["rdp-config", "reboot"],
        conditional={"reboot"}, why={"reboot": "Windows has a reboot is pending (windows_update)"},
        values=repair("rdp-config")),
    Row("pending-reboot-alone-is-no-step", changed(reboot_pending)),
    Row("reboot-forced", options={"reboot": True}, steps=["reboot"], forced={"reboot"},
        why={"reboot": "asked with --reboot"}),
    Row("step-reboot-forced", options={"force_steps": ("reboot",)}, steps=["reboot"], forced={"reboot"}),
    Row("no-reboot-keeps-acl-pending", changed(BAD_SDDL), options={"reboot": False},
        steps=["machinekeys-acl"], values=repair("machinekeys-acl"),
        notes=["--no-reboot: machinekeys-acl takes full effect only after a restart"]),
    Row("skip-reboot-keeps-acl-pending", changed(BAD_SDDL), options={"skip_steps": ("reboot",)},
        steps=["machinekeys-acl"], values=repair("machinekeys-acl"),
        notes=["--no-reboot: machinekeys-acl takes full effect only after a restart"]),
    # -- --step / --skip ----------------------------------------------------------------------------
    # --step cert: asked explicitly, so its TermService restart may disconnect a session host's users
    # (RECHECK #8: the payload holds it back there otherwise)
    Row("step-on-healthy", options={"force_steps": ("cert",)}, steps=["cert"], forced={"cert"},
        why={"cert": "asked with --step"}, values={**repair("cert"), "MultiSession": True}),
    Row("asked-step-takes-the-payloads-place", samples.expired_cert, options={"force_steps": ("rdp-config",)},
        steps=["rdp-config", "cert"], forced={"rdp-config"}, values=repair("rdp-config", "cert")),
    Row("step-on-chosen-step", samples.expired_cert, options={"force_steps": ("cert",)}, steps=["cert"],
        forced={"cert"}, why={"cert": "guest.cert: "}, values={**repair("cert"), "MultiSession": True}),
    Row("skip-a-chosen-step", changed(BAD_SDDL, key_readable(None)), options={"skip_steps": ("cert",)},
        steps=["machinekeys-acl", "reboot"], conditional={"reboot"}, values=repair("machinekeys-acl")),
    Row("step-sessions-reaches-multi-session-hosts", options={"force_steps": ("sessions",)},
        steps=["sessions"], forced={"sessions"},
        values={"Steps": ["sessions"], "LogOffActive": False, "LogOffOnlyWhenFull": False, "MultiSession": True}),
    Row("log-off-active-and-run-id", samples.two_disconnected_admins,
        options={"log_off_active": True, "run_id": "7f3c2a"}, steps=["sessions"],
        values={"Steps": ["sessions"], "LogOffActive": True, "LogOffOnlyWhenFull": True, "RunId": "7f3c2a"}),
    # -- power: started only when asked -------------------------------------------------------------
    Row("deallocated-not-asked", None, Layout(power="deallocated", agent=None), wire="connect_timeout",
        blockers=["the VM is deallocated: azrdp starts a VM only when asked; pass --start"]),
    Row("deallocated-from-sweep", None, Layout(power="deallocated", agent=None), wire="connect_timeout",
        options={"advice": "sweep"},
        blockers=[f"the VM is deallocated: azrdp starts a VM only when asked; run `azrdp fix {VM} -g {RG} --start`"]),
    Row("deallocated-start", None, Layout(power="deallocated", agent=None), wire="connect_timeout",
        options={"start": True}, steps=["start"], forced={"start"},
        why={"start": "the VM is deallocated: nothing answers RDP until it runs"},
        notes=["the guest is read and repaired once the VM runs"]),
    Row("stopped-ask", None, Layout(power="stopped"), wire="connect_timeout", options={"start": None},
        steps=["start"], why={"start": "(you are asked: --start was not given)"},
        notes=["the guest is read and repaired once the VM runs"]),
    Row("starting-waits", None, Layout(power="starting"), wire="connect_timeout",
        blockers=["the VM is starting: wait for it, then run azrdp fix again"]),
    # -- the agent: Run Command needs it Ready ------------------------------------------------------
    Row("agent-not-ready", None, Layout(agent="Not Ready"), wire="connect_timeout",
        blockers=[f"the VM agent is Not Ready (version 2.7.41491.1102): Run Command cannot reach the guest (no "
                  f"repair was sent); repair it offline with `azrdp rescue {VM} -g {RG}`"]),
    Row("agent-not-ready-reboot", None, Layout(agent="Not Ready"), wire="connect_timeout",
        options={"reboot": True}, steps=["reboot"], forced={"reboot"},
        blockers=["; the --reboot restart may revive the agent"]),
    Row("agent-older-than-last-operation", None,
        Layout(agent_time="2026-04-01T07:59:00+00:00"), wire="connect_timeout",
        blockers=["the VM may still be rebooting: the agent's last report (Ready at 07:59:00 UTC) is older than "
                  "the VM's last operation (08:00:00 UTC) (no repair was sent): wait a few minutes for Windows to "
                  "boot, then run azrdp again"]),
    # -- fused: the wire stands in for the guest diagnosis ------------------------------------------
    Row("fused-answers", None, mode="fused", steps=["sessions"], conditional={"sessions"},
        values=repair("sessions")),
    Row("fused-step-asked-is-no-longer-conditional", None, options={"force_steps": ("sessions",)}, mode="fused",
        steps=["sessions"], forced={"sessions"},
        values={"Steps": ["sessions"], "LogOffActive": False, "LogOffOnlyWhenFull": False, "MultiSession": True}),
    Row("fused-negotiation-failure", None, wire="negotiation_failure", mode="fused", steps=["sessions"],
        conditional={"sessions"}, values=repair("sessions")),
    Row("fused-cert-expired", None, wire="cert_expired", mode="fused",
        steps=["machinekeys-acl", "cert", "sessions", "reboot"],
        conditional={"machinekeys-acl", "sessions", "reboot"}, why={"cert": "rdp.cert: certificate CN=vm-plan"},
        values=repair("machinekeys-acl", "cert", "sessions")),
    Row("fused-closed", None, wire="closed", mode="fused",
        steps=["rdp-config", "machinekeys-acl", "machinekeys-rename", "cert", "sessions", "reboot"],
        conditional={"rdp-config", "machinekeys-acl", "machinekeys-rename", "cert", "sessions", "reboot"},
        why={"machinekeys-rename": "only if its key test says broken", "rdp-config": "RDP on the wire: closed"},
        values=repair("rdp-config", "machinekeys-acl", "machinekeys-rename", "cert", "sessions")),
    Row("no-wire-evidence-is-not-fused", None, wire="connect_timeout"),
    Row("not-probed-is-not-fused", None, wire=None),
    Row("run-command-failed", None, wire=None, run_error="Run Command failed: Conflict",
        blockers=["guest.run: Run Command failed: Conflict"]),
    # -- NSG: azrdp never opens the port by itself --------------------------------------------------
    Row("nsg-blocks-fix", None, Layout(nic_rules=[DENY_RDP]), wire="connect_timeout",
        blockers=["azrdp never opens the port by itself: pass --allow-from IP|CIDR|me (me with --source-ip "
                  "YOUR_PUBLIC_IP) for a temporary rule, or use just-in-time access"]),
    Row("nsg-blocks-is-not-fused-even-with-wire-evidence", None, Layout(nic_rules=[DENY_RDP]), wire="closed",
        blockers=["azrdp never opens the port by itself"]),
    Row("nsg-blocks-demo", None, Layout(nic_rules=[DENY_RDP]), wire="connect_timeout",
        options={"advice": "demo"}, blockers=["pass --allow-from me (the demo knows your address)"]),
    Row("nsg-blocks-sweep", None, Layout(nic_rules=[DENY_RDP]), wire="connect_timeout",
        options={"advice": "sweep"},
        blockers=[f"run `azrdp fix {VM} -g {RG} --allow-from me --source-ip YOUR_PUBLIC_IP` (or an IP or CIDR"]),
    Row("nsg-blocks-nic-allow-from", None, Layout(nic_rules=[DENY_RDP]), wire="connect_timeout",
        options={"allow_from": "198.51.100.7/32"}, steps=["nsg-rule"], forced={"nsg-rule"},
        why={"nsg-rule": "nic NSG vm-plan-nsg rule deny-rdp (priority 200, Deny) blocks TCP 3389 from "
                         "198.51.100.7/32: allow it at priority 199 until 2026-04-01 14:00 UTC"}),
    Row("nsg-blocks-subnet-and-nic", None, Layout(nic_rules=[DENY_RDP], subnet_rules=[rule("no-rdp", 150, "Deny")]),
        wire="connect_timeout", options={"allow_from": "198.51.100.7/32"}, steps=["nsg-rule", "nsg-rule"],
        forced={"nsg-rule"}),
    Row("nsg-allow-from-nothing-blocks", options={"allow_from": "198.51.100.7/32"},
        notes=["--allow-from: no NSG blocks TCP 3389 from 198.51.100.7/32; no rule added"]),
    Row("nsg-no-free-priority", None, Layout(nic_rules=[rule("deny-rdp-first", 100, "Deny")]),
        wire="connect_timeout", options={"allow_from": "198.51.100.7/32"},
        blockers=["--allow-from: NSG vm-plan-nsg has no free priority before rule deny-rdp-first"]),
]


def _plan_for(row: Row):
    found = diagnosis(row.layout, guest=row.guest() if row.guest else None, wire=row.wire,
                      run_error=row.run_error)
    options = {"now": NOW, "allow_for": timedelta(hours=4), "who": "tester@example.com", **row.options}
    return plan(found, **options)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_plan_rule(row: Row) -> None:
    result = _plan_for(row)
    assert [s.name for s in result.steps] == row.steps
    assert result.mode == row.mode
    for name, phrase in row.why.items():
        step = result.step(name)
        assert step is not None and phrase in step.why, (name, step)
    assert {s.name for s in result.steps if s.conditional} == row.conditional
    assert {s.name for s in result.steps if s.forced} == row.forced
    assert len(result.blockers) == len(row.blockers), result.blockers
    for line, phrase in zip(result.blockers, row.blockers, strict=True):
        assert phrase in line
    assert len(result.notes) == len(row.notes), result.notes
    for line, phrase in zip(result.notes, row.notes, strict=True):
        assert phrase in line
    assert result.values == row.values


def test_rows_cover_every_step_kind() -> None:
    """The table names every step the planner can choose."""
    from azrdp.plan import STEP_NAMES

    named = {name for row in ROWS for name in row.steps}
    assert named >= {*STEP_NAMES, "start", "nsg-rule"}


def test_nsg_rule_is_placed_where_it_blocks() -> None:
    row = next(r for r in ROWS if r.id == "nsg-blocks-subnet-and-nic")
    result = _plan_for(row)
    assert [(r.level, r.nsg_name, r.priority, r.beats["name"]) for r in result.rules] == \
        [("subnet", "subnet-nsg", 149, "no-rdp"), ("nic", "vm-plan-nsg", 199, "deny-rdp")]
    assert {r.destination for r in result.rules} == {"10.0.0.4"}
    assert {r.source for r in result.rules} == {"198.51.100.7/32"}
    assert {r.expires for r in result.rules} == {NOW + timedelta(hours=4)}


@pytest.mark.parametrize(("options", "problem"), [
    ({"force_steps": ("firmware",)}, "unknown step firmware."),
    ({"force_steps": ("cert",), "skip_steps": ("cert",)}, "--step and --skip both name cert."),
    ({"reboot": True, "skip_steps": ("reboot",)}, "--reboot/--no-reboot contradict --step/--skip reboot."),
    ({"reboot": False, "force_steps": ("reboot",)}, "--reboot/--no-reboot contradict --step/--skip reboot."),
])
def test_step_options_that_cannot_all_hold(options: dict[str, Any], problem: str) -> None:
    from azrdp.errors import UsageError

    found = diagnosis(guest=samples.healthy())
    with pytest.raises(UsageError) as raised:
        plan(found, **options)
    assert raised.value.message == problem
