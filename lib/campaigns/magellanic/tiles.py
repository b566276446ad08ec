"""``magellanic.setup_tile`` (kred's SetupTile.py): which CCD images each tile of a field needs.

From the field config's tiles (centre, side) and MefSum's CCD corners: every prepared CCD
whose footprint overlaps the tile's square. For each tile it writes

``Summary/<field>_TileNN.tab``      the tile's CCD images (file, exposure, CCD, filter, exptime)
``DECam_PREP/<field>/TileNN/``      a (relative) symbolic link to each of them in ``data/``

and updates ``Summary/<field>_tiles.json``, a small index (tile -> filter/exptime groups ->
images) from which the DAG plans SWarp without opening a FITS table. Links that no longer
belong to a tile are removed; regular files there are never touched.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from skyops.campaigns.magellanic.fieldconfig import FieldConfig, TileSpec, load_field_config
from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.layout import KredTree, exptime_tag, tile_dir_name
from skyops.campaigns.magellanic.skygeom import Boxes, corner_arrays
from skyops.campaigns.magellanic.tables import MissingStageOutputError, Tab, as_str, read_table, write_table
from skyops.fileio import temp_name
from skyops.steps.context import StepContext
from skyops.steps.registry import step

TILE_COLUMNS = ("image", "mef", "expnum", "ccdnum", "detpos", "filter", "exptime")


def group_key(filt: str, exptime: float) -> str:
    """``N662_400s``: the key of one filter x exposure-time group."""
    return f"{filt}_{exptime_tag(exptime)}"


def tile_members(det: Tab, tile: TileSpec, tree: KredTree, margin_arcsec: float = 0.0) -> Tab:
    """The CCD images (rows of the det table, as TILE_COLUMNS) whose footprint overlaps ``tile``."""
    ra, dec = corner_arrays(det)
    boxes = Boxes.from_corners(ra, dec, tile.ra, tile.dec)
    inside = boxes.intersects_square(0.0, 0.0, 0.5 * tile.size_deg + margin_arcsec / 3600.0)
    sel = det[inside]
    images = [tree.prep_image(m, d).name for m, d in zip(as_str(sel["mef"]), as_str(sel["detpos"]))]
    cols = [images, as_str(sel["mef"]), np.asarray(sel["expnum"], int), np.asarray(sel["ccdnum"], int),
            as_str(sel["detpos"]), as_str(sel["filter"]), np.asarray(sel["exptime"], float)]
    return Tab.from_columns(dict(zip(TILE_COLUMNS, cols))).sorted(["filter", "exptime", "expnum", "ccdnum"])


def link_tile(tree: KredTree, tile: str, images: list[str]) -> int:
    """Make ``DECam_PREP/<field>/TileNN/`` hold exactly a link per image (to ``../data/<image>``)."""
    d = tree.tile_links(tile)
    d.mkdir(parents=True, exist_ok=True)
    missing = [im for im in images if not (tree.data_dir / im).is_file()]
    if missing:
        raise MissingStageOutputError(f"tile {tile}: {len(missing)} prepared CCD image(s) missing from "
                                      f"{tree.data_dir} (e.g. {missing[0]}); run MefPrep on the field first")
    for p in d.iterdir():
        if p.is_symlink() and p.name not in images:
            p.unlink()
    for im in images:
        link, target = d / im, os.path.join("..", "data", im)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        tmp = temp_name(link)
        os.symlink(target, tmp)
        os.replace(tmp, link)  # atomic: a reader sees the old link or the new one
    return len(images)


def index_entry(tile: TileSpec, members: Tab) -> dict[str, Any]:
    """The tiles-index entry of one tile: its geometry and its images by filter/exptime group."""
    groups: dict[str, Any] = {}
    for row in members:
        g = groups.setdefault(group_key(str(row["filter"]), float(row["exptime"])),
                              {"filter": str(row["filter"]), "exptime": float(row["exptime"]), "images": [],
                               "mefs": []})
        g["images"].append(str(row["image"]))
        if str(row["mef"]) not in g["mefs"]:
            g["mefs"].append(str(row["mef"]))
    return {"dir": tile_dir_name(tile.name), "ra": tile.ra, "dec": tile.dec, "size_deg": tile.size_deg,
            "groups": groups}


def read_index(tree: KredTree) -> dict[str, Any]:
    """The field's tiles index (tile name -> entry); MissingStageOutputError if SetupTile has not run."""
    if not tree.tiles_index.is_file():
        raise MissingStageOutputError(f"{tree.tiles_index} does not exist: run SetupTile "
                                      "(magellanic.setup_tile) for this field first")
    return json.loads(tree.tiles_index.read_text())["tiles"]


@step("magellanic.setup_tile", resources={"cpu": 0.5, "memory_mb": 512},
      outputs=["kred_tile_table", "kred_tiles_index"])
def setup_tile(ctx: StepContext, *, root: str, field: str, tiles: list[str] | None = None,
               config: str | None = None, margin_arcsec: float = 0.0) -> dict:
    """Find the CCD images of each tile (all, or ``tiles``); write their tables and link directories."""
    tree = KredTree(Path(root), field)
    cfg: FieldConfig = load_field_config(tree, config)
    ctx.use(Path(config) if config else tree.config_path, filetype="kred_config")
    selected = cfg.select_tiles(tiles)
    det = read_table(tree.det_table, stage="MefSum (magellanic.mef_sum + mef_tables)", ctx=ctx,
                     filetype="kred_det_summary")
    index = {"format": "skyops-kred-tiles/1", "field": field, "tiles": {}}
    if tree.tiles_index.is_file():
        index["tiles"] = json.loads(tree.tiles_index.read_text()).get("tiles", {})
    counts = {}
    for t in selected:
        members = tile_members(det, t, tree, margin_arcsec)
        write_table(ctx, tree.tile_table(t.name), members, "kred_tile_table",
                    meta={"tile": t.name, "ra": t.ra, "dec": t.dec, "size_deg": t.size_deg})
        counts[t.name] = link_tile(tree, t.name, as_str(members["image"]))
        index["tiles"][t.name] = index_entry(t, members)
    with ctx.output(tree.tiles_index, filetype="kred_tiles_index") as tmp:
        tmp.write_text(json.dumps(index, indent=1))
    FieldLog(tree).write("SetupTile", ", ".join(f"{tile_dir_name(k)}: {v} CCD images" for k, v in counts.items()))
    return {"tiles": len(selected), "images": int(sum(counts.values()))}
