"""Azure Resource Graph's ``Resources`` operation, for the one query shape azrdp sends.

``POST /providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01`` (Microsoft's REST
specification, resourcegraph.json 2024-04-01, and its examples ResourcesFirstPageQuery.json /
ResourcesNextPageQuery.json). Request: ``subscriptions``, ``query``, ``options`` (``$top`` 1-1000,
``$skip``, ``$skipToken``, ``resultFormat`` objectArray by default). Answer: ``totalRecords``,
``count``, ``resultTruncated`` ("true"/"false" as strings), ``$skipToken`` while more rows remain,
``facets`` and ``data`` (an array of row objects). "The maximum allowed value of 1000 returned
records" per page (Learn, "Paging Resource Graph results"; "Working with large Azure resource
data sets").

Not a KQL engine. The only query accepted is the one :mod:`azrdp.azure.resource_graph` builds::

    Resources
    | where type in~ ('microsoft.compute/virtualmachines', ...)
    [| where resourceGroup in~ ('rg-1', ...)]
    | project id, name, type, location, resourceGroup, subscriptionId, tags, zones, properties
    | order by id asc

(keywords case-insensitive, string literals in single or double quotes without escapes, any
subset of those columns as long as ``id`` is one: the paging examples say "id field is required
in the response to return the pages in stable sorted fashion"). Anything else is answered as
Resource Graph answers a query it cannot parse: 400 ``BadRequest`` with the details
``InvalidQuery`` "Query is invalid. Please refer to the documentation for the Azure Resource
Graph service and fix the error before retrying." (the shape of real answers quoted in
Azure/aztfexport#485 and scautomation/AzureResourceGraph-Examples#2), and a ``ParserFailure``
detail naming what the emulator's subset does not take.

Rows: the resource's ARM body (the same model that answers ARM, so both agree) with ``type``
lower-cased, ``resourceGroup`` and ``subscriptionId`` columns (the examples' rows), and for a VM
``properties.extended.instanceView.powerState`` (code and displayStatus: Learn's query-language
page, "Extended properties", and Microsoft's own sample queries read
``properties.extended.instanceView.powerState.code``). No other instance view: no VM agent, no
extensions.

Freshness: Resource Graph is "an asynchronous index over control-plane data ... near real-time,
it follows an eventual consistent model ... It lags behind the source of truth by a brief period,
occasionally longer" (Learn, "Choose the right Azure Resource Graph query strategy"). The index
here keeps each resource's rows with the simulated second they become visible: a change is
visible ``lag`` simulated seconds after it is noticed (a VM's change when it happens; a network
change at the next query). The magnitude is unverified (docs/emulator.md).

Quota: "a user can send at most 15 queries within every 5-second window"; every answer carries
``x-ms-user-quota-remaining`` and ``x-ms-user-quota-resets-after`` (hh:mm:ss) (Learn, "Guidance
for throttled requests in Azure Resource Graph"); a query over the quota is answered 429. Each
page (a request with ``$skipToken``) counts as a query here (unverified).
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from azrdp.azure.resource_graph import QUOTA_REMAINING, QUOTA_RESETS
from azrdp.emulator import exceptions as err

RESOURCE_GRAPH_API = "2024-04-01"
API_VERSIONS = (RESOURCE_GRAPH_API, "2022-10-01", "2021-06-01-preview", "2021-03-01", "2020-04-01-preview",
                "2019-04-01")
MAX_TOP = 1000
DEFAULT_TOP = 1000     # "By default, Resource Graph limits any query to returning only 1,000 records"
DEFAULT_LAG = 5.0      # simulated seconds a change takes to show (unverified: docs/emulator.md)
QUOTA, QUOTA_WINDOW = 15, 5.0
COLUMNS = ("id", "name", "type", "location", "resourceGroup", "subscriptionId", "tags", "zones", "properties")
TYPES = {"microsoft.compute/virtualmachines": "vms", "microsoft.network/networkinterfaces": "nics",
         "microsoft.network/networksecuritygroups": "nsgs", "microsoft.network/publicipaddresses": "public_ips",
         "microsoft.network/virtualnetworks": "vnets"}


# -- errors ------------------------------------------------------------------------------------------

def _support_message(now_iso: str) -> str:
    return (f"Please provide below info when asking for support: timestamp = {now_iso}, "
            f"correlationId = {uuid.uuid4()}.")


class InvalidQuery(err.ArmError):
    """Resource Graph's answer to a query it does not take."""

    status, code = 400, "BadRequest"

    def __init__(self, now_iso: str, problem: str):
        super().__init__(_support_message(now_iso), details=[
            {"code": "InvalidQuery", "message": "Query is invalid. Please refer to the documentation for the Azure "
                                                "Resource Graph service and fix the error before retrying."},
            {"code": "ParserFailure", "message": f"ParserFailure: {problem} (the azrdp emulator serves one query "
                                                 "shape only: azrdp/emulator/resource_graph.py)"}])


