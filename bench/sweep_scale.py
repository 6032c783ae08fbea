"""`azrdp sweep` at fleet scale against ARM's read budget, at real speed.

The emulator runs in its own process at ``--speed 1`` (ARM's real per-call latency, 0.05-0.3 s)
with ARM's read bucket on (250 tokens per subscription, refilled 25 per second): every page of a
list and every per-VM read takes a token, and an empty bucket answers 429 with Retry-After. The
sweep runs end to end in this process: the fleet's lists, the NSG verdicts, the wire probe of
every VM (real TLS against each VM's RDP listener), the agent reads of the broken ones.

Both read paths run in one invocation, side by side on the same fleet (the emulator is reset to
it in between: a fresh bucket, an empty call log): the sweep through Azure Resource Graph (one query
for every subscription, 1,000 rows a page, its own per-user quota) and through ARM's lists (six
per subscription, 50 items a page); ``--only`` runs one. Reported per path: reads the emulator
served (ARM reads and Resource Graph pages; and reads per VM), 429s, wall time, the floor the
bucket sets for the ARM reads (per subscription: (reads - 250) / 25 s, none below the bucket) and
the ratio to it, per-VM reads against the number of broken VMs, the client's CPU time per VM, its
peak memory so far and the load average; and the ratios of the Resource Graph path to the lists.

The bucket must be seen, or the run measured the client and not ARM (an earlier version of this
benchmark ran with the bucket in the way of nothing and passed a regression): when the sweep met
no 429 and was not bound by the bucket, the benchmark drains the first subscription's bucket
itself after the sweep, in parallel, until ARM answers 429. No 429 at all: it fails loudly.

    .venv/bin/python bench/sweep_scale.py --vms 1000
    .venv/bin/python bench/sweep_scale.py --vms 1000 --broken 5
    .venv/bin/python bench/sweep_scale.py --vms 10000 --subscriptions 10 --resource-groups 4

Targets (bench/README.md): 1,000 healthy VMs in one subscription: <= 0.05 reads per VM, <= 15 s;
10,000 VMs over 10 subscriptions: <= 60 s, peak memory <= 500 MiB; 5% broken: per-VM reads only
for those.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUCKET, REFILL = 250, 25.0
BROKEN_KINDS = ("0x904", "nsg-blocked", "rdp-disabled", "deallocated")   # dealt evenly
API = "2026-04-01"


def fleet_mix(vms: int, broken_percent: float) -> dict[str, int]:
    broken = round(vms * broken_percent / 100)
    mix = {"healthy": vms - broken}
    for i, kind in enumerate(BROKEN_KINDS):
        share = broken // len(BROKEN_KINDS) + (1 if i < broken % len(BROKEN_KINDS) else 0)
        if share:
            mix[kind] = share
    return {k: v for k, v in mix.items() if v}


def start_emulator(mix: dict[str, int], subscriptions: int, groups: int, speed: float) -> tuple[subprocess.Popen, dict]:
    fleet = ",".join(f"{k}={v}" for k, v in mix.items())
    process = subprocess.Popen([sys.executable, "-m", "azrdp", "emulator", "serve", "-o", "json", "--fleet", fleet,
                                "--subscriptions", str(subscriptions), "--resource-groups", str(groups),
                                "--speed", str(speed), "--read-limit", f"{BUCKET}/{REFILL:g}"],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise SystemExit("the emulator did not start")
    return process, json.loads(line)


def stop_emulator(process: subprocess.Popen, patience: float = 120.0) -> float | None:
    """SIGTERM (the emulator closes every listener and its temporary files), then, after
    ``patience`` seconds, SIGKILL. Returns how long it took to stop, None when it had to be killed."""
    asked = time.monotonic()
    process.terminate()
    try:
        process.wait(timeout=patience)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
        print(f"the emulator did not stop within {patience:g} s of SIGTERM and was killed", file=sys.stderr)
        return None
    return round(time.monotonic() - asked, 1)


def emulator_usage(pid: int) -> dict:
    """The emulator process's peak RSS and CPU so far (build, lists, every RDP handshake), from
    /proc; empty where there is none."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return {}
    peak_kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    ticks = os.sysconf("SC_CLK_TCK")
    return {"emulator_peak_rss_mib": round(peak_kib / 1024, 1),
            "emulator_cpu_seconds": round((int(fields[11]) + int(fields[12])) / ticks, 1)}


