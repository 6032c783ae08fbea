"""The temporary inbound rules azrdp may add (`fix --allow-from`) and remove (`revoke`).

azrdp never opens the RDP port by itself. When the user asks with ``--allow-from IP|CIDR|me``:

* the source must be one address or a small range: IPv4 /24 or narrower; IPv6 /64 or narrower
  (one IPv6 subnet, a single network segment, is the IPv6 counterpart of a /24 LAN). ``*``,
  ``Any``, ``Internet``, ``0.0.0.0/0``, ``::/0`` and every other service tag are always refused;
* ``me`` is the caller's public address, which only the user knows: it comes from ``--source-ip``
  (azrdp never asks an outside "what is my IP" service);
* the rule goes into each NSG that blocks the flow (subnet and/or NIC: the narrowest scope), at
  the highest free custom priority (100-4096) that still comes before the deciding deny rule,
  for TCP to the RDP port of THIS VM's private address only, from that source only;
* it is named ``azrdp-allow-rdp-<UTC time>`` and its description records who made it, when, and
  when it expires (``--allow-for``, default 2 hours). Azure does not expire rules by itself:
  ``diagnose`` lists azrdp's rules (check ``nsg.azrdp_rules``) and flags expired ones, and
  ``azrdp revoke`` removes them.

``revoke`` removes every rule azrdp created on the VM's NSGs, and only those: the name must start
with ``azrdp-allow-rdp-`` AND the description must carry azrdp's marker.

This module is the pure part, beside the NSG evaluator (nsg.py): parsing ``--allow-from``, planning
the rules, and judging which rules are azrdp's, for which VM, and whether they are wider than
azrdp makes. It reads only data it is given (inventory bodies, ARM rule dicts) and calls nothing.
The ARM writes are the VM handle's (``AzureVm.put_rule``/``delete_rule``, azrdp.azure.nsg_writes),
the ``nsg.azrdp_rules`` diagnose stage is azrdp.diagnose's, and the revoke job is azrdp.revoke.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from azrdp.azure.nsg import within
from azrdp.checks import Check, Status
from azrdp.errors import UsageError
from azrdp.logsafe import printable

RULE_PREFIX = "azrdp-allow-rdp-"
MARKER = "azrdp:"
DEFAULT_ALLOW_FOR = timedelta(hours=2)
MAX_ALLOW_FOR = timedelta(hours=24)
IPV4_WIDEST, IPV6_WIDEST = 24, 64
DESCRIPTION_MAX = 140                 # Azure's limit for a security rule's description
_REFUSED = {"*", "any", "internet", "0.0.0.0/0", "::/0", "0.0.0.0", "::"}
_EXPIRES = re.compile(r"expires (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"   # how rule descriptions and reports write a UTC time


# IPv6 ranges that embed the whole IPv4 Internet: a "narrow" /96 of these is every IPv4 address.
_EMBEDS_IPV4 = tuple(ipaddress.ip_network(n) for n in (
    "::ffff:0:0/96",        # IPv4-mapped (RFC 4291 2.5.5.2)
    "::/96",                # IPv4-compatible, deprecated (RFC 4291 2.5.5.1)
    "64:ff9b::/96",         # NAT64 well-known prefix (RFC 6052)
    "64:ff9b:1::/48",       # NAT64 local-use (RFC 8215)
    "::ffff:0:0:0/96",      # IPv4-translated (RFC 2765)
))
_ADDRESS_TEXT = re.compile(r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$")


def _examples() -> str:
    return "Use e.g. --allow-from 203.0.113.7, --allow-from 198.51.100.0/24 or --allow-from me --source-ip 203.0.113.7."


def parse_allow_from(value: str, *, source_ip: str | None = None) -> str:
    """The source prefix for ``--allow-from`` (``203.0.113.7`` or ``198.51.100.0/24``), or a
    UsageError naming what is wrong and what to pass instead.

    One address, or a prefix of at most /24 (IPv4) or /64 (IPv6) with no host bits set; never a
    wildcard, service tag, zone id (``fe80::1%eth0``: NSG rules take none, and the text after ``%``
    is anything), IPv4-mapped or NAT64 range (all of IPv4 under an IPv6 name), or the unspecified
    address (``0.0.0.0/32``, ``::/128``). With ``source_ip`` (the address azrdp verifies from), the
    source must cover it, or the rule would let nobody in and azrdp would wait for RDP in vain.
    """
    raw = value if isinstance(value, str) else ""
    text = raw.strip()
    shown = printable(text, limit=60)
    if text.lower() == "me":
        if not source_ip:
            raise UsageError("--allow-from me needs your public address, and azrdp does not ask an outside "
                             "service for it.",
                             hint="Pass it too: --allow-from me --source-ip YOUR_PUBLIC_IP (for example the "
                                  "address `curl https://ifconfig.me` shows, if you trust that service), or "
                                  "--allow-from YOUR_PUBLIC_IP.")
        text = source_ip.strip()
        shown = printable(text, limit=60)
    if text.lower() in _REFUSED:
        raise UsageError(f"--allow-from {shown} would open Remote Desktop to the whole Internet; azrdp never "
                         "does that.", hint="Give your own address (or your office's /24), or use just-in-time "
                                            "access.")
    if "%" in text:
        raise UsageError(f"--allow-from {shown!r} carries an IPv6 zone id (the part after %): NSG rules take plain "
                         "addresses.", hint="Drop the %... part; a zone id only names a local interface.")
    if not _ADDRESS_TEXT.match(text):
        raise UsageError(f"--allow-from {shown!r} is not an IP address or CIDR range (service tags are refused).",
                         hint=_examples())
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageError(f"--allow-from {shown!r} is not an IP address or CIDR range (service tags are refused).",
                         hint=_examples()) from None
    if network.network_address.is_unspecified or network.prefixlen == 0:
        raise UsageError(f"--allow-from {shown} would open Remote Desktop to the whole Internet (it is the "
                         "unspecified address, which NSGs read as any); azrdp never does that.",
                         hint="Give your own address instead.")
    if network.version == 6 and any(within(network, embed) or within(embed, network) for embed in _EMBEDS_IPV4):
        raise UsageError(f"--allow-from {shown} is an IPv4-mapped or NAT64 range: it names IPv4 addresses under an "
                         "IPv6 prefix, and /96 of it is all of IPv4.",
                         hint="Give the IPv4 address itself, e.g. --allow-from 203.0.113.7.")
    widest = IPV4_WIDEST if network.version == 4 else IPV6_WIDEST
    if network.prefixlen < widest:
        raise UsageError(f"--allow-from {shown} is too broad: azrdp allows one address or a range of at most "
                         f"/{widest} for IPv{network.version}.",
                         hint=f"Narrow it to your own address or a /{widest}.")
    if "/" in text and ipaddress.ip_interface(text).ip != network.network_address:
        raise UsageError(f"--allow-from {shown} has host bits set: it would open {network}, not just "
                         f"{ipaddress.ip_interface(text).ip}.",
                         hint=f"Give the address alone ({ipaddress.ip_interface(text).ip}) or the range as "
                              f"{network}.")
    if source_ip:
        try:
            client = ipaddress.ip_address(source_ip.strip())
        except ValueError:
            raise UsageError(f"--source-ip {printable(source_ip, limit=60)!r} is not an IP address.",
                             hint="Give your public IPv4 or IPv6 address.") from None
        if client not in network:
            raise UsageError(f"--allow-from {shown} does not cover --source-ip {client}: the rule would not let "
                             "you in, and azrdp would wait for RDP in vain.",
                             hint=f"Use --allow-from {client} (or --allow-from me), or correct --source-ip.")
    if network.num_addresses == 1:
        return str(network.network_address)
    return str(network)


def check_allow_for(allow_for: timedelta) -> timedelta:
    """``--allow-for`` is at most MAX_ALLOW_FOR: a rule that outlives the repair is an open door."""
    if not allow_for > timedelta(0) or allow_for > MAX_ALLOW_FOR:
        hours = MAX_ALLOW_FOR.total_seconds() / 3600
        raise UsageError(f"--allow-for must be more than 0 and at most {hours:g} h.",
                         hint="Use e.g. --allow-for 2h; run `azrdp fix --allow-from` again when you need more.")
    return allow_for



def rule_name(now: datetime, run_id: str | None = None) -> str:
    """``azrdp-allow-rdp-<UTC time>-<run>``: unique per run (two fixes in the same second on VMs that
    share a subnet NSG must not overwrite each other's rule through the create-or-update PUT)."""
    run = re.sub(r"[^A-Za-z0-9]", "", (run_id or "").removeprefix("azrdp-"))[:16] or secrets.token_hex(4)
    return RULE_PREFIX + now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + run


def describe(*, who: str, vm: str, now: datetime, expires: datetime, run_id: str | None = None) -> str:
    """The rule's description: marker, expiry, run and VM first (they must survive the 140-character
    cap; who made it comes last and is cut first)."""
    run = f"run {run_id}; " if run_id else ""
    text = (f"{MARKER} expires {expires.astimezone(timezone.utc):{TIME_FORMAT}}; {run}vm {vm}; created "
            f"{now.astimezone(timezone.utc):{TIME_FORMAT}} by {who}")
    return text[:DESCRIPTION_MAX]


def expiry_of(description: str | None) -> datetime | None:
    found = _EXPIRES.search(description or "")
    if not found:
        return None
    return datetime.strptime(found.group(1), TIME_FORMAT).replace(tzinfo=timezone.utc)


_VM_OF = re.compile(r"; vm ([^;\s]+);|for RDP to (\S+)\s*$")
_RUN_OF = re.compile(r"; run ([^;\s]+);")


def vm_of(description: str | None) -> str | None:
    """The VM a rule was made for, from its description (this azrdp's or an older one's wording)."""
    found = _VM_OF.search(description or "")
    return (found.group(1) or found.group(2)) if found else None


def run_of(description: str | None) -> str | None:
    found = _RUN_OF.search(description or "")
    return found.group(1) if found else None


def wider_than_azrdp(rule: dict[str, Any]) -> str | None:
    """Why an inbound rule named like azrdp's is wider than any rule azrdp makes (TCP to one port of
    one address, from one address or a /24 (/64)), or None when it is not."""
    props = rule.get("properties") or {}
    if str(props.get("access") or "").lower() != "allow" or str(props.get("direction") or "").lower() != "inbound":
        return None
    sources = [str(v) for v in (props.get("sourceAddressPrefixes") or [])] or [str(props.get("sourceAddressPrefix") or "")]
    problems = []
    for source in sources:
        try:
            parse_allow_from(source)
        except UsageError:
            problems.append(f"source {printable(source, limit=40) or '(none)'}")
    if props.get("sourceApplicationSecurityGroups"):
        problems.append("source application security groups")
    if str(props.get("protocol") or "").lower() != "tcp":
        problems.append(f"protocol {printable(props.get('protocol'), limit=10)}")
    ports = [str(v) for v in (props.get("destinationPortRanges") or [])] or [str(props.get("destinationPortRange") or "")]
    if len(ports) != 1 or not ports[0].isdigit():
        problems.append(f"ports {printable(','.join(ports), limit=30)}")
    destinations = [str(v) for v in (props.get("destinationAddressPrefixes") or [])] or \
        [str(props.get("destinationAddressPrefix") or "")]
    if len(destinations) != 1 or not _single_address(destinations[0]):
        problems.append(f"destination {printable(','.join(destinations), limit=40)}")
    return ", ".join(problems) or None


def _single_address(text: str) -> bool:
    try:
        return ipaddress.ip_network(text, strict=False).num_addresses == 1
    except ValueError:
        return False


def is_azrdp_rule(rule: dict[str, Any]) -> bool:
    """Created by azrdp: the name AND the description say so (a look-alike name is not enough)."""
    props = rule.get("properties") or {}
    return str(rule.get("name") or "").startswith(RULE_PREFIX) and \
        str(props.get("description") or "").startswith(MARKER)


@dataclass
class RulePlan:
    """One inbound allow rule azrdp will add to one NSG."""

    nsg_id: str
    nsg_name: str
    resource_group: str
    level: str                 # subnet | nic
    name: str
    priority: int
    source: str
    destination: str
    port: int
    description: str
    expires: datetime
    beats: dict[str, Any] = field(default_factory=dict)   # the deny rule it wins over

    def body(self) -> dict[str, Any]:
        return {"properties": {
            "protocol": "Tcp", "sourceAddressPrefix": self.source, "sourcePortRange": "*",
            "destinationAddressPrefix": self.destination, "destinationPortRange": str(self.port),
            "access": "Allow", "priority": self.priority, "direction": "Inbound",
            "description": self.description}}

    def to_dict(self) -> dict[str, Any]:
        return {"nsg": self.nsg_id, "nsg_name": self.nsg_name, "level": self.level, "name": self.name,
                "priority": self.priority, "source": self.source, "destination": self.destination,
                "port": self.port, "protocol": "Tcp", "description": self.description,
                "expires": self.expires.strftime(TIME_FORMAT), "beats": self.beats}


def plan_allow_rules(inventory: Any, path: Any, *, source: str, port: int, who: str, vm: str,
                     now: datetime, allow_for: timedelta = DEFAULT_ALLOW_FOR,
                     run_id: str | None = None) -> tuple[list[RulePlan], str | None]:
    """The rules that let TCP ``port`` in from ``source`` (a prefix from parse_allow_from), one per
    blocking NSG; or ([], why) when no rule can be planned (nothing blocks, no free priority, no
    private address). Pure: reads the inventory diagnose already holds."""
    from azrdp.azure.nsg import Flow, SecurityGroup, evaluate, free_priority
    from azrdp.target import parse_resource_id

    private_ip = getattr(path, "private_ip", None)
    if not private_ip:
        return [], "the VM's network interface has no private address to allow RDP to"
    probe_source = str(ipaddress.ip_network(source, strict=False).network_address)
    flow = Flow(private_ip, port=port, source_ip=probe_source, destination_asgs=path.asgs())
    levels = (("subnet", path.subnet), ("nic", path.nic))
    rules: list[RulePlan] = []
    name = rule_name(now, run_id)
    expires = now + check_allow_for(allow_for)
    for level, holder in levels:
        ref = ((holder.properties if holder is not None and holder.body else {}).get("networkSecurityGroup")
               or {}).get("id")
        nsg_resource = inventory.get(ref) if ref else None
        if nsg_resource is None or nsg_resource.body is None:
            continue
        nsg = SecurityGroup.from_arm(nsg_resource.body)
        decision = evaluate(nsg, flow, level=level)
        if decision.allowed or decision.rule is None:
            continue
        priority = free_priority(nsg, below=decision.rule.priority)
        if priority is None:
            return [], (f"NSG {nsg.name} has no free priority before rule {decision.rule.label()}; narrow or "
                        "remove that rule yourself")
        rules.append(RulePlan(
            nsg_id=nsg_resource.id, nsg_name=nsg.name, resource_group=parse_resource_id(nsg_resource.id).resource_group,
            level=level, name=name, priority=priority, source=source, destination=private_ip, port=port,
            description=describe(who=who, vm=vm, now=now, expires=expires, run_id=run_id), expires=expires,
            beats=decision.rule.to_dict()))
    if not rules:
        return [], f"no NSG blocks TCP {port} from {source}"
    return rules, None



@dataclass
class FoundRule:
    nsg_id: str
    nsg_name: str
    resource_group: str
    name: str
    source: str
    priority: int
    description: str
    expires: datetime | None
    destination: str = ""
    vm: str | None = None           # the VM it was made for (its description says)
    run: str | None = None          # the azrdp run that made it
    wider: str | None = None        # why it is wider than any rule azrdp makes (a look-alike)

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and self.expires <= now

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        out = {"nsg": self.nsg_id, "nsg_name": self.nsg_name, "name": self.name, "source": self.source,
               "destination": self.destination, "priority": self.priority, "description": self.description,
               "vm": self.vm, "run": self.run, "expires": self.expires.strftime(TIME_FORMAT) if self.expires else None}
        if self.wider:
            out["wider_than_azrdp"] = self.wider
        if now is not None:
            out["expired"] = self.expired(now)
        return out


def _found(resource: Any, rule: dict[str, Any], wider: str | None) -> FoundRule:
    from azrdp.target import parse_resource_id

    props = rule.get("properties") or {}
    source = props.get("sourceAddressPrefix") or ",".join(props.get("sourceAddressPrefixes") or [])
    destination = props.get("destinationAddressPrefix") or ",".join(props.get("destinationAddressPrefixes") or [])
    description = str(props.get("description") or "")
    try:
        priority = int(props.get("priority") or 0)
    except (TypeError, ValueError):
        priority = 0
    return FoundRule(resource.id, resource.name, parse_resource_id(resource.id).resource_group, str(rule.get("name")),
                     str(source), priority, description, expiry_of(description), str(destination),
                     vm_of(description), run_of(description), wider)


def _named_rules(nsg_resources: Iterable[Any]) -> Iterable[tuple[Any, dict[str, Any]]]:
    seen: set[str] = set()
    for resource in nsg_resources:
        if resource is None or resource.body is None or resource.id.lower() in seen:
            continue
        seen.add(resource.id.lower())
        for rule in (resource.properties.get("securityRules") or []):
            if str(rule.get("name") or "").startswith(RULE_PREFIX):
                yield resource, rule


def azrdp_rules(nsg_resources: Iterable[Any]) -> list[FoundRule]:
    """azrdp's rules in these NSG resources (inventory Resources with an ARM body): the name AND the
    marker, and no wider than azrdp makes (a wider one is a look-alike: :func:`look_alike_rules`)."""
    return [_found(resource, rule, None) for resource, rule in _named_rules(nsg_resources)
            if is_azrdp_rule(rule) and wider_than_azrdp(rule) is None]


def look_alike_rules(nsg_resources: Iterable[Any]) -> list[FoundRule]:
    """Rules named like azrdp's that allow more than azrdp ever does (any source, every port, ...):
    made or edited by someone else. azrdp never removes them; diagnose flags them."""
    found = []
    for resource, rule in _named_rules(nsg_resources):
        wider = wider_than_azrdp(rule)
        if wider is not None:
            found.append(_found(resource, rule, wider))
    return found


def vm_nsgs(inventory: Any) -> list[Any]:
    """Every NSG attached to the VM's NICs or to their subnets (inventory Resources)."""
    return [r for r in inventory.resources.values() if r.kind == "nsg"]


def check_azrdp_rules(rules: list[FoundRule], *, now: datetime, vm: str, resource_group: str,
                      look_alikes: Sequence[FoundRule] = ()) -> list[Check]:
    """nsg.azrdp_rules: only when azrdp rules (or look-alikes) exist (none: no line, nothing to say)."""
    if not rules and not look_alikes:
        return []
    details = {"rules": [r.to_dict(now) for r in rules], "look_alikes": [r.to_dict(now) for r in look_alikes]}
    if look_alikes:
        first = look_alikes[0]
        return [Check("nsg.azrdp_rules", Status.FAIL,
                      f"{len(look_alikes)} rule(s) named like azrdp's allow more than azrdp ever does: {first.name} on "
                      f"{first.nsg_name} ({first.wider})", details,
                      "azrdp did not make it this wide and never removes it: check who did, then narrow or delete it "
                      "yourself (az network nsg rule delete).")]
    expired = [r for r in rules if r.expired(now)]
    listing = ", ".join(f"{r.name} on {r.nsg_name} from {r.source}" for r in rules[:3])
    more = f" and {len(rules) - 3} more" if len(rules) > 3 else ""
    revoke = f"Remove them with `azrdp revoke {vm} -g {resource_group}`."
    if expired:
        return [Check("nsg.azrdp_rules", Status.WARN,
                      f"{len(expired)} of {len(rules)} azrdp rule(s) expired and still allow RDP: {listing}{more}",
                      details, revoke)]
    soonest = min((r.expires for r in rules if r.expires), default=None)
    until = f"; the first expires {soonest:{TIME_FORMAT}}" if soonest else ""
    return [Check("nsg.azrdp_rules", Status.PASS, f"{len(rules)} temporary azrdp rule(s): {listing}{more}{until}",
                  details, None)]



def made_for(rule: FoundRule, vm: str, private_ips: Iterable[str] = ()) -> bool:
    """Was ``rule`` made for VM ``vm``? Its description names the VM and its destination (one
    address) is one of the VM's private addresses (when those are known); a description that names
    no VM leaves it to the destination."""
    ips = {ip for ip in private_ips if ip}
    to_this_vm = bool(ips) and _single_address(rule.destination) and \
        str(ipaddress.ip_network(rule.destination, strict=False).network_address) in ips
    if rule.vm is None:   # a hand-edited description: the destination decides
        return to_this_vm
    if rule.vm.lower() != vm.lower():
        return False
    return to_this_vm or not ips
