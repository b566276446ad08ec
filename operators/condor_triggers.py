"""HTCondorJobTrigger: wait for a Condor job in Airflow's triggerer, by following its event log.

The job's event log (``WORKDIR/condor.log`` on the shared workspace) is the record HTCondor
keeps of everything that happens to the job, and it outlives the job's stay in the queue; the
trigger re-reads it every ``poll_seconds`` through ``htcondor2.JobEventLog`` (see
:func:`skyops.executors.htcondor.read_status`) and fires once:

* ``succeeded`` / ``failed`` / ``killed``: the job terminated (exit code or signal);
* ``aborted``: the job was removed from the queue (``condor_rm``), with the reason;
* ``held``: the job was held and not released -- at once when no release policy is set,
  else after ``hold_grace_seconds`` without a release event (a released job goes back to
  waiting, so the policy gets its chance);
* ``lost``: no event log appeared within ``missing_log_seconds`` of the deferral.

Only plain values are serialised (the job's cluster, proc, workdir and schedd name), so
nothing secret ever lands in Airflow's trigger table.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from skyops.executors.htcondor import CondorJob, JobState, read_status


class HTCondorJobTrigger(BaseTrigger):
    """Fires when the Condor job ``job`` terminates, is aborted, or stays held (see module doc)."""

    def __init__(self, *, job: dict[str, Any], poll_seconds: float = 15.0, release_policy: bool = False,
                 hold_grace_seconds: float = 600.0, missing_log_seconds: float = 600.0) -> None:
        super().__init__()
        self.job = CondorJob.from_dict(job).to_dict()
        self.poll_seconds = poll_seconds
        self.release_policy = release_policy
        self.hold_grace_seconds = hold_grace_seconds
        self.missing_log_seconds = missing_log_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("skyops.operators.condor_triggers.HTCondorJobTrigger",
                {"job": self.job, "poll_seconds": self.poll_seconds, "release_policy": self.release_policy,
                 "hold_grace_seconds": self.hold_grace_seconds, "missing_log_seconds": self.missing_log_seconds})

    def _event(self, status: str, outcome: dict[str, Any], message: str) -> TriggerEvent:
        return TriggerEvent({"status": status, "job": self.job, "outcome": outcome, "message": message})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        job = CondorJob.from_dict(self.job)
        started = time.monotonic()
        held_since: float | None = None
        while True:
            status = await asyncio.to_thread(read_status, job.log, job.cluster, job.proc)
            now = time.monotonic()
            if status.state.terminal:
                yield self._event(status.state.value, status.to_dict(), f"Condor job {job.id} {status.describe()}")
                return
            if status.state is JobState.HELD:
                held_since = held_since if held_since is not None else now
                if not self.release_policy or now - held_since >= self.hold_grace_seconds:
                    waited = "" if not self.release_policy else f" and not released within {self.hold_grace_seconds:.0f} s"
                    yield self._event("held", status.to_dict(), f"Condor job {job.id} {status.describe()}{waited}")
                    return
            else:
                held_since = None
            if status.state is JobState.UNKNOWN and now - started >= self.missing_log_seconds:
                yield self._event("lost", status.to_dict(),
                                  f"Condor job {job.id}: no event log at {job.log} after {self.missing_log_seconds:.0f} s; "
                                  f"is the workspace shared with the schedd's host?")
                return
            self.log.debug("Condor job %s: %s", job.id, status.state.value)
            await asyncio.sleep(self.poll_seconds)


__all__ = ["HTCondorJobTrigger"]
