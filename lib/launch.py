"""Run one step on an executor and record it in provenance: the heart of ComputeOperator.

This is the Airflow-free half of the operator, so it is testable (and usable from a
script) without a scheduler: open the task row, run the step, then record the files it
generated and used and the derivation edges between them from ``result.json``, and close
the task row with its status. A step killed mid-run still ends with a ``failed`` task
row and a message saying how it died.
"""
from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

from skyops.errors import ProcessingError, SkyopsError
from skyops.executors.base import ExecutionOutcome, Executor, LogSink, StepSpec
from skyops.provenance import ProvenanceStore, TaskKey
from skyops.secrets import redact_text

log = logging.getLogger(__name__)


class StepFailed(ProcessingError):
    """The step ran and failed; ``exit_code`` is 2 for bad input, 1 otherwise."""

    def __init__(self, message: str, outcome: ExecutionOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.exit_code = outcome.result.exit_code or 1


@dataclass
class Recorded:
    """What a recorded run produced: the outcome and the provenance task id."""

    outcome: ExecutionOutcome
    task_id: int


def run_recorded(spec: StepSpec, executor: Executor, store: ProvenanceStore, key: TaskKey, *,
                 attempt_id: int | None = None, log_sink: LogSink | None = None) -> Recorded:
    """Run ``spec`` on ``executor``, recording task, files and edges; raise StepFailed on failure."""
    task_id = store.task_started(key, name=spec.step, attempt_id=attempt_id, executor=executor.name,
                                 host=socket.gethostname(), config_digest=spec.config_digest())
    try:
        outcome = executor.run(spec, log_sink)
    except BaseException as exc:  # the executor itself broke, or we were interrupted
        store.task_finished(task_id, status="failed", end_time=datetime.now(timezone.utc),
                            message=redact_text(f"{type(exc).__name__}: {exc}"))
        raise
    res = outcome.result
    if res.outputs or res.used:
        # Every output listed in result.json is complete (atomic rename), even when the step
        # failed afterwards (a health report saying what failed): provenance records it.
        store.record_files(task_id, generated=res.outputs, used=res.used)
    metrics = {**res.metrics, "wall_s": res.wall_s, "cpu_s": res.cpu_s, "peak_rss_mb": res.peak_rss_mb}
    message = None if outcome.ok else (res.error or {}).get("message", "failed without a message")
    store.task_finished(task_id, status="success" if outcome.ok else "failed", exit_status=outcome.returncode,
                        end_time=datetime.now(timezone.utc), metrics=metrics, versions=res.versions,
                        host=res.host or None, message=message)
    if not outcome.ok:
        raise StepFailed(f"step {spec.step} failed ({res.error.get('type') if res.error else 'error'}): {message}",
                         outcome)
    log.info("step %s ok: %d outputs, %d inputs, %.2f s", spec.step, len(res.outputs), len(res.used), res.wall_s)
    return Recorded(outcome, task_id)


@dataclass
class TaskRecord:
    """An open provenance task row for work done in-process (queries, staging)."""

    store: ProvenanceStore
    task_id: int
    metrics: dict[str, Any] = field(default_factory=dict)

    def generated(self, files: list[dict[str, Any]]) -> None:
        self.store.record_files(self.task_id, generated=files, derivation="none")

    def used(self, files: list[dict[str, Any]]) -> None:
        self.store.record_files(self.task_id, used=files, derivation="none")


@contextlib.contextmanager
def recorded_task(store: ProvenanceStore, key: TaskKey, name: str, *, attempt_id: int | None = None,
                  versions: dict[str, str] | None = None) -> Iterator[TaskRecord]:
    """Open a task row, yield it for file records, close it as success or failed (re-raising)."""
    from skyops.versions import core_versions

    task_id = store.task_started(key, name=name, attempt_id=attempt_id, executor="in-process",
                                 host=socket.gethostname(), versions=versions or core_versions())
    rec = TaskRecord(store, task_id)
    try:
        yield rec
    except BaseException as exc:
        store.task_finished(task_id, status="failed", exit_status=getattr(exc, "exit_code", 1),
                            end_time=datetime.now(timezone.utc), metrics=rec.metrics,
                            message=redact_text(f"{type(exc).__name__}: {exc}"))
        raise
    store.task_finished(task_id, status="success", exit_status=0, end_time=datetime.now(timezone.utc),
                        metrics=rec.metrics)


__all__ = ["run_recorded", "recorded_task", "StepFailed", "Recorded", "TaskRecord", "SkyopsError"]
