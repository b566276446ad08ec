"""Run a field's kred stages in order, in this process: the campaign without Airflow.

The same steps, the same planning (:mod:`.plan`) and the same order as the ``magellanic_mosaic``
DAG, one task after the other through :func:`skyops.steps.runner.run_step` (so every task still
validates its parameters and writes ``result.json`` under ``workdir``). For a laptop, a test or a
benchmark; kred's command file, as a function.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from skyops.campaigns.magellanic import plan
from skyops.campaigns.magellanic.layout import KredTree
from skyops.campaigns.magellanic.params import MagellanicRunParams
from skyops.errors import ProcessingError
from skyops.steps.runner import StepResult, run_step

log = logging.getLogger(__name__)


def run_field(root: str | Path, run: MagellanicRunParams, workdir: str | Path, *,
              options: dict[str, dict[str, Any]] | None = None,
              on_result: Callable[[str, StepResult], None] | None = None) -> list[StepResult]:
    """Run ``run``'s stages on field ``run.field`` under the kred directory ``root``.

    ``options`` adds parameters per step name (``{"magellanic.mef_sum": {"clip": True}}``).
    Stops at the first failing task with a ProcessingError carrying its message.
    """
    root, workdir = Path(root), Path(workdir)
    opts = options or {}
    results: list[StepResult] = []
    counter = iter(range(1_000_000))

    def go(step: str, params: list[dict[str, Any]] | dict[str, Any] | None) -> None:
        for p in ([params] if isinstance(params, dict) else params or []):
            res = run_step(step, {**p, **opts.get(step, {})}, workdir / f"{next(counter):04d}_{step.split('.')[1]}")
            results.append(res)
            if on_result:
                on_result(step, res)
            if not res.ok:
                raise ProcessingError(f"{step} {p} failed: {res.error['message'] if res.error else 'no result'}")

    if run.runs("mefcheck") or run.runs("mefsum"):
        plan.check_tiles(run, KredTree(root, run.field))  # a bad tile name fails before any work
    go("magellanic.mef_check", plan.per_mef(run, root, "mefcheck"))
    go("magellanic.mef_sum", plan.per_mef(run, root, "mefsum"))
    if run.runs("mefsum"):
        go("magellanic.mef_tables", plan.base(run, root))
    go("magellanic.mef_prep", plan.per_mef(run, root, "mefprep"))
    go("magellanic.setup_tile", plan.single(run, root, "setuptile", tiles=run.tile_list))
    mosaics = plan.per_mosaic(run, root, bsub=False)
    go("magellanic.swarp_setup", mosaics)
    go("magellanic.swarp", mosaics)
    go("magellanic.find_overlaps", plan.single(run, root, "findoverlaps"))
    go("magellanic.back_stats", plan.per_batch(run, root))
    go("magellanic.back_calc", plan.single(run, root, "backcalc", nbatch=run.np))
    go("magellanic.back_sub", plan.per_mef(run, root, "backsub", tiles=run.tile_list))
    mosaics = plan.per_mosaic(run, root, bsub=True)
    go("magellanic.swarp_setup", mosaics)
    go("magellanic.swarp", mosaics)
    go("magellanic.swarp_eval", plan.single(run, root, "swarpeval", tiles=run.tile_list))
    log.info("field %s: %d tasks run under %s", run.field, len(results), root)
    return results
