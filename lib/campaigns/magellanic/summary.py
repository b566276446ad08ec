"""``magellanic.mef_tables``: the field's Summary tables, gathered from the per-MEF ones.

kred's MefSum and MefCheck wrote one table for the whole field from one process. Under
Airflow they run mapped over the MEFs, each writing its own small table (no two tasks ever
write one file); this fan-in step joins them, for the MEFs now in ``DECam_MEF/<field>/``:

``Summary/<field>_det.tab``       one row per CCD (MefSum's columns)
``Summary/<field>_mef.tab``       one row per MEF/exposure: identity, zeropoint, CCD count, and
                                  the median, min and max of its CCDs' modes (MefPrep's default
                                  background is that median)
``Summary/<field>_mef_qual.tab``  MefCheck's row per MEF (when MefCheck ran)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.layout import KredTree, UnknownFieldError, mef_stem
from skyops.campaigns.magellanic.tables import MissingStageOutputError, Tab, read_table, write_table
from skyops.steps.context import StepContext
from skyops.steps.registry import step


def exposure_table(det: Tab) -> Tab:
    """One row per MEF from the per-CCD table, in MEF-name order."""
    rows = []
    for mef in sorted(set(det["mef"])):
        d = det[det["mef"] == mef]
        modes = np.asarray(d["mode"], float)
        rows.append((mef, int(d["expnum"][0]), str(d["filter"][0]), float(d["exptime"][0]), float(d["mjd_obs"][0]),
                     float(d["magzero"][0]), float(d["airmass"][0]), len(d), float(np.median(modes)),
                     float(modes.min()), float(modes.max()), float(np.median(np.asarray(d["sigma"], float)))))
    return Tab.from_rows(rows, ("mef", "expnum", "filter", "exptime", "mjd_obs", "magzero", "airmass", "nccd",
                                   "mode_median", "mode_min", "mode_max", "sigma_median"))


def gather(tree: KredTree, kind: str, ctx: StepContext, *, required: bool) -> Tab | None:
    """The per-MEF tables of ``kind`` (``det`` or ``qual``) for the field's current MEFs, stacked."""
    mefs = tree.mef_files()
    parts, missing = [], []
    for p in mefs:
        part = tree.mef_part(p, kind)
        if part.is_file():
            parts.append(read_table(part, stage="", ctx=ctx, filetype=f"kred_{kind}_part"))
        else:
            missing.append(mef_stem(p))
    stage = "MefSum (magellanic.mef_sum)" if kind == "det" else "MefCheck (magellanic.mef_check)"
    if missing and (required or parts):
        raise MissingStageOutputError(f"field {tree.field}: {stage} has not run on {len(missing)} of {len(mefs)} "
                                      f"MEFs ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); "
                                      f"run it on every MEF of the field first")
    return Tab.vstack(parts) if parts else None


@step("magellanic.mef_tables", resources={"cpu": 0.5, "memory_mb": 512},
      outputs=["kred_det_summary", "kred_mef_summary"])
def mef_tables(ctx: StepContext, *, root: str, field: str) -> dict:
    """Gather MefSum's and MefCheck's per-MEF tables into the field's Summary tables."""
    tree = KredTree(Path(root), field)
    if not tree.mef_files():
        raise UnknownFieldError(f"field {field!r}: no MEFs in {tree.mef_dir}; check the field name or stage "
                                "the field's DECam_MEF tree first")
    det = gather(tree, "det", ctx, required=True)
    assert det is not None
    write_table(ctx, tree.det_table, det, "kred_det_summary")
    exps = exposure_table(det)
    write_table(ctx, tree.mef_table, exps, "kred_mef_summary")
    qual = gather(tree, "qual", ctx, required=False)
    bad = 0
    if qual is not None:
        write_table(ctx, tree.qual_table, qual, "kred_mef_qual")
        bad = int(np.sum(np.asarray(qual["ok"]) == 0))
    FieldLog(tree).write("MefSum", f"Summary tables: {len(exps)} MEFs, {len(det)} CCDs"
                                   + (f"; MefCheck: {bad} MEF(s) with header problems" if qual is not None else ""))
    return {"mefs": len(exps), "ccds": len(det), "mefs_with_problems": bad}
