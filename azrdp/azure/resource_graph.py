"""Read the fleets of many subscriptions with one Azure Resource Graph query.

One query (``POST /providers/Microsoft.ResourceGraph/resources``, api-version 2024-04-01) for
every swept subscription (at most 300 per query: Learn's "Guidance for throttled requests"
recommends groups of fewer than 300), 1,000 rows per page (the maximum ``$top``), pages by
``$skipToken``::

    Resources
    | where type in~ ('microsoft.compute/virtualmachines', 'microsoft.network/networkinterfaces',
                      'microsoft.network/networksecuritygroups', 'microsoft.network/publicipaddresses',
                      'microsoft.network/virtualnetworks')
    [| where resourceGroup in~ ('rg-1', ...)]
    | project id, name, type, location, resourceGroup, subscriptionId, tags, zones, properties
    | order by id asc

The rows carry the resources' ARM ``properties`` (a VNet's subnets in full, an NSG's rules), so
they fill the same :class:`~azrdp.azure.fleet.FleetView` the ARM lists fill; a VM's power state
is at ``properties.extended.instanceView.powerState`` and becomes its listed run time status. The
agent is not in Resource Graph: it is read per VM where it matters, as with the lists.

Resource Graph is an eventually consistent index over ARM ("It lags behind the source of truth by
a brief period, occasionally longer": Learn, "Choose the right Azure Resource Graph query
strategy"), so a view read from it is marked ``eventual``: the sweep trusts it only where the wire
confirms it (a running VM whose RDP answers and that fails no check) and reads every other VM
from ARM before judging it.

Resource Graph's own quota ("at most 15 queries within every 5-second window" per user, with
``x-ms-user-quota-remaining`` / ``x-ms-user-quota-resets-after`` on every answer) is honoured:
when the quota is spent the next page waits for the reset (on the session's clock, within its
throttling budget), and a 429 is waited out the same way. Sent through the Compute client's
pipeline (``send_request``): the credential and retry policy of every other call, no
azure-mgmt-resourcegraph dependency. Whatever stops the query (no permission, the provider not
registered, a query refused, the quota past the budget, an Azure failure) raises
:class:`GraphUnavailable`: the caller reads the ARM lists instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from azrdp.azure.fleet import FleetView

API = "2024-04-01"
PATH = f"/providers/Microsoft.ResourceGraph/resources?api-version={API}"
PAGE = 1000
SUBSCRIPTIONS_PER_QUERY = 300
KINDS = {"microsoft.compute/virtualmachines": "vm", "microsoft.network/networkinterfaces": "nic",
         "microsoft.network/networksecuritygroups": "nsg", "microsoft.network/publicipaddresses": "public_ip",
         "microsoft.network/virtualnetworks": "vnet"}
COLUMNS = ("id", "name", "type", "location", "resourceGroup", "subscriptionId", "tags", "zones", "properties")
MAX_429 = 5      # 429s one page may wait out before Resource Graph counts as unavailable
QUOTA_REMAINING, QUOTA_RESETS = "x-ms-user-quota-remaining", "x-ms-user-quota-resets-after"
MIN_WAIT = 1.0   # the resets-after header counts whole seconds (hh:mm:ss)
# Resource group names: "Underscores, hyphens, periods, parentheses, and letters or digits"
# (Learn, "Naming rules and restrictions for Azure resources"); never a quote, so a name is safe
# between single quotes in the query.
_GROUP_NAME = re.compile(r"^[\w\-.()]{1,90}$")


class GraphUnavailable(Exception):
    """Resource Graph did not answer the fleet query; ``reason`` is one printable line."""

    def __init__(self, reason: str, pages: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.pages = pages   # query pages answered before it gave up


def fleet_query(resource_groups: Iterable[str] = ()) -> str:
    groups = list(dict.fromkeys(resource_groups))
    bad = [g for g in groups if not _GROUP_NAME.match(g)]
    if bad:
        raise GraphUnavailable(f"{bad[0]!r} is not a resource group name")
    types = ", ".join(f"'{t}'" for t in KINDS)
    stages = ["Resources", f"where type in~ ({types})"]
    if groups:
        stages.append("where resourceGroup in~ (" + ", ".join(f"'{g}'" for g in groups) + ")")
    stages += ["project " + ", ".join(COLUMNS), "order by id asc"]
    return " | ".join(stages)


def parse_hhmmss(text: str | None) -> float | None:
    """x-ms-user-quota-resets-after (hh:mm:ss, fractions of a second allowed) as seconds."""
    match = re.fullmatch(r"\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)\s*", text or "")
    if not match:
        return None
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))


def read_fleet_graph(session: Any, views: dict[str, FleetView], resource_groups: Iterable[str] = (), *,
                     on_page: Callable[[set[str]], None] | None = None) -> int:
    """Fill ``views`` (subscription, lower-case -> FleetView) from Resource Graph: each is
    marked ``eventual``, and ``complete`` once every page is in. ``on_page`` hears, after each
    page, the subscriptions it touched (rows come ordered by id: a resource group's VMs and their
    network resources arrive together, so its VMs can start before the last page). Returns the
    query pages read; raises GraphUnavailable (``pages``: those read before)."""
    query = fleet_query(resource_groups)
    subscriptions = [view.subscription for view in views.values()]
    for view in views.values():
        view.eventual = True
    pages = 0
    try:
        for first in range(0, len(subscriptions), SUBSCRIPTIONS_PER_QUERY):
            chunk = subscriptions[first:first + SUBSCRIPTIONS_PER_QUERY]
            token: str | None = None
            while True:
                body = _page(session, {"subscriptions": chunk, "query": query,
                                       "options": {"$top": PAGE, "resultFormat": "objectArray",
                                                   **({"$skipToken": token} if token else {})}})
                pages += 1
                token = body.get("$skipToken") or None
                if not token and str(body.get("resultTruncated", "false")).lower() == "true":
                    raise GraphUnavailable("Resource Graph truncated the result without a $skipToken")
                touched = _file(views, body.get("data"))
                if on_page is not None and touched:
                    on_page(touched)
                if not token:
                    break
    except GraphUnavailable as err:
        err.pages = pages
        raise
    for view in views.values():
        view.complete = True
    return pages


def _file(views: dict[str, FleetView], data: Any) -> set[str]:
    """The page's rows into their subscriptions' views, ARM-shaped, one list page per kind; the
    subscriptions touched."""
    if not isinstance(data, list):
        raise GraphUnavailable("Resource Graph answered rows that are not an object array")
    pages: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in data:
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            continue
        kind = KINDS.get(str(row.get("type") or "").lower())
        view = views.get(str(row.get("subscriptionId") or "").lower())
        if kind is None or view is None:
            continue
        pages.setdefault((view.subscription.lower(), kind), []).append(arm_body(row, kind))
    for (sub, kind), items in pages.items():
        views[sub].add_page(kind, items, count=False)
    return {sub for sub, _ in pages}


def arm_body(row: dict[str, Any], kind: str) -> dict[str, Any]:
    """A Resources-table row as the ARM body the lists would have given: the power state of a
    VM becomes its listed run time status (``properties.instanceView.statuses``)."""
    properties = dict(row.get("properties") or {})
    extended = properties.pop("extended", None) or {}
    body: dict[str, Any] = {"id": row["id"], "name": row.get("name"), "type": row.get("type"),
                            "location": row.get("location"), "tags": row.get("tags") or {}, "properties": properties}
    if row.get("zones"):
        body["zones"] = row["zones"]
    if kind == "vm":
        power = (extended.get("instanceView") or {}).get("powerState") if isinstance(extended, dict) else None
        if isinstance(power, dict) and power.get("code"):
            properties["instanceView"] = {"statuses": [power]}
        else:
            properties["instanceView"] = {"statuses": []}   # no power state indexed: judged from ARM
    return body


def _page(session: Any, request: dict[str, Any]) -> dict[str, Any]:
    """One query page; waits out the user quota (within the session's throttling budget)."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
    from azure.core.rest import HttpRequest

    from azrdp.azure.arm_errors import translate

    for _attempt in range(MAX_429 + 1):
        try:
            response = session.compute.send_request(HttpRequest("POST", PATH, json=request))
        except ClientAuthenticationError as err:
            raise translate(err, doing="querying Azure Resource Graph") from err
        except AzureError as err:
            raise GraphUnavailable(f"Resource Graph could not be reached ({type(err).__name__})") from err
        headers = response.headers
        if response.status_code == 429:
            _wait(session, headers, "Resource Graph throttled the query (429)", at_least=MIN_WAIT)
            continue
        if response.status_code == 401:
            try:
                response.raise_for_status()
            except HttpResponseError as err:
                raise translate(err, doing="querying Azure Resource Graph") from err
        if response.status_code != 200:
            raise GraphUnavailable(f"Resource Graph answered {response.status_code} {_error_code(response)}".rstrip())
        try:
            body = response.json()
        except ValueError:
            raise GraphUnavailable("Resource Graph answered something that is not JSON") from None
        if not isinstance(body, dict):
            raise GraphUnavailable("Resource Graph answered something that is not a query response")
        if str(headers.get(QUOTA_REMAINING, "")).strip() == "0":
            _wait(session, headers, "")
        return body
    raise GraphUnavailable(f"Resource Graph throttled the query {MAX_429 + 1} times in a row")


def _wait(session: Any, headers: Any, refusal: str, *, at_least: float = 0.0) -> None:
    """Wait out x-ms-user-quota-resets-after (a 429: at least ``at_least``, the header's
    granularity, so a reset rounded down is not met by a tight loop)."""
    seconds = parse_hhmmss(headers.get(QUOTA_RESETS))
    seconds = max(at_least, 1.0 if seconds is None else seconds)
    if not session.throttle.take(seconds):
        raise GraphUnavailable(refusal or "Resource Graph's query quota is spent")
    session.clock.sleep(seconds)


def _error_code(response: Any) -> str:
    """The most telling code of an error answer (a detail's code, e.g. InvalidQuery)."""
    from azrdp.logsafe import printable

    try:
        error = (response.json() or {}).get("error") or {}
    except ValueError:
        return ""
    details = [d.get("code") for d in error.get("details") or [] if isinstance(d, dict) and d.get("code")]
    return printable(str(details[0] if details else error.get("code") or ""), limit=80)
