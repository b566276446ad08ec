"""magellanic_mosaic: kred's DECam Magellanic Clouds emission-line mosaics of one field, per run.

kred's command file, as a DAG (params: ``field``, ``tiles``, ``np``, ``bsub``, ``stages``)::

    stage the field (its config, then its MEFs) into the kred directory
    MefCheck.py, MefSum.py          mapped over the MEF files, then the field's Summary tables
    MefPrep.py                      mapped over the exposures
    SetupTile.py                    once
    SwarpSetup.py + Swarp.py        mapped over tile x filter x exposure time
    FindOverlaps.py                 once
    BackPrep.py + BackStats.py      mapped over np batches of overlapping pairs (in memory)
    BackCalc.py                     once per field: the fan-in
    BackSub.py                      mapped over the exposures
    SwarpSetup.py + Swarp.py -bsub  mapped over tile x filter x exposure time, on TileNN_b
    SwarpEval.py                    once

``stages`` redoes any part, as commenting out lines of kred's command file did; ``bsub=false``
leaves out background matching. Nothing here reads a database or a file at parse time beyond
``configs/magellanic_mosaic.yaml``.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from skyops.campaigns.magellanic.config import MagellanicConfig
from skyops.config import load_campaign_config
from skyops.operators.desdm import DesdmQueryOperator
from skyops.operators.magellanic import (BATCH_LABEL, FIELD, MEF_LABEL, MOSAIC_LABEL, P, ROOT, compute, dag_params,
                                         field_plan, mapped, plan_batches, plan_mefs, plan_mosaics, plan_single,
                                         resolve_params)
from skyops.operators.stage import StageFilesOperator
from skyops.operators.verdict import add_verdict

cfg = load_campaign_config("magellanic_mosaic", MagellanicConfig)
opts = cfg.step_options()

with DAG(
    dag_id="magellanic_mosaic",
    description="kred: DECam Magellanic Clouds H-alpha/[SII] mosaics of one field, with background matching",
    schedule=None,
    start_date=pendulum.datetime(cfg.start_date.year, cfg.start_date.month, cfg.start_date.day, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    params=dag_params(cfg),
    default_args={"retries": cfg.retries, "retry_delay": timedelta(seconds=cfg.retry_delay_seconds)},
    tags=["skyops", "magellanic", "kred"],
) as dag:
    run = resolve_params()

    # -- the field's config, then its MEFs, from the archive into DECam_MEF/<field> and KRED/config
    q_config = DesdmQueryOperator(task_id="q_config", query="files_by_name", unit=FIELD,
                                  query_params={"names": ["{{ " + P + "['field'] }}.yaml"]})
    stage_config = StageFilesOperator(task_id="stage_config", manifest=q_config.output["manifest"], dest=ROOT,
                                      unit=FIELD)
    run >> q_config
    field = field_plan(run, q_config.output)
    stage_config >> field
    q_mefs = DesdmQueryOperator(task_id="q_mefs", query="files_by_name", unit=FIELD,
                                query_params={"names": field["mef_files"]})
    stage_mefs = StageFilesOperator(task_id="stage_mefs", manifest=q_mefs.output["manifest"], dest=ROOT, unit=FIELD)

    # -- MefCheck, MefSum (per MEF file) and the field's Summary tables
    p_check = plan_mefs.override(task_id="plan_mef_check")(run, "mefcheck", {})
    p_sum = plan_mefs.override(task_id="plan_mef_sum")(run, "mefsum", opts.get("magellanic.mef_sum", {}))
    stage_mefs >> [p_check, p_sum]
    mef_check = mapped(cfg, "magellanic.mef_check", "mef_check", p_check, MEF_LABEL)
    mef_sum = mapped(cfg, "magellanic.mef_sum", "mef_sum", p_sum, MEF_LABEL)
    p_tables = plan_single.override(task_id="plan_mef_tables")(run, "mefsum", {})
    [mef_check, mef_sum] >> p_tables
    mef_tables = compute(cfg, "magellanic.mef_tables", task_id="mef_tables", step_params=p_tables)

    # -- MefPrep (per exposure), SetupTile, SwarpSetup + Swarp (per tile x filter x exptime)
    p_prep = plan_mefs.override(task_id="plan_mef_prep")(run, "mefprep", opts.get("magellanic.mef_prep", {}))
    mef_tables >> p_prep
    mef_prep = mapped(cfg, "magellanic.mef_prep", "mef_prep", p_prep, MEF_LABEL)
    p_tile = plan_single.override(task_id="plan_setup_tile")(run, "setuptile", {}, with_tiles=True)
    mef_prep >> p_tile
    setup_tile = compute(cfg, "magellanic.setup_tile", task_id="setup_tile", step_params=p_tile)

    def swarps(bsub: bool):
        """SwarpSetup then Swarp over every tile x filter x exposure time (on TileNN_b with ``bsub``)."""
        sfx = "_b" if bsub else ""
        p_setup = plan_mosaics.override(task_id=f"plan_swarp_setup{sfx}")(
            run, bsub, opts.get("magellanic.swarp_setup", {}))
        p_run = plan_mosaics.override(task_id=f"plan_swarp{sfx}")(run, bsub, {})
        setup = mapped(cfg, "magellanic.swarp_setup", f"swarp_setup{sfx}", p_setup, MOSAIC_LABEL)
        setup >> p_run
        return [p_setup], mapped(cfg, "magellanic.swarp", f"swarp{sfx}", p_run, MOSAIC_LABEL)

    heads, swarp = swarps(bsub=False)
    setup_tile >> heads

    # -- background matching: FindOverlaps, BackStats (per batch of pairs), BackCalc, BackSub (per exposure)
    p_overlaps = plan_single.override(task_id="plan_find_overlaps")(run, "findoverlaps", {})
    mef_tables >> p_overlaps
    find_overlaps = compute(cfg, "magellanic.find_overlaps", task_id="find_overlaps", step_params=p_overlaps)
    p_stats = plan_batches.override(task_id="plan_back_stats")(run, opts.get("magellanic.back_stats", {}))
    [find_overlaps, mef_prep] >> p_stats
    back_stats = mapped(cfg, "magellanic.back_stats", "back_stats", p_stats, BATCH_LABEL)
    p_calc = plan_single.override(task_id="plan_back_calc")(run, "backcalc", {}, with_nbatch=True)
    back_stats >> p_calc
    back_calc = compute(cfg, "magellanic.back_calc", task_id="back_calc", step_params=p_calc)
    p_sub = plan_mefs.override(task_id="plan_back_sub")(run, "backsub", {}, with_tiles=True)
    [back_calc, setup_tile] >> p_sub
    back_sub = mapped(cfg, "magellanic.back_sub", "back_sub", p_sub, MEF_LABEL)
    heads_b, swarp_b = swarps(bsub=True)
    back_sub >> heads_b

    # -- SwarpEval: before/after previews of every mosaic
    p_eval = plan_single.override(task_id="plan_swarp_eval")(run, "swarpeval", {}, with_tiles=True)
    [swarp, swarp_b] >> p_eval
    compute(cfg, "magellanic.swarp_eval", task_id="swarp_eval", step_params=p_eval)
    add_verdict(dag)  # a failed task fails the run, whatever the last stages did
