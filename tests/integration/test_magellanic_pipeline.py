"""kred's science on the synthetic demo field, against the truth it was made with.

The demo field LMC_c42 (12 InstCal MEFs: N662/N673/r x 30 s/400 s x 2 dithers, 6 CCDs of 256x512)
is built once for the module and run through every stage in this process (the DAG's steps and
planning, :func:`skyops.campaigns.magellanic.pipeline.run_field`), for its config tile T02:

- MefSum's mode of every CCD within 0.1 sky sigma of the true sky level. The level is only
  defined where nothing but sky fills a CCD, so this is checked on the same field rendered without
  diffuse emission (stars kept): there the truth is the sky plane's mean plus the exposure's offset.
- BackStats + BackCalc recover every exposure's background offset, up to one constant per
  filter/exposure-time group, within 2% of the per-pixel sky noise. The truth is the offsets that
  the true background differences at the overlaps imply (the sky has a gradient across the focal
  plane, so a CCD's level is what its overlaps see, not its centre's sky).
- Seams: in a tile that holds every overlap whole, the star-masked median difference of the two
  SWarp layers across every overlap is under 0.05 sky sigma after matching, and far larger without.
  (A 0.03 deg config tile cuts overlaps into slivers, where the sky's gradient -- which kred's
  one-offset-per-image model cannot remove -- is seen on its own.)
- A tile's mosaic has the config's centre and size, and its WCS puts the catalog stars within
  0.1 pixel of where they are measured.
"""
from __future__ import annotations

import dataclasses
import itertools
import warnings
from pathlib import Path

import fitsio
import numpy as np
import pytest
import yaml
from astropy.wcs import WCS

from skyops.campaigns.magellanic.backcalc import solve_offsets
from skyops.campaigns.magellanic.layout import KredTree
from skyops.campaigns.magellanic.params import validate
from skyops.campaigns.magellanic.pipeline import run_field
from skyops.campaigns.magellanic.tables import Tab, as_str, read_table
from skyops.sim.kred import KredField
from skyops.sim.kredtree import build_field, truth_file
from skyops.sim.presets import PRESETS
from skyops.steps.runner import run_step

SEED = 42
FIELD = "LMC_c42"
PLAN = PRESETS["demo"].kred
AREA = (0.27 / 0.263) ** 2  # SWarp conserves flux: mosaic values are the inputs' times the pixel-area ratio
#: Seam tile groups: the largest offsets before matching (N662 400 s), the steepest sky gradient
#: (r 400 s) and the faintest, read-noise-limited sky (N673 30 s).
SEAM_GROUPS = (("N662", 400.0), ("r", 400.0), ("N673", 30.0))


def truth(root: Path, name: str) -> np.ndarray:
    return fitsio.read(str(root / truth_file(FIELD, name).relpath), ext=1)


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> tuple[Path, KredField]:
    """The demo kred field built (files only) and run through every stage for tile T02."""
    root = tmp_path_factory.mktemp("kred")
    kf = KredField(PLAN, SEED)
    build_field(kf, root)
    run_field(root, validate({"field": FIELD, "tiles": "T02", "np": 2}), root / "tasks")
    return root, kf


def _scales(root: Path) -> dict[int, tuple[float, float]]:
    """expnum -> (MefPrep's scale, MefPrep's background in input counts)."""
    out = {}
    for p in (KredTree(root, FIELD).data_dir).glob("*_S4.fits"):
        h = fitsio.read_header(str(p))
        out[int(h["EXPNUM"])] = (float(h["KSCALE"]), float(h["KBKG"]))
    return out


