"""HTCondorJobTrigger: wait for a Condor job in Airflow's triggerer, from its event log and its schedd.

The job's event log (``WORKDIR/condor.log`` on the shared workspace) is the record HTCondor
keeps of everything that happens to the job, and it outlives the job's stay in the queue; the
trigger re-reads it every ``poll_seconds`` through ``htcondor2.JobEventLog`` (see
:func:`skyops.executors.htcondor.read_status`) and fires once:

* ``succeeded`` / ``failed`` / ``killed``: the job terminated (exit code or signal);
* ``aborted``: the job was removed from the queue (``condor_rm``), with the reason;
* ``held``: the job was held and not released -- at once when no release policy is set,
  else after ``hold_grace_seconds`` without a release event (a released job goes back to
  waiting, so the policy gets its chance);
* ``lost``: no event log appeared within ``missing_log_seconds`` of the deferral and the
  schedd, asked then, does not know the job either; or the job has been in neither the
  schedd's queue nor its history for ``lost_grace_seconds`` while its log shows no end.

The log can lag the schedd (a slow or non-shared filesystem, a log the schedd stopped
writing), so the trigger also asks the schedd (:func:`skyops.executors.htcondor.query_job`:
queue, then history) whenever the log has been quiet for ``schedd_check_seconds`` -- off the
event loop, at most one question in flight. What the schedd says counts only while the log
has not moved since the answer (the log is the more detailed record):

* held in the queue while the log does not show it -> treated as held, with the schedd's
  ``HoldReason`` (and the same release-policy grace); released (idle or running again) while
  the log still shows the hold -> no longer held;
* completed or removed (in the queue or its history) while the log has no terminal event ->
  settled from the schedd's ad once the log has had ``log_lag_seconds`` to catch up;
* neither in the queue nor in the history -> ``lost`` after ``lost_grace_seconds``;
* unreachable -> a warning, and the trigger goes on following the log: a schedd restart
  must not fail tasks whose jobs are fine.

:meth:`HTCondorJobTrigger.on_kill` removes the job when a user stops the deferred task
(mark failed/success, clear); ``cleanup`` does not, since it also runs when a triggerer
restarts and the job must then keep running for the next triggerer to follow.

Only plain values are serialised (the job's cluster, proc, workdir and schedd name, the
collector's host), so nothing secret ever lands in Airflow's trigger table; the schedd
client is rebuilt from them (:func:`skyops.executors.htcondor.locate_schedd`).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from skyops.executors.htcondor import CondorJob, JobState, JobStatus, JobWhere, ScheddView, locate_schedd, \
    query_job, read_status, remove_job
from skyops.secrets import redact_text

#: The operator asks the schedd after this many quiet polls (and never more often than once a minute).
SCHEDD_EVERY_POLLS = 20


@dataclass
class _Watch:
    """What one run of the trigger has learnt between polls (run-time only, never serialised)."""

    started: float
    log_moved: float                    # when the log last gained events
    last_check: float                   # when the schedd was last asked
    log_events: int = -1
    view: ScheddView | None = None      # the schedd's latest answer ...
    view_events: int = -1               # ... and the log's event count then
    vouched: bool = False               # the schedd has known the job (queue or history)
    absent_since: float | None = None   # first of a run of "in neither queue nor history" answers
    absent_seen: float | None = None    # the latest of them
    ended_since: float | None = None    # the schedd first said the job ended
    held_since: float | None = None

    def take(self, answer: ScheddView, status: JobStatus, now: float) -> None:
        """Remember the schedd's answer, given while the log showed ``status``."""
        self.view, self.view_events = answer, status.events
        if answer.where is JobWhere.ABSENT:
            self.absent_since = self.absent_since if self.absent_since is not None else now
            self.absent_seen = now
        else:
            self.vouched, self.absent_since, self.absent_seen = True, None, None
        if not answer.status.state.terminal:
            self.ended_since = None
        elif self.ended_since is None:
            self.ended_since = now

    def current(self, status: JobStatus) -> ScheddView | None:
        """The schedd's answer while it is news: the log has not moved since (the log is more detailed)."""
        return self.view if self.view is not None and status.events == self.view_events else None

    def absent_for(self) -> float:
        """How long answers have kept saying the job is in neither queue nor history (0: they do not)."""
        if self.absent_since is None or self.absent_seen is None:
            return 0.0
        return self.absent_seen - self.absent_since


