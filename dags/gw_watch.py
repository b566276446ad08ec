"""gw_watch: candidates minutes after the shutter closes, not the next morning.

Every few minutes a deferrable sensor waits (in the triggerer, holding no worker slot)
for GW search exposures that reached the archive and have no ``gw_exposure`` run yet,
then triggers one ``gw_exposure`` run per exposure, named ``exp_<expnum>`` so that no
exposure is ever processed twice by the watcher.
"""
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from skyops.campaigns.gw.config import GWNightlyConfig
from skyops.config import load_campaign_config
from skyops.operators.sensors import NewExposureSensor

cfg = load_campaign_config("gw_nightly", GWNightlyConfig)


@task
def trigger_kwargs(expnums: list[int], data_interval_end=None) -> list[dict]:
    """One gw_exposure run per new exposure: run id exp_<expnum>, its night from the archive."""
    from skyops.archive import ArchiveDB
    from skyops.campaigns.gw.watch import recent_exposures, run_id_for, since_nite

    db = ArchiveDB.from_config()
    try:
        nites = {r["expnum"]: r["nite"] for r in recent_exposures(
            db.engine, program=cfg.defaults.program, bands=None, since_nite=since_nite(cfg.watch.lookback_nights + 1))}
    finally:
        db.dispose()
    return [{"trigger_run_id": run_id_for(e), "conf": {"expnum": e, "night": nites[e]}} for e in expnums if e in nites]


with DAG(
    dag_id="gw_watch",
    description="GW low latency: trigger gw_exposure for each newly arrived search exposure",
    schedule=cfg.watch.schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["skyops", "gw"],
) as dag:
    new = NewExposureSensor(task_id="new_exposures", program=cfg.defaults.program, bands=[cfg.defaults.band],
                            lookback_nights=cfg.watch.lookback_nights, poll_seconds=cfg.watch.poll_seconds,
                            wait_seconds=cfg.watch.timeout_minutes * 60)
    TriggerDagRunOperator.partial(task_id="trigger_gw_exposure", trigger_dag_id="gw_exposure",
                                  skip_when_already_exists=True).expand_kwargs(trigger_kwargs(new.output))
