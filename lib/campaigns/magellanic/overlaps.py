"""``magellanic.find_overlaps`` (kred's FindOverlaps.py): the overlapping CCD pairs of a field.

From MefSum's corners (the CP's ``COR*`` keywords) alone, no pixels: two CCD images overlap
when their boxes in the tangent plane about the field centre intersect. As in kred only pairs
with the same filter and exposure time count (their backgrounds are comparable), and CCDs of one
exposure never overlap each other. Candidates come from a k-d tree of the box centres, so a field
of 10,000 images costs a fraction of a second, not 50 million box tests.

``Summary/<field>_overlaps.tab``: one row per pair (``image_a`` < ``image_b`` by name) with the
two images, their exposures and CCDs, filter, exposure time, and the overlap box's centre and
area (arcsec^2).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from skyops.campaigns.magellanic.fieldconfig import load_field_config
from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.layout import KredTree
from skyops.campaigns.magellanic.skygeom import Boxes, corner_arrays, inverse_gnomonic
from skyops.campaigns.magellanic.tables import Tab, as_str, read_table, write_table
from skyops.steps.context import StepContext
from skyops.steps.registry import step

PAIR_COLUMNS = ("pair", "image_a", "image_b", "expnum_a", "ccdnum_a", "expnum_b", "ccdnum_b", "filter", "exptime",
                "ra", "dec", "area_arcsec2")
PAIR_DTYPES = ("i8", "U64", "U64", "i8", "i8", "i8", "i8", "U16", "f8", "f8", "f8", "f8")


def find_pairs(det: Tab, ra0: float, dec0: float, images: list[str], *, min_area_arcsec2: float = 0.0) -> Tab:
    """The overlapping pairs among the CCDs of ``det`` (``images``: each row's image name)."""
    ra, dec = corner_arrays(det)
    boxes = Boxes.from_corners(ra, dec, ra0, dec0)
    n = len(boxes)
    if n < 2:
        return Tab.from_rows([], PAIR_COLUMNS, dtypes=PAIR_DTYPES)
    half_diag = 0.5 * np.hypot(boxes.x1 - boxes.x0, boxes.y1 - boxes.y0)
    pairs = cKDTree(boxes.centres).query_pairs(r=2.0 * float(half_diag.max()), output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    filt = np.asarray(as_str(det["filter"]))
    exptime, expnum = np.asarray(det["exptime"], float), np.asarray(det["expnum"], int)
    keep = (filt[i] == filt[j]) & (exptime[i] == exptime[j]) & (expnum[i] != expnum[j])
    i, j = i[keep], j[keep]
    w, h, centre = boxes.overlap(i, j)
    area = np.clip(w, 0, None) * np.clip(h, 0, None) * 3600.0**2
    keep = (w > 0) & (h > 0) & (area > min_area_arcsec2)
    i, j, area, centre = i[keep], j[keep], area[keep], centre[keep]
    names = np.asarray(images)
    swap = names[i] > names[j]
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    order = np.lexsort((names[j], names[i]))
    i, j, area, centre = i[order], j[order], area[order], centre[order]
    cra, cdec = inverse_gnomonic(centre[:, 0], centre[:, 1], ra0, dec0)
    ccd = np.asarray(det["ccdnum"], int)
    cols = [np.arange(len(i)), names[i], names[j], expnum[i], ccd[i], expnum[j], ccd[j], filt[i], exptime[i],
            cra, cdec, area]
    if not len(i):
        return Tab.from_rows([], PAIR_COLUMNS, dtypes=PAIR_DTYPES)
    return Tab.from_columns(dict(zip(PAIR_COLUMNS, cols)))


@step("magellanic.find_overlaps", resources={"cpu": 0.5, "memory_mb": 512}, outputs=["kred_overlaps"])
def find_overlaps(ctx: StepContext, *, root: str, field: str, min_area_arcsec2: float = 0.0,
                  config: str | None = None) -> dict:
    """List the field's overlapping CCD pairs of the same filter and exposure time."""
    tree = KredTree(Path(root), field)
    cfg = load_field_config(tree, config)
    det = read_table(tree.det_table, stage="MefSum (magellanic.mef_sum + mef_tables)", ctx=ctx,
                     filetype="kred_det_summary")
    images = [tree.prep_image(m, d).name for m, d in zip(as_str(det["mef"]), as_str(det["detpos"]))]
    pairs = find_pairs(det, cfg.center.ra, cfg.center.dec, images, min_area_arcsec2=min_area_arcsec2)
    write_table(ctx, tree.overlaps_table, pairs, "kred_overlaps")
    groups = len(set(zip(as_str(pairs["filter"]), np.asarray(pairs["exptime"], float))))
    FieldLog(tree).write("FindOverlaps", f"{len(pairs)} overlapping pairs among {len(det)} CCD images "
                                         f"in {groups} filter/exptime groups")
    return {"pairs": len(pairs), "images": len(det), "groups": groups}
