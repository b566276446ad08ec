"""gw_nightly: the DES GW follow-up of one night, as SE_job_mod.sh + RUN_DIFFIMG_PIPELINE.sh did.

Night N is processed after it ends (a data-interval timetable: the run for night N starts
at 14:00 UTC on N+1). Params keep the original flags' meanings (``-n`` night, ``-E``
expnums, ``-b`` band, ``-c`` ccds, ``-r``/``-p``, ``-S`` season, ``-d`` destination, ``-m``
schema, ``-C`` calibrate, ``-j`` skip SE, ``-O`` overwrite, ``-t`` template mode, ``-v``
diffimg version, ``-F`` fullcopy); a bad one fails when the run is triggered. Then, per
search exposure of the night, the per-CCD pipeline (see ``gw_exposure``; raw-only templates
are SE'd once for the whole night), and a night summary.
Past nights: ``airflow backfill create --dag-id gw_nightly --from-date ... --to-date ...``.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, task

from skyops.campaigns.gw.config import GWNightlyConfig
from skyops.config import load_campaign_config
from skyops.operators.compute import ComputeOperator
from skyops.operators.desdm import DesdmQueryOperator
from skyops.operators.gw import GROUP, P, dag_params, exposure_pipeline, resolve_params
from skyops.operators.verdict import add_verdict

cfg = load_campaign_config("gw_nightly", GWNightlyConfig)


@task
def pick_exposures(run: dict, night: dict) -> list[int]:
    """The night's search exposures (from the archive), or those given with -E."""
    from skyops.manifest import Manifest

    found = sorted({int(r["expnum"]) for r in Manifest.read(night["manifest"]).records()})
    wanted = run["expnums"] or found
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ValueError(f"param 'expnums' (-E): exposures {missing} are not {run['program']} "
                         f"{run['band']}-band exposures of night {run['night']} in the archive")
    return wanted


def night_summary_params(context) -> dict | None:
    """gw.night_summary's inputs, gathered when it runs: every exposure's zeropoints and candidates.

    It runs whatever happened upstream (a summary of 59 of 60 CCDs is still wanted) and skips
    when the night had no exposure to process.
    """
    from pathlib import Path

    from skyops.manifest import Manifest

    ti = context["ti"]
    run = ti.xcom_pull(task_ids="params")
    expnums = ti.xcom_pull(task_ids="pick_exposures") or []
    if not run or not expnums:
        return None
    zps, cands = [], []
    for i in range(len(expnums)):  # per exposure: what its calibrate and ingest tasks had
        calibrated = ti.xcom_pull(task_ids=f"{GROUP}.calibrate", map_indexes=i) or {}
        zps.append((calibrated.get("outputs") or {}).get("bliss_zeropoint"))
        ingested = ti.xcom_pull(task_ids=f"{GROUP}.ingest", key="step_params", map_indexes=i) or {}
        cands += ingested.get("candidates", [])
    truth = ti.xcom_pull(task_ids="q_truth") or {}
    truth_rows = list(Manifest.read(truth["manifest"]).records()) if truth.get("manifest") else []
    truth_path = None
    if truth_rows:  # the synthetic survey's injected transients, straight from the archive root
        from skyops.config import platform_config

        root = platform_config().archive.root.removeprefix("file://")
        truth_path = str(Path(root) / Manifest.relpath(truth_rows[0]))
    return {"night": run["night"], "run_id": context["run_id"], "band": run["band"], "season": run["season"],
            "zeropoints": [z for z in zps if z], "candidates": cands, "truth": truth_path}


with DAG(
    dag_id="gw_nightly",
    description="DES GW follow-up: nightly single-epoch processing and difference imaging",
    schedule=CronDataIntervalTimetable(cfg.schedule, timezone="UTC"),
    start_date=pendulum.datetime(cfg.start_date.year, cfg.start_date.month, cfg.start_date.day, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    params=dag_params(cfg),
    default_args={"retries": cfg.retries, "retry_delay": timedelta(seconds=cfg.retry_delay_seconds)},
    tags=["skyops", "gw"],
) as dag:
    run = resolve_params()
    night = DesdmQueryOperator(
        task_id="night_exposures", query="night_exposures", unit="{{ " + P + "['night'] }}",
        query_params={"nite": "{{ " + P + "['night'] }}", "program": "{{ " + P + "['program'] }}",
                      "bands": ["{{ " + P + "['band'] }}"]})
    run >> night
    expnums = pick_exposures(run, night.output)
    exposures = exposure_pipeline(cfg, run, expnums)
    truth = DesdmQueryOperator(task_id="q_truth", query="files_by_name", query_params={"names": ["transients.fits"]},
                               unit="{{ " + P + "['night'] }}")
    run >> truth
    summary = ComputeOperator(task_id="night_summary", step="gw.night_summary", step_params_from=night_summary_params,
                              trigger_rule="all_done", unit="{{ " + P + "['night'] }}",
                              destination="{{ " + P + "['destination'] }}", campaign=cfg.campaign)
    [exposures, truth] >> summary
    add_verdict(dag)  # a failed CCD fails the night's run, though its summary is still written
