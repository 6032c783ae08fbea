"""NSG evaluation: Microsoft's documented examples, properties, and the REST example bodies."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azrdp.azure.nsg import DEFAULT_INBOUND_RULES, Flow, Match, Rule, SecurityGroup, evaluate, evaluate_inbound
from tests.support.fake_arm import example, nsg_body, rule

NSG1 = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/NSG1"
NSG2 = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/NSG2"
ASG = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/applicationSecurityGroups/web"


def group(nsg_id: str, *rules: dict) -> SecurityGroup:
    return SecurityGroup.from_arm(nsg_body(nsg_id, list(rules)))


# -- "How network security groups filter network traffic": inbound, port 80 from the Internet ------
# NSG1 allows port 80 (the doc's example rule); NSG2 has only the default rules.
ALLOW_80 = group(NSG1, rule("Allow-HTTP-All", 100, port="80"))
DEFAULTS_ONLY = group(NSG2)


@pytest.mark.parametrize("vm, subnet_nsg, nic_nsg, allowed, deciding", [
    ("VM1: NSG1 on the subnet, none on the NIC", ALLOW_80, None, True, "Allow-HTTP-All"),
    ("VM2: NSG1 on the subnet, NSG2 on the NIC: both must allow", ALLOW_80, DEFAULTS_ONLY, False, "DenyAllInBound"),
    ("VM3: no subnet NSG, NSG2 on the NIC", None, DEFAULTS_ONLY, False, "DenyAllInBound"),
    ("VM4: no NSG at all: everything passes", None, None, True, None),
])
def test_documented_subnet_and_nic_examples(vm, subnet_nsg, nic_nsg, allowed, deciding):
    effective = evaluate_inbound(subnet_nsg, nic_nsg, Flow("10.0.0.4", port=80))
    assert effective.allowed is allowed, vm
    assert (effective.deciding.rule.name if effective.deciding.rule else None) == deciding, vm


def test_the_subnet_is_evaluated_first():
    deny = group(NSG1, rule("DenyRDP", 100, "Deny"))
    effective = evaluate_inbound(deny, group(NSG2, rule("DenyRDP-nic", 100, "Deny")), Flow("10.0.0.4"))
    assert effective.deciding.level == "subnet" and effective.deciding.rule.name == "DenyRDP"


def test_the_rest_example_nsg_blocks_rdp_and_allows_port_80():
    nsg = SecurityGroup.from_arm(example("NetworkSecurityGroups_Get"))
    rdp = evaluate(nsg, Flow("10.0.0.4"), level="nic")
    assert (rdp.allowed, rdp.rule.label()) == (False, "DenyAllInBound (priority 65500, Deny)")
    http = evaluate(nsg, Flow("10.0.0.4", port=80), level="nic")
    assert (http.allowed, http.rule.name) == (True, "rule1")


def test_the_rest_example_rules_parse():
    single = Rule.from_arm(example("SecurityRules_Get"))
    assert (single.name, single.priority, single.destination_ports, single.protocol) == ("rule1", 130, ("80",), "*")
    default = Rule.from_arm(example("DefaultSecurityRules_Get"), default=True)
    assert (default.source_prefixes, default.destination_prefixes) == (("VirtualNetwork",), ("VirtualNetwork",))


@pytest.mark.parametrize("props, matches", [
    ({"destinationPortRange": "3380-3390"}, True),
    ({"destinationPortRange": "3390-3400"}, False),
    ({"destinationPortRange": None, "destinationPortRanges": ["22", "3389"]}, True),
    ({"destinationPortRange": None, "destinationPortRanges": ["22", "443"]}, False),
    ({"protocol": "Udp"}, False),
    ({"protocol": "*"}, True),
    ({"sourceAddressPrefix": "Internet"}, True),
    ({"sourceAddressPrefix": "VirtualNetwork"}, False),
    ({"sourceAddressPrefix": "AzureLoadBalancer"}, False),
    ({"sourceAddressPrefix": "0.0.0.0/0"}, True),
    ({"destinationAddressPrefix": "10.0.0.4"}, True),
    ({"destinationAddressPrefix": "10.0.0.0/24"}, True),
    ({"destinationAddressPrefix": "10.0.1.0/24"}, False),
    ({"destinationAddressPrefix": "VirtualNetwork"}, True),
    ({"destinationAddressPrefix": None, "destinationAddressPrefixes": ["10.9.0.0/16", "10.0.0.4/32"]}, True),
    ({"direction": "Outbound"}, False),
])
def test_rule_fields_for_rdp_from_any_internet_address(props, matches):
    body = rule("r", 100)
    body["properties"].update(props)
    got, _notes = Rule.from_arm(body).match(Flow("10.0.0.4"))
    assert (got is Match.YES) is matches


def test_a_source_prefix_allows_only_that_source():
    nsg = group(NSG1, rule("AllowMyIP", 100, source="203.0.113.0/24"))
    anyone = evaluate(nsg, Flow("10.0.0.4"), level="nic")
    assert not anyone.allowed and [r.name for r in anyone.conditional] == ["AllowMyIP"]
    assert anyone.describe(Flow("10.0.0.4")) == (
        "NSG NSG1 denies TCP 3389 from any Internet address: rule DenyAllInBound (priority 65500, Deny); "
        "but AllowMyIP (priority 100, Allow) allows some sources")
    assert evaluate(nsg, Flow("10.0.0.4", source_ip="203.0.113.7"), level="nic").rule.name == "AllowMyIP"
    assert evaluate(nsg, Flow("10.0.0.4", source_ip="198.51.100.7"), level="nic").rule.name == "DenyAllInBound"


def test_service_tags_for_a_given_source():
    vnet = ("10.0.0.0/16",)
    nsg = group(NSG1)
    assert evaluate(nsg, Flow("10.0.0.4", source_ip="10.0.5.6", virtual_network=vnet), level="nic").rule.name \
        == "AllowVnetInBound"
    assert evaluate(nsg, Flow("10.0.0.4", source_ip="168.63.129.16"), level="nic").rule.name \
        == "AllowAzureLoadBalancerInBound"
    internet = group(NSG1, rule("FromInternet", 100, source="Internet"))
    assert evaluate(internet, Flow("10.0.0.4", source_ip="198.51.100.7", virtual_network=vnet), level="nic").allowed
    assert evaluate(internet, Flow("10.0.0.4", source_ip="10.0.5.6", virtual_network=vnet),
                    level="nic").rule.name == "AllowVnetInBound"


def test_application_security_groups():
    nsg = group(NSG1, rule("ToWeb", 100, destinationAddressPrefix=None,
                           destinationApplicationSecurityGroups=[{"id": ASG}]))
    member = Flow("10.0.0.4", destination_asgs=frozenset({ASG.lower()}))
    assert evaluate(nsg, member, level="nic").rule.name == "ToWeb"
    assert evaluate(nsg, Flow("10.0.0.4"), level="nic").rule.name == "DenyAllInBound"


def test_default_rules_are_added_when_a_body_lacks_them():
    bare = SecurityGroup("id", "bare", (Rule("Allow", 100, "Allow", destination_ports=("80",)),))
    assert [r.name for r in bare.inbound_rules()] == ["Allow"] + [r.name for r in DEFAULT_INBOUND_RULES]


# -- properties --------------------------------------------------------------------------------------
SOURCE = "198.51.100.7"
_rule_spec = st.tuples(st.sampled_from(["Allow", "Deny"]), st.booleans())  # (access, matches the flow?)


def _build(priority: int, access: str, matches: bool, shape: int) -> Rule:
    """A rule that matches (or misses) the flow TCP 3389 from SOURCE through one of several fields."""
    if matches:
        return [Rule(f"r{priority}", priority, access, protocol="Tcp", destination_ports=("3389",)),
                Rule(f"r{priority}", priority, access, source_prefixes=(f"{SOURCE}/32",)),
                Rule(f"r{priority}", priority, access, destination_ports=("3000-4000",))][shape]
    return [Rule(f"r{priority}", priority, access, protocol="Udp"),
            Rule(f"r{priority}", priority, access, source_prefixes=("192.0.2.0/24",)),
            Rule(f"r{priority}", priority, access, destination_ports=("22", "443"))][shape]


@st.composite
def nsgs(draw) -> tuple[SecurityGroup, list[tuple[int, str, bool]]]:
    priorities = draw(st.lists(st.integers(100, 4096), unique=True, max_size=8))
    specs = [(p, *draw(_rule_spec)) for p in priorities]
    rules = tuple(_build(p, a, m, draw(st.integers(0, 2))) for p, a, m in specs)
    return SecurityGroup(f"nsg-{len(rules)}", "nsg", rules), specs


FLOW = Flow("10.0.0.4", source_ip=SOURCE)


@settings(max_examples=200, deadline=None)
@given(nsgs())
def test_first_matching_rule_in_priority_order_decides(drawn):
    nsg, specs = drawn
    decision = evaluate(nsg, FLOW, level="nic")
    matching = sorted((p, a) for p, a, m in specs if m)
    if matching:
        assert (decision.rule.priority, decision.allowed) == (matching[0][0], matching[0][1] == "Allow")
    else:
        assert (decision.rule.name, decision.allowed) == ("DenyAllInBound", False)


@settings(max_examples=100, deadline=None)
@given(nsgs(), st.randoms(use_true_random=False))
def test_the_order_rules_are_listed_in_does_not_matter(drawn, rnd: random.Random):
    nsg, _ = drawn
    shuffled = list(nsg.rules)
    rnd.shuffle(shuffled)
    before = evaluate(nsg, FLOW, level="nic")
    after = evaluate(SecurityGroup(nsg.id, nsg.name, tuple(shuffled)), FLOW, level="nic")
    assert (after.allowed, after.rule, after.conditional) == (before.allowed, before.rule, before.conditional)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), nsgs().map(lambda d: d[0])), st.one_of(st.none(), nsgs().map(lambda d: d[0])))
def test_a_deny_at_either_level_denies(subnet, nic):
    effective = evaluate_inbound(subnet, nic, FLOW)
    subnet_ok = evaluate(subnet, FLOW, level="subnet").allowed
    nic_ok = evaluate(nic, FLOW, level="nic").allowed
    assert effective.allowed == (subnet_ok and nic_ok)
    if not subnet_ok:
        assert effective.deciding.level == "subnet"
    elif not nic_ok:
        assert effective.deciding.level == "nic"
    if subnet is None and nic is None:
        assert effective.allowed


def test_a_source_asg_never_holds_an_internet_client():
    """ASG members are NICs of the virtual network: with --source-ip a public address, an Allow
    from an ASG is not 'some sources' (a WARN asking for --source-ip again) but no match."""
    vnet = ("10.0.0.0/16",)
    nsg = group(NSG1, rule("FromJumpHosts", 100, sourceAddressPrefix=None,
                           sourceApplicationSecurityGroups=[{"id": ASG}]))
    outside = evaluate(nsg, Flow("10.0.0.4", source_ip="198.51.100.7", virtual_network=vnet), level="nic")
    assert (outside.allowed, outside.rule.name, outside.conditional) == (False, "DenyAllInBound", ())
    inside = evaluate(nsg, Flow("10.0.0.4", source_ip="10.0.5.6", virtual_network=vnet), level="nic")
    assert [r.name for r in inside.conditional] == ["FromJumpHosts"]  # membership of other NICs is unknown


def test_ipv4_all_networks_does_not_match_ipv6_addresses():
    allow_v4 = group(NSG1, rule("AllowAllV4", 100, source="0.0.0.0/0"))
    assert evaluate(allow_v4, Flow("10.0.0.4", source_ip="198.51.100.7"), level="nic").rule.name == "AllowAllV4"
    assert evaluate(allow_v4, Flow("fd00::4", source_ip="2001:db8::7"), level="nic").rule.name == "DenyAllInBound"
    to_v4 = group(NSG1, rule("ToAllV4", 100, destinationAddressPrefix="0.0.0.0/0"))
    assert evaluate(to_v4, Flow("fd00::4", source_ip="2001:db8::7"), level="nic").rule.name == "DenyAllInBound"
