"""The guest side: run a payload through Run Command, parse its one result line, judge it.

Two entry points for the jobs (``azrdp diagnose`` / ``azrdp fix``):

    diagnose_guest(vm, ...) -> GuestDiagnosis(result, checks, run)
    repair_guest(vm, steps=[...], ...) -> RepairOutcome(result, run)

``vm`` is the VM's handle, ``session.vm(target)`` (azrdp.azure.vm.AzureVm): it sends the Run
Command on the session's clock and polling interval. The Azure SDK is imported only when one of
them runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azrdp.checks import Check
from azrdp.guest.checks import DEFAULT_PORT, guest_checks
from azrdp.payloads import payload
from azrdp.payloads.result import parse_result
from azrdp.payloads.schema import ResultSchemaError

if TYPE_CHECKING:
    from azrdp.azure.runcommand import RunCommandOutcome
    from azrdp.azure.vm import AzureVm

DEFAULT_TIMEOUT = 900.0

__all__ = ["GuestDiagnosis", "RepairOutcome", "diagnose_guest", "repair_guest", "run_payload",
           "guest_checks"]


@dataclass
class GuestDiagnosis:
    result: dict[str, Any]           # the validated diagnose result (schema DIAGNOSE)
    checks: list[Check]              # guest.* checks
    run: RunCommandOutcome

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "checks": [c.to_dict() for c in self.checks],
                "run": self.run.to_dict()}


@dataclass
class RepairOutcome:
    result: dict[str, Any]           # the validated repair result (schema REPAIR)
    run: RunCommandOutcome

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.result["steps"]

    @property
    def changed(self) -> bool:
        return bool(self.result["changed"])

    @property
    def reboot_required(self) -> bool:
        return bool(self.result["reboot_required"])

    @property
    def failed_steps(self) -> list[str]:
        return [s["name"] for s in self.steps if s["status"] in ("failed", "skipped")]

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "run": self.run.to_dict()}


def run_payload(vm: AzureVm, payload_id: str, values: Mapping[str, Any] | None = None, *,
                instance_view: Any = None, timeout: float = DEFAULT_TIMEOUT,
                on_wait: Callable[[str], None] | None = None, on_conflict: Callable[[str], None] | None = None,
                ) -> tuple[dict[str, Any], RunCommandOutcome]:
    """Run one manifest payload on ``vm`` with ``values`` as its parameters; return (result, run).

    Parameters are validated against the manifest before anything is sent (UsageError), the
    script goes out as the shipped file's lines, and the result line is parsed and validated.
    """
    spec = payload(payload_id)
    parameters = spec.run_command_parameters(values)
    run = vm.run_script(spec.script_lines(), parameters, instance_view=instance_view, timeout=timeout,
                        on_wait=on_wait, on_conflict=on_conflict)
    result = parse_result(payload_id, run.output)
    if result["version"] != spec.version:
        raise ResultSchemaError(payload_id, "$.version", f"the guest ran version {result['version']}, "
                                f"this azrdp ships {spec.version}")
    check_answer(payload_id, result, values or {})
    return result, run


def check_answer(payload_id: str, result: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """The guest answers for what was sent: the run id echoed back, and (repair) exactly the steps
    asked, each once. Anything else is an answer to another run, or a forged one."""
    sent_id = values.get("RunId")
    if sent_id and result.get("run_id") != sent_id:
        raise ResultSchemaError(payload_id, "$.run_id", f"the guest answered for run {result.get('run_id')!r}, "
                                f"azrdp sent {sent_id!r}")
    if payload_id == "repair" and "Steps" in values:
        asked = values["Steps"]
        asked = [s for s in (asked.split(",") if isinstance(asked, str) else asked) if s]
        got = [s.get("name") for s in result.get("steps") or []]
        if sorted(got) != sorted(asked):
            raise ResultSchemaError(payload_id, "$.steps", f"the guest reported steps {got}, azrdp asked for "
                                    f"{asked}")


def diagnose_guest(vm: AzureVm, *, instance_view: Any = None, probe_result: Any = None,
                   rdp_port: int = DEFAULT_PORT, event_hours: int = 24, run_id: str | None = None,
                   timeout: float = DEFAULT_TIMEOUT, on_wait: Callable[[str], None] | None = None,
                   on_conflict: Callable[[str], None] | None = None) -> GuestDiagnosis:
    """Run the read-only diagnose payload and turn its result into guest.* checks."""
    values: dict[str, Any] = {"EventHours": event_hours}
    if run_id:
        values["RunId"] = run_id
    result, run = run_payload(vm, "diagnose", values, instance_view=instance_view, timeout=timeout,
                              on_wait=on_wait, on_conflict=on_conflict)
    return GuestDiagnosis(result, guest_checks(result, probe_result=probe_result, rdp_port=rdp_port), run)


def repair_guest(vm: AzureVm, *, steps: Sequence[str], log_off_active: bool = False, run_id: str | None = None,
                 instance_view: Any = None, timeout: float = DEFAULT_TIMEOUT) -> RepairOutcome:
    """Run the repair payload with ``steps`` (any of rdp-config, machinekeys-acl,
    machinekeys-rename, cert, sessions; they run in that fixed order)."""
    values: dict[str, Any] = {"Steps": list(steps), "LogOffActive": log_off_active}
    if run_id:
        values["RunId"] = run_id
    result, run = run_payload(vm, "repair", values, instance_view=instance_view, timeout=timeout)
    return RepairOutcome(result, run)
