"""How many sequential ARM round trips does the Azure side of `azrdp diagnose` cost, and what
does that mean in wall time when every ARM request takes LATENCY seconds?

Runs the real azure-mgmt clients against the test suite's ARM stand-in (on `responses`, nothing
leaves the machine), with a fixed delay added to every answer. Compares parallel rounds (what
diagnose does) with the same reads issued one at a time.

    .venv/bin/python bench/diagnose_round_trips.py [LATENCY_SECONDS] [REPEATS]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # a script run by path: the repository root, for tests.support

from azrdp.azure.inventory import read_inventory  # noqa: E402
from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings  # noqa: E402
from azrdp.target import Target  # noqa: E402
from tests.support.fake_arm import BASE, SUB, FakeArm, VmSpec, rule  # noqa: E402


class Token:
    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken("bench", 2**31 - 1)


def measure(latency: float, workers: int, repeats: int, spec: VmSpec) -> tuple[int, int, float]:
    times: list[float] = []
    rounds = requests = 0
    with FakeArm(latency=latency) as arm:
        arm.add_vm(spec)
        for _ in range(repeats):
            session = AzureSession(Token(), SUB, endpoint=ArmEndpoint(BASE), polling_interval=0,
                                   retry=RetrySettings(total=0))
            start = time.perf_counter()
            inventory = read_inventory(session, Target(spec.name, spec.rg), max_workers=workers)
            times.append(time.perf_counter() - start)
            rounds, requests = inventory.round_trips, inventory.requests
    return rounds, requests, statistics.median(times)


def main() -> None:
    latency = float(sys.argv[1]) if len(sys.argv) > 1 else 0.1
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    layouts = {
        "az vm create layout (NIC, NSGs, IP in the VM's group), NSG on subnet and NIC":
            VmSpec(subnet_nsg_rules=[rule("DenyRDP", 200, "Deny")]),
        "NIC in another resource group": VmSpec(nic_rg="network-rg", subnet_nsg_rules=[]),
    }
    print(f"ARM latency per request: {latency * 1000:.0f} ms; median of {repeats} runs")
    print("| layout | sequential round trips | requests | parallel (diagnose) | one at a time |")
    print("|---|---|---|---|---|")
    for title, spec in layouts.items():
        rounds, requests, parallel = measure(latency, 8, repeats, spec)
        _, _, serial = measure(latency, 1, repeats, spec)
        print(f"| {title} | {rounds} | {requests} | {parallel:.2f} s | {serial:.2f} s |")


if __name__ == "__main__":
    main()
