"""What every job that changes a VM shares (azrdp.repair's fix, azrdp.rescue's rescue/resume/undo):
its result's common part, and the skeleton that turns Ctrl-C and errors after the first change
into a result with the audit written.

    job = MyJob(target, audit=audit, clock=clock, progress=progress, result=MyResult(target))
    return job.guarded(job.run)

Before the first change a typed error propagates (sign-in, not found, refused: the command exits
with its code, nothing changed). After it, nothing may hide what was done: an error becomes the
result's ``error`` (verdict ``failed``), Ctrl-C or SIGTERM the verdict ``interrupted`` (exit 130 /
143), each recorded in the audit log by the job's own hook; the report and the audit say what was
changed and how to undo it. An audit log that could not be written is the result's
``audit_error`` (exit 1: the records are only in the report).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from azrdp.clock import Clock
from azrdp.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEM, AzrdpError
from azrdp.target import Target
from azrdp.ui import ProgressSink


@dataclass
class JobResult:
    """The part of a job's result every job has; a job's own result adds its fields."""

    target: Target
    before: Any = None                       # azrdp.diagnose.Diagnosis
    actions: list[dict[str, Any]] = field(default_factory=list)   # the audit records of changes
    verification: dict[str, Any] | None = None
    after: Any = None                        # azrdp.diagnose.Diagnosis
    timings: dict[str, float] = field(default_factory=dict)
    verdict: str = "not_verified"            # verified | not_verified | dry_run | declined | interrupted | failed
    error: AzrdpError | None = None
    interrupted: dict[str, Any] | None = None
    audit_path: str | None = None
    audit_error: str | None = None           # the audit log could not be written (the records are here)

    OK_VERDICTS: ClassVar[tuple[str, ...]] = ("verified",)

    @property
    def exit_code(self) -> int:
        if self.verdict == "interrupted":
            return EXIT_INTERRUPTED
        if self.error is not None:
            return self.error.exit_code
        if self.audit_error is not None:
            return EXIT_PROBLEM
        if self.verdict == "dry_run":
            return self.dry_run_code()
        return EXIT_OK if self.verdict in self.OK_VERDICTS else EXIT_PROBLEM

    def dry_run_code(self) -> int:
        return EXIT_OK

    def error_dict(self) -> dict[str, Any] | None:
        if self.error is None:
            return None
        return {"type": type(self.error).__name__, "message": self.error.message, "hint": self.error.hint}


R = TypeVar("R", bound=JobResult)


class Job(Generic[R]):
    """One run of a job: its state is what a Ctrl-C report needs (what was done, what is in flight)."""

    def __init__(self, target: Target, *, audit: Any, clock: Clock, progress: ProgressSink, result: R):
        self.target = target
        self.audit = audit
        self.clock = clock
        self.progress = progress
        self.result = result
        self.in_flight: str | None = None     # the change under way, in words (None: none)

    def say(self, text: str) -> None:
        self.progress.info(text)

    def waiting(self, what: str, *, said: str = "waiting", limit: float | None = None) -> Any:
        """The live status line for one wait (a Run Command, a restart, the agent, RDP)."""
        from azrdp.ui import waiting

        return waiting(self.progress, what, said=said, limit=limit)

    def timed(self, phase: str, begun: float) -> float:
        seconds = self.clock.monotonic() - begun
        self.result.timings[phase] = self.result.timings.get(phase, 0.0) + seconds
        return seconds

    # -- the hooks a job fills in ---------------------------------------------------------------
    def changed(self) -> bool:
        """Whether anything was changed (or asked to change) yet: before that, errors propagate."""
        return bool(self.result.actions)

    def on_finished(self, result: R) -> None:
        """After a run that ended on its own (any verdict)."""

    def on_interrupted(self) -> None:
        """Ctrl-C or SIGTERM: fill ``result.interrupted`` and record it."""

    def on_failed(self, error: AzrdpError) -> None:
        """An error after the first change: record it, say what is left."""

    # -- the skeleton --------------------------------------------------------------------------------
    def guarded(self, run: Callable[[], R]) -> R:
        try:
            result = run()
            self.on_finished(result)
            return result
        except KeyboardInterrupt:
            self.result.verdict = "interrupted"
            self.on_interrupted()
            return self.result
        except Exception as err:  # after the first change nothing may hide it: the report says what was done
            if not self.changed():
                raise
            if not isinstance(err, AzrdpError):
                err = AzrdpError(f"azrdp stopped on an unexpected {type(err).__name__}: {err}",
                                 hint="Please report it; what was changed is listed above.")
            self.result.error = err
            self.result.verdict = "failed"
            self.on_failed(err)
            return self.result
        finally:
            self.result.audit_error = self.audit.error
            self.progress.done()
