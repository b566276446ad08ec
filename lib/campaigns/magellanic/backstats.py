"""``magellanic.back_stats`` (kred's BackPrep.py + BackStats.py): background differences of overlapping pairs.

For each pair of overlapping CCD images (FindOverlaps), both are binned onto the field's coarse
grid (2 arcsec cells, :mod:`.coarse`) in memory, and the difference ``b - a`` over the cells both
cover is summarised by its mode (:func:`~.hsm.background_mode`: the half-sample mode, refined):
``delta`` estimates ``background_b - background_a``, the quantity BackCalc fits (the raw
half-sample mode is kept as ``hsm``, and the median as ``median``). The scene is the
same in both images (MefPrep put them on one zeropoint), so what remains is the background
difference plus noise, and the mode ignores the stars that a different seeing leaves behind.
Pairs with ``min_pixels`` or fewer common cells are kept in the table but not used (``used = 0``).

The pairs are split into ``nbatch`` contiguous batches (the DAG maps one task over each, kred's
``-np``); batch ``batch`` writes ``Summary/<field>_backstats_<batch>of<nbatch>.tab``. kred's BackPrep
first wrote every image's coarse reprojection to disk (about 420 GB for LMC_c42); here nothing
but that table is written, and the step reports the bytes it wrote and the peak memory its
binned images took.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from skyops.campaigns.magellanic.coarse import BinnedCache, CoarseGrid, difference, read_binned
from skyops.campaigns.magellanic.fieldconfig import load_field_config
from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.hsm import background_mode
from skyops.campaigns.magellanic.layout import KredTree
from skyops.campaigns.magellanic.tables import MissingStageOutputError, Tab, as_str, read_table, write_table
from skyops.errors import StepParameterError
from skyops.steps.context import StepContext
from skyops.steps.registry import step

GRID_ARCSEC = 2.0
MIN_PIXELS = 100
#: The mean-shift window of the difference's mode, in sigma. A difference has two like tails
#: (each image's stars under its own seeing), so a wide window costs no bias and brings the
#: estimate's noise within 15% of the mean's (1 sigma, right for an image's one-sided tail,
#: doubles it; the raw half-sample mode is 4x noisier than the mean).
DIFF_WINDOW = 3.0
STATS_COLUMNS = ("pair", "image_a", "image_b", "expnum_a", "ccdnum_a", "expnum_b", "ccdnum_b", "filter", "exptime",
                 "npix", "used", "delta", "hsm", "median", "sigma")


def batch_slice(n: int, batch: int, nbatch: int) -> slice:
    """Rows of batch ``batch`` of ``nbatch`` contiguous, near-equal batches of ``n`` rows."""
    if nbatch < 1 or not 0 <= batch < nbatch:
        raise StepParameterError(f"parameter 'batch': {batch} is not in 0..{nbatch - 1} (nbatch={nbatch}); "
                                 "batches are numbered from 0")
    edges = np.linspace(0, n, nbatch + 1).round().astype(int)
    return slice(int(edges[batch]), int(edges[batch + 1]))


def pair_stats(pairs: Tab, cache: BinnedCache, *, min_pixels: int = MIN_PIXELS) -> Tab:
    """The mode of ``b - a`` on the common coarse cells of every pair (STATS_COLUMNS)."""
    rows = []
    for p in pairs:
        d = difference(cache[str(p["image_a"])], cache[str(p["image_b"])])
        used = d.size > min_pixels
        if used:
            m = background_mode(d, window=DIFF_WINDOW)
            stats = (m.mode, m.hsm, float(np.median(d)), m.sigma)
        else:
            stats = (math.nan,) * 4
        rows.append((int(p["pair"]), str(p["image_a"]), str(p["image_b"]), int(p["expnum_a"]), int(p["ccdnum_a"]),
                     int(p["expnum_b"]), int(p["ccdnum_b"]), str(p["filter"]), float(p["exptime"]), int(d.size),
                     int(used), *stats))
    return Tab.from_rows(rows, STATS_COLUMNS, dtypes=("i8", "U64", "U64", "i8", "i8", "i8", "i8", "U16", "f8", "i8",
                                                     "i8", "f8", "f8", "f8", "f8"))


@step("magellanic.back_stats", resources={"cpu": 1, "memory_mb": 2048}, outputs=["kred_backstats"])
def back_stats(ctx: StepContext, *, root: str, field: str, batch: int = 0, nbatch: int = 1,
               grid_arcsec: float = GRID_ARCSEC, min_pixels: int = MIN_PIXELS, config: str | None = None) -> dict:
    """Measure the background difference of every overlapping pair in one batch, on the coarse grid."""
    tree = KredTree(Path(root), field)
    cfg = load_field_config(tree, config)
    pairs = read_table(tree.overlaps_table, stage="FindOverlaps (magellanic.find_overlaps)", ctx=ctx,
                       filetype="kred_overlaps")
    mine = pairs[batch_slice(len(pairs), batch, nbatch)]
    grid = CoarseGrid(cfg.center.ra, cfg.center.dec, grid_arcsec)

    def load(name: str):
        path = tree.data_dir / name
        if not path.is_file():
            raise MissingStageOutputError(f"{path} does not exist: run MefPrep on field {field} first")
        return read_binned(ctx.use(path, filetype="kred_prep_image"), grid)

    cache = BinnedCache(load)
    stats = pair_stats(mine, cache, min_pixels=min_pixels)
    out = tree.backstats_table(batch, nbatch)
    write_table(ctx, out, stats, "kred_backstats", meta={"grid_arcsec": grid_arcsec, "min_pixels": min_pixels,
                                                        "batch": batch, "nbatch": nbatch})
    used = int(np.sum(np.asarray(stats["used"]))) if len(stats) else 0
    written = out.stat().st_size
    FieldLog(tree).write("BackStats", f"batch {batch + 1}/{nbatch}: {len(stats)} pairs ({used} with > {min_pixels} "
                                      f"common {grid_arcsec:g}\" cells), {cache.loads} images binned in memory, "
                                      f"{written} bytes written")
    return {"pairs": len(stats), "used": used, "images_binned": cache.loads, "bytes_written": written,
            "binned_peak_bytes": cache.peak_bytes,
            "filters": sorted(set(as_str(stats["filter"]))) if len(stats) else []}
