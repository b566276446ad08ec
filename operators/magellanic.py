"""The Magellanic mosaic campaign's Airflow shape: thin planning tasks around kred's stages.

Everything here is wiring. Which MEF, tile x filter x exposure time or batch of pairs each
mapped task gets is :mod:`skyops.campaigns.magellanic.plan` (directory listings and small YAML/JSON
files, so a planning task costs milliseconds); the science is the ``magellanic.*`` steps, each
run by a :class:`~skyops.operators.compute.ComputeOperator`. A stage the run leaves out plans
nothing (an empty map: Airflow skips it, visibly), and the stages after it read the field's
directories as the earlier run left them -- kred's "comment out what is done" command file.
"""
from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from skyops.campaigns.magellanic.config import MagellanicConfig
from skyops.operators.compute import ComputeOperator

#: Jinja for the run's validated params (pushed by the ``params`` task).
P = "ti.xcom_pull(task_ids='params')"
FIELD = "{{ " + P + "['field'] }}"
ROOT = "{{ " + P + "['root'] }}"
#: A field name (DECam_MEF/<field>) as the DAG param's pattern.
FIELD_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]{0,63}$"


def dag_params(cfg: MagellanicConfig) -> dict[str, Param]:
    """The DAG params, JSON-schema validated when a run is triggered (before any task runs)."""
    d = cfg.defaults
    return {
        "field": Param(d.field, type="string", pattern=FIELD_PATTERN,
                       description="the field (DECam_MEF/<field>), e.g. LMC_c42"),
        "tiles": Param(d.tiles, type=["string", "array"], items={"type": "string", "pattern": r"^T\d{1,3}$"},
                       description="'all', or tiles: 'T02', 'T01,T03' or [\"T01\", \"T03\"]"),
        "np": Param(d.np, type="integer", minimum=1, maximum=256,
                    description="-np: BackStats batches (parallel tasks over the overlapping pairs)"),
        "bsub": Param(d.bsub, type="boolean", description="-bsub: match backgrounds (FindOverlaps .. BackSub) "
                                                          "and SWarp the TileNN_b images too"),
        "stages": Param(d.stages, type=["string", "array"], items={"type": "string"},
                        description="stages to run: 'all', names ('backcalc,backsub'), 'backstats-' (from "
                                    "BackStats on), 'mefprep-swarp' (a range)"),
    }


@task(task_id="params")
def resolve_params(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate the run's params; add the kred top-level directory (``root``)."""
    from pathlib import Path

    from skyops.campaigns.magellanic.params import validate
    from skyops.config import load_campaign_config, platform_config

    run = validate(dict(params or {}))
    cfg = load_campaign_config("magellanic_mosaic", MagellanicConfig)
    root = cfg.workdir or str(Path(platform_config().workspace.persistent) / "kred")
    return {**run.as_dict(), "root": str(Path(root).resolve())}


def _run(run: dict[str, Any]):
    from skyops.campaigns.magellanic.params import validate

    return validate({k: v for k, v in run.items() if k != "root"})


@task(multiple_outputs=True)
def field_plan(run: dict[str, Any], config_query: dict[str, Any]) -> dict[str, Any]:
    """The staged field config: the MEFs to stage, and the run's tiles checked against it."""
    from skyops.campaigns.magellanic import plan
    from skyops.campaigns.magellanic.layout import KredTree, UnknownFieldError

    if not config_query.get("rows"):
        raise UnknownFieldError(f"field {run['field']!r}: the archive has no field config {run['field']}.yaml "
                                "(KRED/config); check the field name")
    r = _run(run)
    tree = KredTree(run["root"], r.field)
    summary = plan.field_summary(tree)
    return {"mef_files": summary["mef_files"], "tiles": plan.check_tiles(r, tree)}


@task(trigger_rule="none_failed")
def plan_mefs(run: dict[str, Any], stage: str, options: dict[str, Any], with_tiles: bool = False
              ) -> list[dict[str, Any]]:
    """One step-parameter set per MEF of the field (empty when ``stage`` is not run)."""
    from skyops.campaigns.magellanic import plan

    r = _run(run)
    extra = {"tiles": r.tile_list} if with_tiles else {}
    return plan.per_mef(r, run["root"], stage, **extra, **options)


@task(trigger_rule="none_failed")
def plan_single(run: dict[str, Any], stage: str, options: dict[str, Any], with_tiles: bool = False,
                with_nbatch: bool = False) -> dict[str, Any] | None:
    """The parameters of a once-per-field step, or None (a visible skip) when the run leaves it out."""
    from skyops.campaigns.magellanic import plan

    r = _run(run)
    extra: dict[str, Any] = dict(options)
    if with_tiles:
        extra["tiles"] = r.tile_list
    if with_nbatch:
        extra["nbatch"] = r.np
    return plan.single(r, run["root"], stage, **extra)


@task(trigger_rule="none_failed")
def plan_mosaics(run: dict[str, Any], bsub: bool, options: dict[str, Any]) -> list[dict[str, Any]]:
    """One parameter set per tile x filter x exposure time (from SetupTile's index)."""
    from skyops.campaigns.magellanic import plan

    return [{**p, **options} for p in plan.per_mosaic(_run(run), run["root"], bsub=bsub)]


@task(trigger_rule="none_failed")
def plan_batches(run: dict[str, Any], options: dict[str, Any]) -> list[dict[str, Any]]:
    """``np`` BackStats batches of the overlapping pairs."""
    from skyops.campaigns.magellanic import plan

    return [{**p, **options} for p in plan.per_batch(_run(run), run["root"])]


def compute(cfg: MagellanicConfig, step: str, **kw: Any) -> ComputeOperator:
    """A ComputeOperator for ``step`` with the campaign's executor, resources and retries."""
    s = cfg.step_settings(step)
    return ComputeOperator(
        step=step, backend=s.executor or cfg.executor, resources=s.resources.model_dump() if s.resources else None,
        unit=FIELD, campaign=cfg.campaign,
        **({"retries": s.retries} if s.retries is not None else {}), **kw)


#: Map-index labels shown in the UI, by what a stage is mapped over.
MEF_LABEL = "{{ task.step_params.mef }}"
MOSAIC_LABEL = "{{ task.step_params.tile }} {{ task.step_params.filter }} {{ task.step_params.exptime }}s"
BATCH_LABEL = "{{ task.step_params.batch + 1 }}/{{ task.step_params.nbatch }}"


def mapped(cfg: MagellanicConfig, step: str, task_id: str, params: Any, label: str, **kw: Any):
    """``step`` mapped over ``params`` (a list of parameter sets), one task instance each.

    ``label`` is the Jinja shown as the map index in the UI (:data:`MEF_LABEL` ...).
    """
    s = cfg.step_settings(step)
    return ComputeOperator.partial(
        task_id=task_id, step=step, backend=s.executor or cfg.executor,
        resources=s.resources.model_dump() if s.resources else None, unit=FIELD, campaign=cfg.campaign,
        max_active_tis_per_dagrun=cfg.max_parallel,
        map_index_template=label,
        **({"retries": s.retries} if s.retries is not None else {}), **kw,
    ).expand(step_params=params)
