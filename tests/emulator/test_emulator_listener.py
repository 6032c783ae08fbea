"""The RDP listener behind each emulated VM, seen by azrdp's real wire probe."""

from __future__ import annotations

import pytest

from azrdp.clock import ManualClock
from azrdp.emulator.rdp_listener import (
    HYBRID_REQUIRED_BY_SERVER,
    SSL_NOT_ALLOWED_BY_SERVER,
    SSL_REQUIRED_BY_SERVER,
    connection_confirm,
    negotiate,
)
from azrdp.rdp import probe
from azrdp.rdp.x224 import PROTOCOL_HYBRID, PROTOCOL_HYBRID_EX, PROTOCOL_RDP, PROTOCOL_SSL
from tests.support.emulator_support import session_for

RG, VM = "rg-azrdp-demo", "vm-web-01"
TIMEOUT = 0.5  # connect timeouts (silent drops) end the probe after this


def rdp(emu, **options):
    return probe(*emu.rdp_endpoint(), timeout=TIMEOUT, **options)


def test_healthy_vm_answers_like_windows_with_the_guests_certificate(emu):
    result = rdp(emu)
    assert result.outcome == "answers" and result.selected_protocol == "HYBRID_EX"
    assert result.flags == ["EXTENDED_CLIENT_DATA_SUPPORTED", "DYNVC_GFX_PROTOCOL_SUPPORTED", "NEGRSP_FLAG_RESERVED",
                            "RESTRICTED_ADMIN_MODE_SUPPORTED", "REDIRECTED_AUTHENTICATION_MODE_SUPPORTED"]
    assert result.tls_version == "TLSv1.2"
    assert result.certificate.thumbprint == emu.guest().serving_certificate().thumbprint
    assert result.certificate.common_name == "VM-WEB-01" and result.certificate.self_signed


def test_expired_certificate_is_served_expired_and_fresh_after_windows_renews_it(start_emulator):
    emu = start_emulator("expired-cert")
    before = rdp(emu)
    assert before.outcome == "cert_expired" and before.certificate.expired
    emu.update(lambda backend: emu.guest().restart_service("TermService"))  # Windows renews it at start
    after = rdp(emu)
    assert after.outcome == "answers" and not after.certificate.expired
    assert after.certificate.thumbprint != before.certificate.thumbprint


def test_termservice_stopped_refuses(emu):
    emu.update(lambda backend: emu.guest().stop_service("TermService"))
    assert rdp(emu).outcome == "refused"
    emu.update(lambda backend: emu.guest().start_service("TermService"))
    assert rdp(emu).outcome == "answers"


@pytest.mark.parametrize("scenario", ["rdp-disabled", "deallocated"])
def test_rdp_disabled_or_vm_off_refuses(start_emulator, scenario):
    assert rdp(start_emulator(scenario)).outcome == "refused"


@pytest.mark.parametrize("scenario", ["nsg-blocked", "firewall"])
def test_denied_traffic_is_dropped_silently(start_emulator, scenario):
    result = rdp(start_emulator(scenario))
    assert result.outcome == "connect_timeout"


def test_nsg_rule_created_through_arm_opens_the_port(start_emulator, fake_credential):
    emu = start_emulator("nsg-blocked")
    rule = {"properties": {"protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 100,
                           "sourceAddressPrefix": f"{emu.state.client_ip}/32", "sourcePortRange": "*",
                           "destinationAddressPrefix": "*", "destinationPortRange": str(emu.rdp_endpoint()[1])}}
    network = session_for(emu, fake_credential).network
    network.security_rules.begin_create_or_update(RG, "vm-web-01-nsg", "azrdp-allow", rule).result()
    assert rdp(emu).outcome == "answers"
    network.security_rules.begin_delete(RG, "vm-web-01-nsg", "azrdp-allow").result()
    assert rdp(emu).outcome == "connect_timeout"


@pytest.mark.parametrize("scenario", ["machinekeys-acl", "corrupt-key"])
def test_unreadable_private_key_resets_tls_and_logs_schannel_36870(start_emulator, scenario):
    emu = start_emulator(scenario)
    before = emu.guest().event_counts(24)["schannel_36870"]
    result = rdp(emu)
    assert result.outcome == "tls_error" and result.selected_protocol == "HYBRID_EX"
    assert emu.guest().event_counts(24)["schannel_36870"] == before + 1


def _agent(compute):
    status = compute.virtual_machines.instance_view(RG, VM).vm_agent.statuses[0]
    return status.display_status, status.time


