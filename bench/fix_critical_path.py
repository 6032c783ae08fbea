"""The critical path of `azrdp fix`, fused vs separate, against the manual sequence from Microsoft's docs.

    .venv/bin/python bench/fix_critical_path.py

The real fix job and the real azure-mgmt clients run against the test suite's ARM stand-in
(tests/support/fake_arm.py) and a loopback TLS RDP listener, on ONE ManualClock: every simulated
Azure latency is a clock advance at the moment ARM receives the request, and every wait azrdp
makes (LRO polling, RDP polling) sleeps on the same clock. So "waits" below are simulated
seconds, measured, not modelled: the clock's reading when the job ends.

Simulated latencies (the midpoints of the documented ranges, docs/emulator.md and
../shared/reference/rdp-repair-on-azure.md section 3.2): Run Command 30 s (20-40), restart 90 s
(60-120), boot until RDP answers 22.5 s (15-30). ARM reads and the wire probe cost 0 s here.

Manual sequence (Microsoft Learn, section 5 of the reference): one Run Command to find the cause
(event log / icacls listing), one RunPowerShellScript per fix (certificate renew, MachineKeys
icacls, logoff of disconnected sessions), one `az vm restart` when a fix says "restart the VM"
(MachineKeys), then the user retries the client once a minute (first success at the first whole
minute after RDP is back).
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # a script run by path: the repository root, for tests.support

RUN_COMMAND, RESTART, BOOT, CLIENT_RETRY = 30.0, 90.0, 22.5, 60.0


class _Credential:
    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken("bench-token", 2**31 - 1)


def scenarios():
    from tests.support.fix_support import seed_guest
    from tests.support.payload_samples import broken_machinekeys_acl, expired_cert, healthy, two_disconnected_admins

    # name, guest diagnose result, what is broken, served certificate expired?, manual fixes
    return [
        ("seed: cert + MachineKeys + seats", seed_guest, {"machinekeys-acl", "cert", "sessions"}, True, 3, True),
        ("expired certificate", expired_cert, {"cert"}, True, 1, False),
        ("MachineKeys ACL", broken_machinekeys_acl, {"machinekeys-acl", "cert"}, True, 2, True),
        ("both admin seats taken", two_disconnected_admins, {"sessions"}, False, 1, False),
        ("healthy", healthy, set(), False, 0, False),
    ]


def run(name, diagnose, broken, expired, fused, certs):
    from azrdp.audit import AuditLog
    from azrdp.azure.session import ArmEndpoint, AzureSession, RetrySettings
    from azrdp.clock import ManualClock
    from azrdp.rdp import ProbeResult, probe
    from azrdp.repair import FixOptions, fix
    from azrdp.target import Target
    from tests.support.fake_arm import BASE, SUB, FakeArm
    from tests.support.fix_support import Guest, SwappableRdp, install, restarts, run_commands

    clock = ManualClock()
    rdp = SwappableRdp(certs[0] if expired else certs[1])
    back_at = [0.0]

    def repaired(fixed):
        if "cert" in fixed:       # the cert step restarts TermService in the guest: a fresh certificate
            rdp.serve(certs[1])

    def restarted(action):
        clock.advance(RESTART)
        back_at[0] = clock.monotonic() + BOOT

    def booting(host, port, *, timeout, clock):
        if clock.monotonic() < back_at[0]:
            clock.sleep(min(timeout, 0.05))
            return ProbeResult(host, port, "refused")
        return probe(host, port, timeout=timeout, clock=clock)

    with FakeArm() as arm:
        guest = Guest(diagnose(), broken=set(broken), on_repair=repaired)
        answer = guest.answer

        def slow_answer(body):
            clock.advance(RUN_COMMAND)
            return answer(body)

        spec = install(arm, guest)
        arm.guest_answers[spec.vm_id.lower()] = [slow_answer] * 10
        arm.on_power[spec.vm_id.lower()] = restarted
        session = AzureSession(_Credential(), SUB, endpoint=ArmEndpoint(BASE), polling_interval=0,
                               retry=RetrySettings(), clock=clock)
        result = fix(session, Target("vm1", "rg1"), FixOptions(host=rdp.host, fused=fused),
                     audit=AuditLog(None, clock=clock), prober=booting)
        rdp.close()
        diag, repair = run_commands(arm)
        return {"scenario": name, "flow": "fused (fix --yes)" if fused else "separate (--guest-first)",
                "verdict": result.verdict, "run_commands": diag + repair, "repair_rc": repair,
                "restarts": restarts(arm), "waits": clock.monotonic()}


def manual(name, fixes, restart):
    run_commands = 1 + fixes
    waits = run_commands * RUN_COMMAND
    if restart:
        waits += RESTART + math.ceil(BOOT / CLIENT_RETRY) * CLIENT_RETRY
    return {"scenario": name, "flow": "manual (Learn docs)", "verdict": "-", "run_commands": run_commands,
            "repair_rc": fixes, "restarts": int(restart), "waits": waits}


def main() -> None:
    from tests.support.fix_support import make_certs

    certs = make_certs(Path(tempfile.mkdtemp(prefix="azrdp-bench-")))
    rows = []
    for name, diagnose, broken, expired, fixes, restart in scenarios():
        fused = run(name, diagnose, broken, expired, True, certs)
        separate = run(name, diagnose, broken, expired, False, certs)
        by_hand = manual(name, fixes, restart)
        rows += [fused, separate, by_hand]
        for row in (fused, separate, by_hand):
            row["ratio"] = by_hand["waits"] / row["waits"] if row["waits"] else float("nan")
    print("| scenario | flow | verdict | Run Commands (repair) | restarts | summed waits (sim. s) | manual / this |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['flow']} | {r['verdict']} | {r['run_commands']} ({r['repair_rc']}) | "
              f"{r['restarts']} | {r['waits']:.1f} | {r['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
