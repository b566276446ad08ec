"""bench gw_orchestration reads each task's wait for a core from Airflow's task logs."""
from __future__ import annotations

import json

from bench.bench_gw_orchestration import core_waits


def _log(path, *events: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps({"timestamp": "2026-11-21T12:58:10Z", "level": "info", "event": e}) + "\n"
                            for e in events))


def test_waits_are_summed_per_task_and_tasks_that_did_not_wait_are_absent(tmp_path):
    run = tmp_path / "dag_id=gw_exposure" / "run_id=manual__1"
    _log(run / "task_id=exposure.se_c01" / "attempt=1.log",
         "running step gw.se_ccd on local executor in /w",
         "waiting for 1 of this host's 2 cores (all held by other steps)", "got cores [1] after 16.4 s")
    _log(run / "task_id=exposure.se_c03" / "attempt=1.log", "running step gw.se_ccd on local executor in /w")
    _log(run / "task_id=exposure.diff_c01" / "attempt=1.log", "got cores [0] after 0.5 s")
    (run / "task_id=exposure.diff_c01" / "attempt=2.log").write_text(
        json.dumps({"event": "got cores [0, 1] after 2.25 s"}) + "\n")
    assert core_waits(run) == {"exposure.se_c01": 16.4, "exposure.diff_c01": 2.75}
