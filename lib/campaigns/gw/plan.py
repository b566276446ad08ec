"""Which files each CCD's task gets: the GW campaign's fan-out, as plain functions.

The DAG queries the archive (raw exposure, the night's calibrations, the reference
catalog, the templates) and stages everything into one folder, keeping the archive's
relative layout; these functions turn those manifests into one parameter set per CCD,
keyed ``c01`` ... ``c62``. A CCD that was not selected (``-c``) or has no input maps to
None, which the operator turns into a visible skip. No Airflow here: the same planning
serves a Condor DAGMan file.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from skyops.campaigns.gw.params import DEAD_CCDS, DEFAULT_CCDS, GWRunParams
from skyops.errors import InputError
from skyops.manifest import Manifest

log = logging.getLogger(__name__)

#: The CCDs that get a task in a DAG (2 and 61 are dead on DECam and never processed).
TASK_CCDS = DEFAULT_CCDS


def ccd_key(ccd: int) -> str:
    return f"c{int(ccd):02d}"


def staged(dest: str | Path, rec: dict[str, Any]) -> str:
    """Where staging put a manifest row: ``dest/<path>/<filename><compression>``."""
    return str(Path(dest) / Manifest.relpath(rec))


def se_inputs(dest: str | Path, raw: Manifest, calibrations: Manifest, refcat: Manifest,
              params: GWRunParams, expnum: int) -> dict[str, dict[str, Any] | None]:
    """Parameters of ``gw.se_ccd`` for every task CCD of exposure ``expnum`` (None = skip)."""
    raws = [r for r in raw.records() if int(r["expnum"]) == int(expnum)]
    if len(raws) != 1:
        raise InputError(f"exposure {expnum}: expected one raw file in the archive, found {len(raws)}; "
                         "check the expnum (-E) and that the exposure has been ingested")
    refs = list(refcat.records())
    if not refs:
        raise InputError("no reference catalog (CATALOG filetype cal_refcat) in the archive")
    cals: dict[int, dict[str, str]] = defaultdict(dict)
    for rec in calibrations.records():
        cals[int(rec["ccdnum"])][rec["filetype"]] = staged(dest, rec)
    raw_path, ref_path = staged(dest, raws[0]), staged(dest, refs[-1])
    out: dict[str, dict[str, Any] | None] = {}
    for ccd in TASK_CCDS:
        if ccd not in params.ccds or ccd in DEAD_CCDS:
            out[ccd_key(ccd)] = None
            continue
        cal = cals.get(ccd, {})
        if "cal_biascor" not in cal or "cal_norm_dflatcor" not in cal:
            log.warning("exposure %s CCD %d: no bias/flat for night %s; skipping it", expnum, ccd, params.night)
            out[ccd_key(ccd)] = None
            continue
        out[ccd_key(ccd)] = {
            "raw": raw_path, "ccd": ccd, "bias": cal["cal_biascor"], "flat": cal["cal_norm_dflatcor"],
            "bpm": cal.get("cal_bpm"), "refcat": ref_path, "band": params.band, "expnum": int(expnum),
            "template": params.template_mode, "run": f"r{params.rnum}p{params.pnum}",
        }
    return out


def read_zeropoints(path: str | Path | None) -> dict[int, float]:
    """CCD -> mag_zero from a ``gw.calibrate`` zeropoint table (good rows only)."""
    if not path:
        return {}
    import fitsio  # here, not at the top: DAG files import this module at parse time

    tab = fitsio.read(str(path), ext=1)
    names = tab.dtype.names
    good = tab["flag"] == 0 if "flag" in names else [True] * len(tab)
    return {int(r["ccdnum"]): float(r["mag_zero"]) for r, g in zip(tab, good) if g and r["ccdnum"] > 0}


def diff_inputs(dest: str | Path, se_outputs: dict[int, dict[str, str]], templates: Manifest,
                zeropoints: dict[int, float], params: GWRunParams,
                expnum: int) -> dict[str, dict[str, Any] | None]:
    """Parameters of ``gw.diffimg_ccd`` per task CCD: the SE'd search CCD and its templates."""
    by_ccd: dict[int, list[str]] = defaultdict(list)
    for rec in templates.records():
        by_ccd[int(rec["search_ccdnum"])].append(staged(dest, rec))
    out: dict[str, dict[str, Any] | None] = {}
    for ccd in TASK_CCDS:
        se = se_outputs.get(ccd)
        if params.template_mode or not se or not by_ccd.get(ccd):
            if se and not by_ccd.get(ccd) and not params.template_mode:
                log.warning("exposure %s CCD %d: no template overlaps it; no difference image", expnum, ccd)
            out[ccd_key(ccd)] = None
            continue
        out[ccd_key(ccd)] = {
            "search": se["red_immask"], "search_psf": se.get("psfex_model"), "templates": sorted(by_ccd[ccd]),
            "band": params.band, "expnum": int(expnum), "ccd": ccd, "zeropoint": zeropoints.get(ccd),
            # -F fullcopy: keep every intermediate product (resampled template stack, matched
            # images) next to the difference image, not only the key outputs
            "keep_scratch": params.fullcopy,
        }
    return out


#: What gw.se_ccd produces, by filetype (the keys plan_diff and calibrate read).
SE_FILETYPES = ("red_immask", "cat_finalcut", "psfex_model")


def previous_se_outputs(provenance_engine, expnum: int, ccds: Iterable[int]) -> dict[int, dict[str, str]]:
    """The latest successful gw.se_ccd outputs of each CCD of ``expnum`` (for ``-j``, skip SE).

    Looked up in provenance: files generated by a successful ``gw.se_ccd`` task whose DESDM
    name starts with ``D<expnum:08d>_<band>_c<ccd:02d>``, newest task first, still on disk.
    """
    import sqlalchemy as sa

    q = sa.text(
        "SELECT f.path, f.filename, f.filetype FROM desfile f JOIN task t ON f.wgb_task_id = t.id "
        "WHERE t.name = 'gw.se_ccd' AND t.status = 'success' AND f.filename LIKE :pat ORDER BY t.id DESC")
    out: dict[int, dict[str, str]] = {}
    with provenance_engine.connect() as c:
        for ccd in ccds:
            found: dict[str, str] = {}
            for path, name, ft in c.execute(q, {"pat": f"D{int(expnum):08d}_%_c{int(ccd):02d}_%"}):
                full = str(Path(path) / name)
                if ft in SE_FILETYPES and ft not in found and Path(full).is_file():
                    found[ft] = full
            if set(SE_FILETYPES) <= set(found):
                out[int(ccd)] = found
    return out
