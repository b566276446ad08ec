"""Run one step on an executor and record it in provenance: the heart of ComputeOperator.

This is the Airflow-free half of the operator, so it is testable (and usable from a
script) without a scheduler: open the task row, run the step, then record the files it
generated and used and the derivation edges between them from ``result.json``, and close
the task row with its status. A step killed mid-run still ends with a ``failed`` task
row and a message saying how it died.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import datetime, timezone

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


__all__ = ["run_recorded", "StepFailed", "Recorded", "SkyopsError"]