def drain_until_throttled(base_url: str, vm: dict, subscription: str, *, threads: int = 48,
                          deadline: float = 90.0) -> dict:
    """Spend the subscription's read tokens from ``threads`` keep-alive connections at once until
    ARM answers 429 (or ``deadline`` seconds pass)."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    path = (f"/subscriptions/{subscription}/resourceGroups/{vm['resource_group']}/providers/"
            f"Microsoft.Compute/virtualMachines/{vm['name']}?api-version={API}")
    seen = {"reads": 0, "throttled": 0, "first_remaining": None, "retry_after": None, "seconds": 0.0}
    lock, stop = threading.Lock(), threading.Event()
    started = time.monotonic()

    def spend() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            while not stop.is_set() and time.monotonic() - started < deadline:
                conn.request("GET", path, headers={"Authorization": "Bearer azrdp-local-emulator"})
                answer = conn.getresponse()
                answer.read()
                with lock:
                    seen["reads"] += 1
                    remaining = answer.getheader("x-ms-ratelimit-remaining-subscription-reads")
                    if seen["first_remaining"] is None and remaining is not None:
                        seen["first_remaining"] = int(remaining)
                    if answer.status == 429:
                        seen["throttled"] += 1
                        seen["retry_after"] = answer.getheader("Retry-After")
                        stop.set()
        finally:
            conn.close()

    workers = [threading.Thread(target=spend) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seen["seconds"] = round(time.monotonic() - started, 1)
    return seen


PATHS = ("resource-graph", "arm-lists")


def measure(session, info: dict, args, *, resource_graph: bool) -> dict:
    """One sweep over the fleet as the emulator holds it now, and what it cost."""
    from azrdp.sweep import sweep

    base_url = info["base_url"]
    load = os.getloadavg()
    cpu0, started = time.process_time(), time.monotonic()
    result = sweep(session, probe=not args.no_probe, probe_timeout=args.probe_timeout,
                   source_ip=info["client_ip"], resource_graph=resource_graph)
    wall = time.monotonic() - started
    cpu = time.process_time() - cpu0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with urllib.request.urlopen(base_url + "/_emulator/calls") as answer:
        calls = json.load(answer)
    reads = [c for c in calls if c.get("read")]
    by_sub: dict[str, int] = {}     # ARM's bucket: reads under a subscription
    graph_pages = 0                 # Resource Graph: its own per-user quota, not the bucket
    for c in reads:
        if c["status"] == 429:
            continue
        if c["path"].lower().startswith("/subscriptions/"):
            sub = c["path"].split("/")[2].lower()
            by_sub[sub] = by_sub.get(sub, 0) + 1
        else:
            graph_pages += 1
    served = sum(by_sub.values()) + graph_pages
    throttled = sum(1 for c in reads if c["status"] == 429)
    floor = max([max(0.0, (n - BUCKET) / REFILL) for n in by_sub.values()] or [0.0])
    return {
        "path": result.reads.get("source"), "vms": len(result.results), "outcomes": result.counts(),
        "reads": served, "reads_per_vm": round(served / args.vms, 4), "graph_pages": result.reads.get("graph_pages", 0),
        "list_pages": result.reads["list_pages"], "per_vm_reads": result.reads["per_vm_reads"],
        "arm_reads": sum(by_sub.values()), "throttled_429": throttled, "seconds": round(wall, 2),
        "floor_seconds": round(floor, 2), "ratio_to_floor": round(wall / floor, 3) if floor else None,
        "bucket_bound": floor > 0 and wall <= 1.5 * floor, "cpu_seconds": round(cpu, 2),
        "cpu_ms_per_vm": round(1000 * cpu / args.vms, 2), "peak_rss_mib_so_far": round(peak_mib, 1),
        "load_average_1m": round(load[0], 1), "errors": result.counts()["error"],
        "subscriptions_swept": result.subscriptions,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--subscriptions", type=int, default=1)
    parser.add_argument("--resource-groups", type=int, default=1)
    parser.add_argument("--broken", type=float, default=0.0, metavar="PERCENT",
                        help=f"this share of the VMs broken ({', '.join(BROKEN_KINDS)}, evenly)")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--probe-timeout", type=float, default=5.0)
    parser.add_argument("--no-probe", action="store_true", help="Azure side only (no wire probe)")
    parser.add_argument("--only", choices=PATHS, help="run one path only (default: both, side by side)")
    args = parser.parse_args()

    mix = fleet_mix(args.vms, args.broken)
    built = time.monotonic()
    process, info = start_emulator(mix, args.subscriptions, args.resource_groups, args.speed)
    build_seconds = time.monotonic() - built
    runs: dict[str, dict] = {}
    try:
        from azrdp.azure.session import ArmEndpoint, open_tenant_session

        base_url = info["base_url"]
        imported = time.process_time()
        import azure.mgmt.compute  # noqa: F401 - a one-time cost of every azrdp process, reported apart

        import_cpu = time.process_time() - imported
        for name in PATHS:
            if args.only and name != args.only:
                continue
            if runs:   # the same fleet again, as built: a fresh read bucket and an empty call log
                rebuilt = time.monotonic()
                request = urllib.request.Request(base_url + "/_emulator/reset", data=b"{}", method="POST")
                with urllib.request.urlopen(request, timeout=600) as answer:
                    answer.read()
                print(f"emulator reset in {time.monotonic() - rebuilt:.1f} s", file=sys.stderr)
            session = open_tenant_session(endpoint=ArmEndpoint(base_url), polling_interval=0, environ={})
            runs[name] = measure(session, info, args, resource_graph=name == "resource-graph")
            print(json.dumps({name: runs[name]}), file=sys.stderr)
        throttled = any(r["throttled_429"] for r in runs.values())
        bucket_bound = any(r["bucket_bound"] for r in runs.values())
        drained = None
        if not throttled and not bucket_bound:
            first = info["vms"][0]
            drained = drain_until_throttled(base_url, first, next(iter(runs.values()))["subscriptions_swept"][0])
        emulator = emulator_usage(process.pid)
    finally:
        stop_seconds = stop_emulator(process)

    for figures in runs.values():
        figures.pop("subscriptions_swept", None)
    ratios = None
    if len(runs) == 2:
        graph, lists = runs["resource-graph"], runs["arm-lists"]
        ratios = {"reads": round(graph["reads"] / lists["reads"], 4) if lists["reads"] else None,
                  "seconds": round(graph["seconds"] / lists["seconds"], 3) if lists["seconds"] else None,
                  "cpu": round(graph["cpu_seconds"] / lists["cpu_seconds"], 3) if lists["cpu_seconds"] else None}
    broken = sum(n for kind, n in mix.items() if kind != "healthy")
    figures = {
        "vms": args.vms, "subscriptions": args.subscriptions, "resource_groups": args.resource_groups,
        "broken": broken, "runs": runs, "ratio_resource_graph_to_arm_lists": ratios, "bucket_check": drained,
        "sdk_import_cpu_seconds": round(import_cpu, 2), "speed": args.speed, "probe": not args.no_probe,
        "emulator_build_seconds": round(build_seconds, 1), **emulator, "emulator_stop_seconds": stop_seconds,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))
    if not throttled and not bucket_bound and not (drained and drained["throttled"]):
        print("FAIL: no 429 and no bucket-bound run, and the bucket never throttled when drained: the read "
              "bucket is off, so this run measured the client, not ARM.", file=sys.stderr)
        return 2
    failed = {name: r["errors"] for name, r in runs.items() if r["errors"]}
    if failed:
        print(f"FAIL: VMs ended in error: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
