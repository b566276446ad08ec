"""skyops_healthcheck: the operations canary.

Is this deployment able to run a campaign right now? One task per check (provenance DB
reachable and migrated; archive DB and file root reachable; Astromatic tools present,
with versions; workspace writable with free space), then a report derived from all of
them. Every check is a real step, so its outcome, host, versions and files are in
provenance like any campaign's.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from skyops.health import CHECKS
from skyops.operators.compute import ComputeOperator

with DAG(
    dag_id="skyops_healthcheck",
    description="Operations canary: provenance, archive, tools, workspace",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["skyops", "ops"],
    default_args={"retries": 0},
) as dag:
    checks = [
        ComputeOperator(task_id=f"check_{name}", step="health.check", step_params={"check": name}, unit="healthcheck")
        for name in CHECKS
    ]
    report = ComputeOperator(
        task_id="report",
        step="health.report",
        step_params={"checks": [c.output["health_check"] for c in checks]},
        unit="healthcheck",
        trigger_rule="all_done",
    )
    checks >> report
