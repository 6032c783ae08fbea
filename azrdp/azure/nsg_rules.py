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
"""

from __future__ import annotations

import getpass
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from azrdp.checks import Check, Status
from azrdp.errors import UsageError
from azrdp.logsafe import printable
from azrdp.ui import SILENT, ProgressSink

if TYPE_CHECKING:
    from azrdp.azure.vm import Session

RULE_PREFIX = "azrdp-allow-rdp-"
MARKER = "azrdp:"
DEFAULT_ALLOW_FOR = timedelta(hours=2)
MAX_ALLOW_FOR = timedelta(hours=24)
IPV4_WIDEST, IPV6_WIDEST = 24, 64
DESCRIPTION_MAX = 140                 # Azure's limit for a security rule's description
_REFUSED = {"*", "any", "internet", "0.0.0.0/0", "::/0", "0.0.0.0", "::"}
_EXPIRES = re.compile(r"expires (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)")
_TIME = "%Y-%m-%dT%H:%M:%SZ"


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
    if network.version == 6 and any(network.subnet_of(embed) or embed.subnet_of(network) for embed in _EMBEDS_IPV4):
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


def caller_identity(session: Session | None = None) -> str:
    """Who is making the change: the signed-in identity's name from its token when it says
    (upn, preferred_username, unique_name, app id), else the OS user. The token is read only for
    those claims and never logged or stored."""
    credential = getattr(session, "credential", None)
    endpoint = getattr(session, "endpoint", None)   # an AzureSession's; a Session need not have one
    cloud = getattr(session, "cloud", None)
    scope = None
    try:
        scope = endpoint.token_scope if endpoint is not None else cloud.arm()[1]
    except Exception:  # noqa: BLE001 - no session, or no cloud: fall back to the OS user
        scope = None
    if credential is not None and scope:
        try:
            claims = _jwt_claims(credential.get_token(scope).token)
        except Exception:  # noqa: BLE001 - identity names are a nicety, never a failure
            claims = {}
        for key in ("upn", "preferred_username", "unique_name", "email"):
            if claims.get(key):
                return str(claims[key])
        if claims.get("appid"):
            return f"app {claims['appid']}"
    try:
        return f"os user {getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no login name (containers)
        return "unknown user"


def _jwt_claims(token: str) -> dict[str, Any]:
    import base64
    import json

    parts = token.split(".")
    if len(parts) != 3:
        return {}
    body = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(body.encode()))


def rule_name(now: datetime, run_id: str | None = None) -> str:
    """``azrdp-allow-rdp-<UTC time>-<run>``: unique per run (two fixes in the same second on VMs that
    share a subnet NSG must not overwrite each other's rule through the create-or-update PUT)."""
    run = re.sub(r"[^A-Za-z0-9]", "", (run_id or "").removeprefix("azrdp-"))[:16] or secrets.token_hex(4)
    return RULE_PREFIX + now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + run


def describe(*, who: str, vm: str, now: datetime, expires: datetime, run_id: str | None = None) -> str:
    """The rule's description: marker, expiry, run and VM first (they must survive the 140-character
    cap; who made it comes last and is cut first)."""
    run = f"run {run_id}; " if run_id else ""
    text = (f"{MARKER} expires {expires.astimezone(timezone.utc):{_TIME}}; {run}vm {vm}; created "
            f"{now.astimezone(timezone.utc):{_TIME}} by {who}")
    return text[:DESCRIPTION_MAX]


def expiry_of(description: str | None) -> datetime | None:
    found = _EXPIRES.search(description or "")
    if not found:
        return None
    return datetime.strptime(found.group(1), _TIME).replace(tzinfo=timezone.utc)


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
                "expires": self.expires.strftime(_TIME), "beats": self.beats}


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


PRIORITY_ATTEMPTS = 3


