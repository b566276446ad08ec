"""The Condor job's event log, the trigger that follows it (and its schedd), and reattachment on retry.

The event logs are written by hand in the exact text format HTCondor writes (``000`` submit,
``001`` execute, ``005`` terminated normally with a return value or abnormally with a
signal, ``012`` held with a reason and codes, ``013`` released, ``009`` aborted) and parsed
by ``htcondor2.JobEventLog`` itself. There is no pool: only the ``htcondor2.Schedd`` boundary
is replaced, by fakes that count submissions and removals or answer queue and history
queries with real ``classad2`` job ads.
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import classad2
import htcondor2
import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import TaskDeferred

from skyops.config import platform_config
from skyops.executors.htcondor import CondorJob, JobState, read_status
from skyops.operators.compute import ComputeOperator, task_key
from skyops.operators.condor_triggers import HTCondorJobTrigger
from skyops.operators.htcondor import STATE_KEY
from skyops.provenance import ProvenanceStore
from skyops.provenance.records import utc
from skyops.provenance.schema import task
from skyops.steps.runner import run_step

SUBMIT_HOST = "<10.1.2.3:9618?addrs=10.1.2.3-9618&alias=ap.example.org&noUDP&sock=schedd_1234_abcd>"
EXEC_HOST = "<10.1.2.9:9618?addrs=10.1.2.9-9618&alias=ep9.example.org&noUDP&sock=startd_99_aa>"
USAGE = ("\t\tUsr 0 00:00:40, Sys 0 00:00:02  -  Run Remote Usage\n"
         "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage\n"
         "\t\tUsr 0 00:00:40, Sys 0 00:00:02  -  Total Remote Usage\n"
         "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage\n"
         "\t0  -  Run Bytes Sent By Job\n\t0  -  Run Bytes Received By Job\n"
         "\t0  -  Total Bytes Sent By Job\n\t0  -  Total Bytes Received By Job\n")


def _head(code: str, cluster: int, minute: int, text: str) -> str:
    return f"{code} ({cluster:03d}.000.000) 2026-11-21 01:{minute:02d}:00 {text}\n"


def ev_submit(c: int, m: int = 0) -> str:
    return _head("000", c, m, f"Job submitted from host: {SUBMIT_HOST}") + "...\n"


def ev_execute(c: int, m: int = 1) -> str:
    return (_head("001", c, m, f"Job executing on host: {EXEC_HOST}")
            + "\tSlotName: slot1_1@ep9.example.org\n\tCpus = 1\n\tMemory = 3072\n...\n")


def ev_image_size(c: int, m: int = 2) -> str:
    return (_head("006", c, m, "Image size of job updated: 220512")
            + "\t216  -  MemoryUsage of job (MB)\n\t220512  -  ResidentSetSize of job (KB)\n...\n")


def ev_exit(c: int, rv: int, m: int = 3) -> str:
    return (_head("005", c, m, "Job terminated.") + f"\t(1) Normal termination (return value {rv})\n" + USAGE
            + "\tPartitionable Resources :    Usage  Request Allocated\n"
            + "\t   Cpus                 :     0.98        1         1\n"
            + "\t   Memory (MB)          :      216     3072      3072\n\n"
            + f"\tJob terminated of its own accord at 2026-11-21T01:{m:02d}:00Z with exit-code {rv}.\n...\n")


def ev_signal(c: int, sig: int, m: int = 3) -> str:
    return (_head("005", c, m, "Job terminated.") + f"\t(0) Abnormal termination (signal {sig})\n"
            + "\t(0) No core file\n" + USAGE + "...\n")


def ev_held(c: int, m: int = 3) -> str:
    return (_head("012", c, m, "Job was held.")
            + "\tError from slot1_1@ep9.example.org: Job has gone over cgroup memory limit of 3072 megabytes. "
              "Last measured usage: 3100 megabytes.  Consider resubmitting with a higher request_memory.\n"
            + "\tCode 34 Subcode 0\n...\n")


def ev_released(c: int, m: int = 4) -> str:
    return _head("013", c, m, "Job was released.") + "\tvia condor_release (by user skyops)\n...\n"


def ev_aborted(c: int, m: int = 4) -> str:
    return _head("009", c, m, "Job was aborted.") + "\tvia condor_rm (by user skyops)\n...\n"


def write_log(path: Path, *events: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(events))
    return path


# ----------------------------------------------------------------------------- the event log
@pytest.mark.parametrize(("events", "state", "rc", "reason"), [
    ([], JobState.UNKNOWN, None, ""),
    ([ev_submit(7)], JobState.SUBMITTED, None, ""),
    ([ev_submit(7), ev_execute(7), ev_image_size(7)], JobState.RUNNING, None, ""),
    ([ev_submit(7), ev_execute(7), ev_exit(7, 0)], JobState.SUCCEEDED, 0, ""),
    ([ev_submit(7), ev_execute(7), ev_exit(7, 2)], JobState.FAILED, 2, ""),
    ([ev_submit(7), ev_execute(7), ev_signal(7, 9)], JobState.KILLED, -9, ""),
    ([ev_submit(7), ev_execute(7), ev_held(7)], JobState.HELD, None, "gone over cgroup memory limit"),
    ([ev_submit(7), ev_execute(7), ev_held(7), ev_released(7)], JobState.IDLE, None, ""),
    ([ev_submit(7), ev_held(7), ev_aborted(7)], JobState.ABORTED, None, "via condor_rm"),
])
def test_event_log_states(tmp_path: Path, events: list[str], state: JobState, rc: int | None, reason: str) -> None:
    log = write_log(tmp_path / "condor.log", *events) if events else tmp_path / "condor.log"
    status = read_status(log, 7)
    assert status.state is state and status.returncode == rc and reason in status.reason
    if state is JobState.HELD:
        assert (status.hold_code, status.hold_subcode) == (34, 0)
        assert "request_memory" in status.describe() and "hold code 34" in status.describe()
    if state in (JobState.RUNNING, JobState.SUCCEEDED):
        assert status.host == "ep9.example.org"


def test_other_jobs_and_a_partial_last_event_are_ignored(tmp_path: Path) -> None:
    log = write_log(tmp_path / "condor.log", ev_submit(7), ev_submit(8), ev_execute(8), ev_exit(8, 0),
                    ev_execute(7))
    with log.open("a") as f:  # the schedd is half-way through writing the next event
        f.write(_head("005", 7, 9, "Job terminated.") + "\t(1) Normal termination (return value 0)\n")
    assert read_status(log, 7).state is JobState.RUNNING
    assert read_status(log, 8).state is JobState.SUCCEEDED
    assert htcondor2.JobEventLog(str(log)).events(stop_after=0) is not None


# ----------------------------------------------------------------------------- the trigger
#: One step of a log feed: wait for the condition (if any; e.g. "the schedd has been asked"), then ``delay``
#: seconds, then append the text. A condition, not a longer delay, orders an append after the trigger's own
#: actions, so that a slow first poll on a loaded machine cannot reorder them.
Feed = tuple[float, str] | tuple[float, str, Callable[[], bool]]


def run_trigger(trigger: HTCondorJobTrigger, feed: list[Feed] | None = None,
                log: Path | None = None) -> dict[str, Any]:
    """Drive the trigger to its event, appending ``feed`` events to the log as time passes."""

    async def main() -> dict[str, Any]:
        async def writer() -> None:
            for delay, text, *condition in feed or []:
                while condition and not condition[0]():
                    await asyncio.sleep(0.005)
                await asyncio.sleep(delay)
                with log.open("a") as f:  # type: ignore[union-attr]
                    f.write(text)

        task = asyncio.create_task(writer())
        try:
            event = await asyncio.wait_for(trigger.run().__anext__(), timeout=20)
        finally:
            task.cancel()
        return event.payload

    return asyncio.run(main())


def job_dict(tmp_path: Path, cluster: int = 7) -> dict[str, Any]:
    return CondorJob(cluster, 0, str(tmp_path), "ap.example.org").to_dict()


@pytest.mark.parametrize(("final", "status", "rc"), [
    (lambda c: ev_exit(c, 0), "succeeded", 0),
    (lambda c: ev_exit(c, 1), "failed", 1),
    (lambda c: ev_signal(c, 9), "killed", -9),
    (lambda c: ev_aborted(c), "aborted", None),
])
def test_trigger_follows_the_log_to_the_end(tmp_path: Path, final: Any, status: str, rc: int | None) -> None:
    log = write_log(tmp_path / "condor.log", ev_submit(7))
    trig = HTCondorJobTrigger(job=job_dict(tmp_path), poll_seconds=0.02)
    payload = run_trigger(trig, [(0.05, ev_execute(7)), (0.05, ev_image_size(7)), (0.05, final(7))], log)
    assert payload["status"] == status and payload["outcome"]["returncode"] == rc
    assert payload["job"]["cluster"] == 7 and "7.0" in payload["message"]
    json.dumps(payload)  # a TriggerEvent payload must serialise


def test_trigger_fails_a_held_job_at_once_without_a_release_policy(tmp_path: Path) -> None:
    write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7), ev_held(7))
    payload = run_trigger(HTCondorJobTrigger(job=job_dict(tmp_path), poll_seconds=0.02))
    assert payload["status"] == "held" and payload["outcome"]["hold_code"] == 34
    assert "gone over cgroup memory limit" in payload["message"]


def test_trigger_lets_the_release_policy_act(tmp_path: Path) -> None:
    log = write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7), ev_held(7))
    trig = HTCondorJobTrigger(job=job_dict(tmp_path), poll_seconds=0.02, release_policy=True, hold_grace_seconds=5)
    payload = run_trigger(trig, [(0.1, ev_released(7)), (0.05, ev_execute(7, 5)), (0.05, ev_exit(7, 0, 6))], log)
    assert payload["status"] == "succeeded"
    # ... and gives up when the policy does not release within the grace period
    write_log(tmp_path / "condor.log", ev_submit(7), ev_held(7))
    trig = HTCondorJobTrigger(job=job_dict(tmp_path), poll_seconds=0.02, release_policy=True, hold_grace_seconds=0.1)
    payload = run_trigger(trig)
    assert payload["status"] == "held" and "not released within" in payload["message"]


def test_trigger_reports_a_missing_log(tmp_path: Path) -> None:
    trig = HTCondorJobTrigger(job=job_dict(tmp_path), poll_seconds=0.02, missing_log_seconds=0.1)
    assert run_trigger(trig)["status"] == "lost"


def test_trigger_serialises_plain_values(tmp_path: Path) -> None:
    path, kwargs = HTCondorJobTrigger(job=job_dict(tmp_path), poll_seconds=3).serialize()
    assert path == "skyops.operators.condor_triggers.HTCondorJobTrigger"
    assert HTCondorJobTrigger(**json.loads(json.dumps(kwargs))).serialize() == (path, kwargs)


# ----------------------------------------------------------------------------- the trigger and the schedd
class QueueSchedd:
    """The htcondor2.Schedd boundary for the trigger: answers from ads (changeable mid-run), records calls."""

    def __init__(self, queue: list[Any] = (), history: list[Any] = (), error: Exception | None = None) -> None:
        self.queue, self.history_ads, self.error = list(queue), list(history), error
        self.calls: list[tuple[Any, ...]] = []
        self.made = 0

    def __call__(self, *location: Any) -> "QueueSchedd":  # stands in for the htcondor2.Schedd class
        self.made += 1
        return self

    def query(self, constraint: str = "True", projection: list[str] = [], limit: int = -1, **_: Any) -> list[Any]:
        self.calls.append(("query", constraint))
        if self.error is not None:
            raise self.error
        return self.queue

    def history(self, constraint: str | None = None, projection: list[str] = [], match: int = -1,
                **_: Any) -> list[Any]:
        self.calls.append(("history", constraint))
        return self.history_ads

    def act(self, action: Any, job_spec: str, reason: Any = None) -> Any:
        self.calls.append(("act", action, job_spec, reason))
        if self.error is not None:
            raise self.error
        return classad2.ClassAd({"TotalSuccess": 1})


def job_ad(**attrs: Any) -> classad2.ClassAd:
    return classad2.ClassAd({"ClusterId": 7, "ProcId": 0, "EnteredCurrentStatus": 1795225380, **attrs})


@pytest.fixture()
def schedd(monkeypatch: pytest.MonkeyPatch) -> QueueSchedd:
    fake = QueueSchedd()
    monkeypatch.setattr(htcondor2, "Schedd", fake)
    return fake


def queries_of(schedd: QueueSchedd) -> list[tuple[Any, ...]]:
    return [c for c in schedd.calls if c[0] == "query"]


def local_job(tmp_path: Path) -> dict[str, Any]:
    """A job of the local schedd (``htcondor2.Schedd()``, the fake)."""
    return CondorJob(7, 0, str(tmp_path), None).to_dict()


def fast_trigger(tmp_path: Path, job: dict[str, Any] | None = None, **kwargs: Any) -> HTCondorJobTrigger:
    """A trigger that polls every 20 ms and asks the schedd whenever its log has been quiet for 50 ms."""
    args: dict[str, Any] = {"poll_seconds": 0.02, "schedd_check_seconds": 0.05, "log_lag_seconds": 0.05,
                            "lost_grace_seconds": 0.2, **kwargs}
    trig = HTCondorJobTrigger(job=job or local_job(tmp_path), **args)
    trig._log = logging.getLogger("test.condor_trigger")  # a stdlib logger, so that caplog sees the warnings
    return trig


def test_trigger_takes_a_hold_from_the_schedd_before_the_log_shows_it(tmp_path: Path, schedd: QueueSchedd) -> None:
    write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7))
    schedd.queue = [job_ad(JobStatus=5, HoldReason="Error from slot1_1@ep9.example.org: Job has gone over cgroup "
                                                   "memory limit of 3072 megabytes.",
                           HoldReasonCode=34, HoldReasonSubCode=0)]
    payload = run_trigger(fast_trigger(tmp_path))
    assert payload["status"] == "held" and payload["source"] == "schedd"
    assert payload["outcome"]["reason"].endswith("memory limit of 3072 megabytes.")
    assert (payload["outcome"]["hold_code"], payload["outcome"]["hold_subcode"]) == (34, 0)
    assert "per the local schedd" in payload["message"] and "7.0 was held" in payload["message"]
    assert schedd.calls[0] == ("query", "ClusterId == 7 && ProcId == 0")
    json.dumps(payload)


def test_a_schedd_hold_waits_for_the_release_policy(tmp_path: Path, schedd: QueueSchedd) -> None:
    log = write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7))
    schedd.queue = [job_ad(JobStatus=5, HoldReason="preempted", HoldReasonCode=21)]
    trig = fast_trigger(tmp_path, release_policy=True, hold_grace_seconds=5)
    # the policy releases the job: the log shows the release and the job's end
    payload = run_trigger(trig, [(0.3, ev_held(7) + ev_released(7)), (0.02, ev_execute(7, 5) + ev_exit(7, 0, 6))], log)
    assert payload["status"] == "succeeded" and payload["source"] == "log"


def test_a_release_the_schedd_reports_ends_the_hold_the_log_still_shows(tmp_path: Path,
                                                                         schedd: QueueSchedd) -> None:
    log = write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7), ev_held(7))
    schedd.queue = [job_ad(JobStatus=2, RemoteHost="slot1_1@ep9.example.org")]  # released and running again
    trig = fast_trigger(tmp_path, release_policy=True, hold_grace_seconds=0.3)
    # the log shows the release 0.8 s after the schedd said "running": past the 0.3 s hold grace
    payload = run_trigger(trig, [(0.8, ev_released(7) + ev_execute(7, 5) + ev_exit(7, 0, 6),
                                  lambda: bool(schedd.calls))], log)
    assert payload["status"] == "succeeded" and schedd.calls


@pytest.mark.parametrize(("ended", "status", "rc"), [
    (job_ad(JobStatus=4, ExitCode=0, ExitBySignal=False, LastRemoteHost="slot1_1@ep9.example.org"), "succeeded", 0),
    (job_ad(JobStatus=4, ExitCode=1, ExitBySignal=False), "failed", 1),
    (job_ad(JobStatus=4, ExitBySignal=True, ExitSignal=9), "killed", -9),
    (job_ad(JobStatus=3, RemoveReason="via condor_rm (by user ops)"), "aborted", None),
])
def test_trigger_settles_from_the_history_when_the_log_lacks_the_end(tmp_path: Path, schedd: QueueSchedd,
                                                                      ended: Any, status: str, rc: int | None) -> None:
    write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7))  # the log stops here (lagging filesystem)
    schedd.history_ads = [ended]
    payload = run_trigger(fast_trigger(tmp_path))
    assert payload["status"] == status and payload["outcome"]["returncode"] == rc and payload["source"] == "schedd"
    assert "per the history of the local schedd" in payload["message"] and "shows no end" in payload["message"]
    assert [c[0] for c in schedd.calls[:2]] == ["query", "history"]
    if status == "succeeded":
        assert payload["outcome"]["host"] == "ep9.example.org"
    if status == "aborted":
        assert "condor_rm" in payload["outcome"]["reason"]


def test_the_log_wins_when_it_catches_up_within_the_lag(tmp_path: Path, schedd: QueueSchedd) -> None:
    log = write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7))
    schedd.history_ads = [job_ad(JobStatus=4, ExitCode=0, ExitBySignal=False)]
    trig = fast_trigger(tmp_path, log_lag_seconds=10)
    # the log shows the end 0.3 s after the history did
    payload = run_trigger(trig, [(0.3, ev_exit(7, 0), lambda: bool(schedd.calls))], log)
    assert payload["status"] == "succeeded" and payload["source"] == "log"
    assert [c[0] for c in schedd.calls[:2]] == ["query", "history"]


def test_trigger_reports_a_job_gone_from_queue_and_history_as_lost(tmp_path: Path, schedd: QueueSchedd) -> None:
    write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7))
    payload = run_trigger(fast_trigger(tmp_path))
    assert payload["status"] == "lost" and payload["source"] == "schedd"
    assert "neither the queue nor the history of the local schedd" in payload["message"]
    assert "last: running" in payload["message"] and "condor_history" in payload["message"]
    # lost only after the grace period, confirmed by more than one look
    assert sum(1 for c in schedd.calls if c[0] == "history") >= 2


def test_a_job_the_schedd_knows_is_not_lost_for_a_missing_log(tmp_path: Path, schedd: QueueSchedd) -> None:
    """No event log visible here (non-shared filesystem), but the schedd runs the job: keep waiting."""
    schedd.queue = [job_ad(JobStatus=2, RemoteHost="slot1_1@ep9.example.org")]
    trig = fast_trigger(tmp_path, missing_log_seconds=0.05)

    async def main() -> dict[str, Any]:
        async def finish_job() -> None:
            await asyncio.sleep(0.4)
            schedd.queue, schedd.history_ads = [], [job_ad(JobStatus=4, ExitCode=0, ExitBySignal=False)]

        task = asyncio.create_task(finish_job())
        try:
            return (await asyncio.wait_for(trig.run().__anext__(), timeout=20)).payload
        finally:
            task.cancel()

    payload = asyncio.run(main())
    assert payload["status"] == "succeeded" and payload["source"] == "schedd"


def test_trigger_follows_the_log_while_the_schedd_is_unreachable(tmp_path: Path, schedd: QueueSchedd,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    log = write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7))
    schedd.error = htcondor2.HTCondorException(
        "Failed to fetch ads from schedd, errmsg=CEDAR:6001:Failed to connect to "
        "https://skyops:hunter2@ap.example.org/ password=hunter2")
    trig = fast_trigger(tmp_path, lost_grace_seconds=0.01)
    with caplog.at_level(logging.WARNING, logger="test.condor_trigger"):
        # the job ends only after the trigger has tried the schedd twice
        payload = run_trigger(trig, [(0.0, ev_exit(7, 0), lambda: len(queries_of(schedd)) >= 2)], log)
    assert payload["status"] == "succeeded" and payload["source"] == "log"
    queries = queries_of(schedd)
    assert len(queries) >= 2 and schedd.made == len(queries)  # asked again, located afresh each time
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all("could not ask the local schedd" in w for w in warnings)
    assert "CEDAR:6001" in warnings[0] and "hunter2" not in caplog.text


def test_trigger_builds_its_schedd_from_plain_values(tmp_path: Path, schedd: QueueSchedd,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []

    class Collector:
        def __init__(self, pool: str | None = None) -> None:
            seen.append(("collector", pool))

        def locate(self, daemon_type: Any, name: str | None = None) -> classad2.ClassAd:
            seen.append(("locate", daemon_type, name))
            return classad2.ClassAd({"MyAddress": "<10.1.2.3:9618>", "CondorVersion": "25.14.1"})

    monkeypatch.setattr(htcondor2, "Collector", Collector)
    write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7))
    schedd.history_ads = [job_ad(JobStatus=4, ExitCode=0, ExitBySignal=False)]
    _, kwargs = fast_trigger(tmp_path, job=job_dict(tmp_path), collector="cm.example.org:9618").serialize()
    trig = HTCondorJobTrigger(**json.loads(json.dumps(kwargs)))  # as the triggerer rebuilds it
    payload = run_trigger(trig)
    assert payload["status"] == "succeeded" and "history of ap.example.org" in payload["message"]
    assert seen[:2] == [("collector", "cm.example.org:9618"), ("locate", htcondor2.DaemonType.Schedd, "ap.example.org")]


def test_on_kill_removes_the_job_with_a_reason(tmp_path: Path, schedd: QueueSchedd) -> None:
    write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7))
    trig = fast_trigger(tmp_path, schedd_check_seconds=60)

    async def main() -> None:  # as the triggerer does: the user's action cancels run(), then on_kill()
        waiting = asyncio.ensure_future(trig.run().__anext__())
        await asyncio.sleep(0.1)
        waiting.cancel("user action")
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await trig.on_kill()

    asyncio.run(main())
    ((what, action, job_id, reason),) = schedd.calls
    assert (what, action, job_id) == ("act", htcondor2.JobAction.Remove, "7.0")
    assert reason[0].startswith("skyops: the Airflow task waiting for this job was stopped by a user")


def test_on_kill_swallows_a_schedd_error(tmp_path: Path, schedd: QueueSchedd,
                                         caplog: pytest.LogCaptureFixture) -> None:
    schedd.error = htcondor2.HTCondorException("Error when performing action on the schedd. token=abc123")
    trig = fast_trigger(tmp_path)
    with caplog.at_level(logging.WARNING, logger="test.condor_trigger"):
        asyncio.run(trig.on_kill())  # does not raise
    assert [c[0] for c in schedd.calls] == ["act"]
    assert "could not remove it from the local schedd" in caplog.text and "condor_rm" in caplog.text
    assert "abc123" not in caplog.text


def test_on_kill_after_the_trigger_fired_leaves_the_job_alone(tmp_path: Path, schedd: QueueSchedd) -> None:
    write_log(tmp_path / "condor.log", ev_submit(7), ev_execute(7), ev_exit(7, 0))
    trig = fast_trigger(tmp_path)
    assert run_trigger(trig)["status"] == "succeeded"
    asyncio.run(trig.on_kill())
    assert not [c for c in schedd.calls if c[0] == "act"]


# ----------------------------------------------------------------------------- the operator
class FakeStateStore:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self.data.get(key, default))

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        json.dumps(value)
        self.data[key] = copy.deepcopy(value)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class FakeSchedd:
    """The htcondor2.Schedd boundary: records submissions and removals."""

    submitted: list[htcondor2.Submit] = []
    removed: list[str] = []
    next_cluster = 100

    def __init__(self, *args: Any) -> None:
        pass

    def submit(self, description: htcondor2.Submit, count: int = 0, **_: Any) -> Any:
        assert isinstance(description, htcondor2.Submit) and count == 1
        FakeSchedd.submitted.append(description)
        FakeSchedd.next_cluster += 1
        return SimpleNamespace(cluster=lambda c=FakeSchedd.next_cluster: c)

    def act(self, action: Any, job_spec: str, reason: str | None = None) -> None:
        FakeSchedd.removed.append(job_spec)


class FakeTI:
    def __init__(self, try_number: int) -> None:
        self.dag_id, self.run_id, self.task_id = "condor_demo", "manual__1", "make"
        self.map_index, self.try_number = -1, try_number
        self.start_date = datetime.now(timezone.utc)
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@pytest.fixture()
def condor_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skyops_home: Path) -> None:
    cfg = tmp_path / "skyops.yaml"
    cfg.write_text("executors:\n  htcondor: {program: /opt/skyops/bin/skyops, poll_interval_seconds: 1, "
                   "collector: 'cm.example.org:9618'}\n")
    monkeypatch.setenv("SKYOPS_CONFIG", str(cfg))
    monkeypatch.setattr(htcondor2, "Schedd", FakeSchedd)
    FakeSchedd.submitted, FakeSchedd.removed = [], []
    ProvenanceStore.from_config(platform_config()).migrate()


def make_op() -> ComputeOperator:
    return ComputeOperator(task_id="make", step="selftest.make_image", backend="htcondor",
                           step_params={"size": 40, "nstars": 3, "seed": 2}, unit="u1")


def ctx(store: FakeStateStore, try_number: int) -> dict[str, Any]:
    ti = FakeTI(try_number)
    return {"ti": ti, "run_id": ti.run_id, "dag": SimpleNamespace(), "task_state_store": store}


def test_submit_defer_then_record(condor_site: None) -> None:
    store = FakeStateStore()
    with pytest.raises(TaskDeferred) as deferred:
        make_op().execute(ctx(store, 1))
    (desc,) = FakeSchedd.submitted
    d = deferred.value
    assert isinstance(d.trigger, HTCondorJobTrigger) and d.method_name == "execute_remote_complete"
    kwargs = d.trigger.serialize()[1]  # plain values from the config: where to ask, and how often
    assert (kwargs["collector"], kwargs["schedd_check_seconds"], kwargs["log_lag_seconds"]) == \
        ("cm.example.org:9618", 60.0, 30.0)
    job = CondorJob.from_dict(store.data[STATE_KEY])
    assert job.cluster == 101 and d.kwargs["condor_job"] == job.to_dict()
    assert desc["log"] == str(job.log) and Path(job.workdir, "params.json").is_file()
    # the job runs the step and HTCondor logs it
    assert run_step("selftest.make_image", {"size": 40, "nstars": 3, "seed": 2}, job.workdir).ok
    write_log(job.log, ev_submit(101), ev_execute(101), ev_exit(101, 0))
    Path(job.workdir, "condor.err").write_text("step selftest.make_image: done\n")
    payload = run_trigger(d.trigger)
    c = ctx(store, 1)
    out = make_op().execute_remote_complete(c, event=payload, **d.kwargs)
    assert Path(out["outputs"]["selftest_image"]).is_file()
    assert STATE_KEY not in store.data  # recorded: a later clear runs the step again
    with ProvenanceStore.from_config(platform_config()).engine.connect() as conn:
        row = conn.execute(sa.text("SELECT status, executor, exit_status, host FROM task WHERE id = :i"),
                           {"i": out["prov_task_id"]}).one()
    assert tuple(row[:3]) == ("success", "htcondor", 0)
    assert row[3] == json.loads(Path(job.workdir, "result.json").read_text())["host"]  # the step's own host


@pytest.mark.parametrize(("size", "rc", "state"), [(40, 0, "success"), (-5, 2, "failed")])
def test_recorded_times_are_the_steps_own_not_the_resumption(condor_site: None, size: int, rc: int,
                                                             state: str) -> None:
    store = FakeStateStore()
    with pytest.raises(TaskDeferred) as deferred:
        make_op().execute(ctx(store, 1))
    job = CondorJob.from_dict(store.data[STATE_KEY])
    assert run_step("selftest.make_image", {"size": size, "nstars": 3, "seed": 2}, job.workdir).exit_code == rc
    # the job ran an hour before the task resumed; its result.json says when
    step_start = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=250000)
    step_end = step_start + timedelta(seconds=95)
    result = json.loads(Path(job.workdir, "result.json").read_text())
    result.update(started=step_start.isoformat(timespec="milliseconds"),
                  finished=step_end.isoformat(timespec="milliseconds"))
    Path(job.workdir, "result.json").write_text(json.dumps(result))
    write_log(job.log, ev_submit(job.cluster), ev_execute(job.cluster), ev_exit(job.cluster, rc))
    payload = run_trigger(deferred.value.trigger)
    c = ctx(store, 1)
    prov = ProvenanceStore.from_config(platform_config())
    # the provenance listener records the resumed try as running from the resumption
    task_id = prov.record_state(task_key(c), "running", start_time=c["ti"].start_date)
    if rc:
        with pytest.raises(RuntimeError, match="size"):
            make_op().execute_remote_complete(c, event=payload, **deferred.value.kwargs)
    else:
        assert make_op().execute_remote_complete(c, event=payload, **deferred.value.kwargs)["prov_task_id"] == task_id
    with prov.engine.connect() as conn:
        row = conn.execute(sa.select(task.c.status, task.c.start_time, task.c.end_time)
                           .where(task.c.id == task_id)).one()
    assert row.status == state
    assert (utc(row.start_time), utc(row.end_time)) == (step_start, step_end)


def test_retry_with_a_stored_running_job_reattaches_without_submitting(condor_site: None, tmp_path: Path) -> None:
    store = FakeStateStore()
    with pytest.raises(TaskDeferred) as first:
        make_op().execute(ctx(store, 1))
    job = CondorJob.from_dict(store.data[STATE_KEY])
    write_log(job.log, ev_submit(job.cluster), ev_execute(job.cluster))  # still running
    with pytest.raises(TaskDeferred) as second:
        make_op().execute(ctx(store, 2))
    assert len(FakeSchedd.submitted) == 1  # not submitted again
    assert second.value.kwargs["condor_job"] == first.value.kwargs["condor_job"]
    assert second.value.kwargs["workdir"] == job.workdir and job.workdir.endswith("try1")
    # held jobs are still the earlier try's to wait for (the release policy may act)
    write_log(job.log, ev_submit(job.cluster), ev_execute(job.cluster), ev_held(job.cluster))
    with pytest.raises(TaskDeferred):
        make_op().execute(ctx(store, 3))
    assert len(FakeSchedd.submitted) == 1


def test_retry_after_the_job_succeeded_records_it_without_submitting(condor_site: None) -> None:
    store = FakeStateStore()
    with pytest.raises(TaskDeferred):
        make_op().execute(ctx(store, 1))
    job = CondorJob.from_dict(store.data[STATE_KEY])
    assert run_step("selftest.make_image", {"size": 40, "nstars": 3, "seed": 2}, job.workdir).ok
    write_log(job.log, ev_submit(job.cluster), ev_execute(job.cluster), ev_exit(job.cluster, 0))
    out = make_op().execute(ctx(store, 2))  # the worker died before recording; try 2 finds it done
    assert out["workdir"] == job.workdir and len(FakeSchedd.submitted) == 1


def test_retry_after_a_failed_or_held_job_submits_afresh(condor_site: None) -> None:
    store = FakeStateStore()
    with pytest.raises(TaskDeferred) as first:
        make_op().execute(ctx(store, 1))
    job = CondorJob.from_dict(store.data[STATE_KEY])
    write_log(job.log, ev_submit(job.cluster), ev_execute(job.cluster), ev_held(job.cluster))
    # the trigger gave up on the hold: the task fails with the hold reason, and removes the job
    payload = run_trigger(first.value.trigger)
    with pytest.raises(RuntimeError, match="was held: .*memory limit"):
        make_op().execute_remote_complete(ctx(store, 1), event=payload, **first.value.kwargs)
    assert FakeSchedd.removed == [job.id] and STATE_KEY not in store.data
    with pytest.raises(TaskDeferred) as second:
        make_op().execute(ctx(store, 2))
    assert len(FakeSchedd.submitted) == 2
    assert second.value.kwargs["workdir"].endswith("try2")
    with ProvenanceStore.from_config(platform_config()).engine.connect() as conn:
        status, message = conn.execute(sa.text(
            "SELECT status, message FROM task WHERE dag_id = 'condor_demo' AND try_number = 1 "
            "ORDER BY id DESC LIMIT 1")).one()
    assert status == "failed" and "held" in message and "34" in message