# ------------------------------------------------------------------ MefSum
def test_mefsum_mode_is_the_true_sky_level(tmp_path):
    plan = dataclasses.replace(PLAN, n_blobs=0, haze_halpha=0.0, continuum=0.0, filters=("N673", "r"))
    build_field(KredField(plan, SEED), tmp_path)
    tree = KredTree(tmp_path, FIELD)
    rows = []
    for mef in tree.mef_files():
        res = run_step("magellanic.mef_sum", {"root": str(tmp_path), "field": FIELD, "mef": mef.name},
                       tmp_path / "w" / mef.stem)
        assert res.ok, res.error
        rows.append(read_table(tree.mef_part(mef, "det"), stage="MefSum"))
    det = Tab.vstack(rows)
    ccds = fitsio.read(str(tmp_path / truth_file(FIELD, "ccds.fits").relpath), ext=1)
    assert len(det) == len(ccds) == 8 * 6
    errors, raw = [], []
    for r in det:
        t = ccds[(ccds["expnum"] == r["expnum"]) & (ccds["ccdnum"] == r["ccdnum"])][0]
        level = t["sky_counts"] + t["offset_counts"]  # the sky plane's mean over the CCD, plus the offset
        errors.append((r["mode"] - level) / t["sky_sigma"])
        raw.append((r["hsm"] - level) / t["sky_sigma"])
        assert r["sigma"] == pytest.approx(t["sky_sigma"], rel=0.1)
        assert r["mean"] > r["mode"]  # stars pull the mean up; the mode stays on the sky
    errors = np.abs(errors)
    assert errors.max() < 0.1, errors.max()
    assert np.abs(raw).max() > errors.max()  # the refinement earns its place: the raw HSM is noisier


def test_mefsum_tables_describe_every_ccd(field):
    root, kf = field
    tree = KredTree(root, FIELD)
    det = read_table(tree.det_table, stage="MefSum")
    mefs = read_table(tree.mef_table, stage="MefSum")
    assert len(det) == 72 and len(mefs) == 12
    ccds = truth(root, "ccds.fits")
    for r in det[::5]:
        t = ccds[(ccds["expnum"] == r["expnum"]) & (ccds["ccdnum"] == r["ccdnum"])][0]
        for i in range(1, 5):
            assert r[f"ra{i}"] == pytest.approx(t[f"rac{i}"], abs=1e-9)
            assert r[f"dec{i}"] == pytest.approx(t[f"decc{i}"], abs=1e-9)
    for m in mefs:
        d = det[det["mef"] == m["mef"]]
        assert m["mode_median"] == pytest.approx(np.median(d["mode"]))
    qual = read_table(tree.qual_table, stage="MefCheck")
    assert len(qual) == 12 and np.all(qual["ok"] == 1) and np.all(qual["nccd"] == 6)


# ------------------------------------------------------------------ BackStats / BackCalc
def _truth_deltas(root: Path) -> dict[tuple, float]:
    """(image_a, image_b) -> true background_b - background_a at their overlap, in MefPrep's units."""
    scales = _scales(root)
    tree = KredTree(root, FIELD)
    det = read_table(tree.det_table, stage="MefSum")
    name = {(int(r["expnum"]), int(r["ccdnum"])): tree.prep_image(str(r["mef"]), str(r["detpos"])).name for r in det}
    out = {}
    for r in truth(root, "overlaps.fits"):
        a, b = (int(r["expnum_a"]), int(r["ccdnum_a"])), (int(r["expnum_b"]), int(r["ccdnum_b"]))
        pa = scales[a[0]][0] * (r["bkg_a"] - scales[a[0]][1])
        pb = scales[b[0]][0] * (r["bkg_b"] - scales[b[0]][1])
        out[(name[a], name[b])], out[(name[b], name[a])] = pb - pa, pa - pb
    return out


def test_backstats_measures_the_true_background_differences(field):
    root, _ = field
    tree = KredTree(root, FIELD)
    stats = Tab.vstack([read_table(tree.backstats_table(k, 2), stage="BackStats") for k in range(2)])
    pairs = read_table(tree.overlaps_table, stage="FindOverlaps")
    assert len(stats) == len(pairs) == len(truth(root, "overlaps.fits")) == 90
    used = stats[stats["used"] == 1]
    assert len(used) >= 60 and np.all(used["npix"] > 100) and np.all(stats[stats["used"] == 0]["npix"] <= 100)
    true = _truth_deltas(root)
    noise = _pixel_noise(root)
    err = np.array([(r["delta"] - true[(str(r["image_a"]), str(r["image_b"]))]) / noise[int(r["expnum_a"])]
                    for r in used])
    # one pair's overlap is a few hundred 2" cells: a few hundredths of the pixel noise
    assert np.abs(err).max() < 0.1 and np.sqrt(np.mean(err**2)) < 0.03, err


