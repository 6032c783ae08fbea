"""guest.* checks from realistic diagnose results, and the cross-check with the wire probe."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from azrdp.checks import CHECK_IDS, Status
from azrdp.guest import guest_checks
from azrdp.payloads.schema import validate_result
from azrdp.rdp.certinfo import CertInfo
from azrdp.rdp.wire_probe import ProbeResult
from tests.support import payload_samples as samples

# guest.run is the diagnose stage's own check (did the payload run); the payload result yields the rest.
GUEST_IDS = [cid for cid, (side, _) in CHECK_IDS.items() if side == "guest" and cid != "guest.run"]


def _by_id(result, **kwargs):
    validate_result("diagnose", result)  # every input here is a result the guest could print
    return {c.id: c for c in guest_checks(result, **kwargs)}


def _probe(thumbprint: str, port: int = 3389) -> ProbeResult:
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    cert = CertInfo(subject="CN=vm1", issuer="CN=vm1", common_name="vm1", self_signed=True, not_before=when,
                    not_after=when.replace(year=2026, month=7), days_left=182, expired=False,
                    not_yet_valid=False, thumbprint=thumbprint, sha256="00" * 32, serial="01", key_type="RSA",
                    key_size=2048, signature_algorithm="sha256WithRSAEncryption")
    return ProbeResult(host="127.0.0.1", port=port, outcome="answers", certificate=cert)


def test_healthy_vm_passes_every_guest_check_in_registry_order():
    checks = guest_checks(samples.healthy())
    assert [c.id for c in checks] == GUEST_IDS
    assert {c.id: c.status for c in checks} == {cid: Status.PASS for cid in GUEST_IDS}
    assert all(c.remedy is None for c in checks)


@pytest.mark.parametrize("scenario, check_id, status, summary, step", [
    ("expired_cert", "guest.cert", Status.FAIL, "expired on 2025-11-30T10:02:11Z", "`cert`"),
    ("expired_cert", "guest.events", Status.WARN, "14 x 1058", "`machinekeys-acl` then `cert`"),
    ("broken_machinekeys_acl", "guest.machinekeys", Status.FAIL, "not Windows' default", "`machinekeys-acl` then `cert`"),
    ("broken_machinekeys_acl", "guest.cert", Status.FAIL, "no RDP certificate with a readable private key", "`machinekeys-acl`"),
    ("corrupt_key", "guest.machinekeys", Status.FAIL, "a corrupt key", "`machinekeys-rename` then `cert`"),
    ("two_disconnected_admins", "guest.sessions", Status.FAIL, "2 sessions hold all 2 seats (2 disconnected)", "`sessions`"),
    ("firewall_off", "guest.firewall", Status.WARN, "off in every profile", "`rdp-config`"),
    ("firewall_blocks_rdp", "guest.firewall", Status.FAIL, "no enabled inbound rule allows TCP 3389", "`rdp-config`"),
    ("nla_off", "guest.nla", Status.WARN, "Network Level Authentication is off", None),
    ("section_failed", "guest.firewall", Status.ERROR, "could not read firewall: Access denied", None),
])
def test_scenarios(scenario, check_id, status, summary, step):
    checks = _by_id(samples.SCENARIOS[scenario]())
    check = checks[check_id]
    assert check.status is status, check
    assert summary in check.summary
    if step:
        assert step in check.remedy
    others = [c for c in checks.values() if c.id != check_id and c.status not in (Status.PASS,)]
    assert all(c.id in {"guest.cert", "guest.events", "guest.machinekeys"} for c in others), others


def test_machinekeys_hardened_passes_and_a_planted_subfolder_is_fixed_by_hand():
    # RECHECK #19: the SYSTEM + Administrators hardening Microsoft measured works: no fault.
    hardened = samples.healthy()
    hardened["machinekeys"].update(sddl="O:SYG:SYD:PAI(A;;FA;;;SY)(A;;FA;;;BA)", default=False)
    assert _by_id(hardened)["guest.machinekeys"].status is Status.PASS
    # RECHECK new H-2: with a subfolder or reparse point there the step holds back: said, with what to do
    nested = samples.broken_machinekeys_acl()
    nested["machinekeys"]["nested"] = True
    check = _by_id(nested)["guest.machinekeys"]
    assert check.status is Status.FAIL and "subfolder or reparse point" in check.summary
    assert "holds back" in check.remedy and "dir /a" in check.remedy


def test_one_failed_section_leaves_the_others_judged():
    checks = _by_id(samples.section_failed())
    assert [c.id for c in checks.values() if c.status is Status.ERROR] == ["guest.firewall"]


def test_termservice_stopped_and_disabled():
    r = samples.healthy()
    r["services"][0].update(state="Stopped", start="Disabled")
    check = _by_id(r)["guest.termservice"]
    assert check.status is Status.FAIL and "Stopped (start type Disabled)" in check.summary
    assert "`rdp-config`" in check.remedy


@pytest.mark.parametrize("state", ["StopPending", "StartPending"])
def test_termservice_stuck_pending_is_sent_to_a_restart_not_to_a_step(state):
    """rdp-config cannot end a pending state (its bounded start throws "stuck in StopPending; a
    reboot is needed"), so the remedy must not send the user there."""
    r = samples.healthy()
    r["services"][0].update(state=state, start="Manual")
    check = _by_id(r)["guest.termservice"]
    assert check.status is Status.FAIL and f"stuck in {state}" in check.summary
    assert "--reboot" in check.remedy and "`rdp-config`" not in check.remedy


def test_policy_deny_is_not_something_rdp_config_overrides():
    r = samples.healthy()
    r["rdp"].update(deny=0, deny_policy=1)
    check = _by_id(r)["guest.rdp_enabled"]
    assert check.status is Status.FAIL and "group policy" in check.summary
    r["rdp"].update(deny=1, deny_policy=0)  # the policy allows: it wins over the local value
    assert _by_id(r)["guest.rdp_enabled"].status is Status.PASS


def test_listener_port_taken_by_another_program():
    r = samples.healthy()
    r["listener"].update(owner="nginx")
    assert _by_id(r)["guest.listener"].status is Status.FAIL


def test_bound_admin_certificate_is_respected():
    r = samples.healthy()
    r["cert"].update(bound=samples.CA_CERT, bound_cert={"store": "my", "not_after": "2027-03-01T00:00:00Z",
                                                         "expired": False, "key_readable": True, "self_signed": False})
    assert _by_id(r)["guest.cert"].status is Status.PASS
    r["cert"]["bound_cert"] = None
    check = _by_id(r)["guest.cert"]
    assert check.status is Status.FAIL and "in no store" in check.summary


def test_cross_check_served_certificate_and_port():
    r = samples.healthy()
    assert _by_id(r, probe_result=_probe(samples.CERT_OK))["guest.cert"].status is Status.PASS
    r["cert"]["certs"].append({"thumbprint": samples.CERT_OLD, "not_after": "2025-11-30T10:02:11Z",
                               "expired": True, "key_readable": True, "self_signed": True})
    r["cert"]["total"] = 2
    stale = _by_id(r, probe_result=_probe(samples.CERT_OLD))["guest.cert"]
    assert stale.status is Status.FAIL and f"still serves {samples.CERT_OLD}" in stale.summary
    assert "`cert`" in stale.remedy
    stranger = _by_id(samples.healthy(), probe_result=_probe("9" * 40))["guest.cert"]
    assert stranger.status is Status.WARN and stranger.details["served"] == "9" * 40


def test_port_mismatch_between_guest_and_checked_port():
    r = samples.healthy()
    r["rdp"]["port"] = 3390
    check = _by_id(r, probe_result=_probe(samples.CERT_OK, port=3389), rdp_port=3389)["guest.port"]
    assert check.status is Status.FAIL and "3390" in check.summary and check.details["probe_port"] == 3389
    assert _by_id(r, rdp_port=3390)["guest.port"].status is Status.PASS


def test_pending_reboot_and_stale_certificates_warn():
    r = samples.healthy()
    r["reboot"] = {"pending": True, "reasons": ["cbs", "file_rename"]}
    assert "cbs, file_rename" in _by_id(r)["guest.reboot"].summary
    r["cert"]["certs"].append({"thumbprint": samples.CERT_OLD, "not_after": "2025-11-30T10:02:11Z",
                               "expired": True, "key_readable": True, "self_signed": True})
    assert _by_id(r)["guest.cert"].status is Status.WARN


def test_every_check_serialises():
    for scenario in samples.SCENARIOS.values():
        for check in guest_checks(scenario()):
            assert check.to_dict()["side"] == "guest"
