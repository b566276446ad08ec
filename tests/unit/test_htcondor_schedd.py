"""The schedd's view of a Condor job: job ClassAds -> JobStatus, queue then history, locate, remove.

The ads are real ``classad2.ClassAd`` objects with the attributes and values a schedd returns
for the trigger's projection; only the ``htcondor2.Schedd``/``Collector`` boundary is a fake
(there is no pool here). The trigger that uses all this is tested in test_htcondor_events.py.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import classad2
import htcondor2
import pytest

from skyops.errors import ExecutorError
from skyops.executors.htcondor import JOB_PROJECTION, CondorJob, JobState, JobWhere, job_constraint, \
    locate_schedd, query_job, remove_job, status_from_ad
from skyops.operators.remote_step import step_times
from skyops.steps.runner import StepResult

ENTERED = 1795225380  # 2026-11-21 01:43:00 UTC


def ad(**attrs: Any) -> classad2.ClassAd:
    return classad2.ClassAd({"ClusterId": 7, "ProcId": 0, "EnteredCurrentStatus": ENTERED, **attrs})


HELD = ad(JobStatus=5, HoldReason="Error from slot1_1@ep9.example.org: Job has gone over cgroup memory limit of "
                                  "3072 megabytes. Fetching https://skyops:hunter2@archive.example.org/x failed",
          HoldReasonCode=34, HoldReasonSubCode=0, LastRemoteHost="slot1_1@ep9.example.org")


@pytest.mark.parametrize(("job_ad", "state", "rc", "reason", "host"), [
    (None, JobState.UNKNOWN, None, "", ""),
    (ad(JobStatus=1), JobState.IDLE, None, "", ""),
    (ad(JobStatus=2, RemoteHost="slot1_1@ep9.example.org"), JobState.RUNNING, None, "", "ep9.example.org"),
    (ad(JobStatus=6, RemoteHost="slot1_1@ep9.example.org"), JobState.RUNNING, None, "", "ep9.example.org"),
    (HELD, JobState.HELD, None, "gone over cgroup memory limit", "ep9.example.org"),
    (ad(JobStatus=3, RemoveReason="via condor_rm (by user skyops)"), JobState.ABORTED, None, "via condor_rm", ""),
    (ad(JobStatus=4, ExitCode=0, ExitBySignal=False, LastRemoteHost="slot1_1@ep9.example.org"),
     JobState.SUCCEEDED, 0, "", "ep9.example.org"),
    (ad(JobStatus=4, ExitCode=2, ExitBySignal=False), JobState.FAILED, 2, "", ""),
    (ad(JobStatus=4, ExitBySignal=True, ExitSignal=9), JobState.KILLED, -9, "", ""),
    (ad(JobStatus=4, ExitBySignal=False), JobState.FAILED, None, "no ExitCode", ""),
    (ad(JobStatus=42), JobState.UNKNOWN, None, "JobStatus 42", ""),
])
def test_status_from_ad(job_ad: classad2.ClassAd | None, state: JobState, rc: int | None, reason: str,
                        host: str) -> None:
    status = status_from_ad(job_ad)
    assert status.state is state and status.returncode == rc and reason in status.reason and status.host == host
    if job_ad is not None and state is not JobState.UNKNOWN:
        assert status.timestamp == ENTERED


def test_a_held_ad_keeps_codes_and_loses_credentials() -> None:
    status = status_from_ad(HELD)
    assert (status.hold_code, status.hold_subcode) == (34, 0)
    assert "hunter2" not in status.reason and "skyops:***@archive.example.org" in status.reason
    assert status.exit_status() == 1 and "hold code 34" in status.describe()


def test_an_expression_attribute_is_evaluated() -> None:
    job_ad = ad(JobStatus=4, ExitBySignal=False)
    job_ad["ExitCode"] = classad2.ExprTree("1 + 2")
    assert status_from_ad(job_ad).returncode == 3


class FakeSchedd:
    """htcondor2.Schedd's query/history/act, answering from given ads and recording the calls."""

    def __init__(self, queue: list[classad2.ClassAd] = (), history: list[classad2.ClassAd] = ()) -> None:
        self.queue, self.history_ads = list(queue), list(history)
        self.calls: list[tuple[str, Any]] = []

    def query(self, constraint: str = "True", projection: list[str] = [], limit: int = -1, **_: Any) -> list:
        self.calls.append(("query", constraint, tuple(projection), limit))
        return self.queue[:limit] if limit > 0 else self.queue

    def history(self, constraint: str | None = None, projection: list[str] = [], match: int = -1,
                **_: Any) -> list:
        self.calls.append(("history", constraint, tuple(projection), match))
        return self.history_ads[:match] if match > 0 else self.history_ads

    def act(self, action: htcondor2.JobAction, job_spec: str, reason: Any = None) -> classad2.ClassAd:
        self.calls.append(("act", action, job_spec, reason))
        return classad2.ClassAd({"TotalSuccess": 1})