def _pixel_noise(root: Path) -> dict[int, float]:
    """expnum -> per-pixel sky noise in MefPrep's units (the median over its CCDs)."""
    ccds = truth(root, "ccds.fits")
    scales = _scales(root)
    return {e: scales[e][0] * float(np.median(ccds["sky_sigma"][ccds["expnum"] == e])) for e in scales}


def test_backcalc_recovers_every_exposures_offset(field):
    root, _ = field
    tree = KredTree(root, FIELD)
    calc = read_table(tree.backcalc_table, stage="BackCalc")
    assert calc.meta["chosen"] == "lsq" and calc.meta["rms_after"] < 0.05 * calc.meta["rms_before"]
    stats = Tab.vstack([read_table(tree.backstats_table(k, 2), stage="BackStats") for k in range(2)])
    used = stats[stats["used"] == 1]
    names = as_str(calc["image"])
    idx = {n: k for k, n in enumerate(names)}
    ia = np.array([idx[n] for n in as_str(used["image_a"])])
    ib = np.array([idx[n] for n in as_str(used["image_b"])])
    true = _truth_deltas(root)
    expected = solve_offsets(len(names), ia, ib, np.array([true[(names[a], names[b])] for a, b in zip(ia, ib)]),
                             np.asarray(used["npix"], float)).x
    err = np.asarray(calc["offset"]) - expected
    noise = _pixel_noise(root)
    expnum = np.asarray(calc["expnum"])
    group = [f"{f}_{t}" for f, t in zip(as_str(calc["filter"]), calc["exptime"])]
    per_exposure = {e: err[expnum == e].mean() for e in noise}
    for g in set(group):
        exps = sorted({int(e) for e, gg in zip(expnum, group) if gg == g})
        const = np.mean([per_exposure[e] for e in exps])  # the free constant of the group
        for e in exps:
            assert abs(per_exposure[e] - const) < 0.02 * noise[e], (g, e, (per_exposure[e] - const) / noise[e])
    # without the correction the exposures disagree by far more than that
    raw = {e: expected[expnum == e].mean() for e in noise}
    spread = max(abs(raw[a] - raw[b]) / noise[a] for a, b in itertools.combinations(noise, 2)
                 if group[list(expnum).index(a)] == group[list(expnum).index(b)])
    assert spread > 0.2


# ------------------------------------------------------------------ mosaics
def test_mosaic_has_the_config_centre_and_size_and_a_true_wcs(field):
    import sep

    root, kf = field
    tree = KredTree(root, FIELD)
    doc = yaml.safe_load(tree.config_path.read_text())
    t02 = next(t for t in doc["tiles"] if t["name"] == "T02")
    path = tree.mosaic("T02", "r", 400.0)
    img, h = fitsio.read(str(path), header=True)
    n = round(t02["size_deg"] * 3600 / 0.27)
    assert (h["NAXIS1"], h["NAXIS2"]) == (n, n) == (400, 400)
    assert (h["CRVAL1"], h["CRVAL2"]) == (pytest.approx(t02["ra"], abs=1e-7), pytest.approx(t02["dec"], abs=1e-7))
    assert (h["CRPIX1"], h["CRPIX2"]) == (pytest.approx((n + 1) / 2), pytest.approx((n + 1) / 2))
    assert abs(h["CD1_1"]) * 3600 == pytest.approx(0.27) and h["CTYPE1"] == "RA---TAN"
    w = WCS(h)
    ra_c, dec_c = w.all_pix2world([(n + 1) / 2], [(n + 1) / 2], 1)
    assert ra_c[0] == pytest.approx(t02["ra"], abs=1e-7) and dec_c[0] == pytest.approx(t02["dec"], abs=1e-7)

    stars = kf.stars
    x, y = w.all_world2pix(stars["ra"], stars["dec"], 0)
    wt = fitsio.read(str(path.with_name(f"{path.stem}.wt.fits")))
    mag = stars["mag_r"].astype(float)
    sep_ok = np.array([np.all(np.hypot(x - xi, y - yi)[(mag < mi + 4) & (np.arange(len(x)) != k)] > 15)
                       for k, (xi, yi, mi) in enumerate(zip(x, y, mag))])
    inside = (x > 15) & (x < n - 16) & (y > 15) & (y < n - 16)
    pick = np.flatnonzero(inside & sep_ok & (mag > 16.5) & (mag < 20.0))
    covered = [wt[int(round(y[k])) - 8:int(round(y[k])) + 9, int(round(x[k])) - 8:int(round(x[k])) + 9].min() > 0
               for k in pick]
    pick = pick[np.asarray(covered, bool)]
    assert len(pick) >= 5
    data = np.ascontiguousarray(img, dtype=np.float64) - np.median(img[wt > 0])
    xm, ym, flag = sep.winpos(data, x[pick], y[pick], 1.0 / 2.3548 * 4.5)  # window ~ the PSF (FWHM ~4.5 px)
    off = np.hypot(xm - x[pick], ym - y[pick])
    assert np.all(flag == 0)
    assert np.max(off) < 0.1, off


