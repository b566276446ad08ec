"""``magellanic.mef_prep`` (kred's MefPrep.py): one exposure's CCDs, rescaled and background-subtracted.

Every CCD of the MEF becomes ``DECam_PREP/<field>/data/<mef>_<DETPOS>.fits``:
``(counts - background) * 10**(0.4 (zeropoint - MAGZERO))``, so every image of the field is on
one photometric zeropoint (``MAGZERO`` in the output header) and the same emission has the same
value in every exposure, whatever its exposure time, airmass or transparency.

The background (``background``), from MefSum's modes:

``exposure``  (kred's default) one value for every CCD of the exposure: the median of its CCDs'
              modes -- robust to a CCD filled with emission, but blind to the sky's gradient
``ccd``       each CCD's own mode
``none``      nothing subtracted

The header keeps the CCD's WCS and corners and records what was done: ``KSCALE`` (the factor),
``KBKG`` (the background, input counts), ``KBKGTYPE`` and ``MEFFILE``.
"""
from __future__ import annotations

from pathlib import Path
import fitsio
import numpy as np

from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.layout import KredTree, mef_stem
from skyops.campaigns.magellanic.mef import WCS_KEYS, Exposure, ccd_hdus, locate_mef, read_primary
from skyops.campaigns.magellanic.tables import read_table
from skyops.errors import ProcessingError, StepParameterError
from skyops.steps.context import StepContext
from skyops.steps.registry import step

DEFAULT_ZEROPOINT = 30.0
BACKGROUNDS = ("exposure", "ccd", "none")
COPY_KEYS = WCS_KEYS + ("CCDNUM", "DETPOS", "CENRA1", "CENDEC1") + tuple(
    f"COR{i}{c}1" for i in range(1, 5) for c in ("RA", "DEC"))


def backgrounds(det_rows: dict[str, float], method: str) -> dict[str, float]:
    """Background per DETPOS from the CCDs' modes (``det_rows``: DETPOS -> mode)."""
    if method == "none":
        return {d: 0.0 for d in det_rows}
    if method == "ccd":
        return dict(det_rows)
    level = float(np.median(list(det_rows.values())))
    return {d: level for d in det_rows}


def prep_header(h: fitsio.FITSHDR, exp: Exposure, *, scale: float, bkg: float, method: str,
                zeropoint: float) -> list[dict]:
    """The output header: the CCD's WCS and identity, the exposure's, and what MefPrep did."""
    cards = [{"name": k, "value": h[k]} for k in COPY_KEYS if k in h]
    sat = float(h.get("SATURATE", np.inf))
    gain = float(h.get("GAIN", 1.0))
    cards += [
        {"name": "EXPNUM", "value": exp.expnum}, {"name": "FILTER", "value": exp.band},
        {"name": "EXPTIME", "value": exp.exptime, "comment": "[s]"}, {"name": "MJD-OBS", "value": exp.mjd_obs},
        {"name": "AIRMASS", "value": exp.airmass},
        {"name": "MAGZERO", "value": zeropoint, "comment": "[mag] common zeropoint after KSCALE"},
        {"name": "GAIN", "value": gain / scale, "comment": "[e-/unit] after rescaling"},
        {"name": "SATURATE", "value": (sat - bkg) * scale if np.isfinite(sat) else 1e30,
         "comment": "saturation after rescaling"},
        {"name": "KSCALE", "value": scale, "comment": "10**(0.4 (MAGZERO - MEF MAGZERO))"},
        {"name": "KBKG", "value": bkg, "comment": "[counts] background subtracted before scaling"},
        {"name": "KBKGTYPE", "value": method, "comment": "MefPrep background: exposure, ccd or none"},
        {"name": "MEFFILE", "value": exp.path.name},
    ]
    return cards


@step("magellanic.mef_prep", resources={"cpu": 1, "memory_mb": 1024}, outputs=["kred_prep_image"])
def mef_prep(ctx: StepContext, *, root: str, field: str, mef: str, zeropoint: float = DEFAULT_ZEROPOINT,
             background: str = "exposure") -> dict:
    """Rescale one exposure's CCDs to ``zeropoint`` and subtract its background into ``DECam_PREP``."""
    if background not in BACKGROUNDS:
        raise StepParameterError(f"parameter 'background': {background!r} is not one of {', '.join(BACKGROUNDS)}")
    tree = KredTree(Path(root), field)
    path = ctx.use(locate_mef(tree, mef), filetype="kred_mef")
    det = read_table(tree.det_table, stage="MefSum (magellanic.mef_sum + mef_tables)", ctx=ctx,
                     filetype="kred_det_summary")
    mine = det[det["mef"] == path.name]
    if len(mine) == 0:
        raise ProcessingError(f"{tree.det_table} has no rows for {path.name}: MefSum has not summarised it; "
                              "rerun MefSum on the field")
    exp = Exposure.read(path, read_primary(path))
    bkg = backgrounds({str(r["detpos"]): float(r["mode"]) for r in mine}, background)
    scale = float(10.0 ** (0.4 * (zeropoint - exp.magzero)))
    n = 0
    with fitsio.FITS(str(path)) as fits:
        for hdu in ccd_hdus(fits):
            h = hdu.read_header()
            detpos = str(h.get("DETPOS", hdu.get_extname())).strip()
            if detpos not in bkg:
                raise ProcessingError(f"{path.name} {detpos}: not in MefSum's table; rerun MefSum on this MEF")
            data = (hdu.read().astype(np.float32) - np.float32(bkg[detpos])) * np.float32(scale)
            header = prep_header(h, exp, scale=scale, bkg=bkg[detpos], method=background, zeropoint=zeropoint)
            with ctx.output(tree.prep_image(path, detpos), filetype="kred_prep_image") as tmp:
                fitsio.write(str(tmp), data, header=header, clobber=True)
            n += 1
    levels = sorted(set(round(v, 2) for v in bkg.values()))
    FieldLog(tree).write("MefPrep", f"{mef_stem(path)}: {n} CCDs -> {tree.data_dir.relative_to(tree.root)}, scale "
                                    f"{scale:.5g} to ZP {zeropoint:g}, background ({background}) "
                                    f"{', '.join(f'{v:g}' for v in levels[:3])}{' ...' if len(levels) > 3 else ''}")
    return {"mef": path.name, "ccds": n, "scale": scale, "background": float(np.median(list(bkg.values())))}
