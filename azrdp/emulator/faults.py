"""Faults a test (or a control call) switches on, so azrdp meets Azure's bad days on purpose.

Each fault is consumed as it fires (``count`` times, or forever with ``count=None``) and can be
narrowed to one ARM operation (by operationId, e.g. ``VirtualMachines_Get``) or one VM.

HTTP-level faults (the server answers instead of the handler):

* ``throttle``          429 with ``Retry-After`` (120 s by default, as Compute usually answers; 1200 s
                         at times) and Compute's throttling body naming the operation group.
* ``server_error``      a burst of 500 (``status=500``) or 503 (``status=503``, optional Retry-After).
* ``connection_reset``  the TCP connection is reset before any answer; by default only while a
                         client polls an asynchronous operation ("mid-poll").
* ``refuse``            the request is refused with ``status`` (400, 403, 404 or 409) and ARM's error
                         ``code`` (default 403 ``AuthorizationFailed``): a caller without permission, a
                         provider not registered (409 ``MissingSubscriptionRegistration``), e.g. on
                         Resource Graph's ``Resources`` operation.

  With ``accepted=True`` either fires *after* the request was acted on (a Run Command started, a
  restart under way) and only the answer is lost: the ambiguous failure a client must not resend.

Behaviour faults (the backend acts differently):

* ``run_command_conflict``  409 Conflict: another Run Command is in progress on the VM.
* ``run_command_hang``      the next Run Command never finishes (and holds the VM: later ones 409).
* ``restart_failure``       the next restart/start ends ``Failed`` (InternalExecutionError); the
                             guest is not rebooted.
* ``rdp_never_returns``     after the next restart/start, the RDP port stays closed.
* ``vm_being_deleted``      the VM answers Compute's own 404 ``NotFound`` "The entity was not found in
                             this Azure location." (a VM being deleted; real-azure-behaviour.md).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

HTTP_FAULTS = ("throttle", "server_error", "connection_reset", "refuse")
BEHAVIOUR_FAULTS = ("run_command_conflict", "run_command_hang", "restart_failure", "rdp_never_returns",
                    "vm_being_deleted")
KINDS = HTTP_FAULTS + BEHAVIOUR_FAULTS

POLL_OPERATIONS = ("ComputeOperations_Get", "ComputeOperationResults_Get", "NetworkOperations_Get",
                   "NetworkOperationResults_Get")
"""The operationIds of asynchronous-operation polls (the default target of connection_reset)."""


@dataclass
class Fault:
    kind: str
    operation: str | None = None     # operationId to match; None: any (see POLL_OPERATIONS)
    method: str | None = None        # HTTP method to match
    vm: str | None = None            # VM name to match (behaviour faults)
    count: int | None = 1            # how many times it fires; None: until cleared
    retry_after: float | None = 120  # seconds sent as is, for throttle (Compute: 120, at times 1200) and 503
    group: str | None = None         # throttle: the operation group named (default: the route's 3-minute window)
    status: int = 503                # server_error: 500 or 503; refuse: 400, 403 (its default), 404 or 409
    code: str | None = None          # refuse: ARM's error code (default AuthorizationFailed)
    after: int = 0                   # let this many matching requests through first (a failure half way)
    accepted: bool = False           # server_error/connection_reset after the request was acted on
    fired: int = 0
    passed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.kind == "server_error" and self.status not in (500, 503):
            raise ValueError("server_error status must be 500 or 503")
        if self.kind == "refuse":
            self.status = 403 if self.status == 503 else self.status
            if self.status not in (400, 403, 404, 409):
                raise ValueError("refuse status must be 400, 403, 404 or 409")
            self.code = self.code or "AuthorizationFailed"
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or None for every matching request)")

    def matches(self, kind: str, operation: str | None, method: str | None, vm: str | None,
                accepted: bool = False) -> bool:
        if self.kind != kind or self.exhausted or self.accepted != accepted:
            return False
        if self.operation is not None and (operation or "").lower() != self.operation.lower():
            return False
        if self.operation is None and kind == "connection_reset" and operation not in POLL_OPERATIONS:
            return False
        if self.method is not None and (method or "").upper() != self.method.upper():
            return False
        return self.vm is None or (vm or "").lower() == self.vm.lower()

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultBook:
    """The active faults of one emulator."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, kind: str, *, operation: str | None = None, method: str | None = None,
             vm: str | None = None, accepted: bool = False) -> Fault | None:
        """The first matching fault, counted as fired; None when none applies."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(kind, operation, method, vm, accepted):
                    if fault.passed < fault.after:
                        fault.passed += 1
                        continue
                    fault.fired += 1
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if not f.exhausted]

    def to_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_dict() for f in self._faults]
