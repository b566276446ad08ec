"""The Condor job's event log, the trigger that follows it, and reattachment on retry.

The event logs are written by hand in the exact text format HTCondor writes (``000`` submit,
``001`` execute, ``005`` terminated normally with a return value or abnormally with a
signal, ``012`` held with a reason and codes, ``013`` released, ``009`` aborted) and parsed
by ``htcondor2.JobEventLog`` itself. There is no pool: only the ``htcondor2.Schedd`` boundary
is replaced, by a fake that counts submissions.
"""
from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import htcondor2
import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import TaskDeferred

from skyops.config import platform_config
from skyops.executors.htcondor import CondorJob, JobState, read_status
from skyops.operators.compute import ComputeOperator
from skyops.operators.condor_triggers import HTCondorJobTrigger
from skyops.operators.htcondor import STATE_KEY
from skyops.provenance import ProvenanceStore
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
def run_trigger(trigger: HTCondorJobTrigger, feed: list[tuple[float, str]] | None = None,
                log: Path | None = None) -> dict[str, Any]:
    """Drive the trigger to its event, appending ``feed`` events to the log as time passes."""

    async def main() -> dict[str, Any]:
        async def writer() -> None:
            for delay, text in feed or []:
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
    cfg.write_text("executors:\n  htcondor: {program: /opt/skyops/bin/skyops, poll_interval_seconds: 1}\n")
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