def create_rule(session: Session, rule: RulePlan, *, clock: Any, timeout: float = 300.0,
                attempts: int = PRIORITY_ATTEMPTS, on_poll: Any = None) -> Any:
    """PUT the rule and wait for ARM to finish provisioning it (an idempotent PUT: retried as usual).
    ``on_poll(status)`` hears ARM's status of the operation while azrdp waits (the status line).

    Another run (or a person) may take the planned priority between azrdp's read and its PUT:
    ARM then refuses the rule with SecurityRuleConflict (same priority and direction). The NSG is
    read again, the next free priority before the deny rule chosen (``rule.priority`` updated) and
    the PUT sent again, up to ``attempts`` times."""
    from azrdp.azure.lro import poll_interval
    from azrdp.azure.power import run_lro
    from azrdp.errors import AzrdpError

    network = session.network
    for attempt in range(1, attempts + 1):
        try:
            return run_lro(lambda **kw: network.security_rules.begin_create_or_update(
                rule.resource_group, rule.nsg_name, rule.name, rule.body(), **kw),
                client=network, action="NSG rule creation", doing=f"adding rule {rule.name} to NSG {rule.nsg_name}",
                clock=clock, timeout=timeout, polling_interval=poll_interval(session),
                subscription=session.subscription_id, idempotent=True, on_poll=on_poll)
        except AzrdpError as err:
            if attempt == attempts or not _priority_conflict(err):
                raise
            priority = _next_free_priority(session, rule)
            if priority is None:
                raise
            rule.priority = priority
    raise AssertionError("unreachable")


def _priority_conflict(err: BaseException) -> bool:
    from azrdp.azure.arm_errors import arm_error_code

    cause = err.__cause__
    if cause is not None and hasattr(cause, "status_code") and arm_error_code(cause) == "SecurityRuleConflict":  # type: ignore[arg-type]
        return True
    return "SecurityRuleConflict" in getattr(err, "message", "")   # translate() names ARM's code


def _next_free_priority(session: Session, rule: RulePlan) -> int | None:
    from azrdp.azure import wire_dict
    from azrdp.azure.nsg import SecurityGroup, free_priority

    nsg = SecurityGroup.from_arm(wire_dict(session.network.network_security_groups.get(rule.resource_group,
                                                                                        rule.nsg_name)))
    return free_priority(nsg, below=int(rule.beats.get("priority") or rule.priority + 1))


def delete_rule(session: Session, resource_group: str, nsg_name: str, name: str, *, clock: Any,
                timeout: float = 300.0, on_poll: Any = None) -> Any:
    from azrdp.azure.lro import poll_interval
    from azrdp.azure.power import run_lro

    network = session.network
    return run_lro(lambda **kw: network.security_rules.begin_delete(resource_group, nsg_name, name, **kw),
                   client=network, action="NSG rule removal", doing=f"removing rule {name} from NSG {nsg_name}",
                   clock=clock, timeout=timeout, polling_interval=poll_interval(session),
                   subscription=session.subscription_id, idempotent=True, on_poll=on_poll)


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
               "vm": self.vm, "run": self.run, "expires": self.expires.strftime(_TIME) if self.expires else None}
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
                      look_alikes: list[FoundRule] = ()) -> list[Check]:
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
    until = f"; the first expires {soonest:{_TIME}}" if soonest else ""
    return [Check("nsg.azrdp_rules", Status.PASS, f"{len(rules)} temporary azrdp rule(s): {listing}{more}{until}",
                  details, None)]


def azrdp_rules_stage(ctx: Any) -> list[Check]:
    """The diagnose stage for nsg.azrdp_rules (reads only what the inventory already holds)."""
    nsgs = vm_nsgs(ctx.inventory)
    return check_azrdp_rules(azrdp_rules(nsgs), now=ctx.session.clock.now(), vm=ctx.target.name,
                             resource_group=ctx.target.resource_group, look_alikes=look_alike_rules(nsgs))


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


