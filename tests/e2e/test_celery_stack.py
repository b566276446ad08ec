"""The production shape on one machine: api-server, scheduler, dag-processor, triggerer and a
Celery worker (Redis broker), metadata and provenance in PostgreSQL, driven through REST API v2.

One CCD of a ``gw_nightly`` run fails on a fault the test injects (its staged flat field is
truncated), an operator clears it through the API as from the UI, and it succeeds; provenance
in PostgreSQL holds both attempts. Then ``airflow backfill create`` processes two past nights.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from skyops.config import PROJECT_ROOT, platform_config
from skyops.operators.devstack import AirflowStack, pg_database

DAG = "gw_nightly"
NIGHT, EXPNUM = "20170817", 668439
POOL = "skyops_it_ccd"


@pytest.fixture
def stack_configs(tmp_path: Path) -> Path:
    """configs/ with the CCD steps in a pool the test controls, and no automatic retries."""
    d = tmp_path / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", d)
    text = (d / "gw_nightly.yaml").read_text()
    text = text.replace("retries: 1 ", "retries: 0 ").replace(
        "gw.se_ccd: {executor: local,", f"gw.se_ccd: {{pool: {POOL}, executor: local,")
    assert f"pool: {POOL}" in text and "retries: 0" in text
    (d / "gw_nightly.yaml").write_text(text)
    return d


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ti_state(stack: AirflowStack, run_id: str, task_id: str, map_index: int = 0) -> str | None:
    for t in stack.task_instances(DAG, run_id):
        if t["task_id"] == task_id and t["map_index"] == map_index:
            return t["state"]
    return None


@pytest.mark.slow
def test_celery_stack_clear_a_failed_ccd_and_backfill(demo_archive, tiles_archive, pg_server_url, tmp_path,
                                                     stack_configs):
    cfg = platform_config()
    with pg_database(pg_server_url, "skyops_it_meta") as meta_url, \
            pg_database(pg_server_url, "skyops_it_prov") as prov_url:
        env = {"SKYOPS_ARCHIVE_URL": cfg.databases.archive, "SKYOPS_ARCHIVE_ROOT": cfg.archive.root,
               "SKYOPS_PROVENANCE_URL": prov_url, "SKYOPS_CONFIG_DIR": str(stack_configs)}
        with AirflowStack(tmp_path / "home", meta_url, executor="CeleryExecutor", triggerer=True,
                          parallelism=2, extra_env=env) as stack:
            assert set(stack.components) >= {"api-server", "scheduler", "dag-processor", "triggerer",
                                             "celery-worker-0"}
            pids = [p.pid for p in stack.procs.values()]
            stack.set_pool(POOL, 0)  # hold the SE tasks until the fault is in place
            run_id = stack.trigger(DAG, {"night": NIGHT, "expnums": [EXPNUM], "ccds": "28,40"})

            # The fault: CCD 40's staged flat field, truncated after staging and before its SE runs.
            wait_for(lambda: ti_state(stack, run_id, "exposure.prepare") == "success", 600, "prepare")
            flat = Path(stack.xcom(DAG, run_id, "exposure.prepare", key="c40", map_index=0)["flat"])
            good = flat.read_bytes()
            flat.write_bytes(good[: len(good) // 3])
            stack.set_pool(POOL, 2)

            run = stack.wait(DAG, run_id, timeout=900)
            assert run["state"] == "failed"
            assert ti_state(stack, run_id, "exposure.se_c40") == "failed"
            assert ti_state(stack, run_id, "exposure.se_c28") == "success"

            # The operator repairs the file and clears the CCD with its downstream tasks.
            flat.write_bytes(good)
            cleared = stack.clear(DAG, run_id, ["exposure.se_c40"], downstream=True)
            assert "exposure.se_c40" in {t["task_id"] for t in cleared}
            run = stack.wait(DAG, run_id, timeout=900)
            assert run["state"] == "success", stack.task_instances(DAG, run_id)

            # Backfill two past nights through the CLI, as the README documents it.
            before = {r["dag_run_id"] for r in stack.api("GET", f"/dags/{DAG}/dagRuns", limit=100)["dag_runs"]}
            out = subprocess.run(
                [sys.executable, "-m", "airflow", "backfill", "create", "--dag-id", DAG,
                 "--from-date", "2017-08-17", "--to-date", "2017-08-18T23:00:00",
                 "--dag-run-conf", json.dumps({"ccds": "28", "calibrate": False})],
                env=stack.env, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr[-3000:]

            def backfill_runs():
                runs = [r for r in stack.api("GET", f"/dags/{DAG}/dagRuns", limit=100)["dag_runs"]
                        if r["dag_run_id"] not in before and r["run_type"] == "backfill"]
                return runs if len(runs) == 2 and all(r["state"] in ("success", "failed") for r in runs) else None

            runs = wait_for(backfill_runs, 1200, "the two backfill runs", poll=5)
            assert sorted(r["state"] for r in runs) == ["success", "success"], runs
            nights = sorted(r["data_interval_start"][:10] for r in runs)
            assert nights == ["2017-08-17", "2017-08-18"]
            bf_run = next(r for r in runs if r["data_interval_start"].startswith("2017-08-17"))["dag_run_id"]

            # A Balrog tile list through the CLI: one balrog_tile run per tile, via the REST API.
            tiles = tmp_path / "tiles.txt"
            tiles.write_text("# the demo tiles\nDES0239+0216\nDES0000+0209\n")
            cli_env = {**stack.env, "SKYOPS_AIRFLOW_API": stack.base_url, "SKYOPS_AIRFLOW_PASSWORD": stack.password}
            sub = subprocess.run([sys.executable, "-m", "skyops.cli.main", "campaign", "submit", "balrog",
                                  "--tiles", str(tiles), "--mode", "1"], env=cli_env, capture_output=True, text=True,
                                 timeout=120)
            assert sub.returncode == 0, sub.stderr
            submitted = dict(line.split("\t") for line in sub.stdout.splitlines() if "\t" in line)
            assert sorted(submitted) == ["DES0000+0209", "DES0239+0216"]
            assert all(rid.startswith(f"balrog__{t}__") for t, rid in submitted.items())
            for rid in submitted.values():
                assert stack.wait("balrog_tile", rid, timeout=900)["state"] == "success"
            status = subprocess.run([sys.executable, "-m", "skyops.cli.main", "campaign", "status", "balrog",
                                     "--tiles", str(tiles)], env=cli_env, capture_output=True, text=True, timeout=120)
            assert status.returncode == 0 and "done: 2" in status.stdout, status.stdout + status.stderr
            again = subprocess.run([sys.executable, "-m", "skyops.cli.main", "campaign", "submit", "balrog",
                                    "--tiles", str(tiles)], env=cli_env, capture_output=True, text=True, timeout=120)
            assert again.returncode == 0 and "skipping 2 complete tiles" in again.stdout, again.stdout
            assert stack.password not in sub.stdout + sub.stderr + status.stdout + again.stdout

        # Every process the stack started is gone.
        import os

        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)

        # Provenance in PostgreSQL: CCD 40's failed try and its successful retry after the clear.
        engine = sa.create_engine(prov_url)
        with engine.connect() as c:
            tries = c.execute(sa.text(
                "SELECT try_number, status, message FROM task WHERE run_id = :r AND task_id = 'exposure.se_c40' "
                "ORDER BY try_number"), {"r": run_id}).all()
            bf_se = c.execute(sa.text(
                "SELECT count(*) FROM task WHERE run_id = :r AND name = 'gw.se_ccd' AND status = 'success'"),
                {"r": bf_run}).scalar_one()
        engine.dispose()
        # try 1 failed, then the operator's clear marked it "cleared" (keeping its error); try 2 succeeded
        assert [(t.try_number, t.status) for t in tries] == [(1, "cleared"), (2, "success")], tries
        assert "dflatcor.fits" in tries[0].message and "FITSIO" in tries[0].message
        assert bf_se == 3  # night 20170817: its three search exposures, CCD 28 each
