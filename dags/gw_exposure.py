"""gw_exposure: one DECam search exposure, raw -> candidates, minutes after the shutter closes.

Triggered per new search exposure by ``gw_watch`` (or by hand with ``expnum``): find
its templates, stage raw + calibrations + reference catalog + templates, SE every CCD
(``gw.se_ccd``) and every CCD of a raw-only template it overlaps (``template`` group),
BLISS zeropoints (``gw.calibrate``), difference imaging per CCD (``gw.diffimg_ccd``), then
ingest the candidates. Same task groups as ``gw_nightly``, but the exposure group is not
mapped (one exposure), so its tasks have no map index and the scheduler evaluates them cheaply.

No verdict task (:mod:`skyops.operators.verdict`): the run's one leaf is ``ingest``, whose
``none_failed`` rule already ends it ``upstream_failed`` when anything above it failed, which
fails the run. A verdict would add one more scheduler hop, 2-5 s, to every exposure's latency
(``bench gw_orchestration``), and a scheduler evaluation of ~190 upstream tasks per loop.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from skyops.campaigns.gw.config import GWNightlyConfig
from skyops.config import load_campaign_config
from skyops.operators.gw import dag_params, exposure_of, exposure_pipeline, resolve_params

cfg = load_campaign_config("gw_nightly", GWNightlyConfig)

with DAG(
    dag_id="gw_exposure",
    description="GW follow-up: one search exposure, raw -> candidates (low latency)",
    schedule=None,
    start_date=pendulum.datetime(cfg.start_date.year, cfg.start_date.month, cfg.start_date.day, tz="UTC"),
    catchup=False,
    max_active_runs=cfg.max_active_exposures,
    params=dag_params(cfg, night_required=True, expnum=True),
    default_args={"retries": cfg.retries, "retry_delay": timedelta(seconds=cfg.retry_delay_seconds)},
    tags=["skyops", "gw"],
) as dag:
    run = resolve_params()
    exposure_pipeline(cfg, run, expnum=exposure_of())  # one exposure: the group is not mapped
