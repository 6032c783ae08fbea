"""The emulator's Azure Resource Graph (azrdp/emulator/resource_graph.py): the one query shape
azrdp sends, answered in the documented shape (REST examples ResourcesFirstPageQuery.json /
ResourcesNextPageQuery.json), from the same model as ARM; anything else refused as Resource
Graph refuses a query; the user quota and the index's lag."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from azrdp.azure.resource_graph import QUOTA_REMAINING, QUOTA_RESETS, fleet_query, parse_hhmmss
from azrdp.clock import ManualClock
from azrdp.emulator import Emulator
from azrdp.emulator.resource_graph import hhmmss

FAST = 5000.0
PATH = "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01"


def post(emu, body) -> tuple[int, dict, dict]:
    request = urllib.request.Request(emu.base_url + PATH, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": "Bearer t", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, json.load(answer)
    except urllib.error.HTTPError as refused:
        return refused.code, {k.lower(): v for k, v in refused.headers.items()}, json.load(refused)


def get(emu, path) -> dict:
    request = urllib.request.Request(emu.base_url + path, headers={"Authorization": "Bearer t"})
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def query(emu, text=None, **options) -> dict:
    return {"subscriptions": [emu.subscription_id], "query": text or fleet_query(), "options": options}


@pytest.mark.parametrize("text", [
    "Resources | take 5",
    "Resources | where type =~ 'microsoft.compute/virtualmachines' | project id | order by id asc",
    "Resources | where type in~ ('microsoft.compute/virtualmachines') | project id, name",
    "Resources | where type in~ ('microsoft.compute/virtualmachines') | project name | order by id asc",
    "Resources | where type in~ ('microsoft.compute/virtualmachines') | project id | order by id asc | limit 3",
    "ResourceContainers | where type in~ ('microsoft.compute/virtualmachines') | project id | order by id asc",
    "Resources | where type in~ ('microsoft.keyvault/vaults') | project id | order by id asc",
    "Resources | where type in~ ('microsoft.compute/virtualmachines') or 1 == 1 | project id | order by id asc",
    "Resources | where type in~ ('a\\' or 1==1') | project id | order by id asc",
])
def test_a_query_outside_the_subset_is_refused_as_resource_graph_refuses_one(text):
    with Emulator.start(fleet={"healthy": 1}, speed=FAST) as emu:
        status, _, body = post(emu, query(emu, text))
        assert status == 400 and body["error"]["code"] == "BadRequest"
        assert body["error"]["message"].startswith("Please provide below info when asking for support: timestamp = ")
        assert [d["code"] for d in body["error"]["details"]][:2] == ["InvalidQuery", "ParserFailure"]
        assert body["error"]["details"][0]["message"].startswith("Query is invalid.")


@pytest.mark.parametrize("options", [{"$top": 1001}, {"$top": 0}, {"resultFormat": "table"},
                                     {"$skipToken": "bm90IGEgdG9rZW4="}])
def test_options_outside_the_specification_or_the_subset_are_refused(options):
    with Emulator.start(fleet={"healthy": 1}, speed=FAST) as emu:
        status, _, body = post(emu, query(emu, **options))
        assert status == 400 and body["error"]["code"] == "BadRequest"


def test_pages_by_skip_token_hold_what_arm_lists_hold_in_the_documented_shape():
    with Emulator.start(fleet={"healthy": 6, "deallocated": 1}, speed=FAST) as emu:
        pages, token = [], None
        while True:
            status, headers, page = post(emu, query(emu, **({"$top": 5} | ({"$skipToken": token} if token else {}))))
            assert status == 200 and set(page) >= {"totalRecords", "count", "resultTruncated", "facets", "data"}
            assert page["resultTruncated"] == "false" and page["count"] == len(page["data"]) <= 5
            pages.append(page)
            token = page.get("$skipToken")
            if not token:
                break
        rows = [row for page in pages for row in page["data"]]
        assert {p["totalRecords"] for p in pages} == {len(rows)} and len(pages) == -(-len(rows) // 5)
        assert [r["id"].lower() for r in rows] == sorted(r["id"].lower() for r in rows)
        sub = f"/subscriptions/{emu.subscription_id}/providers"
        listed = {}
        for collection, api in (("Microsoft.Compute/virtualMachines", "2026-04-01"),
                                ("Microsoft.Network/networkInterfaces", "2026-03-01"),
                                ("Microsoft.Network/networkSecurityGroups", "2026-03-01"),
                                ("Microsoft.Network/publicIPAddresses", "2026-03-01"),
                                ("Microsoft.Network/virtualNetworks", "2026-03-01")):
            for item in get(emu, f"{sub}/{collection}?api-version={api}")["value"]:
                listed[item["id"].lower()] = item
        assert {r["id"].lower() for r in rows} == set(listed)           # the same model as ARM
        for row in rows:
            arm = listed[row["id"].lower()]
            assert row["type"] == arm["type"].lower() and row["resourceGroup"] == "rg-azrdp-fleet"
            assert row["subscriptionId"] == emu.subscription_id
            properties = dict(row["properties"])
            extended = properties.pop("extended", None)
            assert properties == arm["properties"]
            if row["type"] == "microsoft.compute/virtualmachines":
                power = extended["instanceView"]["powerState"]
                expected = "PowerState/deallocated" if "deallocated" in row["name"] else "PowerState/running"
                assert power["code"] == expected and power["displayStatus"].startswith("VM ")
        assert all(c.read for c in emu.calls if c.operation == "Resources")   # each page is a read


def test_a_resource_group_filter_keeps_only_those_groups():
    from azrdp.emulator.scenarios import FleetLayout

    with Emulator.start(fleet={"healthy": 4}, speed=FAST, layout=FleetLayout(resource_groups=2)) as emu:
        _, _, page = post(emu, query(emu, fleet_query(["RG-AZRDP-FLEET-02"])))
        assert page["totalRecords"] > 0 and {r["resourceGroup"] for r in page["data"]} == {"rg-azrdp-fleet-02"}


def test_the_user_quota_counts_down_and_answers_429_until_it_resets():
    clock = ManualClock()
    with Emulator.start(fleet={"healthy": 1}, speed=1, clock=clock) as emu:
        remaining = []
        for _ in range(15):
            status, headers, _ = post(emu, query(emu))
            assert status == 200 and parse_hhmmss(headers[QUOTA_RESETS]) <= 5
            remaining.append(int(headers[QUOTA_REMAINING]))
        assert remaining == list(range(14, -1, -1))
        status, headers, body = post(emu, query(emu))
        assert status == 429 and body["error"]["code"] == "RateLimiting" and headers[QUOTA_REMAINING] == "0"
        wait = parse_hhmmss(headers[QUOTA_RESETS])
        assert headers[QUOTA_RESETS].count(":") == 2 and wait == int(wait) and 0 < wait <= 5   # hh:mm:ss
        emu.advance(wait)
        status, headers, _ = post(emu, query(emu))
        assert status == 200 and headers[QUOTA_REMAINING] == "14"


def test_a_change_over_arm_shows_in_resource_graph_only_after_its_lag():
    clock = ManualClock()
    with Emulator.start(fleet={"healthy": 1}, speed=1, clock=clock) as emu:
        lag = emu.state.graph.lag
        vm = emu.vm("vm-healthy-001")

        def power() -> str:
            _, _, page = post(emu, query(emu))
            return next(r for r in page["data"] if r["name"] == vm.name)["properties"]["extended"][
                "instanceView"]["powerState"]["code"]

        emu.update(lambda backend: backend.stop(vm), indexed=False)
        assert vm.power == "stopped" and power() == "PowerState/running"      # the index lags ARM
        emu.advance(lag + 1)
        assert power() == "PowerState/stopped"


def test_the_resets_header_is_written_like_resource_graph_writes_it():
    assert hhmmss(3) == "00:00:03" and hhmmss(2.2) == "00:00:03" and hhmmss(3725) == "01:02:05"
    assert hhmmss(0.0012, whole=False) == "00:00:00.001200"
    assert parse_hhmmss("00:00:03") == 3 and parse_hhmmss("00:00:00.001200") == 0.0012 and parse_hhmmss("x") is None
