"""The scheduler's warm imports (skyops.plugins.preimport) reach the task processes forked from it."""
from __future__ import annotations

import logging
import sys
import textwrap
from types import SimpleNamespace

import pytest

from skyops.plugins import listener, preimport

PROBE_DAG = textwrap.dedent('''
    """preimport_probe: which skyops modules a task process holds that its own DAG file never imports."""
    import sys

    import pendulum
    from airflow.sdk import DAG, task

    with DAG(dag_id="preimport_probe", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
             catchup=False) as dag:
        @task
        def probe() -> dict:
            return {m: m in sys.modules for m in ("skyops.operators.magellanic", "skyops.operators.balrog")}

        probe()
''')


def test_preimport_imports_what_it_can_and_names_what_it_cannot(caplog, monkeypatch):
    monkeypatch.delitem(sys.modules, "skyops.operators.verdict", raising=False)  # restored afterwards
    with caplog.at_level(logging.INFO, logger=preimport.__name__):
        failed = preimport.preimport(("skyops.operators.verdict", "skyops.no_such_module"))
    assert failed == ["skyops.no_such_module"]
    assert "skyops.operators.verdict" in sys.modules
    assert "could not import skyops.no_such_module" in caplog.text
    assert "skyops preimport: 1 modules" in caplog.text


def test_on_starting_warms_only_jobs_and_only_when_enabled(monkeypatch):
    calls = []
    monkeypatch.setattr(preimport, "preimport", lambda: calls.append(1) or [])
    Job = type("Job", (), {})
    listener.on_starting(SimpleNamespace())  # a task process (TaskRunnerMarker): nothing to warm
    assert calls == []
    listener.on_starting(Job())
    assert calls == [1]
    monkeypatch.setenv("AIRFLOW__SKYOPS__PREIMPORT", "False")
    listener.on_starting(Job())
    assert calls == [1]


@pytest.mark.slow
def test_task_processes_inherit_the_schedulers_imports(pg_server_url, tmp_path):
    from skyops.operators.devstack import AirflowStack, pg_database

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "preimport_probe.py").write_text(PROBE_DAG)
    with pg_database(pg_server_url, "skyops_preimport") as url:
        with AirflowStack(tmp_path / "home", url, dags_folder=dags) as stack:
            stack.wait_dag("preimport_probe")
            run_id = stack.trigger("preimport_probe", {})
            run = stack.wait("preimport_probe", run_id, timeout=180)
            held = stack.xcom("preimport_probe", run_id, "probe")
    assert run["state"] == "success"
    # the probe's DAG file imports neither: the task process inherited them from the scheduler
    assert held == {"skyops.operators.magellanic": True, "skyops.operators.balrog": True}
    log = (tmp_path / "home" / "airflow" / "logs" / "stack" / "scheduler.log").read_text()
    assert f"skyops preimport: {len(preimport.TASK_MODULES)} modules" in log
