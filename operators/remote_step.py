"""What the deferrable backends of ComputeOperator share: a pod or a Condor job, then provenance.

A remote backend (:class:`RemoteBackend`) starts the step somewhere else and defers the task
to a trigger; when the trigger fires, Airflow resumes the task in
``ComputeOperator.execute_remote_complete``, which hands the event back to the backend.
Either way the step's ``result.json`` on the shared workspace is the truth: :func:`finish`
reads it and records the task, its files and their edges with the same
:func:`skyops.launch.run_recorded` the local path uses, so provenance cannot tell where a
step ran except by the ``executor`` column.

What crosses the deferral (Airflow stores it in ``next_kwargs``) is small and credential-free:
the step name, workdir, resources, labels and the provenance attempt id (:func:`spec_state`).
The parameters are read back from ``WORKDIR/params.json``, which the pod or job itself read.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyops.config import PlatformConfig, Resources, platform_config
from skyops.errors import ExecutorError, SkyopsError
from skyops.executors.base import ExecutionOutcome, Executor, LogSink, StepSpec, outcome_from_workdir
from skyops.launch import StepFailed, run_recorded
from skyops.provenance import ProvenanceStore
from skyops.secrets import redact_text
from skyops.steps.runner import StepResult

if TYPE_CHECKING:
    from airflow.sdk import Context

    from skyops.operators.compute import ComputeOperator
    from skyops.provenance import TaskKey

#: The ComputeOperator method a deferred remote step resumes in.
RESUME_METHOD = "execute_remote_complete"


class FinishedRun(Executor):
    """An executor whose step already ran elsewhere: ``run`` only reads its ``result.json``.

    It lets the remote backends record provenance through :func:`run_recorded` exactly as
    the local executor's runs are recorded.
    """

    def __init__(self, name: str, returncode: int, host: str = "", reason: str | None = None) -> None:
        self.name = name
        self.returncode = returncode
        self.host = host
        #: how the pod/job ended when the step could not say so itself ("held: ...", "OOMKilled")
        self.reason = reason

    def run(self, spec: StepSpec, log: LogSink | None = None) -> ExecutionOutcome:
        outcome = outcome_from_workdir(spec, self.returncode, self.host)
        error = outcome.result.error or {}
        if self.reason and error.get("type") == "StepDied":
            outcome.result.error = {"type": "StepDied", "message": redact_text(
                f"step {spec.step} {self.reason}; it wrote no result.json in {spec.workdir}")}
        return outcome


def spec_state(spec: StepSpec, backend: str, attempt_id: int | None) -> dict[str, Any]:
    """The JSON-safe state a deferred step carries to its resumption (no parameters, no secrets)."""
    return {"backend": backend, "step": spec.step, "workdir": str(spec.workdir),
            "resources": spec.resources.model_dump(), "labels": dict(spec.labels), "attempt_id": attempt_id}


def spec_from_state(state: dict[str, Any]) -> StepSpec:
    """Rebuild the StepSpec of a deferred step; its parameters come from WORKDIR/params.json."""
    workdir = Path(state["workdir"])
    spec = StepSpec(state["step"], {}, workdir, Resources.model_validate(state.get("resources") or {}),
                    labels=dict(state.get("labels") or {}))
    try:
        spec.params = json.loads(spec.params_file.read_text())
    except FileNotFoundError:
        raise ExecutorError(f"step {spec.step}: {spec.params_file} is missing on the shared workspace; the "
                            f"workspace must be the same filesystem on every worker and in every job") from None
    return spec


def _parse_time(text: str) -> datetime | None:
    """An ISO 8601 time from result.json as an aware datetime (naive taken as UTC); None if unusable."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def step_times(result: StepResult) -> tuple[datetime | None, datetime | None]:
    """When the step itself started and ended, from its result.json (``None``: not recorded).

    A remote step resumes its task long after it started (the task waited deferred), so
    the resumption's clock says nothing about the step; the step's own ``started`` and
    ``finished`` (or ``started + wall_s``) do. An end before the start is dropped.
    """
    start = _parse_time(result.started)
    if start is None:
        return None, None
    end = _parse_time(result.finished)
    if end is None and result.wall_s:
        end = start + timedelta(seconds=float(result.wall_s))
    if end is not None and end < start:
        end = None
    return start, end


