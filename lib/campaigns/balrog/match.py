"""``balrog.match``: a realization's injected truth against its detections, and what it says.

Each injected object (truth ``OBJECTS``) is matched to the nearest detection of the
realization's dual-mode catalog within ``match_radius`` (0.5 arcsec), one detection per object.
A detection's position is where it was *detected*: its barycentre on the detection image
(``X_IMAGE``/``Y_IMAGE``, on the tile's pixel grid and the same in every band's dual-mode
catalog), not one band's windowed centroid, which for a faint or red object in a shallow band
can stray past the radius although the object was found. A match that also lies within the
radius of a detection of the *base* tile is flagged ``preexisting``: the object landed on a real
one, and the photometry is a blend. Objects where
the detection image has no data (coadd holes between CCDs) are ``covered = False`` and left out
of the statistics.

Reported (``match/<tile>_match_summary.json``, the step's metrics, and plots):

- the 5-sigma depth of each band: the MAG_AUTO at which S/N = 1.0857 / MAGERR_AUTO reaches 5, from a
  straight-line fit of log10(S/N) against magnitude over the realization's detections with
  3 < S/N < 50;
- completeness (matched / covered) in bins of the ``depth_band`` truth magnitude, and the
  completeness of objects at least 1 mag brighter than that band's depth;
- flux bias: median MAG_AUTO - truth magnitude per band and bin (MAG_AUTO is a Kron magnitude:
  it misses a few per cent of the light);
- number density: detections per arcmin^2 on the base tile and in the realization; the excess over
  the base should equal the matched, non-preexisting injections (their ratio is reported);
- ``isolated`` objects, with no real object's pixel (base segmentation map) within ``isolation_radius``
  (1 arcsec) of their centre:
  their completeness separates detection efficiency from blending with real objects;
- why the bright objects (depth - 1) that were missed were missed (``bright_misses``), from the
  realization's segmentation map at the injected centre (column ``seg_number``): ``in_real_detection``
  -- inside the footprint of a detection that is also in the base tile (the injection merged into a
  real object, or lost in its light), ``in_other_detection`` -- inside a detection not in the base
  tile whose position is more than ``match_radius`` away (a blend pulled off the injection), and
  ``undetected`` -- no detection there at all;
- colours: median measured minus true g-r, r-i, i-z of matched objects brighter than depth - 1.

Plots (matplotlib, Agg): ``completeness.png``, ``flux_bias.png``, ``colors.png``, ``positions.png``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
from numpy.lib import recfunctions as rfn
from scipy.spatial import cKDTree

from skyops.campaigns.balrog.coadd import read_geometry
from skyops.campaigns.balrog.config import load_medsconf
from skyops.campaigns.balrog.inject import tile_wcs
from skyops.campaigns.balrog.layout import TileLayout
from skyops.errors import InputError
from skyops.imaging.astromatic import read_ldac
from skyops.steps.context import StepContext
from skyops.steps.registry import step

log = logging.getLogger(__name__)
SNR_PER_MAGERR = 2.5 / np.log(10.0)  # S/N = 1.0857 / magerr
COLORS = (("g", "r"), ("r", "i"), ("i", "z"))


def tile_xy(geom: dict[str, Any], ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = tile_wcs(geom).all_world2pix(ra, dec, 1)
    return np.asarray(x), np.asarray(y)


def nearest(geom: dict[str, Any], x: np.ndarray, y: np.ndarray, cat_x: np.ndarray, cat_y: np.ndarray,
            radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest catalog row within the radius (-1 if none) and its separation (arcsec).

    Positions are FITS pixel coordinates on the tile's grid (truth ``x_tile``/``y_tile``, catalog
    ``X_IMAGE``/``Y_IMAGE``).
    """
    scale = float(geom["pixelscale"])
    if len(cat_x) == 0 or len(x) == 0:
        return np.full(len(x), -1), np.full(len(x), np.inf)
    dist, idx = cKDTree(np.column_stack([cat_x, cat_y])).query(np.column_stack([x, y]), k=1)
    sep = dist * scale
    return np.where(sep <= radius_arcsec, idx, -1), sep


