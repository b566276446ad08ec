"""The run's verdict: a run with a failed task ends ``failed``, whatever its last tasks did.

Airflow decides a DAG run's state from its leaf tasks. The campaigns end on summary tasks
that run whatever happened upstream (``all_done``: a night summary with 59 of 60 CCDs is
still wanted), so without this a night with a failed CCD would end ``success`` and nobody
would look. :func:`add_verdict` adds one last task downstream of every task, with the
``one_failed`` trigger rule: it fails the run, naming the failed tasks, when any task failed,
and is skipped (a success) otherwise. Clearing the failed task with its downstream clears the
verdict too, so a repaired run ends ``success``.
"""
from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task

TASK_ID = "verdict"


@task(task_id=TASK_ID, trigger_rule="one_failed", retries=0)
def _verdict(dag_run: Any = None) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    failed = []
    try:
        failed = sorted({f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id
                         for ti in dag_run.get_task_instances(state=["failed", "upstream_failed"])})
    except Exception:  # noqa: BLE001 - the names are a courtesy; the verdict stands without them
        pass
    raise AirflowFailException("failed tasks in this run" + (f": {', '.join(failed[:20])}" if failed else "")
                               + "; repair the cause and clear them (with downstream) to finish the run")


def add_verdict(dag: DAG) -> Any:
    """Add the verdict task downstream of every task of ``dag`` (call last, inside the DAG).

    Except branch tasks: a branch skips its direct downstream tasks that it does not follow,
    and would skip the verdict with them; a failed branch still reaches the verdict through the
    tasks below it, which end ``upstream_failed``.
    """
    from airflow.sdk.bases.branch import BranchMixIn

    others = [t for t in dag.tasks if t.task_id != TASK_ID and not isinstance(t, BranchMixIn)]
    verdict = _verdict()
    for t in others:
        t >> verdict
    return verdict
