"""The Balrog campaign's Airflow shape: one ``balrog_tile`` run per tile, blocks as tasks.

BalrogBase.py ran its blocks (the ``-m`` bitmask) one after another, bands through a Pool and
realizations in a loop. Here a ``plan`` task turns the run's params into each block's units
(:func:`skyops.campaigns.balrog.plan.plan_tile`), and every block is one task, mapped over its
bands, realizations or (realization, band) pairs. A block the mode leaves out maps over nothing
and shows as skipped; blocks after it run on what an earlier run left (``none_failed``).

Everything here is wiring; what each unit does is :mod:`skyops.campaigns.balrog`.
"""
from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from skyops.campaigns.balrog.config import BalrogTileConfig
from skyops.operators.compute import ComputeOperator

#: The measurement choices (``measure`` param).
MEASURE_CHOICES = ["sof", "mof", "metacal"]
#: A DES tile name.
TILE_PATTERN = r"^DES\d{4}[+-]\d{4}$"
#: Jinja for the run's validated params (pushed by the ``params`` task).
P = "ti.xcom_pull(task_ids='params')"
#: Task id -> (step, what its map index shows) of each block task, in pipeline order.
BLOCK_TASKS: dict[str, tuple[str, str | None]] = {
    "prep": ("balrog.prep", None),
    "coadd_band": ("balrog.coadd_band", "{{ task.step_params['band'] }}"),
    "detect": ("balrog.detect", None),
    "meds": ("balrog.meds", "{{ task.step_params['bands'][0] }}"),
    "inject": ("balrog.inject", "r{{ task.step_params['realization'] }}"),
    "coadd_band_r": ("balrog.coadd_band",
                     "r{{ task.step_params['realization'] }} {{ task.step_params['band'] }}"),
    "detect_r": ("balrog.detect", "r{{ task.step_params['realization'] }}"),
    "match_r": ("balrog.match", "r{{ task.step_params['realization'] }}"),
    "meds_r": ("balrog.meds", "r{{ task.step_params['realization'] }} {{ task.step_params['bands'][0] }}"),
    "measure": ("balrog.measure", "{{ task.step_params['output'].split('_')[1] }}"),
}
#: Blocks that are one task (not mapped): their plan entry is params or None.
SINGLE = ("prep", "detect")
#: task -> the tasks it waits for.
EDGES: dict[str, tuple[str, ...]] = {
    "coadd_band": ("prep",), "detect": ("coadd_band",), "meds": ("detect",), "inject": ("prep",),
    "coadd_band_r": ("inject",), "detect_r": ("coadd_band_r",), "match_r": ("detect_r", "detect"),
    "meds_r": ("detect_r",), "measure": ("meds", "meds_r"),
}


def dag_params(cfg: BalrogTileConfig) -> dict[str, Param]:
    """balrog_tile's params, with BalrogBase.py's flags; JSON-schema validated at trigger time."""
    d = cfg.defaults
    return {
        "tile": Param(None, type="string", pattern=TILE_PATTERN, description="-t the DES tile, e.g. DES0239+0216"),
        "medsconf": Param(d.medsconf, type="string", description="-c the medsconf under configs/balrog/"),
        "galsim_config": Param(d.galsim_config, type="string", description="-g the injection config"),
        "ncpu": Param(d.ncpu, type="integer", minimum=1, description="-n processes per step"),
        "mode": Param(d.mode, type="integer", minimum=1, maximum=63,
                      description="-m blocks: 1 prep, 2 coadd, 4 MEDS, 8 inject, 16 coadd/realization, "
                                  "32 MEDS/realization (63 all)"),
        "realizations": Param(d.realizations, type="integer", minimum=0, description="number of realizations"),
        "measure": Param(list(d.measure), type="array", items={"type": "string", "enum": MEASURE_CHOICES},
                         description="measurements on the MEDS files: sof, mof, metacal"),
        "bands": Param([], type="array", items={"type": "string"}, description="bands (default: the medsconf's)"),
    }