def detection_xy(cat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tile pixel position of each detection on the detection image (dual mode: the same in every band)."""
    return cat["X_IMAGE"].astype(float), cat["Y_IMAGE"].astype(float)


def one_to_one(idx: np.ndarray, sep: np.ndarray) -> np.ndarray:
    """Keep, for each detection claimed by several objects, only the closest object."""
    out = idx.copy()
    order = np.argsort(sep)
    seen: set[int] = set()
    for i in order:
        if out[i] < 0:
            continue
        if int(out[i]) in seen:
            out[i] = -1
        else:
            seen.add(int(out[i]))
    return out


def depth_5sigma(cat: np.ndarray) -> float:
    """Magnitude at S/N = 5 from a line fit of log10(S/N) vs MAG_AUTO (3 < S/N < 50); NaN if < 5 objects."""
    magerr, mag = cat["MAGERR_AUTO"].astype(float), cat["MAG_AUTO"].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = SNR_PER_MAGERR / magerr
    ok = np.isfinite(snr) & (snr > 3) & (snr < 50) & (mag < 90)
    if ok.sum() < 5:
        return float("nan")
    a, b = np.polyfit(mag[ok], np.log10(snr[ok]), 1)
    return float((np.log10(5.0) - b) / a)


def binned(x: np.ndarray, y: np.ndarray, edges: np.ndarray, stat: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean (``mean``) or median (``median``) of y and the count."""
    idx = np.digitize(x, edges) - 1
    vals, counts = np.full(len(edges) - 1, np.nan), np.zeros(len(edges) - 1, int)
    for k in range(len(edges) - 1):
        sel = idx == k
        counts[k] = int(sel.sum())
        if counts[k]:
            vals[k] = float(np.mean(y[sel]) if stat == "mean" else np.median(y[sel]))
    return vals, counts


def clear_of(seg: np.ndarray, x: np.ndarray, y: np.ndarray, r_pix: float) -> np.ndarray:
    """Whether the disc of radius ``r_pix`` around each FITS position (x, y) holds no segmentation pixel."""
    r = int(np.ceil(r_pix))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    out = np.ones(len(x), bool)
    for k, (xc, yc) in enumerate(zip(np.asarray(x) - 1.0, np.asarray(y) - 1.0)):
        cx, cy = int(round(xc)), int(round(yc))
        xx, yy = cx + dx, cy + dy
        inside = (np.hypot(xx - xc, yy - yc) <= r_pix) & (xx >= 0) & (yy >= 0) & (xx < seg.shape[1]) & \
            (yy < seg.shape[0])
        out[k] = not seg[yy[inside], xx[inside]].any()
    return out


def match_table(truth: np.ndarray, cats: dict[str, np.ndarray], base_cat: np.ndarray, geom: dict[str, Any],
                det_wgt: np.ndarray, radius: float, base_seg: np.ndarray | None = None,
                isolation_radius: float = 1.0, seg: np.ndarray | None = None) -> np.ndarray:
    """Truth rows with the match: det_number, sep_arcsec, matched, preexisting, covered, isolated, mag_auto_<b>...

    ``isolated``: no real object's pixel (``base_seg`` > 0) within ``isolation_radius`` arcsec of the centre.
    ``seg_number``: the realization's detection (``seg``, its segmentation map) whose footprint holds the
    centre (0: none; -1: no map); ``seg_in_base``: that detection is also one of the base tile's.
    """
    ref = next(iter(cats.values()))
    x, y = tile_xy(geom, truth["ra"], truth["dec"])
    idx, sep = nearest(geom, x, y, *detection_xy(ref), radius)
    idx = one_to_one(idx, sep)
    matched = idx >= 0
    pre = np.zeros(len(truth), bool)
    if matched.any() and len(base_cat):
        mx, my = detection_xy(ref[idx[matched]])
        bidx, _ = nearest(geom, mx, my, *detection_xy(base_cat), radius)
        pre[matched] = bidx >= 0
    ix = np.clip(np.round(x).astype(int) - 1, 0, det_wgt.shape[1] - 1)
    iy = np.clip(np.round(y).astype(int) - 1, 0, det_wgt.shape[0] - 1)
    covered = (det_wgt[iy, ix] > 0) & (truth["n_epochs"] > 0)
    isolated = clear_of(base_seg, x, y, isolation_radius / float(geom["pixelscale"])) if base_seg is not None \
        else np.ones(len(truth), bool)
    seg_number = np.full(len(truth), -1, np.int64)
    seg_in_base = np.zeros(len(truth), bool)
    if seg is not None:
        inside = (ix == np.round(x).astype(int) - 1) & (iy == np.round(y).astype(int) - 1)
        seg_number = np.where(inside, seg[iy, ix], 0).astype(np.int64)
        if len(base_cat) and len(ref):
            row = {int(n): k for k, n in enumerate(ref["NUMBER"])}
            holder = np.array([row.get(int(n), -1) for n in seg_number])
            has = holder >= 0
            if has.any():
                hx, hy = detection_xy(ref[holder[has]])
                bidx, _ = nearest(geom, hx, hy, *detection_xy(base_cat), radius)
                seg_in_base[has] = bidx >= 0
    cols: dict[str, np.ndarray] = {"matched": matched, "preexisting": pre, "covered": covered, "isolated": isolated,
                                   "det_number": np.where(matched, ref["NUMBER"][np.clip(idx, 0, None)], -1),
                                   "sep_arcsec": np.where(matched, sep, np.nan), "seg_number": seg_number,
                                   "seg_in_base": seg_in_base}
    for b, cat in cats.items():
        for col in ("MAG_AUTO", "MAGERR_AUTO", "FLUX_AUTO", "FLAGS"):
            v = cat[col][np.clip(idx, 0, None)]
            cols[f"{col.lower()}_{b}"] = np.where(matched, v, -1 if col == "FLAGS" else np.nan)
    return rfn.append_fields(truth, list(cols), [np.asarray(v) for v in cols.values()], usemask=False)


def summarize(tab: np.ndarray, cats: dict[str, np.ndarray], base_cat: np.ndarray, geom: dict[str, Any],
              depth_band: str, bin_width: float = 0.5) -> dict[str, Any]:
    """The numbers of the module docstring, as a JSON-friendly dict."""
    area = float(geom["naxis1"]) * float(geom["naxis2"]) * (float(geom["pixelscale"]) / 60.0) ** 2  # arcmin^2
    depths = {b: round(depth_5sigma(c), 4) for b, c in cats.items()}
    use = tab[tab["covered"]]
    mag = use[f"mag_{depth_band}"].astype(float)
    d = depths.get(depth_band, float("nan"))
    edges = np.arange(np.floor(mag.min()) if len(mag) else 18.0, (np.ceil(mag.max()) if len(mag) else 26.0)
                      + bin_width, bin_width)
    comp, counts = binned(mag, use["matched"].astype(float), edges, "mean")
    bright = mag <= d - 1.0 if np.isfinite(d) else np.zeros(len(mag), bool)
    clean = use["matched"] & ~use["preexisting"]
    out: dict[str, Any] = {
        "n_injected": int(len(tab)), "n_covered": int(len(use)), "n_matched": int(use["matched"].sum()),
        "n_preexisting": int(use["preexisting"].sum()), "depth_band": depth_band, "depth_5sigma": depths,
        "n_bright": int(bright.sum()),
        "completeness_bright": float(use["matched"][bright].mean()) if bright.any() else float("nan"),
        "n_bright_isolated": int((bright & use["isolated"]).sum()),
        "completeness_bright_isolated": float(use["matched"][bright & use["isolated"]].mean())
        if (bright & use["isolated"]).any() else float("nan"),
        "bright_misses": _misses(use[bright & ~use["matched"]]),
        "completeness_bins": {"edges": edges.tolist(), "completeness": _nan_none(comp), "counts": counts.tolist()},
        "area_arcmin2": round(area, 4),
    }
    n_base, n_real = len(base_cat), len(next(iter(cats.values())))
    out["density"] = {"base_per_arcmin2": round(n_base / area, 4), "realization_per_arcmin2": round(n_real / area, 4),
                      "excess": n_real - n_base, "matched_clean": int(clean.sum()),
                      "excess_over_matched": round(float((n_real - n_base) / clean.sum()), 4) if clean.any() else None}
    bias: dict[str, Any] = {}
    for b in cats:
        sel = clean & np.isfinite(use[f"mag_auto_{b}"]) & (use[f"mag_auto_{b}"] < 90)
        dm = use[f"mag_auto_{b}"][sel] - use[f"mag_{b}"][sel]
        vals, cnt = binned(use[f"mag_{b}"][sel].astype(float), dm, edges, "median")
        db = depths.get(b, np.nan)
        bright_b = use[f"mag_{b}"][sel] <= db - 1.0 if np.isfinite(db) else np.zeros(sel.sum(), bool)
        bias[b] = {"median_bright": float(np.median(dm[bright_b])) if bright_b.any() else None,
                   "bins": _nan_none(vals), "counts": cnt.tolist()}
    out["flux_bias"] = bias
    colors: dict[str, Any] = {}
    for b1, b2 in COLORS:
        if b1 in cats and b2 in cats:
            sel = clean & (use[f"mag_{depth_band}"] <= d - 1.0) & (use[f"mag_auto_{b1}"] < 90) & \
                (use[f"mag_auto_{b2}"] < 90)
            dc = (use[f"mag_auto_{b1}"] - use[f"mag_auto_{b2}"] - (use[f"mag_{b1}"] - use[f"mag_{b2}"]))[sel]
            colors[f"{b1}-{b2}"] = {"n": int(sel.sum()), "median_offset": float(np.median(dc)) if sel.any() else None,
                                    "scatter": float(1.4826 * np.median(np.abs(dc - np.median(dc))))
                                    if sel.sum() > 1 else None}
    out["colors"] = colors
    return out


def _misses(missed: np.ndarray) -> dict[str, int] | None:
    """Why the missed objects were missed (module docstring); None without a segmentation map."""
    if (missed["seg_number"] < 0).any():
        return None
    held = missed["seg_number"] > 0
    return {"in_real_detection": int((held & missed["seg_in_base"]).sum()),
            "in_other_detection": int((held & ~missed["seg_in_base"]).sum()), "undetected": int((~held).sum())}


def _nan_none(a: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 5) for v in a]


