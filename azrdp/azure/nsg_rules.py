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
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from azrdp.checks import Check, Status
from azrdp.errors import UsageError

RULE_PREFIX = "azrdp-allow-rdp-"
MARKER = "azrdp:"
DEFAULT_ALLOW_FOR = timedelta(hours=2)
IPV4_WIDEST, IPV6_WIDEST = 24, 64
DESCRIPTION_MAX = 140                 # Azure's limit for a security rule's description
_REFUSED = {"*", "any", "internet", "0.0.0.0/0", "::/0", "0.0.0.0", "::"}
_EXPIRES = re.compile(r"expires (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)")
_TIME = "%Y-%m-%dT%H:%M:%SZ"


def parse_allow_from(value: str, *, source_ip: str | None = None) -> str:
    """The source prefix for ``--allow-from`` (``203.0.113.7`` or ``198.51.100.0/24``), or a
    UsageError naming what is wrong and what to pass instead."""
    text = (value or "").strip()
    if text.lower() == "me":
        if not source_ip:
            raise UsageError("--allow-from me needs your public address, and azrdp does not ask an outside "
                             "service for it.",
                             hint="Pass it too: --allow-from me --source-ip YOUR_PUBLIC_IP (for example the "
                                  "address `curl https://ifconfig.me` shows, if you trust that service), or "
                                  "--allow-from YOUR_PUBLIC_IP.")
        text = source_ip.strip()
    if text.lower() in _REFUSED:
        raise UsageError(f"--allow-from {value} would open Remote Desktop to the whole Internet; azrdp never "
                         "does that.", hint="Give your own address (or your office's /24), or use just-in-time "
                                            "access.")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageError(f"--allow-from {value!r} is not an IP address or CIDR range (service tags are refused).",
                         hint="Use e.g. --allow-from 203.0.113.7, --allow-from 198.51.100.0/24 or "
                              "--allow-from me --source-ip 203.0.113.7.") from None
    widest = IPV4_WIDEST if network.version == 4 else IPV6_WIDEST
    if network.prefixlen == 0:
        raise UsageError(f"--allow-from {value} would open Remote Desktop to the whole Internet; azrdp never "
                         "does that.", hint="Give your own address instead.")
    if network.prefixlen < widest:
        raise UsageError(f"--allow-from {value} is too broad: azrdp allows one address or a range of at most "
                         f"/{widest} for IPv{network.version}.",
                         hint=f"Narrow it to your own address or a /{widest}.")
    if network.num_addresses == 1:
        return str(network.network_address)
    return str(network)


def caller_identity(session: Any = None) -> str:
    """Who is making the change: the signed-in identity's name from its token when it says
    (upn, preferred_username, unique_name, app id), else the OS user. The token is read only for
    those claims and never logged or stored."""
    credential = getattr(session, "credential", None)
    endpoint = getattr(session, "endpoint", None)
    scope = None
    try:
        scope = endpoint.token_scope if endpoint is not None else session.cloud.arm()[1]
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


def rule_name(now: datetime) -> str:
    return RULE_PREFIX + now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def describe(*, who: str, vm: str, now: datetime, expires: datetime) -> str:
    """The rule's description: marker and expiry first (they must survive the 140-character cap)."""
    text = (f"{MARKER} expires {expires.astimezone(timezone.utc):{_TIME}}; created "
            f"{now.astimezone(timezone.utc):{_TIME}} by {who} for RDP to {vm}")
    return text[:DESCRIPTION_MAX]


def expiry_of(description: str | None) -> datetime | None:
    found = _EXPIRES.search(description or "")
    if not found:
        return None
    return datetime.strptime(found.group(1), _TIME).replace(tzinfo=timezone.utc)


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
                     now: datetime, allow_for: timedelta = DEFAULT_ALLOW_FOR) -> tuple[list[RulePlan], str | None]:
    """The rules that let TCP ``port`` in from ``source`` (a prefix from parse_allow_from), one per
    blocking NSG; or ([], why) when no rule can be planned (nothing blocks, no free priority, no
    private address). Pure: reads the inventory diagnose already holds."""
    from azrdp.azure.nsg import free_priority
    from azrdp.azure.nsg import Flow, SecurityGroup, evaluate
    from azrdp.target import parse_resource_id

    private_ip = getattr(path, "private_ip", None)
    if not private_ip:
        return [], "the VM's network interface has no private address to allow RDP to"
    probe_source = str(ipaddress.ip_network(source, strict=False).network_address)
    flow = Flow(private_ip, port=port, source_ip=probe_source, destination_asgs=path.asgs())
    levels = (("subnet", path.subnet), ("nic", path.nic))
    rules: list[RulePlan] = []
    name = rule_name(now)
    expires = now + allow_for
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
            description=describe(who=who, vm=vm, now=now, expires=expires), expires=expires,
            beats=decision.rule.to_dict()))
    if not rules:
        return [], f"no NSG blocks TCP {port} from {source}"
    return rules, None


def create_rule(session: Any, rule: RulePlan, *, clock: Any, timeout: float = 300.0,
                on_poll: Any = None) -> Any:
    """PUT the rule and wait for ARM to finish provisioning it (an idempotent PUT: retried as usual).
    ``on_poll(status)`` hears ARM's status of the operation while azrdp waits (the status line)."""
    from azrdp.azure.lro import poll_interval
    from azrdp.azure.power import run_lro

    network = session.network
    return run_lro(lambda **kw: network.security_rules.begin_create_or_update(
        rule.resource_group, rule.nsg_name, rule.name, rule.body(), **kw),
        client=network, action="NSG rule creation", doing=f"adding rule {rule.name} to NSG {rule.nsg_name}",
        clock=clock, timeout=timeout, polling_interval=poll_interval(session),
        subscription=session.subscription_id, idempotent=True, on_poll=on_poll)


