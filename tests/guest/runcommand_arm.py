"""ARM's Run Command wire shape on a `responses` mock, shared by the guest tests."""

from __future__ import annotations

import json
import re
from typing import Any

SUB = "00000000-0000-0000-0000-000000000001"
ARM = "https://management.azure.com"
VM_URL = f"{ARM}/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"
OPS = f"{ARM}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/operations"
RUN_URL = re.compile(re.escape(VM_URL + "/runCommand") + r"\?.*")

READY_VIEW = {"vmAgent": {"vmAgentVersion": "2.7.41491.949", "statuses": [
    {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready",
     "message": "GuestAgent is running and accepting new configurations."}]},
    "statuses": [{"code": "ProvisioningState/succeeded"}, {"code": "PowerState/running"}]}


class RunCommandArm:
    """Registers ARM's real Run Command shape on a `responses` mock: POST 202 with
    Azure-AsyncOperation + Location, status polls, then the final GET of Location."""

    def __init__(self, rsps):
        self.rsps = rsps
        self.count = 0

    def accept(self, body: dict[str, Any], *, polls: int = 1, op: str | None = None) -> None:
        self.count += 1
        op = op or f"op{self.count}"
        status = f"{OPS}/{op}?api-version=2026-04-01"
        location = f"{OPS}/{op}?monitor=true&api-version=2026-04-01"
        self.rsps.post(RUN_URL, status=202, headers={"Azure-AsyncOperation": status, "Location": location})
        for _ in range(polls):
            self.rsps.get(status, json={"status": "InProgress"})
        self.rsps.get(status, json={"status": "Succeeded"})
        self.rsps.get(location, json=body)

    def conflict(self) -> None:
        self.rsps.post(RUN_URL, status=409, json={"error": {"code": "Conflict", "message":
                       "Run command extension execution is in progress. Please wait for completion "
                       "before invoking a run command."}})

    def posts(self) -> list[Any]:
        return [c for c in self.rsps.calls if c.request.method == "POST"]

    def sent_bodies(self) -> list[dict[str, Any]]:
        return [json.loads(c.request.body) for c in self.posts()]
