"""The CI smoke check: does this VM answer Remote Desktop? The wire answer first; Azure and the
guest only when it does not.

    result = smoke_check(open_session, target, host="20.1.2.3", wait=300)

With ``host`` the probe needs no Azure at all, so a passing check signs in to nothing. Without it
the VM's public IP comes from ARM (the Azure side is read once, three round trips). Only when RDP
does not answer (after ``wait`` seconds of polling, for a VM that is still booting) does the check
complete the diagnosis, guest included, so the CI log says why: from what it read already (the
VM's inventory, unless a wait made it stale, and the wire's last answer, never probed again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azrdp.checks import Check, Status
from azrdp.clock import SYSTEM_CLOCK, Clock
from azrdp.errors import EXIT_OK, EXIT_PROBLEM
from azrdp.target import Target
from azrdp.ui import SILENT, ProgressSink

if TYPE_CHECKING:
    from azrdp.azure.vm import Session


@dataclass
class SmokeResult:
    target: Target
    address: str | None                    # HOST:PORT that was probed first (None: nothing to probe)
    wire: list[Check]                      # the wire checks of the last probe
    diagnosis: Any = None                  # azrdp.diagnose.Diagnosis, only when RDP did not answer
    attempts: int = 0
    waited: float = 0.0
    signed_in: bool = False                # whether Azure was asked at all
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        tcp = next((c for c in self.wire if c.id == "rdp.tcp"), None)
        return tcp is not None and tcp.status is Status.PASS and \
            all(c.status not in (Status.FAIL, Status.ERROR) for c in self.wire)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_PROBLEM

    @property
    def checks(self) -> list[Check]:
        """What a report shows: the wire when it answered, else the whole diagnosis."""
        if self.ok or self.diagnosis is None:
            return list(self.wire)
        return list(self.diagnosis.checks)

    def summary(self) -> str:
        if self.ok:
            return f"RDP answers on {self.address}"
        if self.diagnosis is not None:
            return self.diagnosis.summary()
        failed = next((c for c in self.wire if c.status in (Status.FAIL, Status.ERROR, Status.SKIP)), None)
        return f"{failed.id}: {failed.summary}" if failed else "RDP does not answer"

    def to_dict(self) -> dict[str, Any]:
        return {"vm": {"name": self.target.name, "resource_group": self.target.resource_group,
                       "subscription": self.target.subscription},
                "address": self.address, "ok": self.ok, "summary": self.summary(),
                "attempts": self.attempts, "waited": round(self.waited, 3), "signed_in": self.signed_in,
                "checks": [c.to_dict() for c in self.checks],
                "diagnosis": self.diagnosis.to_dict() if self.diagnosis is not None else None,
                "notes": self.notes}


def smoke_check(open_session: Callable[[], Session], target: Target, *, host: str | None = None, port: int = 3389,
                probe_timeout: float = 5.0, wait: float = 0.0, guest: bool = True, source_ip: str | None = None,
                clock: Clock = SYSTEM_CLOCK, progress: ProgressSink = SILENT) -> SmokeResult:
    """Check that ``target`` answers RDP. ``open_session()`` is called only when Azure is needed."""
    from azrdp.diagnose import diagnose
    from azrdp.rdp import format_target, parse_target, rdp_checks

    session = None
    address: tuple[str, int] | None = None
    first = None
    if host:
        address = parse_target(host, default_port=port)
    else:
        session = open_session()
        progress.status(f"Reading VM {target} to find its public IP ...")
        first = diagnose(session, target, port=port, source_ip=source_ip, probe_timeout=probe_timeout)
        if first.vm.get("public_ip") and first.probe_result is not None:
            address = (first.vm["public_ip"], port)
    result = SmokeResult(target, format_target(*address) if address else None, [], signed_in=session is not None)
    latest = None                            # the wire's last answer: the diagnosis judges it, never probes again
    if address is not None:
        latest, result.attempts, result.waited = _answer(address, first, wait=wait, clock=clock,
                                                         probe_timeout=probe_timeout, progress=progress)
        result.wire = rdp_checks(latest)
        if result.ok:
            return result
    elif first is not None:
        result.wire = [c for c in first.checks if c.side == "wire"]
        result.notes.append("the VM has no public IP or is not running: pass --host with an address CI can reach")
    progress.status("RDP does not answer; reading the Azure side" + (" and the guest" if guest else "") + " ...")
    if session is None:
        session = open_session()
        result.signed_in = True
    # What Azure said a moment ago still stands; after a wait (a VM that was booting) it is read again.
    reuse = first if first is not None and not result.waited else None
    result.diagnosis = diagnose(session, target, port=port, source_ip=source_ip, host=host,
                                probe_timeout=probe_timeout, guest=guest, progress=progress,
                                inventory=reuse.inventory if reuse is not None else None, probe_result=latest)
    return result


def _answer(address: tuple[str, int], first: Any, *, wait: float, clock: Clock, probe_timeout: float,
            progress: ProgressSink) -> tuple[Any, int, float]:
    """The wire's answer: the diagnosis' probe when there was one, else one probe; then, when it
    did not answer and ``wait`` allows, poll until it does. (probe result, attempts, seconds)"""
    from azrdp.rdp import format_target, probe, wait_until_answers

    host, port = address
    if first is not None:
        result, attempts = first.probe_result, 1
    else:
        progress.status(f"Probing RDP on {format_target(host, port)} ...")
        result, attempts = probe(host, port, timeout=probe_timeout), 1
    if result.ok or wait <= 0:
        return result, attempts, 0.0
    progress.status(f"RDP does not answer yet ({result.outcome}); polling for up to {wait:g} s ...")
    from azrdp.ui import waiting

    with waiting(progress, f"RDP on {format_target(host, port)}", said=result.outcome, limit=wait) as shown:
        waited = wait_until_answers(host, port, timeout=wait, clock=clock, probe_timeout=min(probe_timeout, wait),
                                    on_attempt=lambda attempt: shown.update(attempt.outcome))
        shown.end(waited.last.outcome)
    return waited.last, attempts + waited.attempts, waited.elapsed