def delete_rule(session: Any, resource_group: str, nsg_name: str, name: str, *, clock: Any,
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

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and self.expires <= now

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        out = {"nsg": self.nsg_id, "nsg_name": self.nsg_name, "name": self.name, "source": self.source,
               "priority": self.priority, "description": self.description,
               "expires": self.expires.strftime(_TIME) if self.expires else None}
        if now is not None:
            out["expired"] = self.expired(now)
        return out


def azrdp_rules(nsg_resources: Iterable[Any]) -> list[FoundRule]:
    """azrdp's rules in these NSG resources (inventory Resources with an ARM body)."""
    from azrdp.target import parse_resource_id

    found = []
    seen: set[str] = set()
    for resource in nsg_resources:
        if resource is None or resource.body is None or resource.id.lower() in seen:
            continue
        seen.add(resource.id.lower())
        for rule in (resource.properties.get("securityRules") or []):
            if not is_azrdp_rule(rule):
                continue
            props = rule.get("properties") or {}
            source = props.get("sourceAddressPrefix") or ",".join(props.get("sourceAddressPrefixes") or [])
            found.append(FoundRule(resource.id, resource.name, parse_resource_id(resource.id).resource_group,
                                   str(rule["name"]), str(source), int(props.get("priority") or 0),
                                   str(props.get("description") or ""), expiry_of(props.get("description"))))
    return found


def vm_nsgs(inventory: Any) -> list[Any]:
    """Every NSG attached to the VM's NICs or to their subnets (inventory Resources)."""
    return [r for r in inventory.resources.values() if r.kind == "nsg"]


def check_azrdp_rules(rules: list[FoundRule], *, now: datetime, vm: str, resource_group: str) -> list[Check]:
    """nsg.azrdp_rules: only when azrdp rules exist (none: no line, nothing to say)."""
    if not rules:
        return []
    details = {"rules": [r.to_dict(now) for r in rules]}
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
    rules = azrdp_rules(vm_nsgs(ctx.inventory))
    return check_azrdp_rules(rules, now=ctx.session.clock.now(), vm=ctx.target.name,
                             resource_group=ctx.target.resource_group)


@dataclass
class RevokeResult:
    vm: str
    found: list[FoundRule] = field(default_factory=list)
    removed: list[FoundRule] = field(default_factory=list)
    kept: list[FoundRule] = field(default_factory=list)          # not expired, with expired_only
    failed: list[tuple[FoundRule, str]] = field(default_factory=list)
    dry_run: bool = False
    now: datetime | None = None
    audit_error: str | None = None

    @property
    def exit_code(self) -> int:
        from azrdp.errors import EXIT_AZURE, EXIT_OK, EXIT_PROBLEM

        return EXIT_AZURE if self.failed else EXIT_PROBLEM if self.audit_error else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"vm": self.vm, "dry_run": self.dry_run, "found": [r.to_dict(self.now) for r in self.found],
                "removed": [r.to_dict(self.now) for r in self.removed],
                "kept": [r.to_dict(self.now) for r in self.kept],
                "failed": [{**r.to_dict(self.now), "error": e} for r, e in self.failed],
                "audit_error": self.audit_error, "exit_code": self.exit_code}

    def render_text(self) -> str:
        if not self.found:
            return f"No azrdp rules on the NSGs of VM {self.vm}: nothing to remove."
        verb = "Would remove" if self.dry_run else "Removed"
        lines = [f"{verb} {len(self.removed)} of {len(self.found)} azrdp rule(s) on the NSGs of VM {self.vm}:"]
        for rule in self.removed:
            lines.append(f"  {rule.name} on {rule.nsg_name} (from {rule.source}, priority {rule.priority})")
        for rule in self.kept:
            lines.append(f"  kept {rule.name} on {rule.nsg_name}: " + (f"not expired (until {rule.expires:{_TIME}})"
                                                                      if rule.expires else "its description gives no expiry"))
        for rule, error in self.failed:
            lines.append(f"  FAILED {rule.name} on {rule.nsg_name}: {error}")
        if self.audit_error:
            lines.append(f"Audit: FAILED: {self.audit_error}")
        return "\n".join(lines)


def revoke(session: Any, target: Any, *, audit: Any, clock: Any = None, progress: Any = None,
           expired_only: bool = False, dry_run: bool = False) -> RevokeResult:
    """Remove every rule azrdp created on the NSGs of ``target``'s NICs and subnets (and only
    those); with ``expired_only`` only the expired ones. Each removal is audited as it happens."""
    from azrdp.audit import AuditWriteError
    from azrdp.azure.inventory import read_inventory
    from azrdp.errors import AzrdpError

    clock = clock or session.clock
    inventory = read_inventory(session, target, progress=progress)
    now = clock.now()
    result = RevokeResult(str(target), azrdp_rules(vm_nsgs(inventory)), dry_run=dry_run, now=now)
    for rule in result.found:
        if expired_only and not rule.expired(now):
            result.kept.append(rule)
            continue
        if dry_run:
            result.removed.append(rule)
            continue
        if progress is not None:
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
            if progress is not None:
                progress.info(f"Interrupted: {in_flight} may still be in flight; run azrdp revoke again to finish.")
            raise
        result.removed.append(rule)
        audit.record("nsg-rule", status="removed", rule=rule.to_dict(now))
    result.audit_error = result.audit_error or audit.error
    if progress is not None:
        progress.done()
    return result
