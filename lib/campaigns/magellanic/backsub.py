"""``magellanic.back_sub`` (kred's BackSub.py): one exposure's images with BackCalc's offsets removed.

For every CCD image of the exposure and every tile that links it (``DECam_PREP/<field>/TileNN``),
the image minus its offset is written to ``DECam_PREP/<field>/TileNN_b/`` under the same name
(header ``KBOFF`` = the offset). Mapped over exposures, each task writes only its own exposure's
files, so parallel tasks never touch one file. An image without overlapping pairs has offset 0
and is copied unchanged, so that every ``TileNN_b`` is complete for SWarp.
"""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np

from skyops.campaigns.magellanic.fieldconfig import load_field_config
from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.layout import KredTree, mef_stem
from skyops.campaigns.magellanic.mef import locate_mef
from skyops.campaigns.magellanic.tables import MissingStageOutputError, as_str, read_table
from skyops.steps.context import StepContext
from skyops.steps.registry import step


@step("magellanic.back_sub", resources={"cpu": 0.5, "memory_mb": 1024}, outputs=[])
def back_sub(ctx: StepContext, *, root: str, field: str, mef: str, tiles: list[str] | None = None,
             config: str | None = None) -> dict:
    """Subtract BackCalc's offsets from one exposure's CCD images, into every ``TileNN_b`` that needs them."""
    tree = KredTree(Path(root), field)
    path = locate_mef(tree, mef)
    cfg = load_field_config(tree, config)
    calc = read_table(tree.backcalc_table, stage="BackCalc (magellanic.back_calc)", ctx=ctx, filetype="kred_backcalc")
    mine = calc[np.asarray(as_str(calc["mef"])) == path.name]
    if len(mine) == 0:
        raise MissingStageOutputError(f"{tree.backcalc_table} has no images of {path.name}: BackCalc ran before "
                                      "this exposure was summarised; rerun from MefSum")
    offsets = dict(zip(as_str(mine["image"]), np.asarray(mine["offset"], float)))
    written = 0
    for t in cfg.select_tiles(tiles):
        links = tree.tile_links(t.name)
        for image, off in offsets.items():
            src = links / image
            if not src.exists():
                continue  # this CCD is not part of this tile
            data, h = fitsio.read(str(ctx.use(src, filetype="kred_prep_image")), header=True)
            h.add_record({"name": "KBOFF", "value": float(off), "comment": "BackCalc offset subtracted"})
            if "SATURATE" in h:
                h.add_record({"name": "SATURATE", "value": float(h["SATURATE"]) - float(off)})
            with ctx.output(tree.tile_links(t.name, bsub=True) / image, filetype="kred_bsub_image") as tmp:
                fitsio.write(str(tmp), (data - np.float32(off)).astype(np.float32), header=h, clobber=True)
            written += 1
    FieldLog(tree).write("BackSub", f"{mef_stem(path)}: {len(offsets)} CCDs, offsets "
                                    f"{min(offsets.values()):+.4g}..{max(offsets.values()):+.4g}, "
                                    f"{written} tile images written")
    return {"mef": path.name, "images_written": written}
