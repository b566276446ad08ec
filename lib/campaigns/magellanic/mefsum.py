"""``magellanic.mef_sum`` (kred's MefSum.py): the summary of every CCD of one MEF.

Per CCD: its corners and centre (RA/Dec), the background mode (:mod:`.hsm`: the half-sample
mode, refined), the raw half-sample mode, mean, median and standard deviation, a robust
per-pixel noise, and -- with ``clip`` -- the 3-sigma-clipped mean, median and standard
deviation (kred made clipping optional because it tripled the run time; here it reuses the
one sort and costs little). Saturated and non-finite pixels are left out. One table per MEF
goes to ``Summary/<field>/<mef>.det.tab``; ``magellanic.mef_tables`` gathers the field.

The mode is the number that matters: MefPrep subtracts it, and BackStats/BackCalc correct
what it gets wrong where diffuse emission fills a CCD.
"""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np

from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.hsm import pixel_stats
from skyops.campaigns.magellanic.layout import KredTree, mef_stem
from skyops.campaigns.magellanic.mef import Exposure, ccd_hdus, corners, header_wcs, locate_mef
from skyops.campaigns.magellanic.tables import Tab, write_table
from skyops.errors import ProcessingError
from skyops.steps.context import StepContext
from skyops.steps.registry import step

#: Columns of the per-CCD summary, in order.
DET_COLUMNS = ("mef", "expnum", "filter", "exptime", "mjd_obs", "magzero", "airmass", "ccdnum", "detpos", "nx", "ny",
               "saturate", "ra_cen", "dec_cen", "ra1", "dec1", "ra2", "dec2", "ra3", "dec3", "ra4", "dec4", "npix",
               "mode", "hsm", "mean", "median", "std", "sigma", "clip_mean", "clip_median", "clip_std")


def good_pixels(data: np.ndarray, header: fitsio.FITSHDR | dict) -> np.ndarray:
    """The CCD's pixels that carry sky: finite and below the saturation level."""
    ok = np.isfinite(data)
    sat = header.get("SATURATE")
    if sat is not None:
        ok &= data < float(sat)
    return ok


def summarize_mef(path: Path, *, clip: bool = False) -> Tab:
    """One row per CCD of the MEF at ``path`` (columns :data:`DET_COLUMNS`)."""
    exp = Exposure.read(path)
    rows = []
    with fitsio.FITS(str(path)) as fits:
        for hdu in ccd_hdus(fits):
            h = hdu.read_header()
            data = hdu.read()
            ok = good_pixels(data, h)
            if not ok.any():
                raise ProcessingError(f"{path.name} {hdu.get_extname()}: every pixel is saturated or not finite; "
                                      "the CCD cannot be summarised (MefCheck may say why)")
            st = pixel_stats(data[ok], clip=clip)
            ra, dec = corners(h)
            ny, nx = data.shape
            rac, decc = (float(h["CENRA1"]), float(h["CENDEC1"])) if "CENRA1" in h and "CENDEC1" in h else (
                tuple(float(v[0]) for v in header_wcs(h).all_pix2world([(nx + 1) / 2.0], [(ny + 1) / 2.0], 1)))
            rows.append((path.name, exp.expnum, exp.band, exp.exptime, exp.mjd_obs, exp.magzero, exp.airmass,
                         int(h.get("CCDNUM", hdu.get_extnum())), str(h.get("DETPOS", hdu.get_extname())).strip(),
                         nx, ny, float(h.get("SATURATE", np.inf)), rac, decc,
                         *[float(v) for pair in zip(ra, dec) for v in pair], st.npix, st.mode, st.hsm, st.mean,
                         st.median, st.std, st.sigma, st.clip_mean, st.clip_median, st.clip_std))
    if not rows:
        raise ProcessingError(f"{path}: no CCD image extensions to summarise; MefCheck lists its problems")
    return Tab.from_rows(rows, DET_COLUMNS)


@step("magellanic.mef_sum", resources={"cpu": 1, "memory_mb": 1024}, outputs=["kred_det_part"])
def mef_sum(ctx: StepContext, *, root: str, field: str, mef: str, clip: bool = False) -> dict:
    """Summarise every CCD of one MEF (mode, moments, corners) into ``Summary/<field>/<mef>.det.tab``."""
    tree = KredTree(Path(root), field)
    path = ctx.use(locate_mef(tree, mef), filetype="kred_mef")
    table = summarize_mef(path, clip=clip)
    write_table(ctx, tree.mef_part(path, "det"), table, "kred_det_part", meta={"clip": clip})
    modes = np.asarray(table["mode"])
    FieldLog(tree).write("MefSum", f"{mef_stem(path)}: {len(table)} CCDs, {table['filter'][0]} "
                                   f"{table['exptime'][0]:g}s, modes {modes.min():.2f}..{modes.max():.2f}"
                                   f"{' (sigma-clipped stats too)' if clip else ''}")
    return {"mef": path.name, "ccds": len(table), "mode_median": float(np.median(modes))}