def _layers(d: Path, ref: tuple[float, float]) -> list[tuple[str, np.ndarray, np.ndarray, int, int]]:
    """SWarp's resampled layers of one mosaic, with their offsets on the mosaic's pixel grid."""
    out = []
    for p in sorted(d.glob("*.resamp.fits")):
        img, h = fitsio.read(str(p), header=True)
        wt = fitsio.read(str(p.with_name(p.name.replace(".resamp.fits", ".resamp.weight.fits"))))
        out.append((p.name, img, wt, int(round(ref[0] - h["CRPIX1"])), int(round(ref[1] - h["CRPIX2"]))))
    return out


def _star_mask(header, stars: np.ndarray, filt: str, noise: float) -> np.ndarray:
    """Pixels where a catalog star's Moffat wings exceed 2% of the pixel noise (PSF mismatch there is
    not a seam)."""
    w = WCS(header)
    ny, nx = header["NAXIS2"], header["NAXIS1"]
    x, y = w.all_world2pix(stars["ra"], stars["dec"], 0)
    flux = 10 ** (-0.4 * (stars[f"mag_{filt}"].astype(float) - 30.0)) * AREA  # MefPrep's zeropoint is 30
    alpha = 5.5  # Moffat alpha (pixels) of a 1.3" FWHM, beta 3.5: the worst seeing of the demo
    peak = flux * 2.5 / (np.pi * alpha**2)
    radius = np.maximum(3.0, alpha * np.maximum(peak / (0.02 * noise), 1.0) ** (1 / 7))
    mask = np.zeros((ny, nx), bool)
    for xi, yi, r in zip(x, y, radius):
        x0, x1, y0, y1 = int(max(0, xi - r)), int(min(nx, xi + r + 1)), int(max(0, yi - r)), int(min(ny, yi + r + 1))
        if x0 < x1 and y0 < y1:
            yy, xx = np.mgrid[y0:y1, x0:x1]
            mask[y0:y1, x0:x1] |= (xx - xi) ** 2 + (yy - yi) ** 2 < r * r
    return mask


