"""What each mapped kred stage runs on: the campaign's fan-out, as plain, cheap functions.

The DAG's planning tasks and the local runner (:mod:`.pipeline`) call these to turn a run's
parameters and the field's directories into one parameter set per task: one per MEF file
(MefCheck, MefSum, MefPrep, BackSub), one per tile x filter x exposure time (SwarpSetup, Swarp),
one per batch of pairs (BackStats). They read directory listings, the field config (YAML) and
SetupTile's JSON index -- never a FITS file or an astropy table -- so planning costs milliseconds.
A stage the run does not include plans nothing (an empty list: Airflow skips the mapped task).
No Airflow here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from skyops.campaigns.magellanic.layout import KredTree
from skyops.campaigns.magellanic.params import MagellanicRunParams
from skyops.campaigns.magellanic.tables import MissingStageOutputError


def base(run: MagellanicRunParams, root: str | Path) -> dict[str, Any]:
    return {"root": str(root), "field": run.field}


def field_summary(tree: KredTree) -> dict[str, Any]:
    """The field config's tiles, MEF names, filters and exposure times (plain YAML, no validation cost)."""
    if not tree.config_path.is_file():
        from skyops.campaigns.magellanic.fieldconfig import load_field_config

        load_field_config(tree)  # raises UnknownFieldError naming the field and what exists
    doc = yaml.safe_load(tree.config_path.read_text())
    return {"tiles": [t["name"] for t in doc.get("tiles", [])], "mef_files": list(doc.get("mef_files", [])),
            "filters": list(doc.get("filters", [])), "exptimes": list(doc.get("exptimes", []))}


def check_tiles(run: MagellanicRunParams, tree: KredTree) -> list[str]:
    """The run's tiles (all when none were named), each checked against the field config."""
    from skyops.campaigns.magellanic.fieldconfig import load_field_config

    return [t.name for t in load_field_config(tree).select_tiles(run.tile_list)]


def per_mef(run: MagellanicRunParams, root: str | Path, stage: str, **extra: Any) -> list[dict[str, Any]]:
    """One parameter set per MEF in ``DECam_MEF/<field>/`` (empty if ``stage`` is not run)."""
    if not run.runs(stage):
        return []
    tree = KredTree(Path(root), run.field)
    mefs = tree.mef_files()
    if not mefs:
        raise MissingStageOutputError(f"field {run.field}: no MEFs in {tree.mef_dir}; stage the field first")
    return [{**base(run, root), "mef": p.name, **extra} for p in mefs]


def per_mosaic(run: MagellanicRunParams, root: str | Path, *, bsub: bool) -> list[dict[str, Any]]:
    """One parameter set per tile x filter x exposure time with images (from SetupTile's index)."""
    if not run.runs("swarp_b" if bsub else "swarp"):
        return []
    tree = KredTree(Path(root), run.field)
    if not tree.tiles_index.is_file():
        raise MissingStageOutputError(f"{tree.tiles_index} does not exist: run SetupTile for field {run.field} "
                                      "first (include 'setuptile' in the stages)")
    index = json.loads(tree.tiles_index.read_text())["tiles"]
    tiles = list(run.tiles) or sorted(index)
    missing = [t for t in tiles if t not in index]
    if missing:
        raise MissingStageOutputError(f"SetupTile has not set up tile(s) {', '.join(missing)} of field {run.field}; "
                                      "run it for them first")
    out = []
    for t in tiles:
        for key in sorted(index[t]["groups"]):
            g = index[t]["groups"][key]
            out.append({**base(run, root), "tile": t, "filter": g["filter"], "exptime": g["exptime"], "bsub": bsub})
    return out


def per_batch(run: MagellanicRunParams, root: str | Path) -> list[dict[str, Any]]:
    """``np`` BackStats batches (each step picks its share of the overlaps table itself)."""
    if not run.runs("backstats"):
        return []
    return [{**base(run, root), "batch": k, "nbatch": run.np} for k in range(run.np)]


def single(run: MagellanicRunParams, root: str | Path, stage: str, **extra: Any) -> dict[str, Any] | None:
    """The parameters of a once-per-field stage, or None when the run skips it."""
    return {**base(run, root), **extra} if run.runs(stage) else None
