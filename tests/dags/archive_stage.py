"""Test DAG: a DESDM query writes a manifest, staging fetches its files (issue: archive + staging)."""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from skyops.operators.desdm import DesdmQueryOperator
from skyops.operators.stage import StageFilesOperator

with DAG(
    dag_id="archive_stage",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"nite": "20170817"},
    tags=["skyops", "test"],
) as dag:
    query = DesdmQueryOperator(
        task_id="night_exposures", query="night_exposures",
        query_params={"nite": "{{ params.nite }}", "program": "gw", "bands": ["i"]}, unit="{{ params.nite }}",
    )
    stage = StageFilesOperator(task_id="stage_raw", manifest="{{ ti.xcom_pull(task_ids='night_exposures')['manifest'] }}",
                               workers=2, unit="{{ params.nite }}")
    query >> stage
