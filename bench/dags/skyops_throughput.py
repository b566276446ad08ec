"""skyops_throughput: N mapped short skyops steps, for the scheduler throughput benchmark.

Each mapped task is a real ComputeOperator running ``selftest.slow_write`` with nothing to write
and no sleep: what is measured is Airflow's dispatch plus skyops' per-task cost (provenance,
the step subprocess), not the step. ``python -m bench airflow_stack`` triggers it with ``n``.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from skyops.operators.compute import ComputeOperator

with DAG(
    dag_id="skyops_throughput",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={"n": Param(1000, type="integer", minimum=1, maximum=100_000)},
    max_active_tasks=256,
    tags=["bench"],
) as dag:

    @task
    def units(params: dict | None = None) -> list[dict]:
        return [{"megabytes": 0, "seconds": 0.0, "name": f"blob{i}.bin"} for i in range(int(params["n"]))]

    ComputeOperator.partial(task_id="short", step="selftest.slow_write", unit="throughput",
                            retries=0).expand(step_params=units())
