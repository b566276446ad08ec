"""Warm imports for task processes: the modules the campaign DAG files import, loaded in the scheduler.

Airflow 3 runs every task in a process forked from a LocalExecutor worker, and the workers are
forked from the scheduler when its executor starts. Each task process then re-parses its DAG
file (``task_runner.parse``). Whatever the scheduler had imported before the fork is inherited,
so the parse only has to build the DAG; without this, every task process imports skyops'
operators and campaign modules again (~130 of them). Measured on ``gw_exposure`` (190 tasks):
the parse takes half the CPU with the modules already imported, about 0.07 s less per task,
and the first tasks of a run no longer read those modules from disk (4 s each after a cold
start). The dag-processor, which forks a process per file it parses, gains the same way.

The cost: about 0.3 s and 4 MB in each process that starts (scheduler, dag-processor,
triggerer), and the same rule Airflow's own packages already follow: an upgraded skyops is
picked up by task processes when the scheduler restarts, not at the next task. DAG files
themselves are still read afresh by every task. ``[skyops] preimport = False`` (environment
``AIRFLOW__SKYOPS__PREIMPORT=False``) turns it off, for a deployment that edits skyops in
place and wants each task to see the edit.

Called from the provenance listener's ``on_starting`` hook, which Airflow calls when a job
(scheduler, dag-processor, triggerer) is created, before the scheduler starts its executor.
"""
from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

#: What the DAG files in ``dags/`` import, and what a task process imports to parse one.
TASK_MODULES: tuple[str, ...] = (
    "skyops.operators.compute",
    "skyops.operators.desdm",
    "skyops.operators.stage",
    "skyops.operators.sensors",
    "skyops.operators.verdict",
    "skyops.operators.gw",
    "skyops.operators.balrog",
    "skyops.operators.magellanic",
    "skyops.health",
    "airflow.providers.standard.operators.trigger_dagrun",
    "airflow.sdk.execution_time.task_runner",
    "airflow.dag_processing.dagbag",
)


def enabled() -> bool:
    """``[skyops] preimport`` in Airflow's configuration (default True)."""
    from airflow.configuration import conf

    return conf.getboolean("skyops", "preimport", fallback=True)


def preimport(modules: Iterable[str] = TASK_MODULES) -> list[str]:
    """Import ``modules``; returns those that failed. A failure is logged, never raised.

    The component must start even when a campaign module is broken: the task that needs it
    reports the import error itself, in its own log, where the operator looks for it.
    """
    names = tuple(modules)
    t0 = time.perf_counter()
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a warm-up must not stop the scheduler
            log.warning("skyops preimport: could not import %s; tasks will import it themselves", name,
                        exc_info=True)
            failed.append(name)
    log.info("skyops preimport: %d modules in %.2f s", len(names) - len(failed), time.perf_counter() - t0)
    return failed
