"""Network security group evaluation for one inbound TCP flow: pure functions, no I/O.

Azure's documented semantics ("How network security groups filter network traffic"):
inbound traffic meets the subnet's NSG first, then the NIC's NSG, and both must allow it; no NSG
at a level lets everything through that level. Inside one NSG the inbound rules run in priority
order (lowest number first) and the first rule that matches decides, Allow or Deny; the default
rules AllowVNetInBound (65000), AllowAzureLoadBalancerInBound (65001) and DenyAllInBound (65500)
come last.

When the source address is not given, the flow stands for "any Internet address". A rule that
matches only some Internet addresses (a CIDR, a source port range, an unexpanded service tag)
cannot decide for all of them: it is reported as *conditional*, and the evaluation goes on.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from azrdp.target import id_key

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AZURE_LOAD_BALANCER_IP = ipaddress.ip_address("168.63.129.16")
_ANY = {"*", "any", "all"}
_ALL_NETWORKS = {"0.0.0.0/0", "::/0"}
# Address space that never comes from the Internet (Azure's Internet tag excludes it).
def within(inner: ipaddress.IPv4Network | ipaddress.IPv6Network,
           outer: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """``inner`` lies inside ``outer`` (False across address families, where subnet_of raises)."""
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


_NON_INTERNET = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8"))


class Match(enum.Enum):
    NO = 0
    SOME = 1  # matches part of the possible flows (or cannot be known): never decides
    YES = 2


def _all(matches: Iterable[Match]) -> Match:
    return min(matches, key=lambda m: m.value, default=Match.YES)


def _any(matches: Iterable[Match]) -> Match:
    return max(matches, key=lambda m: m.value, default=Match.NO)


def is_internet_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not any(ip in net for net in _NON_INTERNET if net.version == ip.version)


def _network(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


@dataclass(frozen=True)
class Flow:
    """One inbound connection attempt to a VM's IP configuration."""

    destination_ip: str                  # the NIC's private IP: NSGs see the address after NAT
    port: int = 3389
    source_ip: str | None = None         # None: any Internet address
    protocol: str = "Tcp"
    destination_asgs: frozenset[str] = frozenset()  # id_key() of the ASGs the IP configuration is in
    virtual_network: tuple[str, ...] = ()           # prefixes of the VirtualNetwork tag (VNet + peered)

    @property
    def source(self) -> str:
        return self.source_ip or "any Internet address"

    def _source(self) -> Any:
        return ipaddress.ip_address(self.source_ip) if self.source_ip else None

    def _in_virtual_network(self, ip: Any) -> bool:
        return any(ip in net for net in map(_network, self.virtual_network) if net and net.version == ip.version)


@dataclass(frozen=True)
class Rule:
    name: str
    priority: int
    access: str = "Deny"                 # "Allow" | "Deny"
    direction: str = "Inbound"
    protocol: str = "*"
    source_prefixes: tuple[str, ...] = ("*",)
    source_ports: tuple[str, ...] = ("*",)
    destination_prefixes: tuple[str, ...] = ("*",)
    destination_ports: tuple[str, ...] = ("*",)
    source_asgs: tuple[str, ...] = ()
    destination_asgs: tuple[str, ...] = ()
    default: bool = False

    @property
    def allows(self) -> bool:
        return self.access.lower() == "allow"

    def label(self) -> str:
        return f"{self.name} (priority {self.priority}, {self.access})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "priority": self.priority, "access": self.access, "default": self.default}

    @classmethod
    def from_arm(cls, body: Mapping[str, Any], *, default: bool = False) -> Rule:
        """From an ARM securityRule (``{"name", "properties": {...}}``; flat bodies work too)."""
        props = body.get("properties") or body

        def strings(single: str, plural: str) -> tuple[str, ...]:
            values = [v for v in (props.get(plural) or []) if v] or ([props[single]] if props.get(single) else [])
            return tuple(str(v) for v in values)

        def asgs(key: str) -> tuple[str, ...]:
            return tuple(id_key(a.get("id")) for a in props.get(key) or [] if a.get("id"))

        src_asgs, dst_asgs = asgs("sourceApplicationSecurityGroups"), asgs("destinationApplicationSecurityGroups")
        return cls(
            name=str(body.get("name") or props.get("name") or "?").rsplit("/", 1)[-1],
            priority=int(props.get("priority") or 0),
            access=str(props.get("access") or "Deny"),
            direction=str(props.get("direction") or "Inbound"),
            protocol=str(props.get("protocol") or "*"),
            source_prefixes=strings("sourceAddressPrefix", "sourceAddressPrefixes") or (() if src_asgs else ("*",)),
            source_ports=strings("sourcePortRange", "sourcePortRanges") or ("*",),
            destination_prefixes=(strings("destinationAddressPrefix", "destinationAddressPrefixes")
                                  or (() if dst_asgs else ("*",))),
            destination_ports=strings("destinationPortRange", "destinationPortRanges") or ("*",),
            source_asgs=src_asgs,
            destination_asgs=dst_asgs,
            default=default,
        )

    def match(self, flow: Flow) -> tuple[Match, tuple[str, ...]]:
        """Does this rule match ``flow``? With notes on what could not be evaluated."""
        notes: list[str] = []
        result = _all((
            Match.YES if self.direction.lower() == "inbound" else Match.NO,
            Match.YES if self.protocol.lower() in _ANY or self.protocol.lower() == flow.protocol.lower()
            else Match.NO,
            _any(_port_match(r, flow.port) for r in self.destination_ports),
            _any(_source_port_match(r) for r in self.source_ports),
            _any([*(_source_match(p, flow, notes) for p in self.source_prefixes),
                  *(_source_asg_match(flow) for _ in self.source_asgs[:1])]),
            _any([*(_destination_match(p, flow) for p in self.destination_prefixes),
                  *(Match.YES if a in flow.destination_asgs else Match.NO for a in self.destination_asgs)]),
        ))
        return result, tuple(notes) if result is not Match.NO else ()