def _record_step_times(store: ProvenanceStore, key: "TaskKey", result: StepResult, status: str, log: Any) -> None:
    """Set the try's start/end times to the step's own (see :func:`step_times`), when it wrote them.

    The try itself is already recorded: a database blip here costs only the times, so it is
    a warning, never the task's failure.
    """
    start, end = step_times(result)
    if start is None:
        return
    try:
        store.record_state(key, status, start_time=start, end_time=end)
    except SkyopsError as exc:
        log.warning("could not record the step's own start/end times in provenance (%s); the try keeps the "
                    "times of its resumption", redact_text(str(exc)))


def finish(op: "ComputeOperator", context: "Context", spec: StepSpec, *, executor: str, returncode: int,
           host: str = "", attempt_id: int | None = None, reason: str | None = None) -> dict[str, Any]:
    """Record the finished step in provenance and return ComputeOperator's XCom value.

    The try's start and end times are the step's own, from result.json, not the times the
    deferred task resumed and recorded. A failed step raises (after pushing the outputs it did
    complete), with the step's own, credential-free message from result.json as the reason.
    """
    from skyops.operators.compute import task_key

    cfg = platform_config()
    store = ProvenanceStore.from_config(cfg)
    key = task_key(context)
    try:
        rec = run_recorded(spec, FinishedRun(executor, returncode, host, reason), store, key, attempt_id=attempt_id,
                           log_sink=op.log.info)
    except StepFailed as exc:
        _record_step_times(store, key, exc.outcome.result, "failed", op.log)
        op._push_outputs(context, exc.outcome.result.outputs, push=op.push_outputs)
        raise RuntimeError(str(exc)) from None
    _record_step_times(store, key, rec.outcome.result, "success", op.log)
    result = rec.outcome.result
    outputs = op._push_outputs(context, result.outputs, push=op.push_outputs)
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {"workdir": str(spec.workdir), "outputs": outputs, "metrics": metrics, "prov_task_id": rec.task_id}


class RemoteBackend(ABC):
    """A place ComputeOperator runs a step without holding a worker slot while it runs."""

    name: str = "remote"

    def __init__(self, cfg: PlatformConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def start(self, op: "ComputeOperator", context: "Context", spec: StepSpec,
              attempt_id: int | None) -> dict[str, Any]:
        """Submit (or reattach to) the step's pod/job and defer; returns only if it already ended."""

    @abstractmethod
    def complete(self, op: "ComputeOperator", context: "Context", event: dict[str, Any],
                 state: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: collect logs, read result.json, record provenance."""

    def kill(self) -> None:
        """Stop the pod/job this process started (Airflow's on_kill)."""


def remote_backend(name: str, cfg: PlatformConfig | None = None) -> RemoteBackend:
    """The deferrable backend called ``name`` (``kubernetes`` or ``htcondor``)."""
    cfg = cfg or platform_config()
    if name == "kubernetes":
        from skyops.operators.kubernetes import KubernetesBackend

        return KubernetesBackend(cfg)
    if name == "htcondor":
        from skyops.operators.htcondor import HTCondorBackend

        return HTCondorBackend(cfg)
    raise ExecutorError(f"backend {name!r} is not a remote backend; expected 'kubernetes' or 'htcondor' "
                        f"(check the step's executor in the campaign config)")


__all__ = ["RemoteBackend", "FinishedRun", "finish", "remote_backend", "spec_state", "spec_from_state",
           "step_times", "RESUME_METHOD"]