def _seams(layers, mask) -> list[tuple[str, str, int, float, float]]:
    """(a, b, pixels, median of b - a, its standard error) over every overlap of two layers."""
    out = []
    for (na, a, wa, xa, ya), (nb, b, wb, xb, yb) in itertools.combinations(layers, 2):
        x0, x1 = max(xa, xb), min(xa + a.shape[1], xb + b.shape[1])
        y0, y1 = max(ya, yb), min(ya + a.shape[0], yb + b.shape[0])
        if x1 <= x0 or y1 <= y0:
            continue
        sa, sb = a[y0 - ya:y1 - ya, x0 - xa:x1 - xa], b[y0 - yb:y1 - yb, x0 - xb:x1 - xb]
        ok = (wa[y0 - ya:y1 - ya, x0 - xa:x1 - xa] > 0) & (wb[y0 - yb:y1 - yb, x0 - xb:x1 - xb] > 0)
        ok &= ~mask[y0:y1, x0:x1]
        if ok.sum() < 500:
            continue
        d = np.where(ok, sb - sa, np.nan)
        ny, nx = (d.shape[0] // 4) * 4, (d.shape[1] // 4) * 4  # resampled noise is correlated: 4x4 blocks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-masked blocks are NaN, quietly
            blocks = np.nanmean(d[:ny, :nx].reshape(ny // 4, 4, nx // 4, 4), axis=(1, 3)).ravel()
        blocks = blocks[np.isfinite(blocks)]
        robust = 1.4826 * np.median(np.abs(blocks - np.median(blocks)))
        out.append((na, nb, int(ok.sum()), float(np.nanmedian(d)), 1.2533 * robust / np.sqrt(max(blocks.size, 1))))
    return out


@pytest.fixture(scope="module")
def whole_field_tile(field, tmp_path_factory) -> tuple[Path, Path]:
    """A field config with one tile (T99) holding every overlap whole, mosaicked before and after
    matching with SWarp's resampled layers kept."""
    root, _ = field
    tree = KredTree(root, FIELD)
    doc = yaml.safe_load(tree.config_path.read_text())
    det = read_table(tree.det_table, stage="MefSum")
    from skyops.campaigns.magellanic.skygeom import Boxes, corner_arrays

    ra, dec = corner_arrays(det)
    b = Boxes.from_corners(ra, dec, doc["center"]["ra"], doc["center"]["dec"])
    side = 2 * max(np.abs([b.x0.min(), b.x1.max(), b.y0.min(), b.y1.max()])) + 0.002
    doc["tiles"] = [{"name": "T99", "ra": doc["center"]["ra"], "dec": doc["center"]["dec"], "size_deg": float(side)}]
    cfg = tmp_path_factory.mktemp("cfg") / f"{FIELD}.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    base = {"root": str(root), "field": FIELD}
    work = root / "tasks_t99"

    def run(step: str, **p) -> None:
        res = run_step(step, {**base, **p}, work / f"{step}_{len(list(work.glob('*'))) if work.exists() else 0}")
        assert res.ok, res.error

    run("magellanic.setup_tile", tiles=["T99"], config=str(cfg))
    for mef in tree.mef_files():
        if any(f"_{f}_" in mef.name for f, _ in SEAM_GROUPS):
            run("magellanic.back_sub", mef=mef.name, tiles=["T99"], config=str(cfg))
    for bsub in (False, True):
        for f, t in SEAM_GROUPS:
            run("magellanic.swarp_setup", tile="T99", filter=f, exptime=t, bsub=bsub, config=str(cfg))
            run("magellanic.swarp", tile="T99", filter=f, exptime=t, bsub=bsub, keep_resampled=True)
    return root, cfg


@pytest.mark.parametrize("filt,exptime", SEAM_GROUPS)
def test_seams_vanish_after_background_matching(field, whole_field_tile, filt, exptime):
    root, kf = field
    tree = KredTree(root, FIELD)
    noise = _pixel_noise(root)
    exps = [e.expnum for e in kf.exposures.values() if e.filter == filt and e.exptime == exptime]
    sigma = np.mean([noise[e] for e in exps]) * AREA  # per-pixel sky noise, in mosaic units
    seams = {}
    for bsub in (False, True):
        mosaic = tree.mosaic("T99", filt, exptime, bsub=bsub)
        h = fitsio.read_header(str(mosaic))
        mask = _star_mask(h, kf.stars, filt, sigma)
        layers = _layers(mosaic.parent / f"{mosaic.stem}_resamp", (h["CRPIX1"], h["CRPIX2"]))
        assert len(layers) == 12
        seams[bsub] = _seams(layers, mask)
    before, after = seams[False], seams[True]
    assert len(before) == len(after) >= 10  # every overlap of the group, each whole in the tile
    worst = []
    for na, nb, npix, med, err in after:
        ratio = abs(med) / sigma
        bound = 0.05 if npix >= 10_000 else 0.05 + 3 * err / sigma  # small overlaps: within their own noise
        assert ratio < bound, (na, nb, npix, ratio, err / sigma)
        worst.append(ratio)
    typical_after = np.median(worst)
    typical_before = np.median([abs(m) / sigma for _, _, _, m, _ in before])
    assert typical_after < 0.02 and typical_before > 0.1 and typical_before > 5 * typical_after, (
        typical_before, typical_after)