def _port_bounds(text: str) -> tuple[int, int] | None:
    text = text.strip()
    if text.lower() in _ANY:
        return 0, 65535
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        return None


def _port_match(text: str, port: int) -> Match:
    bounds = _port_bounds(text)
    return Match.YES if bounds and bounds[0] <= port <= bounds[1] else Match.NO


def _source_port_match(text: str) -> Match:
    """The client's source port is ephemeral (unknown): only a full range matches every flow."""
    bounds = _port_bounds(text)
    if not bounds or bounds[0] > bounds[1]:
        return Match.NO
    return Match.YES if bounds == (0, 65535) or bounds == (1, 65535) else Match.SOME


def _source_asg_match(flow: Flow) -> Match:
    """ASG members are NICs of one virtual network: an address outside it (an Internet client)
    is never one. Inside it, membership of other NICs is not known here."""
    source = flow._source()
    if source is None or (flow.virtual_network and not flow._in_virtual_network(source)):
        return Match.NO
    return Match.SOME


def _source_match(prefix: str, flow: Flow, notes: list[str]) -> Match:
    text = prefix.strip()
    key = text.lower()
    source = flow._source()
    if key in _ANY or (key in _ALL_NETWORKS and source is None):
        return Match.YES  # a given source meets 0.0.0.0/0 or ::/0 below: only its own IP version matches
    if key == "internet":
        if source is None:
            return Match.YES
        return Match.YES if is_internet_address(source) and not flow._in_virtual_network(source) else Match.NO
    if key == "virtualnetwork":
        if source is None:
            return Match.NO
        if flow._in_virtual_network(source):
            return Match.YES
        return Match.NO if is_internet_address(source) else Match.SOME  # on-premises space is unknown here
    if key == "azureloadbalancer":
        return Match.YES if source == AZURE_LOAD_BALANCER_IP else Match.NO
    network = _network(text)
    if network is None:
        notes.append(f"source {text!r} is a service tag azrdp does not expand")
        return Match.SOME
    if source is None:
        public = not any(within(network, n) for n in _NON_INTERNET)
        return Match.SOME if public else Match.NO
    return Match.YES if source.version == network.version and source in network else Match.NO


def _destination_match(prefix: str, flow: Flow) -> Match:
    key = prefix.strip().lower()
    if key in _ANY or key == "virtualnetwork":
        return Match.YES  # the NIC's private address is always inside its virtual network
    network = _network(prefix)
    if network is None:
        return Match.NO  # Internet, AzureLoadBalancer and other tags never name a NIC's private IP
    destination = ipaddress.ip_address(flow.destination_ip)
    return Match.YES if destination.version == network.version and destination in network else Match.NO


DEFAULT_INBOUND_RULES: tuple[Rule, ...] = (
    Rule("AllowVnetInBound", 65000, "Allow", source_prefixes=("VirtualNetwork",),
         destination_prefixes=("VirtualNetwork",), default=True),
    Rule("AllowAzureLoadBalancerInBound", 65001, "Allow", source_prefixes=("AzureLoadBalancer",), default=True),
    Rule("DenyAllInBound", 65500, "Deny", default=True),
)


