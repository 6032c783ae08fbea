#!/usr/bin/env python3
"""Benchmark: `azrdp probe` vs `nmap --script rdp-enum-encryption` against the same local xrdp,
plus the cold-start wall time of `azrdp --help` and `azrdp probe`.

Usage (from the checkout, as root or a user who may run xrdp):
    .venv/bin/python bench/probe_vs_nmap.py [--rounds 7] [--security-layer negotiate|tls|rdp]

Runs are alternated (probe, nmap, probe, nmap, ...) so drift hits both alike. Each is a fresh
process; the probe's in-process time (ProbeResult.timings["total"]) is reported as well.
Results and the command line go in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # a script run by path: the repository root, for tests.support

from tests.support.rdp_peers import XrdpServer, free_port, tempdir, write_cert  # noqa: E402


def azrdp_command() -> list[str]:
    script = Path(sys.executable).with_name("azrdp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "azrdp"]


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    return time.perf_counter() - start, done


def summary(values: list[float]) -> str:
    return (f"min {min(values) * 1000:7.1f} ms  median {statistics.median(values) * 1000:7.1f} ms  "
            f"max {max(values) * 1000:7.1f} ms  (n={len(values)})")


def probe_found(stdout: str) -> str:
    doc = json.loads(stdout)
    found = f"outcome={doc['outcome']} selected={doc['selected_protocol']} flags={','.join(doc['flags'])}"
    if doc.get("tls_version"):
        found += f" tls={doc['tls_version']}/{doc['cipher']}"
    cert = doc.get("certificate")
    if cert:
        found += (f" cert={cert['subject']} notAfter={cert['not_after']} days_left={cert['days_left']}"
                  f" thumbprint={cert['thumbprint']}")
    return found


def nmap_found(stdout: str) -> str:
    lines = [line.strip("|_ ").rstrip() for line in stdout.splitlines() if line.startswith("|")]
    return "; ".join(line for line in lines if line) or "(no script output)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--security-layer", default="negotiate", choices=["negotiate", "tls", "rdp"])
    args = parser.parse_args()

    nmap = shutil.which("nmap")
    xrdp = shutil.which("xrdp") or shutil.which("xrdp", path="/usr/local/sbin:/usr/sbin:/sbin")
    if xrdp is None:
        print("xrdp is not installed (apt-get install xrdp)", file=sys.stderr)
        return 2
    azrdp = azrdp_command()
    folder = tempdir("azrdp-bench-")
    cert = write_cert(folder / "certs", cn="bench-rdp.test")
    server = XrdpServer(folder / "xrdp", cert, security_layer=args.security_layer).start(xrdp)
    target = f"127.0.0.1:{server.port}"
    print(f"xrdp {args.security_layer} on {target}; azrdp: {' '.join(azrdp)}; nmap: {nmap or 'not installed'}")
    try:
        probe_times, probe_inprocess, nmap_times = [], [], []
        probe_out = nmap_out = ""
        timed(azrdp + ["probe", target, "-o", "json"])  # warm the page cache for both tools
        if nmap:
            timed([nmap, "-Pn", "-n", "-p", str(server.port), "--script", "+rdp-enum-encryption", "127.0.0.1"])
        for _ in range(args.rounds):
            seconds, done = timed(azrdp + ["probe", target, "-o", "json"])
            probe_times.append(seconds)
            probe_out = done.stdout
            probe_inprocess.append(json.loads(done.stdout)["timings"]["total"])
            if nmap:
                seconds, done = timed([nmap, "-Pn", "-n", "-p", str(server.port),
                                       "--script", "+rdp-enum-encryption", "127.0.0.1"])
                nmap_times.append(seconds)
                nmap_out = done.stdout

        help_times = [timed(azrdp + ["--help"])[0] for _ in range(args.rounds)]
        refused = f"127.0.0.1:{free_port()}"
        refused_times = [timed(azrdp + ["probe", refused, "--timeout", "1"])[0] for _ in range(args.rounds)]
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)

    print()
    print(f"azrdp probe (process)   {summary(probe_times)}")
    print(f"azrdp probe (in-proc)   {summary(probe_inprocess)}")
    if nmap_times:
        print(f"nmap rdp-enum-encryption {summary(nmap_times)}")
        ratio = statistics.median(nmap_times) / statistics.median(probe_times)
        print(f"median wall-time ratio nmap/probe: {ratio:.1f}x  (target >= 20x)")
    print(f"azrdp --help (cold)     {summary(help_times)}  (target <= 150 ms)")
    print(f"azrdp probe, refused    {summary(refused_times)}")
    print()
    print(f"probe found: {probe_found(probe_out)}")
    if nmap_times:
        print(f"nmap found:  {nmap_found(nmap_out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