def test_query_job_asks_the_queue_then_the_history() -> None:
    running = FakeSchedd(queue=[ad(JobStatus=2)])
    view = query_job(running, 7, 0)
    assert view.where is JobWhere.QUEUE and view.status.state is JobState.RUNNING
    assert running.calls == [("query", "ClusterId == 7 && ProcId == 0", tuple(JOB_PROJECTION), 1)]

    done = FakeSchedd(history=[ad(JobStatus=4, ExitCode=0, ExitBySignal=False)])
    view = query_job(done, 7, 0)
    assert view.where is JobWhere.HISTORY and view.status.state is JobState.SUCCEEDED
    assert [c[0] for c in done.calls] == ["query", "history"] and done.calls[1][3] == 1

    gone = query_job(FakeSchedd(), 7, 0)
    assert gone.where is JobWhere.ABSENT and gone.status.state is JobState.UNKNOWN
    assert job_constraint(12, 3) == "ClusterId == 12 && ProcId == 3"


def test_remove_job_passes_the_reason_the_bindings_keep() -> None:
    schedd = FakeSchedd()
    remove_job(schedd, CondorJob(7, 0, "/w"), "skyops: stopped")
    # htcondor2 25.x drops a plain-string reason: the (reason, code) form reaches the schedd
    assert schedd.calls == [("act", htcondor2.JobAction.Remove, "7.0", ("skyops: stopped", None))]


def test_locate_schedd_from_plain_values(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    location = classad2.ClassAd({"MyAddress": "<10.1.2.3:9618?alias=ap.example.org>", "CondorVersion": "25.14.1"})

    class Collector:
        def __init__(self, pool: str | None = None) -> None:
            seen["pool"] = pool

        def locate(self, daemon_type: htcondor2.DaemonType, name: str | None = None) -> classad2.ClassAd:
            seen["locate"] = (daemon_type, name)
            return location

    monkeypatch.setattr(htcondor2, "Collector", Collector)
    schedd = locate_schedd("ap.example.org", "cm.example.org:9618")
    assert isinstance(schedd, htcondor2.Schedd) and schedd._addr == location["MyAddress"]
    assert seen == {"pool": "cm.example.org:9618", "locate": (htcondor2.DaemonType.Schedd, "ap.example.org")}


def test_locate_schedd_failure_says_where_and_what_to_check() -> None:
    # no HTCondor configuration on this machine: the real bindings cannot find a local schedd
    with pytest.raises(ExecutorError, match="cannot reach the local schedd .*executors.htcondor.schedd"):
        locate_schedd(None)


def test_step_times_come_from_result_json() -> None:
    t0 = datetime(2026, 11, 21, 1, 1, 0, 250000, tzinfo=timezone.utc)
    res = StepResult(step="s", status="success", exit_code=0, started="2026-11-21T01:01:00.250+00:00",
                     finished="2026-11-21T01:03:00.000+00:00", wall_s=119.75)
    assert step_times(res) == (t0, datetime(2026, 11, 21, 1, 3, tzinfo=timezone.utc))
    res.finished = ""  # a result without an end: start + wall time
    assert step_times(res)[1] == datetime(2026, 11, 21, 1, 3, tzinfo=timezone.utc)
    res.finished = "2026-11-21T00:00:00Z"  # an end before the start is not believed
    assert step_times(res) == (t0, None)
    assert step_times(StepResult(step="s", status="failed", exit_code=1)) == (None, None)