@dataclass(frozen=True)
class SecurityGroup:
    id: str
    name: str
    rules: tuple[Rule, ...] = ()  # custom and default rules, any direction

    @classmethod
    def from_arm(cls, body: Mapping[str, Any]) -> SecurityGroup:
        props = body.get("properties") or {}
        rules = [Rule.from_arm(r) for r in props.get("securityRules") or []]
        rules += [Rule.from_arm(r, default=True) for r in props.get("defaultSecurityRules") or []]
        return cls(str(body.get("id") or ""), str(body.get("name") or body.get("id") or "?").rsplit("/", 1)[-1],
                   tuple(rules))

    def inbound_rules(self) -> list[Rule]:
        """Inbound rules in evaluation order. The three default rules cannot be removed; they are
        added when a body (an old or partial response) lacks them."""
        rules = [r for r in self.rules if r.direction.lower() == "inbound"]
        if not any(r.default for r in rules):
            rules += DEFAULT_INBOUND_RULES
        return sorted(rules, key=lambda r: (r.priority, r.default))


@dataclass(frozen=True)
class Decision:
    """What one level (subnet or NIC) does with the flow."""

    level: str                       # "subnet" | "nic"
    nsg: SecurityGroup | None
    allowed: bool
    rule: Rule | None                # the deciding rule; None when there is no NSG
    conditional: tuple[Rule, ...] = ()  # earlier rules that match only some sources
    notes: tuple[str, ...] = ()

    def describe(self, flow: Flow) -> str:
        what = f"TCP {flow.port} from {flow.source}"
        if self.nsg is None:
            return f"no NSG on the {'subnet' if self.level == 'subnet' else 'NIC'}: {what} passes this level"
        verb = "allows" if self.allowed else "denies"
        text = f"NSG {self.nsg.name} {verb} {what}: rule {self.rule.label() if self.rule else '?'}"
        conditional = [r for r in self.conditional if r.allows != self.allowed]
        if conditional:
            text += "; but " + ", ".join(f"{r.label()} {'allows' if r.allows else 'denies'} some sources"
                                         for r in conditional)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "nsg": self.nsg.id or self.nsg.name if self.nsg else None,
            "nsg_name": self.nsg.name if self.nsg else None,
            "allowed": self.allowed,
            "rule": self.rule.to_dict() if self.rule else None,
            "conditional_rules": [r.to_dict() for r in self.conditional],
            "notes": list(self.notes),
        }


def evaluate(nsg: SecurityGroup | None, flow: Flow, *, level: str) -> Decision:
    """One NSG's decision: priority order, first full match wins."""
    if nsg is None:
        return Decision(level, None, True, None)
    conditional: list[Rule] = []
    notes: list[str] = []
    for rule in nsg.inbound_rules():
        matched, rule_notes = rule.match(flow)
        notes += [f"{rule.name}: {n}" for n in rule_notes]
        if matched is Match.YES:
            return Decision(level, nsg, rule.allows, rule, tuple(conditional), tuple(notes))
        if matched is Match.SOME:
            conditional.append(rule)
    # Unreachable with the default rules in place; a flow nothing matches is not let in.
    return Decision(level, nsg, False, None, tuple(conditional), tuple(notes))


@dataclass(frozen=True)
class Effective:
    """Both levels together: the subnet's NSG first, then the NIC's; both must allow."""

    subnet: Decision
    nic: Decision

    @property
    def allowed(self) -> bool:
        return self.subnet.allowed and self.nic.allowed

    @property
    def deciding(self) -> Decision:
        """The level that denied (subnet first, as Azure evaluates it), else the NIC level."""
        if not self.subnet.allowed:
            return self.subnet
        return self.nic if not self.nic.allowed or self.nic.nsg else self.subnet


def evaluate_inbound(subnet_nsg: SecurityGroup | None, nic_nsg: SecurityGroup | None, flow: Flow) -> Effective:
    return Effective(evaluate(subnet_nsg, flow, level="subnet"), evaluate(nic_nsg, flow, level="nic"))


def free_priority(nsg: SecurityGroup, *, below: int) -> int | None:
    """The highest custom priority (100-4096) under ``below`` that no inbound rule uses: a rule
    placed there wins over the rule at ``below`` and collides with none."""
    used = {r.priority for r in nsg.inbound_rules()}
    for priority in range(min(below - 1, 4096), 99, -1):
        if priority not in used:
            return priority
    return None