def test_restart_succeeds_fast_and_windows_goes_down_and_boots_after_it(start_emulator, fake_credential):
    """Real Azure (real-azure-behaviour.md): the restart operation ends in 0.2-0.3 s, the guest
    reboots afterwards, and meanwhile the agent's status is its last report: Ready, older than the
    operation's startTime. (Until this issue the emulator closed RDP at once and said Not Ready.)"""
    emu = start_emulator(speed=1.0, clock=ManualClock())
    compute = session_for(emu, fake_credential).compute
    before = _agent(compute)
    compute.virtual_machines.begin_restart(RG, VM, polling=False)
    op = next(o for o in emu.state.operations.values() if o.kind == "restart")
    started = emu.state.timescale.wall(op.started)
    assert rdp(emu).outcome == "answers"               # Windows has not noticed yet
    emu.advance(0.3)
    assert op.status == "Succeeded" and op.ended - op.started <= 0.3
    assert rdp(emu).outcome == "answers"               # the old listener, before the shutdown
    assert _agent(compute) == before and before[1] < started
    emu.advance(10)                                     # Windows went down
    assert rdp(emu).outcome == "refused"
    assert _agent(compute) == before                    # still the stale Ready
    emu.advance(30)                                     # booted: the agent reports again
    assert rdp(emu).outcome == "answers"
    status, time = _agent(compute)
    assert status == "Ready" and time > started


@pytest.mark.parametrize("layer, nla, requested, expected", [
    (2, True, PROTOCOL_SSL | PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX, ("response", PROTOCOL_HYBRID_EX)),
    (2, True, PROTOCOL_SSL | PROTOCOL_HYBRID, ("response", PROTOCOL_HYBRID)),
    (2, True, PROTOCOL_SSL, ("failure", HYBRID_REQUIRED_BY_SERVER)),
    (2, False, PROTOCOL_SSL, ("response", PROTOCOL_SSL)),
    (2, False, PROTOCOL_RDP, ("failure", SSL_REQUIRED_BY_SERVER)),
    (1, False, PROTOCOL_RDP, ("response", PROTOCOL_RDP)),
    (1, True, PROTOCOL_RDP, ("failure", HYBRID_REQUIRED_BY_SERVER)),
    (0, True, PROTOCOL_SSL | PROTOCOL_HYBRID, ("failure", SSL_NOT_ALLOWED_BY_SERVER)),
    (0, False, PROTOCOL_RDP, ("response", PROTOCOL_RDP)),
    (1, False, None, ("legacy", 0)),
])
def test_windows_negotiation_table(layer, nla, requested, expected):
    decision = negotiate(requested, layer, nla, True)
    assert (decision.kind, decision.value) == expected


@pytest.mark.parametrize("layer, nla, protocols, outcome, detail", [
    (0, True, PROTOCOL_SSL | PROTOCOL_HYBRID, "negotiation_failure", "SSL_NOT_ALLOWED_BY_SERVER"),
    (0, True, PROTOCOL_RDP, "standard_rdp_security", "RDP"),
    (2, False, PROTOCOL_SSL, "answers", "SSL"),
    (2, True, PROTOCOL_SSL, "negotiation_failure", "HYBRID_REQUIRED_BY_SERVER"),
    (1, False, PROTOCOL_RDP, "standard_rdp_security", "RDP"),
])
def test_probe_sees_the_guests_security_settings(emu, layer, nla, protocols, outcome, detail):
    def configure(backend):
        emu.guest().registry["SecurityLayer"] = layer
        emu.guest().registry["UserAuthentication"] = int(nla)
    emu.update(configure)
    result = rdp(emu, protocols=protocols)
    assert result.outcome == outcome
    assert detail in (result.failure_name, result.selected_protocol)


def test_connection_confirm_bytes_match_windows():
    from azrdp.emulator.rdp_listener import Decision

    assert connection_confirm(Decision("response", PROTOCOL_HYBRID)).hex() == "030000130ed00000123400021f080002000000"
    assert connection_confirm(Decision("failure", 5)).hex() == "030000130ed000001234000300080005000000"
    assert connection_confirm(Decision("legacy")).hex() == "0300000b06d00000123400"


def test_each_vm_has_its_own_address_and_its_public_ip_is_it(start_emulator, fake_credential):
    emu = start_emulator(fleet={"healthy": 2, "rdp-disabled": 1})
    network = session_for(emu, fake_credential).network
    endpoints = {name: emu.rdp_endpoint(name) for name in emu.vm_names}
    assert len(set(endpoints.values())) == 3
    for name, (address, _port) in endpoints.items():
        assert network.public_ip_addresses.get("rg-azrdp-fleet", f"{name}-ip").properties.ip_address == address
    outcomes = {name: probe(*endpoint, timeout=TIMEOUT).outcome for name, endpoint in endpoints.items()}
    assert outcomes == {"vm-healthy-001": "answers", "vm-healthy-002": "answers", "vm-rdp-disabled-001": "refused"}
