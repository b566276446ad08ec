"""balrog_tile: the DES Balrog pipeline on one tile (BalrogBase.py's blocks, selected by ``mode``).

prep -> per-band coadds -> detection -> per-band MEDS; injection per realization -> its coadds,
detection, matching and MEDS; SOF/MOF/metacal measurement of each MEDS set. Triggered per tile
(by ``balrog_campaign``, ``skyops campaign submit balrog`` or by hand); its run id names the tile.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from skyops.campaigns.balrog.config import BalrogTileConfig
from skyops.config import load_campaign_config
from skyops.operators.balrog import dag_params, tile_tasks
from skyops.operators.verdict import add_verdict

cfg = load_campaign_config("balrog_tile", BalrogTileConfig)

with DAG(
    dag_id="balrog_tile",
    description="DES Balrog: injection, coadds, MEDS and measurement of one tile",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=cfg.max_active_tiles,
    params=dag_params(cfg),
    default_args={"retries": cfg.retries, "retry_delay": timedelta(seconds=cfg.retry_delay_seconds)},
    tags=["balrog", "des"],
    doc_md=__doc__,
) as dag:
    tile_tasks(cfg)
    add_verdict(dag)