class InvalidRequest(err.ArmError):
    status, code = 400, "BadRequest"

    def __init__(self, now_iso: str, code: str, message: str):
        super().__init__(_support_message(now_iso), details=[{"code": code, "message": message}])


class RateLimited(err.ArmError):
    """Over the user's query quota (the body's code and text are unverified: docs/emulator.md)."""

    status, code = 429, "RateLimiting"

    def __init__(self, now_iso: str, headers: dict[str, str]):
        super().__init__(_support_message(now_iso), headers=headers, details=[
            {"code": "RateLimiting", "message": "Client application has been throttled and should not attempt to "
                                                "repeat the request until an amount of time has elapsed. Please see "
                                                "https://aka.ms/resourcegraph-throttling for help."}])


# -- the query subset ----------------------------------------------------------------------------------

_LITERAL = r"""'[^'\\\n]*'|"[^"\\\n]*\""""
_LIST = rf"\(\s*(?:{_LITERAL})(?:\s*,\s*(?:{_LITERAL}))*\s*\)"


def parse_query(text: str) -> dict[str, Any]:
    """The query's parts (types, resource groups, columns), or ValueError naming what is not
    in the subset."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the query is empty")
    stages = [stage.strip() for stage in text.split("|")]
    if stages[0].lower() != "resources":
        raise ValueError(f"the query must start with the Resources table, not {stages[0][:40]!r}")
    types: list[str] | None = None
    groups: list[str] | None = None
    columns: list[str] | None = None
    ordered = False
    for stage in stages[1:]:
        if ordered:
            raise ValueError("nothing may follow 'order by id asc'")
        match = re.fullmatch(rf"where\s+(type|resourceGroup)\s+in~\s*({_LIST})"
                             rf"(?:\s+and\s+(type|resourceGroup)\s+in~\s*({_LIST}))?", stage, re.IGNORECASE)
        if match:
            for column, values in ((match.group(1), match.group(2)), (match.group(3), match.group(4))):
                if column is None:
                    continue
                items = [v[1:-1] for v in re.findall(_LITERAL, values)]
                if column.lower() == "type":
                    if types is not None or columns is not None:
                        raise ValueError("one filter on type, before the projection")
                    types = items
                else:
                    if groups is not None or columns is not None:
                        raise ValueError("one filter on resourceGroup, before the projection")
                    groups = items
            continue
        match = re.fullmatch(r"project\s+(\w+(?:\s*,\s*\w+)*)", stage, re.IGNORECASE)
        if match and columns is None:
            columns = [c.strip() for c in match.group(1).split(",")]
            unknown = [c for c in columns if c not in COLUMNS]
            if unknown:
                raise ValueError(f"the projection names columns the subset does not serve: {', '.join(unknown)}")
            if "id" not in columns:
                raise ValueError("the projection must keep 'id' (paging needs it)")
            continue
        if re.fullmatch(r"order\s+by\s+id\s+asc", stage, re.IGNORECASE):
            ordered = True
            continue
        raise ValueError(f"the stage {stage[:60]!r} is not in the subset")
    if types is None or columns is None or not ordered:
        raise ValueError("the subset needs 'where type in~ (...)', 'project ...' and 'order by id asc'")
    unknown_types = [t for t in types if t.lower() not in TYPES]
    if unknown_types:
        raise ValueError(f"resource types the subset does not serve: {', '.join(unknown_types)}")
    return {"types": [t.lower() for t in types], "groups": [g.lower() for g in groups] if groups is not None else None,
            "columns": columns}


# -- rows ----------------------------------------------------------------------------------------------

def row(body: dict[str, Any], subscription: str, resource_group: str, *, power: dict[str, str] | None = None
        ) -> dict[str, Any]:
    """A resource's Resources-table row from its ARM body."""
    out = {"id": body["id"], "name": body["name"], "type": str(body["type"]).lower(),
           "location": body.get("location"), "resourceGroup": resource_group.lower(), "subscriptionId": subscription,
           "tags": body.get("tags") or {}, "zones": body.get("zones"),
           "properties": dict(body.get("properties") or {})}
    if power is not None:
        out["properties"]["extended"] = {"instanceView": {"powerState": dict(power)}}
    return out


