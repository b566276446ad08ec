"""balrog_campaign: a Balrog tile-list backfill, one ``balrog_tile`` run per tile.

Tiles inline, from a list file under ``configs/`` or by RA/Dec box from COADDTILE_GEOM; tiles
that provenance says are complete are skipped unless ``force``; at most ``max_active_tiles``
(configs/balrog_tile.yaml) run at once; the report task lists done / failed / running per tile.
``skyops campaign submit balrog`` does the same from the shell through the REST API.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from skyops.campaigns.balrog.config import BalrogTileConfig
from skyops.config import load_campaign_config
from skyops.operators.balrog import campaign_params, campaign_tasks

cfg = load_campaign_config("balrog_tile", BalrogTileConfig)

with DAG(
    dag_id="balrog_campaign",
    description="Balrog tile-list backfill: one balrog_tile run per tile",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params=campaign_params(cfg),
    tags=["balrog", "des", "campaign"],
    doc_md=__doc__,
) as dag:
    campaign_tasks(cfg)
