"""``magellanic.mef_check`` (kred's MefCheck.py): the header problems of one MEF.

Headers only, no pixels: the primary keywords kred needs, every CCD's identity, WCS and
corner keywords, that each CCD agrees with the primary on filter and exposure time, that the
extension count matches ``NEXTEND``, and that the WCS puts the CCD centre where ``CENRA1``/
``CENDEC1`` say (within 1 arcsec). A bad MEF is *recorded*, not fatal: like kred's
``_mef_qual.tab`` the result is advisory and no later stage reads it. One row per MEF goes to
``Summary/<field>/<mef>.qual.tab``; ``magellanic.mef_tables`` gathers them into
``Summary/<field>_mef_qual.tab``.
"""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np

from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.layout import KredTree, mef_stem
from skyops.campaigns.magellanic.mef import CCD_KEYS, PRIMARY_KEYS, band_of, ccd_hdus, header_wcs, locate_mef
from skyops.campaigns.magellanic.tables import Tab, write_table
from skyops.steps.context import StepContext
from skyops.steps.registry import step

CENTRE_TOLERANCE_ARCSEC = 1.0


def header_problems(path: Path) -> tuple[dict, list[str]]:
    """(identity of the MEF, list of problems found in its headers)."""
    info = {"expnum": -1, "filter": "", "exptime": float("nan"), "nccd": 0}
    problems: list[str] = []
    try:
        fits = fitsio.FITS(str(path))
    except (OSError, ValueError) as exc:
        return info, [f"unreadable: {exc}"]
    with fits:
        h0 = fits[0].read_header()
        problems += [f"primary lacks {k}" for k in PRIMARY_KEYS if k not in h0]
        info.update(expnum=int(h0.get("EXPNUM", -1) or -1), filter=band_of(h0),
                    exptime=float(h0.get("EXPTIME", np.nan) or np.nan))
        hdus = list(ccd_hdus(fits))
        info["nccd"] = len(hdus)
        if "NEXTEND" in h0 and int(h0["NEXTEND"]) != len(fits) - 1:
            problems.append(f"NEXTEND={h0['NEXTEND']} but the file has {len(fits) - 1} extensions")
        if not hdus:
            problems.append("no CCD image extensions")
        for hdu in hdus:
            problems += _ccd_problems(hdu.read_header(), h0, hdu.get_extname() or f"HDU{hdu.get_extnum()}")
    return info, problems


def _ccd_problems(h: fitsio.FITSHDR, h0: fitsio.FITSHDR, ext: str) -> list[str]:
    out = [f"{ext}: lacks {k}" for k in CCD_KEYS if k not in h]
    if "DETPOS" in h and str(h["DETPOS"]).strip() != ext:
        out.append(f"{ext}: DETPOS {h['DETPOS']!r} differs from EXTNAME")
    for key in ("FILTER", "EXPTIME"):
        if key in h and key in h0 and str(h[key]).strip() != str(h0[key]).strip():
            out.append(f"{ext}: {key} {h[key]!r} differs from the primary's {h0[key]!r}")
    if not any(p.endswith(("CRVAL1", "CD1_1", "CTYPE1")) for p in out) and "CENRA1" in h and "CENDEC1" in h:
        try:
            nx, ny = int(h["NAXIS1"]), int(h["NAXIS2"])
            ra, dec = header_wcs(h).all_pix2world([(nx + 1) / 2.0], [(ny + 1) / 2.0], 1)
            dra = (ra[0] - float(h["CENRA1"])) * np.cos(np.radians(dec[0]))
            d = 3600.0 * np.hypot(dra, dec[0] - float(h["CENDEC1"]))
            if d > CENTRE_TOLERANCE_ARCSEC:
                out.append(f"{ext}: WCS centre is {d:.1f} arcsec from CENRA1/CENDEC1")
        except Exception as exc:  # noqa: BLE001 - any WCS failure is itself the problem to record
            out.append(f"{ext}: WCS does not evaluate ({type(exc).__name__}: {exc})")
    return out


@step("magellanic.mef_check", resources={"cpu": 0.2, "memory_mb": 256}, outputs=["kred_mef_qual_part"])
def mef_check(ctx: StepContext, *, root: str, field: str, mef: str) -> dict:
    """Check one MEF's headers; write its row of the field's ``_mef_qual.tab``."""
    tree = KredTree(Path(root), field)
    path = locate_mef(tree, mef)
    ctx.use(path, filetype="kred_mef")
    info, problems = header_problems(path)
    row = Tab.from_rows([(path.name, info["expnum"], info["filter"], info["exptime"], info["nccd"], len(problems),
                       int(not problems), "; ".join(problems))],
                       names=("mef", "expnum", "filter", "exptime", "nccd", "nproblems", "ok", "problems"))
    write_table(ctx, tree.mef_part(path, "qual"), row, "kred_mef_qual_part")
    FieldLog(tree).write("MefCheck", f"{mef_stem(path)}: {'OK' if not problems else '; '.join(problems)}")
    return {"mef": path.name, "problems": len(problems)}