def vm_row(vm: Any, iso: Callable[[float | None], str]) -> dict[str, Any]:
    """A VM's row: its model and its power state, no other instance view (so no blob URIs)."""
    body = vm.to_arm(iso=iso, blob_base="")
    statuses = vm.instance_view(iso, "")["statuses"]
    power = next(({"code": s["code"], "level": s.get("level", "Info"), "displayStatus": s.get("displayStatus")}
                  for s in statuses if str(s.get("code", "")).startswith("PowerState/")), None)
    return row(body, vm.subscription, vm.resource_group, power=power)


class ResourceGraphIndex:
    """What Resource Graph has indexed: versions of each resource's row with the simulated
    second each became visible, the quota of the caller, and the result sets of open queries
    (a $skipToken names one and an offset into it)."""

    def __init__(self, now: Callable[[], float], *, lag: float = DEFAULT_LAG, speed: float = 1.0):
        self.now = now
        self.lag = lag
        self.speed = speed
        self.baselined = False
        self._versions: dict[str, list[tuple[float, dict[str, Any] | None]]] = {}
        self._results: OrderedDict[str, tuple[str, tuple[str, ...], list[dict[str, Any]]]] = OrderedDict()
        self._window: tuple[float, int] | None = None        # (window start, queries in it)
        self._lock = threading.Lock()

    # -- indexing --------------------------------------------------------------------------------
    def observe(self, rows: Iterable[dict[str, Any]], *, present: set[str] | None = None, at_once: bool = False
                ) -> None:
        """Note the current rows: a row that differs from the last indexed version becomes
        visible ``lag`` seconds from now; ``at_once`` (or before the baseline) it replaces what
        was indexed. ``present``: every id prefix of the scope observed, so a resource of it
        missing from ``rows`` was deleted."""
        at_once = at_once or not self.baselined
        visible = float("-inf") if at_once else self.now() + self.lag
        with self._lock:
            seen: set[str] = set()
            for current in rows:
                key = current["id"].lower()
                seen.add(key)
                versions = self._versions.setdefault(key, [])
                if at_once:
                    versions[:] = [(visible, current)]
                elif not versions or versions[-1][1] != current:
                    versions.append((visible, current))
            if present is not None:
                for key, versions in self._versions.items():
                    if key.startswith(tuple(present)) and key not in seen and versions[-1][1] is not None:
                        if at_once:
                            versions[:] = [(visible, None)]
                        else:
                            versions.append((visible, None))

    def visible(self, key: str, now: float) -> dict[str, Any] | None:
        versions = self._versions.get(key.lower()) or []
        shown = None
        for at, current in versions:
            if at <= now:
                shown = current
        return shown

    def visible_rows(self, scopes: Iterable[str], now: float) -> list[dict[str, Any]]:
        prefixes = tuple(s.lower() for s in scopes)
        with self._lock:
            keys = sorted(k for k in self._versions if k.startswith(prefixes))
            rows = [self.visible(k, now) for k in keys]
        return [r for r in rows if r is not None]

    # -- quota ------------------------------------------------------------------------------------
    def take_quota(self) -> tuple[bool, dict[str, str]]:
        """One query off the caller's quota: (allowed, the headers for the answer)."""
        with self._lock:
            now = self.now()
            start, used = self._window if self._window and now < self._window[0] + QUOTA_WINDOW else (now, 0)
            allowed = used < QUOTA
            used += 1 if allowed else 0
            self._window = (start, used)
            resets = max(0.0, start + QUOTA_WINDOW - now) / self.speed
        return allowed, {QUOTA_REMAINING: str(max(0, QUOTA - used)),
                         QUOTA_RESETS: hhmmss(resets, whole=self.speed <= 1)}

    # -- result sets ------------------------------------------------------------------------------
    def open_result(self, query: str, subscriptions: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
        with self._lock:
            handle = uuid.uuid4().hex
            self._results[handle] = (query, subscriptions, rows)
            while len(self._results) > 16:
                self._results.popitem(last=False)
            return handle

    def result(self, handle: str) -> tuple[str, tuple[str, ...], list[dict[str, Any]]] | None:
        with self._lock:
            return self._results.get(handle)


def hhmmss(seconds: float, *, whole: bool = True) -> str:
    """A duration as Resource Graph writes x-ms-user-quota-resets-after (hh:mm:ss), rounded up
    (a client that waits it out finds the quota reset). ``whole`` False (an emulator faster than
    real time): to the microsecond, with the fraction after the seconds."""
    seconds = math.ceil(seconds) if whole else math.ceil(seconds * 1e6) / 1e6
    integral = math.floor(seconds)
    hours, rest = divmod(integral, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    fraction = seconds - integral
    return text + f"{fraction:.6f}"[1:] if fraction > 0 else text


# -- the operation ---------------------------------------------------------------------------------

def _token(handle: str, offset: int) -> str:
    return base64.b64encode(json.dumps({"result": handle, "offset": offset}).encode()).decode()


def _untoken(text: str) -> tuple[str, int]:
    try:
        decoded = json.loads(base64.b64decode(text.encode(), validate=True))
        return str(decoded["result"]), int(decoded["offset"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(text) from None


def answer(backend: Any, index: ResourceGraphIndex, body: Any) -> dict[str, Any]:
    """The QueryResponse for ``body`` (the quota was taken already)."""
    now_iso = backend.iso()
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise InvalidRequest(now_iso, "InvalidRequest", "The request body must carry a 'query' string.")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidRequest(now_iso, "InvalidRequest", "'options' must be an object.")
    if (options.get("resultFormat") or "objectArray") != "objectArray":
        raise InvalidQuery(now_iso, "only resultFormat 'objectArray' is served")
    if body.get("facets") or body.get("managementGroups"):
        raise InvalidQuery(now_iso, "facets and management-group scopes are not served")
    top = options.get("$top", DEFAULT_TOP)
    skip = options.get("$skip", 0)
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= MAX_TOP:
        raise InvalidRequest(now_iso, "InvalidRequest", f"'$top' must be an integer from 1 to {MAX_TOP}.")
    if not isinstance(skip, int) or isinstance(skip, bool) or skip < 0:
        raise InvalidRequest(now_iso, "InvalidRequest", "'$skip' must be a non-negative integer.")
    subscriptions = tuple(str(s).lower() for s in body.get("subscriptions") or ())
    if not subscriptions:
        raise InvalidQuery(now_iso, "the emulator answers subscription-scoped queries only: give 'subscriptions'")
    try:
        parsed = parse_query(body["query"])
    except ValueError as problem:
        raise InvalidQuery(now_iso, str(problem)) from None
    token = options.get("$skipToken")
    if token:
        try:
            handle, offset = _untoken(str(token))
        except ValueError:
            raise InvalidRequest(now_iso, "InvalidSkipToken", "The $skipToken is not valid.") from None
        found = index.result(handle)
        if found is None or found[0] != body["query"] or found[1] != subscriptions:
            raise InvalidRequest(now_iso, "InvalidSkipToken",
                                 "The $skipToken does not belong to this query and these subscriptions.")
        rows = found[2]
        start = offset + (skip if "$skip" in options else 0)
    else:
        rows = _evaluate(backend, index, parsed, subscriptions)
        handle, start = index.open_result(body["query"], subscriptions, rows), skip
    page = rows[start:start + top]
    out: dict[str, Any] = {"totalRecords": len(rows), "count": len(page), "resultTruncated": "false",
                           "facets": [], "data": page}
    if start + top < len(rows):
        out["$skipToken"] = _token(handle, start + top)
    return out


def _evaluate(backend: Any, index: ResourceGraphIndex, parsed: dict[str, Any], subscriptions: tuple[str, ...]
              ) -> list[dict[str, Any]]:
    """The rows the index shows now for the query, after noting the model's current rows (so a
    change nobody announced still shows, ``lag`` after this query noticed it)."""
    known = [s for s in subscriptions if s in backend.subscriptions]
    observe(backend, index, known)
    wanted, groups, columns = set(parsed["types"]), parsed["groups"], parsed["columns"]
    rows = [r for r in index.visible_rows([f"/subscriptions/{s}/" for s in known], backend.timescale.now())
            if r["type"] in wanted and (groups is None or r["resourceGroup"] in groups)]
    return [{c: r.get(c) for c in columns} for r in sorted(rows, key=lambda r: r["id"].lower())]


def observe(backend: Any, index: ResourceGraphIndex, subscriptions: Iterable[str] | None = None, *,
            at_once: bool = False) -> None:
    """Index the model's current rows of ``subscriptions`` (all: None): at every query (a
    change nobody announced shows ``lag`` after it was noticed), and ``at_once`` once the
    emulator built its scenario and after a test's ``Emulator.update``."""
    known = [s for s in (subscriptions if subscriptions is not None else backend.subscriptions)
             if s in backend.subscriptions]
    current: list[dict[str, Any]] = []
    for sub_key in known:
        subscription = backend.subscriptions[sub_key]
        for group in subscription.resource_groups.values():
            current += [vm_row(vm, backend.iso) for vm in group.vms.values()]
            for collection in ("nics", "nsgs", "public_ips", "vnets"):
                for item in getattr(group, collection).values():
                    current.append(row(item.to_arm(), subscription.id, group.name))
    index.observe(current, present={f"/subscriptions/{s}/" for s in known}, at_once=at_once)
