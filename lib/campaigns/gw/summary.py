"""``gw.night_summary``: the per-night report an observer reads the next morning.

Markdown plus PNG plots: exposures processed, zeropoints per CCD, astrometric rms, the
candidates, and -- when a truth table of injected transients is available (the synthetic
survey writes one; the real sky does not) -- detection efficiency against magnitude. The
per-CCD SE figures come from provenance (the metrics every ``gw.se_ccd`` task recorded),
so the report needs no extra bookkeeping from the DAG.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
from numpy.lib import recfunctions as rfn

from skyops.steps.context import StepContext
from skyops.steps.registry import step

MATCH_ARCSEC = 1.0


def se_metrics(run_id: str, ctx: StepContext) -> list[dict[str, Any]]:
    """The metrics of every successful gw.se_ccd task of a DAG run, from provenance."""
    import sqlalchemy as sa

    from skyops.provenance import ProvenanceStore

    store = ProvenanceStore.from_config(ctx.config)
    q = sa.text("SELECT metrics FROM task WHERE run_id = :r AND name = 'gw.se_ccd' AND status = 'success'")
    with store.engine.connect() as c:
        rows = [json.loads(m) for (m,) in c.execute(q, {"r": run_id}) if m]
    store.close()
    return rows


def _read(paths: list[str], ext: int | str = 1) -> np.ndarray | None:
    tabs = [fitsio.read(p, ext=ext) for p in paths if p and Path(p).is_file()]
    tabs = [t for t in tabs if len(t)]
    return np.concatenate(tabs) if tabs else None


def efficiency(truth: np.ndarray, cands: np.ndarray | None, bins: np.ndarray) -> dict[str, Any]:
    """Fraction of in-bounds injected transients recovered (within 1 arcsec), per magnitude bin."""
    t = truth[truth["in_bounds"]] if "in_bounds" in truth.dtype.names else truth
    found = np.zeros(len(t), bool)
    if cands is not None and len(cands):
        cosd = np.cos(np.radians(t["dec"]))
        for i, row in enumerate(t):
            sel = cands["expnum"] == row["expnum"] if "expnum" in cands.dtype.names else slice(None)
            c = cands[sel]
            if len(c):
                d = np.hypot((c["ra"] - row["ra"]) * cosd[i], c["dec"] - row["dec"]) * 3600
                found[i] = d.min() < MATCH_ARCSEC
    idx = np.digitize(t["mag"], bins) - 1
    eff = [float(found[idx == k].mean()) if (idx == k).any() else None for k in range(len(bins) - 1)]
    n = [int((idx == k).sum()) for k in range(len(bins) - 1)]
    return {"bins": bins.tolist(), "efficiency": eff, "n": n, "recovered": int(found.sum()), "injected": len(t)}


def _plots(outdir: Path, zps: np.ndarray | None, se: list[dict], eff: dict | None) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, Path] = {}
    fig, axes = plt.subplots(1, 3 if eff else 2, figsize=(13 if eff else 9, 3.6))
    if zps is not None:
        for e in np.unique(zps["expnum"]):
            s = zps[zps["expnum"] == e]
            axes[0].plot(s["ccdnum"], s["mag_zero"], "o", ms=3, label=str(e))
        axes[0].set(xlabel="CCD", ylabel="mag_zero", title="BLISS zeropoints")
        axes[0].legend(fontsize=6)
    rms = [m["astrom_rms_arcsec"] for m in se if m.get("astrom_rms_arcsec") is not None]
    axes[1].hist(rms, bins=20, color="tab:green")
    axes[1].set(xlabel="astrometric rms [arcsec]", ylabel="CCDs", title="Astrometry")
    if eff:
        centres = 0.5 * (np.array(eff["bins"][1:]) + np.array(eff["bins"][:-1]))
        y = [np.nan if v is None else v for v in eff["efficiency"]]
        axes[2].plot(centres, y, "o-")
        axes[2].set(xlabel="injected magnitude", ylabel="recovered fraction", ylim=(-0.05, 1.05),
                    title="Detection efficiency")
    fig.tight_layout()
    made["summary"] = outdir / "night_summary.png"
    fig.savefig(made["summary"], dpi=90)
    plt.close(fig)
    return made


@step("gw.night_summary", resources={"cpu": 1, "memory_mb": 1024}, outputs=["gw_night_summary"])
def night_summary(ctx: StepContext, *, night: str, run_id: str, zeropoints: list[str] = [],
                  candidates: list[str] = [], truth: str | None = None, band: str = "i",
                  season: str | None = None) -> dict:
    """Write the night's Markdown report and plots (zeropoints, astrometry, candidates, efficiency)."""
    zp_files = [str(ctx.use(p, "bliss_zeropoint")) for p in zeropoints if p]
    cand_files = [str(ctx.use(p, "gw_diff_candidates")) for p in candidates if p]
    zps = _read(zp_files, "ZEROPOINT")
    cands = _read(cand_files)
    if cands is not None and "is_candidate" in cands.dtype.names:
        cands = cands[cands["is_candidate"]]
    if cands is not None and "expnum" not in cands.dtype.names:
        # candidate files carry EXPNUM in their header: attach it per file for matching
        parts = []
        for p in cand_files:
            tab, hdr = fitsio.read(p, ext=1, header=True)
            tab = tab[tab["is_candidate"]] if "is_candidate" in tab.dtype.names else tab
            parts.append(rfn.append_fields(tab, "expnum", np.full(len(tab), int(hdr["EXPNUM"])),
                                                           usemask=False))
        cands = np.concatenate(parts) if parts else None
    se = se_metrics(run_id, ctx)
    eff = None
    if truth:
        t = fitsio.read(str(ctx.use(truth, "sim_truth")), ext=1)
        if "band" in t.dtype.names:
            t = t[np.char.strip(t["band"].astype(str)) == band]
        # only the CCDs this run differenced can have found anything
        done = {(int(m["expnum"]), int(m["ccdnum"])) for m in se if "ccdnum" in m}
        t = t[np.array([(int(e), int(c)) in done for e, c in zip(t["expnum"], t["ccdnum"])], bool)]
        eff = efficiency(t, cands, np.arange(17.0, 25.01, 1.0))
    n_exp = len({m["expnum"] for m in se})
    rms = np.array([m["astrom_rms_arcsec"] for m in se if m.get("astrom_rms_arcsec") is not None])
    lines = [f"# GW night {night}" + (f" (season {season})" if season else ""), "",
             f"- exposures processed: **{n_exp}**, CCDs: **{len(se)}**",
             f"- astrometric rms: median **{np.median(rms):.3f}\"**, max {rms.max():.3f}\"" if len(rms) else
             "- astrometric rms: no SE results",
             f"- candidates: **{0 if cands is None else len(cands)}** in {len(cand_files)} CCD difference images"]
    if zps is not None:
        good = zps[zps["flag"] == 0] if "flag" in zps.dtype.names else zps
        lines.append(f"- zeropoints: {len(good)} CCDs, median {np.median(good['mag_zero']):.3f}, "
                     f"spread {np.std(good['mag_zero']):.3f} mag")
    if eff:
        lines += ["", "## Detection efficiency (injected transients)", "",
                  "| mag | injected | recovered fraction |", "|---|---|---|"]
        for lo, n, e in zip(eff["bins"][:-1], eff["n"], eff["efficiency"]):
            if n:
                lines.append(f"| {lo:.0f}-{lo + 1:.0f} | {n} | {e:.2f} |")
    if cands is not None and len(cands):
        top = cands[np.argsort(-cands["snr"])][:15]
        lines += ["", "## Brightest candidates", "", "| expnum | ra | dec | mag | snr |", "|---|---|---|---|---|"]
        lines += [f"| {int(r['expnum'])} | {r['ra']:.5f} | {r['dec']:.5f} | {r['mag']:.2f} | {r['snr']:.1f} |"
                  for r in top]
    plots = _plots(ctx.workdir, zps, se, eff)
    lines += ["", "![summary](night_summary.png)"]
    for p in plots.values():
        ctx.declare_output(p, "gw_night_plot")
    with ctx.output(f"gw_night_{night}.md", "gw_night_summary") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    out = {"exposures": n_exp, "ccds": len(se), "candidates": 0 if cands is None else int(len(cands)),
           "astrom_rms_median": float(np.median(rms)) if len(rms) else None}
    if eff:
        out.update(recovered=eff["recovered"], injected=eff["injected"])
    return out
