"""AirflowStack: a real api-server + scheduler (LocalExecutor) + dag-processor runs a DAG, then leaves nothing behind."""
from __future__ import annotations

import os

import pytest

from skyops.operators.devstack import AirflowStack, pg_database


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.slow
def test_stack_runs_a_dag_and_stops_every_process(pg_server_url, tmp_path):
    with pg_database(pg_server_url, "skyops_devstack") as url:
        with AirflowStack(tmp_path / "home", url) as stack:
            pids = [p.pid for p in stack.procs.values()]
            run_id = stack.trigger("skyops_healthcheck", {})
            run = stack.wait("skyops_healthcheck", run_id, timeout=180)
            tis = stack.task_instances("skyops_healthcheck", run_id)
            others = stack.api("GET", "/dags/gw_nightly")
        # the check tasks report a failure on an empty SKYOPS_HOME; what matters is that they ran
        assert run["state"] in ("success", "failed")
        assert {t["task_id"] for t in tis} >= {"check_archive", "report"}
        assert all(t["queued_when"] and t["start_date"] for t in tis if t["state"] in ("success", "failed"))
        assert others["is_paused"]  # only the triggered DAG runs: no scheduled runs of the others
        assert not any(_alive(pid) for pid in pids)
        assert (tmp_path / "home" / "airflow" / "logs" / "stack" / "scheduler.log").is_file()
        # The stack was ready only once the Task Execution API had answered: its one-off set-up
        # happened before the first task started, not during that task's start.
        api_log = (tmp_path / "home" / "airflow" / "logs" / "stack" / "api-server.log").read_text()
        ready = api_log.find("method=GET path=/execution/health")
        first_run = api_log.find("/run query=")
        assert 0 <= ready < first_run
        # The provenance listener ran inside the real scheduler and workers without breaking them,
        # and every task try reached the stack's own provenance database.
        import sqlalchemy as sa

        from skyops.provenance import ProvenanceStore

        store = ProvenanceStore(f"sqlite:///{tmp_path / 'home' / 'provenance.sqlite'}")
        with store.engine.connect() as c:
            rows = dict(c.execute(sa.text("SELECT task_id, status FROM task WHERE run_id = :r"), {"r": run_id}).all())
        assert {t["task_id"]: t["state"] for t in tis} == rows
