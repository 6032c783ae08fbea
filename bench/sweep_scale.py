"""How close does `azrdp sweep` come to the floor ARM's read throttling sets?

ARM gives each subscription a bucket of 250 read tokens that refills 25 per second. A sweep that
needs R reads cannot finish before (R - 250) / 25 seconds, however it is written: that is the
floor. This benchmark sweeps a fleet of Windows VMs (Azure-side checks: no wire probe, no guest)
against the emulator in its own process, with ARM's per-call latency (0.05-0.3 s) and the read
bucket switched on, and reports the time against the floor for the reads the sweep made.
Everything is in simulated seconds (the emulator runs ``--speed`` times faster).

    .venv/bin/python bench/sweep_scale.py --vms 1000 --speed 4 --max-parallel 8

Target: at most 1.2 x the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUCKET, REFILL = 250, 25.0


def start_emulator(vms: int, speed: float) -> tuple[subprocess.Popen, dict]:
    process = subprocess.Popen([sys.executable, "-m", "azrdp", "emulator", "serve", "--fleet", f"healthy={vms}",
                                "--speed", str(speed), "--read-limit", f"{BUCKET}/{REFILL:g}", "-o", "json"],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise SystemExit("the emulator did not start")
    return process, json.loads(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--speed", type=float, default=4.0)
    parser.add_argument("--max-parallel", type=int, default=None)
    args = parser.parse_args()

    from azrdp.azure.session import ArmEndpoint, open_tenant_session
    from azrdp.sweep import DEFAULT_MAX_PARALLEL, sweep

    process, info = start_emulator(args.vms, args.speed)
    try:
        base_url = info["base_url"]
        session = open_tenant_session(endpoint=ArmEndpoint(base_url), polling_interval=0, environ={})
        started = time.monotonic()
        result = sweep(session, probe=False, max_parallel=args.max_parallel or DEFAULT_MAX_PARALLEL)
        elapsed = (time.monotonic() - started) * args.speed          # simulated seconds
        with urllib.request.urlopen(base_url + "/_emulator/calls") as answer:
            calls = json.load(answer)
    finally:
        process.terminate()
        process.wait(timeout=10)

    reads = [c for c in calls if c["method"] == "GET" and c["path"].startswith("/subscriptions/")
             and c["path"] != "/subscriptions"]
    served = sum(1 for c in reads if c["status"] != 429)
    throttled = sum(1 for c in reads if c["status"] == 429)
    floor = max(0.0, (served - BUCKET) / REFILL)
    figures = {
        "vms": len(result.results), "outcomes": result.counts(), "reads": served, "reads_per_vm": round(served / args.vms, 2),
        "throttled_429": throttled, "pauses": result.throttling["pauses"],
        "seconds": round(elapsed, 1), "floor_seconds": round(floor, 1),
        "ratio": round(elapsed / floor, 3) if floor else None, "speed": args.speed,
        "max_parallel": args.max_parallel or DEFAULT_MAX_PARALLEL, "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))
    errors = result.counts()["error"]
    return 0 if not errors and figures["ratio"] is not None and figures["ratio"] <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