def plots(tab: np.ndarray, summary: dict[str, Any], bands: list[str], out: dict[str, Path],
          ctx: StepContext) -> None:
    """The four PNGs, each written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use = tab[tab["covered"]]
    db = summary["depth_band"]
    depth = summary["depth_5sigma"].get(db)

    def save(fig: Any, key: str) -> None:
        with ctx.output(out[key], filetype="balrog_plot") as tmp:
            fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    e = np.array(summary["completeness_bins"]["edges"])
    c = np.array([np.nan if v is None else v for v in summary["completeness_bins"]["completeness"]])
    ax.step(e[:-1], c, where="post", label="injected, covered")
    if depth is not None and np.isfinite(depth):
        ax.axvline(depth, ls="--", c="k", label=f"5$\\sigma$ depth {depth:.2f}")
        ax.axvline(depth - 1, ls=":", c="k", label="depth - 1")
    ax.set(xlabel=f"truth {db} mag", ylabel="completeness", ylim=(0, 1.05), title="Balrog completeness")
    ax.legend(loc="lower left")
    save(fig, "completeness")

    fig, ax = plt.subplots(figsize=(6, 4))
    clean = use["matched"] & ~use["preexisting"]
    for b in bands:
        sel = clean & (use[f"mag_auto_{b}"] < 90)
        ax.plot(use[f"mag_{b}"][sel], use[f"mag_auto_{b}"][sel] - use[f"mag_{b}"][sel], ".", ms=3, label=b)
    ax.axhline(0, c="k", lw=0.5)
    ax.set(xlabel="truth mag", ylabel="MAG_AUTO - truth", title="flux bias", ylim=(-1, 1))
    ax.legend()
    save(fig, "flux_bias")

    fig, axes = plt.subplots(1, len(COLORS), figsize=(10, 3.4))
    for ax, (b1, b2) in zip(np.atleast_1d(axes), COLORS):
        if b1 in bands and b2 in bands:
            sel = clean & (use[f"mag_auto_{b1}"] < 90) & (use[f"mag_auto_{b2}"] < 90)
            ax.plot(use[f"mag_{b1}"][sel] - use[f"mag_{b2}"][sel],
                    use[f"mag_auto_{b1}"][sel] - use[f"mag_auto_{b2}"][sel], ".", ms=3)
            ax.plot([-1, 3], [-1, 3], "k-", lw=0.5)
        ax.set(xlabel=f"truth {b1}-{b2}", ylabel=f"measured {b1}-{b2}")
    fig.tight_layout()
    save(fig, "colors")

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(tab["x_tile"], tab["y_tile"], "o", mfc="none", c="0.6", ms=5, label="injected")
    ax.plot(tab["x_tile"][tab["matched"]], tab["y_tile"][tab["matched"]], ".", c="C2", label="recovered")
    ax.set(xlabel="tile x", ylabel="tile y", aspect="equal", title="injection grid")
    ax.legend(loc="upper right", fontsize=7)
    save(fig, "positions")


def match_realization(ctx: StepContext, base: TileLayout, realization: int, bands: list[str], radius: float,
                      depth_band: str, isolation_radius: float = 1.0) -> dict[str, Any]:
    real = base.for_realization(realization)
    geom = read_geometry(base)
    if not real.truth().is_file():
        raise InputError(f"{real.truth()}: no truth table; run balrog.inject (mode bit 8) for realization "
                         f"{realization} first")
    truth = fitsio.read(str(ctx.use(real.truth(), "balrog_truth")), ext="OBJECTS")
    cats: dict[str, np.ndarray] = {}
    for b in bands:
        p = real.catalog(b)
        if not p.is_file():
            raise InputError(f"{p}: no catalog; run the realization's coadd and detection (mode bit 16) first")
        cats[b] = read_ldac(ctx.use(p, "coadd_cat"))
    base_cat = read_ldac(ctx.use(base.catalog(bands[0]), "coadd_cat")) if base.catalog(bands[0]).is_file() \
        else np.zeros(0, cats[bands[0]].dtype)
    det_wgt = fitsio.read(str(ctx.use(real.det(), "coadd_det")), ext=2)
    base_seg = fitsio.read(str(ctx.use(base.segmap(bands[0]), "coadd_segmap"))) \
        if base.segmap(bands[0]).is_file() else None
    seg = fitsio.read(str(ctx.use(real.segmap(bands[0]), "coadd_segmap"))) if real.segmap(bands[0]).is_file() \
        else None
    tab = match_table(truth, cats, base_cat, geom, det_wgt, radius, base_seg, isolation_radius, seg)
    summary = summarize(tab, cats, base_cat, geom, depth_band)
    summary.update(tilename=base.tilename, realization=realization, match_radius_arcsec=radius,
                   isolation_radius_arcsec=isolation_radius)
    with ctx.output(real.match(), filetype="balrog_match") as tmp:
        fitsio.write(str(tmp), tab, extname="MATCH", clobber=True)
    with ctx.output(real.match_summary(), filetype="balrog_match_summary") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    plots(tab, summary, bands, {k: real.plot(k) for k in ("completeness", "flux_bias", "colors", "positions")}, ctx)
    return {"realization": realization, "n_injected": summary["n_injected"], "n_matched": summary["n_matched"],
            "completeness_bright": summary["completeness_bright"], "n_bright": summary["n_bright"],
            "completeness_bright_isolated": summary["completeness_bright_isolated"],
            "n_bright_isolated": summary["n_bright_isolated"],
            **{f"depth_{b}": v for b, v in summary["depth_5sigma"].items()},
            "density_excess_over_matched": summary["density"]["excess_over_matched"]}


@step("balrog.match", resources={"cpu": 1, "memory_mb": 2048}, outputs=["balrog_match", "balrog_match_summary"])
def match(ctx: StepContext, *, tile: str, realization: int, medsconf: str = "y3a1-v02",
          meds_dir: str | None = None, match_radius: float = 0.5, depth_band: str = "i",
          isolation_radius: float = 1.0, bands: list[str] | None = None) -> dict[str, Any]:
    """Injected truth vs the realization's detections: completeness, flux bias, density, colours, plots.

    ``bands``: the bands the run processed (default: the medsconf's).
    """
    mc = load_medsconf(medsconf)
    use = list(bands) if bands else list(mc.bands)
    unknown = [b for b in use if b not in mc.bands]
    if unknown:
        raise InputError(f"param 'bands': {unknown} are not bands of medsconf {mc.medsconf} ({', '.join(mc.bands)})")
    if depth_band not in use:
        raise InputError(f"param 'depth_band': {depth_band!r} is not among the run's bands ({', '.join(use)}); "
                         "give one of them")
    if match_radius <= 0:
        raise InputError(f"param 'match_radius': {match_radius} arcsec; expected > 0 (Balrog uses 0.5)")
    base = TileLayout.of(meds_dir, mc.medsconf, tile)
    if isolation_radius < 0:
        raise InputError(f"param 'isolation_radius': {isolation_radius} arcsec; expected >= 0")
    return match_realization(ctx, base, realization, use, match_radius, depth_band, isolation_radius)
