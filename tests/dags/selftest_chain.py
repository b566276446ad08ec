"""A test DAG chaining two real steps through ComputeOperator: make an image, measure it.

The second step's parameters come from the first one's XCom (its outputs by filetype),
and a mapped variant runs the pair for several seeds with a readable map index.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from skyops.operators.compute import ComputeOperator

with DAG(
    dag_id="selftest_chain",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["skyops", "test"],
) as dag:
    make = ComputeOperator(task_id="make_image", step="selftest.make_image",
                           step_params={"nstars": 30, "seed": 11, "size": 192}, unit="selftest")
    measure = ComputeOperator(
        task_id="measure",
        step="selftest.measure",
        step_params={"image": make.output["selftest_image"], "truth": make.output["selftest_truth"]},
        unit="selftest",
    )
    mapped = ComputeOperator.partial(
        task_id="make_mapped", step="selftest.make_image", unit="selftest",
        map_index_template="seed={{ task.step_params['seed'] }}",
    ).expand(step_params=[{"nstars": 5, "size": 64, "seed": s} for s in (1, 2, 3)])