@dataclass
class RevokeResult:
    vm: str                                                       # the VM, or the scope (--expired)
    found: list[FoundRule] = field(default_factory=list)
    removed: list[FoundRule] = field(default_factory=list)
    kept: list[FoundRule] = field(default_factory=list)          # not expired, with expired_only
    others: list[FoundRule] = field(default_factory=list)        # made for another VM (kept; --all removes)
    failed: list[tuple[FoundRule, str]] = field(default_factory=list)
    dry_run: bool = False
    now: datetime | None = None
    audit_error: str | None = None
    scope: bool = False

    @property
    def exit_code(self) -> int:
        from azrdp.errors import EXIT_AZURE, EXIT_OK, EXIT_PROBLEM

        return EXIT_AZURE if self.failed else EXIT_PROBLEM if self.audit_error else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {("scope" if self.scope else "vm"): self.vm, "dry_run": self.dry_run,
                "found": [r.to_dict(self.now) for r in self.found],
                "removed": [r.to_dict(self.now) for r in self.removed],
                "kept": [r.to_dict(self.now) for r in self.kept],
                "other_vms": [r.to_dict(self.now) for r in self.others],
                "failed": [{**r.to_dict(self.now), "error": e} for r, e in self.failed],
                "audit_error": self.audit_error, "exit_code": self.exit_code}

    def render_text(self) -> str:
        where = f"in {self.vm}" if self.scope else f"on the NSGs of VM {self.vm}"
        if not self.found and not self.others:
            return f"No azrdp rules {where}: nothing to remove."
        verb = "Would remove" if self.dry_run else "Removed"
        lines = [f"{verb} {len(self.removed)} of {len(self.found)} azrdp rule(s) {where}:"]
        for rule in self.removed:
            lines.append(f"  {rule.name} on {rule.nsg_name} (from {rule.source}, priority {rule.priority})")
        for rule in self.kept:
            lines.append(f"  kept {rule.name} on {rule.nsg_name}: " + (f"not expired (until {rule.expires:{_TIME}})"
                                                                      if rule.expires else "its description gives no expiry"))
        for rule in self.others:
            lines.append(f"  kept {rule.name} on {rule.nsg_name}: made for VM {rule.vm or '(not named)'} "
                         "(--all removes every azrdp rule on these NSGs)")
        for rule, error in self.failed:
            lines.append(f"  FAILED {rule.name} on {rule.nsg_name}: {error}")
        if self.audit_error:
            lines.append(f"Audit: FAILED: {self.audit_error}")
        return "\n".join(printable(line) for line in lines)


def revoke(session: Session, target: Any, *, audit: Any, clock: Any = None, progress: ProgressSink = SILENT,
           expired_only: bool = False, dry_run: bool = False, every_vm: bool = False) -> RevokeResult:
    """Remove the rules azrdp made for ``target`` on the NSGs of its NICs and subnets (and only
    those: a subnet NSG may carry rules azrdp made for other VMs; ``every_vm`` removes those too);
    with ``expired_only`` only the expired ones. Each removal is audited as it happens."""
    from azrdp.azure.inventory import read_inventory

    clock = clock or session.clock
    inventory = read_inventory(session, target, progress=progress)
    now = clock.now()
    private_ips = [str((c.get("properties") or {}).get("privateIPAddress") or "").split("/")[0]
                   for nic in inventory.resources.values() if nic.kind == "nic" and nic.body is not None
                   for c in nic.properties.get("ipConfigurations") or []]
    rules = azrdp_rules(vm_nsgs(inventory))
    mine = [r for r in rules if every_vm or made_for(r, target.name, private_ips)]
    result = RevokeResult(str(target), mine, dry_run=dry_run, now=now,
                          others=[r for r in rules if r not in mine])
    return _remove(session, result, audit=audit, clock=clock, progress=progress, expired_only=expired_only)


