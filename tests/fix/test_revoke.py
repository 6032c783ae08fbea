"""`azrdp revoke` and the nsg.azrdp_rules check: only azrdp's own rules are listed and removed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from azrdp.cli import cli
from tests.support.fake_arm import VmSpec, rule
from tests.support.fix_support import DENY_RDP, Guest, audit_actions, install
from tests.support.payload_samples import healthy

pytestmark = pytest.mark.usefixtures("cli_env")

EXPIRED = rule("azrdp-allow-rdp-20200101T000000Z", 199, "Allow", source="203.0.113.7", destinationAddressPrefix="10.0.0.4",
               description="azrdp: expires 2020-01-01T02:00:00Z; created 2020-01-01T00:00:00Z by os user ops for RDP to vm1")
CURRENT = rule("azrdp-allow-rdp-20990101T000000Z", 198, "Allow", source="198.51.100.0/24", destinationAddressPrefix="10.0.0.4",
               description="azrdp: expires 2099-01-01T02:00:00Z; created 2099-01-01T00:00:00Z by ops@contoso.com for RDP to vm1")
LOOK_ALIKE = rule("azrdp-allow-rdp-handmade", 197, "Allow", source="192.0.2.1", destinationAddressPrefix="10.0.0.4",
                  description="made by hand")
OTHER = rule("AllowBastion", 150, "Allow", source="10.1.0.0/26")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def vm(arm):
    return install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[OTHER, LOOK_ALIKE, CURRENT, EXPIRED, DENY_RDP]))


def test_diagnose_lists_azrdp_rules_and_flags_the_expired_one(vm):
    result = run("diagnose", "vm1", "-g", "rg1", "--no-probe", "--no-guest", "-o", "json")
    check = next(c for c in json.loads(result.stdout)["checks"] if c["id"] == "nsg.azrdp_rules")
    assert check["status"] == "warn"
    assert check["summary"].startswith("1 of 2 azrdp rule(s) expired and still allow RDP: ")
    assert [r["name"] for r in check["details"]["rules"]] == [CURRENT["name"], EXPIRED["name"]]
    assert check["remedy"] == "Remove them with `azrdp revoke vm1 -g rg1`."


def test_revoke_expired_only_keeps_the_current_rule(arm, vm, audit_path):
    result = run("revoke", "vm1", "-g", "rg1", "--expired-only", "--audit-log", str(audit_path))
    assert result.exit_code == 0, result.output
    assert arm.rule_calls == [("DELETE", "vm1NSG", EXPIRED["name"])]
    assert f"kept {CURRENT['name']} on vm1NSG: not expired" in result.stdout
    assert audit_actions(audit_path) == [("nsg-rule", None, "remove-requested"), ("nsg-rule", None, "removed")]


def test_revoke_removes_every_azrdp_rule_and_nothing_else(arm, vm, audit_path):
    result = run("revoke", "vm1", "-g", "rg1", "-o", "json", "--audit-log", str(audit_path))
    assert result.exit_code == 0, result.output
    assert sorted(name for _, _, name in arm.rule_calls) == sorted([CURRENT["name"], EXPIRED["name"]])
    left = [r["name"] for r in arm.resources[vm.nic_nsg_id.lower()]["properties"]["securityRules"]]
    assert left == ["AllowBastion", "azrdp-allow-rdp-handmade", "DenyRDP"]
    assert len(json.loads(result.stdout)["removed"]) == 2
    again = run("revoke", "vm1", "-g", "rg1")
    assert again.exit_code == 0 and "nothing to remove" in again.stdout


def test_revoke_dry_run_removes_nothing(arm, vm, audit_path):
    result = run("revoke", "vm1", "-g", "rg1", "--dry-run", "--audit-log", str(audit_path))
    assert result.exit_code == 0 and result.stdout.startswith("Would remove 2 of 2 azrdp rule(s)")
    assert arm.rule_calls == [] and not audit_path.exists()


def test_a_failed_removal_is_exit_5_and_the_others_still_go(arm, vm, audit_path):
    arm.fail(f"{vm.nic_nsg_id}/securityRules/{EXPIRED['name']}", 403, "AuthorizationFailed", "no", method="DELETE")
    result = run("revoke", "vm1", "-g", "rg1", "--audit-log", str(audit_path))
    assert result.exit_code == 5
    assert f"FAILED {EXPIRED['name']} on vm1NSG" in result.stdout
    assert sorted(audit_actions(audit_path)) == [("nsg-rule", None, "remove-failed"),
                                                 ("nsg-rule", None, "remove-requested"),
                                                 ("nsg-rule", None, "remove-requested"), ("nsg-rule", None, "removed")]


def test_ctrl_c_during_a_removal_is_audited_with_what_may_be_in_flight(arm, vm, audit_path):
    removing = arm._security_rule

    def interrupted(method, key, request):  # Ctrl-C while the second DELETE is on its way
        if method == "DELETE" and arm.rule_calls:
            arm.rule_calls.append((method, "vm1NSG", key.rsplit("/", 1)[1]))
            raise KeyboardInterrupt
        return removing(method, key, request)

    arm._security_rule = interrupted
    result = run("revoke", "vm1", "-g", "rg1", "--audit-log", str(audit_path))

    assert result.exit_code == 130 and "Traceback" not in result.output
    assert "may still be in flight; run azrdp revoke again to finish" in result.stderr
    assert audit_actions(audit_path) == [("nsg-rule", None, "remove-requested"), ("nsg-rule", None, "removed"),
                                         ("nsg-rule", None, "remove-requested"), ("interrupted", None, None)]
    record = json.loads(audit_path.read_text().splitlines()[-1])
    assert record["in_flight"] == f"the removal of rule {record['rule']['name']} from NSG vm1NSG"
    assert record["done"] == [f"removed {arm.rule_calls[0][2]} from vm1NSG"]


def test_expired_only_keeps_a_rule_without_expiry_and_says_why(arm, audit_path):
    # the azrdp name and marker, but a description edited by hand: no expiry to go by
    undated = rule("azrdp-allow-rdp-20250101T000000Z", 196, "Allow", source="203.0.113.9", destinationAddressPrefix="10.0.0.4",
                   description="azrdp: kept for the audit team")
    install(arm, Guest(healthy()), VmSpec(nic_nsg_rules=[undated, EXPIRED, DENY_RDP]))
    result = run("revoke", "vm1", "-g", "rg1", "--expired-only", "--audit-log", str(audit_path))
    assert result.exit_code == 0, result.output
    assert f"kept {undated['name']} on vm1NSG: its description gives no expiry" in result.stdout
    assert arm.rule_calls == [("DELETE", "vm1NSG", EXPIRED["name"])]
