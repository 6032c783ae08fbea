"""The ARM constants every `responses` stand-in and raw request in the tests shares, in one place:
the fake tenant's subscription and loopback base URL, and the api-versions, read from the installed
SDK clients' own request builders (what azure-mgmt-compute/-network really send), never typed."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from azure.mgmt.compute.operations import _operations as _compute
from azure.mgmt.network.operations import _operations as _network

SUB = "00000000-0000-0000-0000-0000000000aa"
BASE = "http://127.0.0.1:47011"  # loopback; responses answers, nothing ever connects


def _api_version(request) -> str:
    return parse_qs(urlsplit(request.url).query)["api-version"][0]


COMPUTE_API = _api_version(_compute.build_virtual_machines_get_request("rg", "vm", SUB))
NETWORK_API = _api_version(_network.build_network_interfaces_get_request("rg", "nic", SUB))
