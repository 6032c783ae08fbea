"""NSG rules stay narrow and owned: --allow-from / --allow-for refused before anything is read, rules
unique per run and carrying their VM and run, a taken priority retried, `revoke VM` removing only
that VM's rules, look-alikes flagged, and `revoke --expired` on a resource group or subscription.

The CLI through CliRunner and the real SDK clients, against the `responses` ARM stand-in and
(priority conflicts, scope listing) the emulator."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from azrdp.cli import cli
from tests.support.fake_arm import VmSpec, rule
from tests.support.fix_support import DENY_RDP, Guest, audit_actions, install
from tests.support.payload_samples import healthy

RG = "rg-azrdp-demo"


def run(*args: str, env=None):
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.mark.parametrize("source, message", [
    ("0.0.0.0/32", "the unspecified address"),
    ("::/128", "the unspecified address"),
    ("::ffff:0:0/96", "IPv4-mapped or NAT64 range"),
    ("64:ff9b::/96", "IPv4-mapped or NAT64 range"),
    ("::ffff:203.0.113.7", "IPv4-mapped or NAT64 range"),
    ("2001:db8::1%x,*", "carries an IPv6 zone id"),
    ("fe80::1%\x1b[2K" + "A" * 5000, "carries an IPv6 zone id"),
    ("203.0.113.7/24", "has host bits set: it would open 203.0.113.0/24"),
    ("2001:db8::1/64", "has host bits set"),
    ("203.0.113.7,*", "is not an IP address or CIDR range"),
])
def test_sources_that_are_not_one_narrow_range_are_refused_before_any_request(arm, cli_env, source, message):
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))
    result = run("fix", "vm1", "-g", "rg1", "--yes", "--allow-from", source)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert "\x1b" not in result.stderr and len(result.stderr) < 600
    assert arm.calls == [] and arm.rule_calls == []


def test_a_source_that_does_not_cover_the_source_ip_is_refused(arm, cli_env):
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))
    result = run("fix", "vm1", "-g", "rg1", "--yes", "--allow-from", "198.51.100.0/24", "--source-ip", "203.0.113.7")
    assert result.exit_code == 2
    assert "does not cover --source-ip 203.0.113.7" in result.stderr and arm.calls == []


@pytest.mark.parametrize("allow_for", ["36500d", "3000000d", "25h", "99999999999d"])
def test_allow_for_is_at_most_a_day(arm, cli_env, allow_for):
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[DENY_RDP]))
    result = run("fix", "vm1", "-g", "rg1", "--yes", "--allow-from", "203.0.113.7", "--allow-for", allow_for)
    assert result.exit_code == 2, result.output
    assert ("--allow-for" in result.stderr and "at most 1d" in result.stderr) or "is not a duration" in result.stderr
    assert arm.calls == [] and "Traceback" not in result.output


def test_rule_names_are_unique_per_run_and_carry_the_vm_and_run():
    from azrdp.azure.nsg_rules import describe, rule_name, run_of, vm_of

    now = datetime(2026, 12, 1, 20, 0, 0, tzinfo=timezone.utc)
    assert rule_name(now, "azrdp-1a2b3c4d") != rule_name(now, "azrdp-5e6f7a8b")
    assert rule_name(now, "azrdp-1a2b3c4d") == "azrdp-allow-rdp-20261201T200000Z-1a2b3c4d"
    text = describe(who="x" * 200, vm="vm-web-01", now=now, expires=now + timedelta(hours=2), run_id="azrdp-1a2b3c4d")
    assert len(text) == 140 and vm_of(text) == "vm-web-01" and run_of(text) == "azrdp-1a2b3c4d"


# -- ownership ------------------------------------------------------------------------------------

def _azrdp_rule(name: str, priority: int, vm: str, destination: str, *, expires: str = "2099-01-01T02:00:00Z"):
    return rule(name, priority, "Allow", source="203.0.113.7", destinationAddressPrefix=destination,
                description=f"azrdp: expires {expires}; run azrdp-{priority}; vm {vm}; created 2026-01-01T00:00:00Z by ops")


MINE = _azrdp_rule("azrdp-allow-rdp-20260101T000000Z-aaaa", 190, "vm1", "10.0.0.4")
THEIRS = _azrdp_rule("azrdp-allow-rdp-20260101T000000Z-bbbb", 191, "vm2", "10.0.0.5")
WIDE = rule("azrdp-allow-rdp-20260101T000000Z-cccc", 192, "Allow", source="*", port="*", protocol="*",
            description="azrdp: expires 2099-01-01T02:00:00Z; vm vm1; by someone")


@pytest.fixture
def shared(arm, cli_env):
    """vm1's subnet NSG (shared with vm2) holds azrdp rules for both, and a wide look-alike."""
    return install(arm, Guest(healthy()), VmSpec(subnet_nsg_rules=[MINE, THEIRS, WIDE, DENY_RDP]))


def test_revoke_vm_removes_only_that_vms_rules(arm, shared, audit_path):
    result = run("revoke", "vm1", "-g", "rg1", "--audit-log", str(audit_path))
    assert result.exit_code == 0, result.output
    assert [name for _, _, name in arm.rule_calls] == [MINE["name"]]
    assert f"kept {THEIRS['name']} on vm1SubnetNSG: made for VM vm2" in result.stdout
    assert audit_actions(audit_path) == [("nsg-rule", None, "remove-requested"), ("nsg-rule", None, "removed")]