def revoke_expired(session: Session, *, audit: Any, resource_group: str | None = None, clock: Any = None,
                   progress: ProgressSink = SILENT, dry_run: bool = False) -> RevokeResult:
    """Remove every expired azrdp rule on every NSG of a resource group (or of the whole
    subscription): what an Automation schedule runs, since Azure never expires a rule by itself."""
    from azure.core.exceptions import AzureError

    from azrdp.azure import wire_dict
    from azrdp.azure.arm_errors import translate

    clock = clock or session.clock
    scope = f"resource group {resource_group}" if resource_group else f"subscription {session.subscription_id}"
    progress.info(f"Listing the NSGs of {scope} ...")
    groups = session.network.network_security_groups
    try:
        bodies = [wire_dict(n) for n in (groups.list(resource_group) if resource_group else groups.list_all())]
    except AzureError as err:
        raise translate(err, doing=f"listing the NSGs of {scope}", subscription=session.subscription_id) from err
    now = clock.now()
    rules = azrdp_rules(_Listed(b) for b in bodies)
    result = RevokeResult(scope, rules, dry_run=dry_run, now=now, scope=True)
    return _remove(session, result, audit=audit, clock=clock, progress=progress, expired_only=True)


@dataclass
class _Listed:
    """An NSG from a list call, shaped like an inventory Resource for azrdp_rules."""

    body: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.body.get("id") or "")

    @property
    def name(self) -> str:
        return str(self.body.get("name") or self.id.rsplit("/", 1)[-1])

    @property
    def properties(self) -> dict[str, Any]:
        return self.body.get("properties") or {}


def _remove(session: Session, result: RevokeResult, *, audit: Any, clock: Any, progress: ProgressSink,
            expired_only: bool) -> RevokeResult:
    from azrdp.audit import AuditWriteError
    from azrdp.errors import AzrdpError

    now = result.now
    for rule in result.found:
        if expired_only and not rule.expired(now):
            result.kept.append(rule)
            continue
        if result.dry_run:
            result.removed.append(rule)
            continue
        stop = _stop_requested()
        if stop:   # no new removal after SIGINT/SIGTERM
            audit.record("interrupted", done=[f"removed {r.name} from {r.nsg_name}" for r in result.removed],
                         in_flight=None, signal=stop)
            raise KeyboardInterrupt(stop)
        progress.info(f"Removing NSG rule {rule.name} from {rule.nsg_name} ...")
        try:
            audit.record("nsg-rule", status="remove-requested", rule=rule.to_dict(now), intent=True)
        except AuditWriteError as err:  # nothing is removed without a record
            result.audit_error = err.message
            result.kept.extend(r for r in result.found if r not in result.removed and r not in result.kept
                               and all(r is not f for f, _ in result.failed))
            break
        try:
            from azrdp.ui import waiting

            with waiting(progress, f"Removal of NSG rule {rule.name}", said="sent", limit=300.0) as wait:
                delete_rule(session, rule.resource_group, rule.nsg_name, rule.name, clock=clock,
                            on_poll=wait.update)
                wait.end("removed")
        except AzrdpError as err:
            result.failed.append((rule, err.message))
            audit.record("nsg-rule", status="remove-failed", rule=rule.to_dict(now), error=err.message)
            continue
        except KeyboardInterrupt:  # the DELETE may have been accepted: say so, in the audit and on stderr
            in_flight = f"the removal of rule {rule.name} from NSG {rule.nsg_name}"
            audit.record("interrupted", done=[f"removed {r.name} from {r.nsg_name}" for r in result.removed],
                         in_flight=in_flight, rule=rule.to_dict(now))
            progress.info(f"Interrupted: {in_flight} may still be in flight; run azrdp revoke again to finish.")
            raise
        result.removed.append(rule)
        audit.record("nsg-rule", status="removed", rule=rule.to_dict(now))
    result.audit_error = result.audit_error or audit.error
    progress.done()
    return result


def _stop_requested() -> str | None:
    """A signal azrdp caught (SIGINT/SIGTERM) that says: send no new change (azrdp.clock)."""
    from azrdp.clock import stop_requested

    return stop_requested()