class HTCondorJobTrigger(BaseTrigger):
    """Fires when the Condor job ``job`` terminates, is aborted, stays held or is lost (see module doc)."""

    #: How long one schedd question (or removal) may take before the trigger stops waiting for it.
    schedd_timeout_seconds: float = 60.0
    #: How long :meth:`on_kill` waits for the removal (Airflow bounds on_kill at ~30 s).
    kill_timeout_seconds: float = 20.0

    def __init__(self, *, job: dict[str, Any], poll_seconds: float = 15.0, release_policy: bool = False,
                 hold_grace_seconds: float = 600.0, missing_log_seconds: float = 600.0,
                 collector: str | None = None, schedd_check_seconds: float = 300.0,
                 log_lag_seconds: float = 60.0, lost_grace_seconds: float = 600.0) -> None:
        super().__init__()
        self.job = CondorJob.from_dict(job).to_dict()
        self.poll_seconds = poll_seconds
        self.release_policy = release_policy
        self.hold_grace_seconds = hold_grace_seconds
        self.missing_log_seconds = missing_log_seconds
        self.collector = collector
        self.schedd_check_seconds = schedd_check_seconds
        self.log_lag_seconds = log_lag_seconds
        self.lost_grace_seconds = lost_grace_seconds
        # run-time state: never serialised
        self._schedd: Any = None
        self._inflight: asyncio.Future[ScheddView] | None = None
        self._fired = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("skyops.operators.condor_triggers.HTCondorJobTrigger",
                {"job": self.job, "poll_seconds": self.poll_seconds, "release_policy": self.release_policy,
                 "hold_grace_seconds": self.hold_grace_seconds, "missing_log_seconds": self.missing_log_seconds,
                 "collector": self.collector, "schedd_check_seconds": self.schedd_check_seconds,
                 "log_lag_seconds": self.log_lag_seconds, "lost_grace_seconds": self.lost_grace_seconds})

    @property
    def schedd_name(self) -> str:
        return self.job.get("schedd") or "the local schedd"

    def _event(self, status: str, outcome: JobStatus, message: str, source: str = "log") -> TriggerEvent:
        self._fired = True
        return TriggerEvent({"status": status, "job": self.job, "outcome": outcome.to_dict(), "message": message,
                             "source": source})

    # -- the schedd ------------------------------------------------------------------
    def _query(self, job: CondorJob) -> ScheddView:
        """Locate the schedd (once) and ask it about ``job`` (blocking: runs in a thread)."""
        if self._schedd is None:
            self._schedd = locate_schedd(job.schedd, self.collector)
        return query_job(self._schedd, job.cluster, job.proc)

    async def _ask_schedd(self, job: CondorJob) -> ScheddView | None:
        """The schedd's view of ``job``, or None (with a warning) when it cannot say now."""
        if self._inflight is not None and not self._inflight.done():
            self.log.debug("Condor job %s: the previous schedd question is still open", job.id)
            return None
        self._inflight = asyncio.ensure_future(asyncio.to_thread(self._query, job))
        # an answer that comes after the timeout is dropped; retrieve its error so asyncio does not complain
        self._inflight.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(self._inflight), timeout=self.schedd_timeout_seconds)
        except asyncio.TimeoutError:
            why = f"no answer within {self.schedd_timeout_seconds:.0f} s"
        except Exception as exc:  # noqa: BLE001 - a schedd blip must not fail the task
            self._schedd = None  # locate it afresh next time (it may have moved or restarted)
            why = redact_text(f"{type(exc).__name__}: {exc}")
        self.log.warning("Condor job %s: could not ask %s about the job (%s); following its event log %s only, "
                         "asking again in %.0f s", job.id, self.schedd_name, why, job.log,
                         self.schedd_check_seconds)
        return None

    # -- the loop --------------------------------------------------------------------
    async def run(self) -> AsyncIterator[TriggerEvent]:
        job = CondorJob.from_dict(self.job)
        now = time.monotonic()
        watch = _Watch(started=now, log_moved=now, last_check=now)
        while True:
            status = await asyncio.to_thread(read_status, job.log, job.cluster, job.proc)
            now = time.monotonic()
            if status.events != watch.log_events:
                watch.log_events, watch.log_moved = status.events, now
            if not status.state.terminal and self._schedd_due(watch, status, now):
                watch.last_check = now
                answer = await self._ask_schedd(job)
                now = time.monotonic()
                if answer is not None:
                    self.log.debug("Condor job %s: %s says %s (%s)", job.id, self.schedd_name,
                                   answer.status.state.value, answer.where.value)
                    watch.take(answer, status, now)
            event = self._verdict(job, watch, status, now)
            if event is not None:
                yield event
                return
            self.log.debug("Condor job %s: %s", job.id, status.state.value)
            await asyncio.sleep(self.poll_seconds)

    def _schedd_due(self, watch: "_Watch", status: JobStatus, now: float) -> bool:
        """Ask the schedd when the log has been quiet for a while, and before calling a log-less job lost."""
        if now - max(watch.last_check, watch.log_moved) >= self.schedd_check_seconds:
            return True
        deadline = watch.started + self.missing_log_seconds
        return self._no_log(watch, status, now) and watch.last_check < deadline

    def _no_log(self, watch: "_Watch", status: JobStatus, now: float) -> bool:
        """No event log after ``missing_log_seconds``, and the schedd has not vouched for the job."""
        overdue = now - watch.started >= self.missing_log_seconds
        return status.state is JobState.UNKNOWN and not watch.vouched and overdue

    def _verdict(self, job: CondorJob, watch: "_Watch", status: JobStatus, now: float) -> TriggerEvent | None:
        """The event to fire now, from the log and the schedd's latest answer; None: keep waiting."""
        if status.state.terminal:
            return self._event(status.state.value, status, f"Condor job {job.id} {status.describe()}")
        if watch.absent_for() >= self.lost_grace_seconds:
            return self._event("lost", status, self._lost_message(job, status), source="schedd")
        effective, source = status, "log"
        view = watch.current(status)
        if view is not None and watch.ended_since is not None and now - watch.ended_since >= self.log_lag_seconds:
            s = view.status
            return self._event(s.state.value, s, f"Condor job {job.id} {s.describe()} (per the {view.where.value} "
                               f"of {self.schedd_name}; its event log {job.log} shows no end after "
                               f"{self.log_lag_seconds:.0f} s)", source="schedd")
        if view is not None and view.status.state.active \
                and (view.status.state is JobState.HELD) != (status.state is JobState.HELD):
            effective, source = view.status, "schedd"  # held, or released, before the log says so
        if effective.state is not JobState.HELD:
            watch.held_since = None
        else:
            watch.held_since = watch.held_since if watch.held_since is not None else now
            if not self.release_policy or now - watch.held_since >= self.hold_grace_seconds:
                waited = "" if not self.release_policy else f" and not released within {self.hold_grace_seconds:.0f} s"
                per = "" if source == "log" else f" (per {self.schedd_name}; its event log does not show the hold)"
                return self._event("held", effective, f"Condor job {job.id} {effective.describe()}{waited}{per}",
                                   source=source)
        if self._no_log(watch, status, now):
            return self._event("lost", status, f"Condor job {job.id}: no event log at {job.log} after "
                               f"{self.missing_log_seconds:.0f} s; is the workspace shared with the schedd's host?")
        return None

    def _lost_message(self, job: CondorJob, status: JobStatus) -> str:
        return (f"Condor job {job.id} is in neither the queue nor the history of {self.schedd_name} for "
                f"{self.lost_grace_seconds:.0f} s, and its event log {job.log} shows no end (last: "
                f"{status.state.value}); the job was lost (history purged, or another schedd?). "
                f"Check `condor_history -name {job.schedd or ''} {job.id}`; a retry of the task submits afresh")

    # -- a user stopped the task -----------------------------------------------------
    def _remove(self, job: CondorJob, reason: str) -> Any:
        schedd = self._schedd if self._schedd is not None else locate_schedd(job.schedd, self.collector)
        return remove_job(schedd, job, reason)

    async def on_kill(self) -> None:
        """Remove the job: a user stopped the deferred task (mark failed/success, clear). Never raises."""
        job = CondorJob.from_dict(self.job)
        if self._fired:
            self.log.debug("Condor job %s: the trigger already fired; nothing to remove", job.id)
            return
        reason = "skyops: the Airflow task waiting for this job was stopped by a user (marked or cleared)"
        try:
            await asyncio.wait_for(asyncio.to_thread(self._remove, job, reason), timeout=self.kill_timeout_seconds)
        except asyncio.TimeoutError:
            self.log.warning("Condor job %s: %s did not confirm the removal within %.0f s; check with "
                             "`condor_q -name %s %s`", job.id, self.schedd_name, self.kill_timeout_seconds,
                             job.schedd or "", job.id)
        except Exception as exc:  # noqa: BLE001 - on_kill must never raise
            self.log.warning("Condor job %s: could not remove it from %s (%s); remove it by hand: "
                             "`condor_rm -name %s %s`", job.id, self.schedd_name,
                             redact_text(f"{type(exc).__name__}: {exc}"), job.schedd or "", job.id)
        else:
            self.log.info("Condor job %s removed from %s: %s", job.id, self.schedd_name, reason)


__all__ = ["HTCondorJobTrigger", "SCHEDD_EVERY_POLLS"]