def test_revoke_all_lists_and_removes_every_azrdp_rule_but_never_a_look_alike(arm, shared, audit_path):
    result = run("revoke", "vm1", "-g", "rg1", "--all", "-o", "json", "--audit-log", str(audit_path))
    assert result.exit_code == 0, result.output
    assert sorted(name for _, _, name in arm.rule_calls) == sorted([MINE["name"], THEIRS["name"]])
    assert {r["name"] for r in json.loads(result.stdout)["removed"]} == {MINE["name"], THEIRS["name"]}


def test_diagnose_flags_a_look_alike_wider_than_azrdp_makes(shared):
    result = run("diagnose", "vm1", "-g", "rg1", "--no-probe", "--no-guest", "-o", "json")
    check = next(c for c in json.loads(result.stdout)["checks"] if c["id"] == "nsg.azrdp_rules")
    assert check["status"] == "fail"
    assert WIDE["name"] in check["summary"] and "source *" in check["summary"] and "ports *" in check["summary"]
    assert [r["name"] for r in check["details"]["look_alikes"]] == [WIDE["name"]]


# -- against the emulator: a taken priority, and revoke --expired on a scope ------------------------------

@pytest.fixture
def emu():
    from azrdp.emulator import Emulator

    with Emulator.start("nsg-blocked", speed=5000.0, seed=3) as emulator:
        yield emulator


def _session(emu, fake_credential):
    from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings
    from azrdp.clock import ManualClock

    return AzureSession(fake_credential, emu.subscription_id, endpoint=ArmEndpoint(emu.base_url), polling_interval=0,
                        retry=RetrySettings(total=0, backoff_factor=0), clock=ManualClock())


def _nic_nsg(session):
    nsgs = [n for n in session.network.network_security_groups.list(RG)
            if any(r.name.lower() == "denyrdp-inbound" for r in n.security_rules or [])]
    return nsgs[0]


def test_a_priority_taken_between_read_and_put_is_retried_at_the_next_free_one(emu, fake_credential):
    from azrdp.azure.nsg_rules import RulePlan
    from azrdp.azure.nsg_writes import create_rule

    session = _session(emu, fake_credential)
    nsg = _nic_nsg(session)
    deny = next(r for r in nsg.security_rules if r.name.lower() == "denyrdp-inbound")
    taken = deny.priority - 1
    session.network.security_rules.begin_create_or_update(RG, nsg.name, "someone-elses", {"properties": {
        "protocol": "Tcp", "sourceAddressPrefix": "198.51.100.9", "sourcePortRange": "*",
        "destinationAddressPrefix": "10.0.0.4", "destinationPortRange": "3389", "access": "Allow",
        "priority": taken, "direction": "Inbound"}}).result()
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    plan = RulePlan(nsg.id, nsg.name, RG, "nic", "azrdp-allow-rdp-20261201T000000Z-test", taken, "203.0.113.7",
                    "10.0.0.4", 3389, "azrdp: expires 2026-12-01T02:00:00Z; vm vm-web-01; by t",
                    now + timedelta(hours=2), {"name": deny.name, "priority": deny.priority})
    create_rule(session, plan, clock=session.clock)
    assert plan.priority == taken - 1
    stored = session.network.security_rules.get(RG, nsg.name, plan.name)
    assert stored.priority == taken - 1 and stored.source_address_prefix == "203.0.113.7"


@pytest.mark.parametrize("scope", [("-g", RG), ()])
def test_revoke_expired_on_a_resource_group_or_subscription(emu, fake_credential, tmp_path, scope):
    session = _session(emu, fake_credential)
    nsg = _nic_nsg(session)
    for name, priority, expires in (("azrdp-allow-rdp-20200101T000000Z-old1", 150, "2020-01-01T02:00:00Z"),
                                    ("azrdp-allow-rdp-20990101T000000Z-new1", 151, "2099-01-01T02:00:00Z")):
        session.network.security_rules.begin_create_or_update(RG, nsg.name, name, {"properties": {
            "protocol": "Tcp", "sourceAddressPrefix": "203.0.113.7", "sourcePortRange": "*",
            "destinationAddressPrefix": "10.0.0.4", "destinationPortRange": "3389", "access": "Allow",
            "priority": priority, "direction": "Inbound",
            "description": f"azrdp: expires {expires}; run azrdp-x; vm vm-web-01; created 2020-01-01T00:00:00Z by t"}}).result()
    audit = tmp_path / "audit.jsonl"
    result = run("revoke", "--expired", *scope, "-o", "json", "--audit-log", str(audit), env=emu.environment())
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["name"] for r in doc["removed"]] == ["azrdp-allow-rdp-20200101T000000Z-old1"]
    assert [r["name"] for r in doc["kept"]] == ["azrdp-allow-rdp-20990101T000000Z-new1"]
    left = {r.name for r in session.network.network_security_groups.get(RG, nsg.name).security_rules}
    assert "azrdp-allow-rdp-20200101T000000Z-old1" not in left and "azrdp-allow-rdp-20990101T000000Z-new1" in left
    assert audit_actions(audit) == [("nsg-rule", None, "remove-requested"), ("nsg-rule", None, "removed")]


def test_revoke_without_a_vm_needs_expired(arm, cli_env):
    result = run("revoke", "-g", "rg1")
    assert result.exit_code == 2 and "revoke needs a VM, or --expired" in result.stderr and arm.calls == []