@task(task_id="params")
def resolve_params(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate the run's params; the tile against COADDTILE_GEOM (fails naming the param)."""
    from skyops.archive import ArchiveDB
    from skyops.campaigns.balrog.params import validate

    raw = {k: v for k, v in (params or {}).items() if v not in (None, [], "")}
    db = ArchiveDB.from_config()
    try:
        return validate(raw, geometry=db.tile_geometry).as_dict()
    finally:
        db.dispose()


@task(task_id="plan", multiple_outputs=True)
def plan(run: dict[str, Any]) -> dict[str, Any]:
    """Each block task's step params: a list per mapped block, params or None for the others."""
    from skyops.campaigns.balrog.plan import block_params
    from skyops.campaigns.balrog.params import validate
    from skyops.config import load_campaign_config

    cfg = load_campaign_config("balrog_tile", BalrogTileConfig)
    return block_params(validate(run), cfg.meds_dir)


@task
def units(block_units: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """One mapped block's units (Airflow maps only over a task's return value, not an XCom key)."""
    return list(block_units or [])


def _compute(cfg: BalrogTileConfig, task_id: str, plan_out: Any, **kw: Any) -> Any:
    step, label = BLOCK_TASKS[task_id]
    s = cfg.step_settings(step)
    common = dict(
        task_id=task_id, step=step, backend=s.executor or cfg.executor,
        resources=s.resources.model_dump() if s.resources else None,
        unit="{{ " + P + "['tile'] }}", campaign=cfg.campaign, trigger_rule="none_failed",
        **({"retries": s.retries} if s.retries is not None else {}), **({"pool": s.pool} if s.pool else {}), **kw)
    if task_id in SINGLE:
        return ComputeOperator(step_params=plan_out[task_id], **common)
    listed = units.override(task_id=f"units_{task_id}")(plan_out[task_id])
    return ComputeOperator.partial(map_index_template=label, **common).expand(step_params=listed)


def tile_tasks(cfg: BalrogTileConfig) -> dict[str, Any]:
    """Build the balrog_tile tasks inside the current DAG; returns them by task id."""
    run = resolve_params()
    plan_out = plan(run)
    tasks = {tid: _compute(cfg, tid, plan_out) for tid in BLOCK_TASKS}
    for tid, ups in EDGES.items():
        for up in ups:
            tasks[up] >> tasks[tid]
    return tasks


# --------------------------------------------------------------------------- balrog_campaign

def campaign_params(cfg: BalrogTileConfig) -> dict[str, Param]:
    """balrog_campaign's params: which tiles, whether to redo complete ones, and the tile params."""
    tile_params = dag_params(cfg)
    tile_params.pop("tile")
    num = ["number", "null"]
    return {
        "tiles": Param([], type="array", items={"type": "string", "pattern": TILE_PATTERN},
                       description="tiles to run, e.g. [\"DES0239+0216\"]"),
        "tiles_file": Param("", type="string", description="a tile list under configs/ (one tile per line)"),
        "ra_min": Param(None, type=num, description="RA/Dec box (deg) of tiles from COADDTILE_GEOM"),
        "ra_max": Param(None, type=num), "dec_min": Param(None, type=num), "dec_max": Param(None, type=num),
        "force": Param(False, type="boolean", description="re-run tiles that provenance says are complete"),
        **tile_params,
    }


@task(task_id="select_tiles")
def select_campaign_tiles(params: dict[str, Any] | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
    """The tiles to run (complete ones skipped unless ``force``), as TriggerDagRun kwargs."""
    from skyops.archive import ArchiveDB
    from skyops.campaigns.balrog.params import validate
    from skyops.campaigns.balrog.tilelist import (TILE_CAMPAIGN, Box, archive_box_query, resolve_tiles, run_id_for,
                                                  select_tiles)
    from skyops.provenance import ProvenanceStore

    p = dict(params or {})
    db = ArchiveDB.from_config()
    try:
        tiles = resolve_tiles(p.get("tiles") or [], p.get("tiles_file") or None, Box.from_params(p),
                              archive_box_query(db))
        for t in tiles:  # every tile known to the archive before any run starts
            db.tile_geometry(t)
    finally:
        db.dispose()
    tile_conf = {k: p[k] for k in ("medsconf", "galsim_config", "ncpu", "mode", "realizations", "measure", "bands")
                 if k in p}
    validate({"tile": tiles[0], **{k: v for k, v in tile_conf.items() if v not in (None, [], "")}})
    with ProvenanceStore.from_config() as store:
        status = store.unit_status(TILE_CAMPAIGN, tiles)
    todo, done = select_tiles(tiles, status, bool(p.get("force")))
    print(f"{len(tiles)} tiles selected; {len(done)} already complete (skipped): {', '.join(done) or '-'}; "
          f"running {len(todo)}: {', '.join(todo) or '-'}")
    stamp = (run_id or "manual").split("__")[-1]
    return [{"trigger_run_id": run_id_for(t, stamp), "conf": {"tile": t, **tile_conf}} for t in todo]


@task(task_id="report", trigger_rule="all_done")
def campaign_report(params: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Per tile: done, failed, running or not started, from provenance (as ``skyops campaign status``)."""
    from skyops.archive import ArchiveDB
    from skyops.campaigns.balrog.tilelist import TILE_CAMPAIGN, Box, archive_box_query, report, resolve_tiles
    from skyops.provenance import ProvenanceStore

    p = dict(params or {})
    db = ArchiveDB.from_config()
    try:
        tiles = resolve_tiles(p.get("tiles") or [], p.get("tiles_file") or None, Box.from_params(p),
                              archive_box_query(db))
    finally:
        db.dispose()
    with ProvenanceStore.from_config() as store:
        out = report(tiles, store.unit_status(TILE_CAMPAIGN, tiles))
    for state, names in out.items():
        print(f"{state:12s} {len(names):5d}  {' '.join(names)}")
    if out["failed"]:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{len(out['failed'])} of {len(tiles)} tiles failed: {', '.join(out['failed'])}")
    return out


def campaign_tasks(cfg: BalrogTileConfig) -> None:
    """Build the balrog_campaign tasks inside the current DAG."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    selected = select_campaign_tiles()
    tiles = TriggerDagRunOperator.partial(
        task_id="tile", trigger_dag_id="balrog_tile", wait_for_completion=True, deferrable=True,
        poke_interval=15, allowed_states=["success"], failed_states=["failed"],
        max_active_tis_per_dagrun=cfg.max_active_tiles, retries=0,
        map_index_template="{{ task.conf['tile'] }}",
    ).expand_kwargs(selected)
    tiles >> campaign_report()
