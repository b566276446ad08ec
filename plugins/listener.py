"""The provenance listener: every task-instance state change lands in the ``task`` table.

Airflow calls these hooks in the task runner (running, success, failed, skipped) and in
the API server when an operator marks a task from the UI or the REST API (success,
failed, skipped) -- callbacks on the DAG would miss the latter. Clears have no hook of
their own: when a cleared run starts again Airflow announces ``on_dag_run_running``, and
the listener then records a ``cleared`` state change for each try that had ended and was
reset. A listener must never break the component it runs in: every hook logs and
swallows its own errors.

The same listener warms the scheduler's imports when it starts (``on_starting``,
:mod:`skyops.plugins.preimport`), so that the task processes forked from it inherit them.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from airflow.listeners import hookimpl
from sqlalchemy.orm import object_session

from skyops.provenance import ProvenanceStore, TaskKey
from skyops.secrets import redact_text

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _store() -> ProvenanceStore:
    return ProvenanceStore.from_config()


def _key(ti: Any) -> TaskKey:
    mi = getattr(ti, "map_index", -1)
    return TaskKey(ti.dag_id, ti.run_id, ti.task_id, -1 if mi is None else int(mi), int(getattr(ti, "try_number", 1) or 1))


def _record(ti: Any, state: str, message: str | None = None) -> None:
    try:
        now = datetime.now(timezone.utc)
        terminal = state in ("success", "failed", "skipped")
        _store().record_state(
            _key(ti), state,  # name stays what the operator recorded (the step name), if any
            host=getattr(ti, "hostname", None) or None,
            start_time=getattr(ti, "start_date", None) if not terminal else None,
            end_time=(getattr(ti, "end_date", None) or now) if terminal else None,
            message=redact_text(message) if message else None,
            keep_times=True,  # the operator's record of the step's own times wins (remote steps)
        )
    except Exception:  # noqa: BLE001 - a listener must not take its component down
        log.exception("skyops provenance listener could not record %s for %s", state, getattr(ti, "task_id", "?"))


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    _record(task_instance, "running")


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _record(task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    msg = None if error is None else (str(error) if isinstance(error, str) else f"{type(error).__name__}: {error}")
    _record(task_instance, "failed", msg)


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    _record(task_instance, "skipped")


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    """A run (re)starts: record a ``cleared`` change for each reset try that had ended."""
    try:
        # In the scheduler the DagRun belongs to the scheduler's own session: read through it.
        # Letting get_task_instances() open (and commit) the scoped session would break the
        # scheduler's HA locks and detach its objects, which ends the scheduler.
        session = object_session(dag_run)
        if session is None or not hasattr(dag_run, "get_task_instances"):
            return
        tis = dag_run.get_task_instances(session=session)
        cleared = [ti for ti in tis if ti.state is None and int(ti.try_number or 0) >= 1]
        if cleared:
            _store().record_clears([_key(ti) for ti in cleared])
    except Exception:  # noqa: BLE001
        log.exception("skyops provenance listener could not record clears for %s", getattr(dag_run, "run_id", "?"))


def _finish(dag_run: Any, status: str) -> None:
    try:
        _store().finish_run(dag_run.dag_id, dag_run.run_id, status)
    except Exception:  # noqa: BLE001
        log.exception("skyops provenance listener could not finish run %s", getattr(dag_run, "run_id", "?"))


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    """The run ended well: its attempts (one per unit: tile, night, field) are ``success``."""
    _finish(dag_run, "success")


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    """The run ended with a failed task: its attempts are ``failed`` (a clear re-opens them)."""
    _finish(dag_run, "failed")


@hookimpl
def on_starting(component: Any) -> None:
    """A scheduler, dag-processor or triggerer job starts: import what task processes need (:mod:`.preimport`).

    Airflow also calls this in every task process (with a ``TaskRunnerMarker``), where the
    DAG file's parse has imported everything already: only jobs warm up.
    """
    if type(component).__name__ != "Job":
        return
    try:
        from skyops.plugins import preimport

        if preimport.enabled():
            preimport.preimport()
    except Exception:  # noqa: BLE001 - a listener must not take its component down
        log.exception("skyops preimport failed")
