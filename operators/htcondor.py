"""The HTCondor backend of ComputeOperator: submit once, defer, reattach on retry.

``start`` submits the step as one Condor job (:class:`skyops.executors.htcondor.CondorPool`),
keeps the job's id in the task's **task state store** (Airflow 3.3's
``context["task_state_store"]``, scoped to dag run, task and map index, so every try of the
task instance sees it) under :data:`STATE_KEY`, and defers to
:class:`~skyops.operators.condor_triggers.HTCondorJobTrigger`. A later try of the same task
instance reads the stored job back and, from the job's event log:

* still queued, running or held -> reattaches (defers on the same job, nothing submitted);
* already succeeded -> records the result from the job's workdir, nothing submitted;
* failed, killed, removed, or its log is gone -> submits a fresh job.

These are the semantics of the SDK's ``ResumableJobMixin`` (reconnect / already succeeded /
terminal resubmit), applied to the deferrable path, which the mixin itself does not cover.
Once a job's result is recorded the key is deleted, so clearing the task later really runs it
again. Without a task state store (Airflow below 3.3, ``dag.test()`` runs) every try submits.

While the task is deferred the trigger follows the job's event log and asks the job's schedd
when the log goes quiet; a user who marks or clears the deferred task makes the trigger
remove the job (``HTCondorJobTrigger.on_kill``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyops.config import PlatformConfig
from skyops.executors.base import StepSpec
from skyops.executors.htcondor import STDERR, STDOUT, CondorJob, CondorPool, JobState, JobStatus, read_status, \
    submit_keys
from skyops.operators.condor_triggers import SCHEDD_EVERY_POLLS, HTCondorJobTrigger
from skyops.operators.remote_step import RESUME_METHOD, RemoteBackend, finish, spec_from_state, spec_state

if TYPE_CHECKING:
    from airflow.sdk import Context

    from skyops.operators.compute import ComputeOperator

#: task_state_store key of the submitted job ({cluster, proc, workdir, schedd}). Renaming it
#: breaks reattachment of tries already in flight.
STATE_KEY = "condor_job"
#: At most this many lines of the job's stdout/stderr are copied into the task log.
LOG_LINES = 2000


def _state_store(context: "Context") -> Any:
    return context.get("task_state_store")


class HTCondorBackend(RemoteBackend):
    """ComputeOperator's ``htcondor`` backend (see the module docstring)."""

    name = "htcondor"

    def __init__(self, cfg: PlatformConfig, pool: CondorPool | None = None) -> None:
        super().__init__(cfg)
        self.pool = pool or CondorPool(cfg)
        self.job: CondorJob | None = None

    def stored_job(self, context: "Context") -> tuple[CondorJob, JobStatus] | None:
        """The job an earlier try submitted, with its state from the event log (None: none stored)."""
        store = _state_store(context)
        stored = store.get(STATE_KEY) if store is not None else None
        if not stored:
            return None
        job = CondorJob.from_dict(stored)
        return job, read_status(job.log, job.cluster, job.proc)

    def start(self, op: "ComputeOperator", context: "Context", spec: StepSpec,
              attempt_id: int | None) -> dict[str, Any]:
        found = self.stored_job(context)
        if found is not None:
            job, status = found
            if status.state.active:
                op.log.info("reattaching to Condor job %s (%s), submitted by an earlier try; not submitting again",
                            job.id, status.state.value)
                self.job = job
                return self._defer(op, self._state(job, spec, attempt_id))
            if status.state is JobState.SUCCEEDED:
                op.log.info("Condor job %s of an earlier try already succeeded; recording its result", job.id)
                state = self._state(job, spec, attempt_id)
                return self._record(op, context, state, status)
            op.log.warning("Condor job %s of an earlier try %s; submitting a fresh job", job.id, status.describe())
            if status.state is JobState.UNKNOWN:
                self.pool.remove(job, "skyops: its event log is gone; a fresh job replaces it")
        keys = submit_keys(spec, self.cfg)
        op.log.info("submitting step %s to HTCondor:\n%s", spec.step, "\n".join(f"  {k} = {v}" for k, v in keys.items()))
        self.job = self.pool.submit(spec)
        store = _state_store(context)
        if store is not None:
            store.set(STATE_KEY, self.job.to_dict())
        else:
            op.log.warning("no task_state_store in this context (Airflow < 3.3 or a test run): a retry of this "
                           "task will submit a new job instead of reattaching to %s", self.job.id)
        return self._defer(op, self._state(self.job, spec, attempt_id))

    def _state(self, job: CondorJob, spec: StepSpec, attempt_id: int | None) -> dict[str, Any]:
        # the job's own workdir: a reattached job may be an earlier try's
        return {**spec_state(spec, self.name, attempt_id), "workdir": job.workdir, "condor_job": job.to_dict()}

    def _defer(self, op: "ComputeOperator", state: dict[str, Any]) -> Any:
        hc = self.cfg.executors.htcondor
        poll = hc.poll_interval_seconds
        # plain values only: the trigger locates the job's schedd (named in condor_job) through the collector
        trigger = HTCondorJobTrigger(job=state["condor_job"], poll_seconds=poll,
                                     release_policy=bool(hc.periodic_release),
                                     hold_grace_seconds=hc.hold_grace_seconds, collector=hc.collector,
                                     schedd_check_seconds=max(SCHEDD_EVERY_POLLS * poll, 60.0),
                                     log_lag_seconds=max(2 * poll, 30.0))
        op.defer(trigger=trigger, method_name=RESUME_METHOD, kwargs=state)

    def complete(self, op: "ComputeOperator", context: "Context", event: dict[str, Any],
                 state: dict[str, Any]) -> dict[str, Any]:
        job = CondorJob.from_dict(state["condor_job"])
        self.job = job
        outcome = event.get("outcome") or {}
        status = JobStatus.from_dict(outcome) if outcome.get("state") else read_status(job.log, job.cluster, job.proc)
        op.log.info("Condor job %s %s", job.id, event.get("message") or status.describe())
        if status.state is JobState.HELD or event.get("status") == "lost":
            # the task fails now; a held job left in the queue would run later, unobserved
            self.pool.remove(job, f"skyops: task gave up on the job ({event.get('status')})")
        return self._record(op, context, state, status, event_status=event.get("status"))

    def _record(self, op: "ComputeOperator", context: "Context", state: dict[str, Any], status: JobStatus,
                event_status: str | None = None) -> dict[str, Any]:
        spec = spec_from_state(state)
        job = CondorJob.from_dict(state["condor_job"])
        _copy_job_output(op, Path(job.workdir))
        ran = status.state in (JobState.SUCCEEDED, JobState.FAILED)
        reason = None if ran else f"as Condor job {job.id} {status.describe() if event_status != 'lost' else 'lost'}"
        try:
            return finish(op, context, spec, executor=self.name, returncode=status.exit_status(), host=status.host,
                          attempt_id=state.get("attempt_id"), reason=reason)
        finally:
            store = _state_store(context)
            if store is not None:
                store.delete(STATE_KEY)  # recorded: a later clear of the task runs the step again

    def kill(self) -> None:
        if self.job is not None:
            self.pool.remove(self.job, "skyops: the Airflow task was killed")


def _copy_job_output(op: "ComputeOperator", workdir: Path) -> None:
    """The job's stdout and stderr into the task log (bounded), as the pod backend does with pod logs."""
    for name in (STDOUT, STDERR):
        path = workdir / name
        if not path.is_file():
            continue
        lines = path.read_text(errors="replace").splitlines()
        if len(lines) > LOG_LINES:
            op.log.info("[%s] ... %d earlier lines in %s", name, len(lines) - LOG_LINES, path)
        for line in lines[-LOG_LINES:]:
            op.log.info("[%s] %s", name, line)


__all__ = ["HTCondorBackend", "STATE_KEY"]
