"""gw.diffimg_ccd against the truth of a small synthetic survey, through the real step runner.

A demo-like build (skyops.sim, noise on, 512 x 1024-pixel CCDs, 25 transients per CCD, exact
header WCS as the GW SE step would leave it) gives four search CCDs of night 20170817 and their
two templates from 20160301. The step runs the real SWarp and SExtractor; the checks are the
campaign's science requirements:

* injected transients (truth ``transients``, matched within 1"): >= 95% recovered at search
  S/N >= 10 and >= 50% at 5 <= S/N < 10 (truth ``snr_expected``, the search image's own S/N;
  the difference image also carries the templates' noise);
* median |magnitude error| < 0.03 at S/N >= 20; at most 3 false candidates per CCD;
* PSF matching: chi2 per pixel < 1.5 inside the footprints (radius 2 FWHM) of non-variable stars,
  on the pixels the difference image calls fully good (not near saturation, all templates).

Transients within 8 pixels of a CCD edge (the sim places them down to 4 pixels from the edge of
these small CCDs; 16 on full-size ones) or within 3 FWHM of another transient (a blend has no
single true magnitude) are left out of the statistics.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import fitsio
import numpy as np
import pytest

import skyops.campaigns.gw.diffimg  # noqa: F401  (registers gw.diffimg_ccd; also listed in gw.steps)
from skyops.campaigns.gw.candidates import CANDIDATE_DTYPE, REJECT_FLAGS
from skyops.campaigns.gw.diffimg import MASK_BAD, NEAR_SATURATED, TEMPLATE_PARTIAL
from skyops.sim import Survey, layout
from skyops.sim.presets import get_preset
from skyops.steps.runner import run_step

SEED = 7
SEARCH, TEMPLATES = 668439, (521360, 521361)
CCDS = (10, 28, 40, 50)
SHAPE = (512, 1024)
PIXEL_SCALE = 0.263


@dataclasses.dataclass
class CCDRun:
    ccd: int
    result: object
    truth_ccd: np.void
    objects: np.ndarray
    transients: np.ndarray
    search: Path
    templates: list[Path]

    @property
    def out(self) -> Path:
        return Path(self.result.output_paths("gw_diff_candidates")[0])

    def candidates(self, ext: str = "CANDIDATES") -> np.ndarray:
        return fitsio.read(str(self.out), ext=ext)

    def diff(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with fitsio.FITS(self.result.output_paths("gw_diff_image")[0]) as f:
            return f["SCI"].read(), f["MSK"].read(), f["WGT"].read()


def _build(root: Path, seed: int, ccds, **overrides) -> tuple[Survey, dict]:
    s = Survey("demo", seed, ccd_shape=SHAPE, transients_per_ccd=25.0, astrometric_offset_sigma=0.0, **overrides)
    res = {e: s.make_exposure(e, root, ccds=list(ccds), raw=False) for e in (SEARCH,) + TEMPLATES}
    return s, res


def _run(s: Survey, res: dict, root: Path, ccd: int, work: Path, **params) -> CCDRun:
    search = root / layout.red_immask(s.exposure(SEARCH), ccd).relpath
    templates = [root / layout.red_immask(s.exposure(e), ccd).relpath for e in TEMPLATES]
    t = res[SEARCH].ccds[res[SEARCH].ccds["ccdnum"] == ccd][0]
    p = {"search": str(search), "templates": [str(x) for x in templates], "zeropoint": float(t["mag_zero"])}
    p.update(params)
    r = run_step("gw.diffimg_ccd", p, work)
    objs = res[SEARCH].objects[res[SEARCH].objects["ccdnum"] == ccd]
    tr = res[SEARCH].transients[(res[SEARCH].transients["ccdnum"] == ccd) & res[SEARCH].transients["in_bounds"]]
    return CCDRun(ccd, r, t, objs, tr, search, templates)


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gw_diffimg")
    s, res = _build(root / "archive", SEED, CCDS)
    runs = {c: _run(s, res, root / "archive", c, root / f"work_{c}") for c in CCDS}
    return s, res, root, runs


def _sep_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    cosd = np.cos(np.radians(np.mean(dec1) if len(dec1) else 0.0))
    return np.hypot((ra1[:, None] - ra2[None, :]) * cosd, dec1[:, None] - dec2[None, :]) * 3600.0


def _match(run: CCDRun) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per transient: usable for statistics, recovered, measured-true magnitude; per candidate: real."""
    tr, cand = run.transients, run.candidates()
    fwhm = float(run.truth_ccd["psf_fwhm"]) / PIXEL_SCALE
    ny, nx = SHAPE[1], SHAPE[0]
    edge = (tr["x_image"] < 9) | (tr["y_image"] < 9) | (tr["x_image"] > nx - 8) | (tr["y_image"] > ny - 8)
    d = np.hypot(tr["x_image"][:, None] - tr["x_image"][None], tr["y_image"][:, None] - tr["y_image"][None])
    np.fill_diagonal(d, np.inf)
    blend = d.min(axis=1) < 3 * fwhm if len(tr) > 1 else np.zeros(len(tr), dtype=bool)
    found = np.zeros(len(tr), dtype=bool)
    dmag = np.full(len(tr), np.nan)
    real = np.zeros(len(cand), dtype=bool)
    if len(tr) and len(cand):
        sep = _sep_arcsec(tr["ra"], tr["dec"], cand["ra"], cand["dec"])
        best = sep.argmin(axis=1)
        found = sep[np.arange(len(tr)), best] < 1.0
        dmag = np.where(found, cand["mag"][best] - tr["mag"], np.nan)
        real = (sep < 1.0).any(axis=0)
    return ~(edge | blend), found, dmag, real


def _pooled(runs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    snr, found, dmag = [], [], []
    for run in runs.values():
        use, f, dm, _ = _match(run)
        snr.append(run.transients["snr_expected"][use])
        found.append(f[use])
        dmag.append(dm[use])
    return np.concatenate(snr), np.concatenate(found), np.concatenate(dmag)


# ----------------------------------------------------------------------------- the contract
def test_step_outputs_metrics_and_files(survey):
    _, _, _, runs = survey
    run = runs[28]
    r = run.result
    assert r.ok, r.error
    kinds = {o["filetype"] for o in r.outputs}
    assert {"gw_diff_image", "gw_diff_candidates", "gw_diff_stamp"} <= kinds
    assert {u["path"] for u in r.used} == {str(run.search.resolve())} | {str(p.resolve()) for p in run.templates}
    assert r.versions["SWarp"].startswith("SWarp version 2.") and "source-extractor" in r.versions
    m = r.metrics
    for key in ("n_candidates", "kernel_chi2", "fwhm_search_pix", "fwhm_template_pix", "convolved", "n_fit_stamps_used",
                "time_swarp_wall_s", "time_kernel_fit_cpu_s", "flux_err_scale", "matching_systematic"):
        assert key in m, key
    assert m["convolved"] == "template"  # the templates come from the better-seeing season
    # FWHM from the stacked stars: the truth (optical) FWHM convolved with the pixel, within 8%
    fw_s = float(run.truth_ccd["psf_fwhm"]) / PIXEL_SCALE
    assert m["fwhm_search_pix"] == pytest.approx(np.hypot(fw_s, 1.0), rel=0.08)
    assert m["fwhm_template_pix"] < m["fwhm_search_pix"]
    assert 0.5 < m["kernel_chi2"] < 1.5 and m["n_fit_stamps_used"] >= 20

    with fitsio.FITS(r.output_paths("gw_diff_image")[0]) as f:
        assert [h.get_extname() for h in f] == ["SCI", "MSK", "WGT"]
        h = f["SCI"].read_header()
        assert h["DIFFCONV"] == "template" and h["NAXIS1"] == SHAPE[0] and h["NAXIS2"] == SHAPE[1]
        assert h["CRPIX1"] == fitsio.read_header(str(run.search), 0)["CRPIX1"]  # the search grid
        sci, msk, wgt = f["SCI"].read(), f["MSK"].read(), f["WGT"].read()
    bad = (msk & MASK_BAD) != 0
    assert np.all(wgt[bad] == 0) and np.all(wgt[~bad] > 0) and np.all(sci[bad] == 0)
    assert bad.mean() < 0.1

    cand = run.candidates()
    assert cand.dtype.names == CANDIDATE_DTYPE.names
    assert len(cand) == m["n_candidates"] and np.all(cand["is_candidate"])
    assert np.all((cand["flags"] & REJECT_FLAGS) == 0)
    assert np.all(cand["snr"] >= 5.0) and np.all(np.isfinite(cand["mag"]))
    assert np.allclose(cand["mag_err"], 1.0857 * cand["flux_err"] / cand["flux"], rtol=1e-3)
    rej = run.candidates("REJECTED")
    assert len(rej) + len(cand) == m["n_detections"] and np.all((rej["flags"] & REJECT_FLAGS) != 0)

    pngs = r.output_paths("gw_diff_stamp")
    assert len(pngs) == len(cand)
    for p in pngs:
        data = Path(p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 20_000
    on_disk = json.loads((Path(r.output_paths("gw_diff_image")[0]).parent / "result.json").read_text())
    assert on_disk["status"] == "success" and not any(Path(o["path"]).name.startswith(".") for o in on_disk["outputs"])
    assert not any(Path(o["path"]).parent.name.startswith(".diffimg") for o in on_disk["outputs"])


# ----------------------------------------------------------------------------- the science
def test_transient_completeness(survey):
    _, _, _, runs = survey
    snr, found, _ = _pooled(runs)
    hi, mid = snr >= 10, (snr >= 5) & (snr < 10)
    assert hi.sum() >= 40 and mid.sum() >= 12, "the build should hold enough transients to test"
    assert found[hi].mean() >= 0.95, f"S/N >= 10: {found[hi].sum()}/{hi.sum()}"
    assert found[mid].mean() >= 0.50, f"5 <= S/N < 10: {found[mid].sum()}/{mid.sum()}"


def test_magnitudes_of_bright_transients(survey):
    _, _, _, runs = survey
    snr, found, dmag = _pooled(runs)
    sel = (snr >= 20) & found
    assert sel.sum() >= 20
    assert np.median(np.abs(dmag[sel])) < 0.03
    assert abs(np.median(dmag[sel])) < 0.02  # no photometric bias worth the name


def test_false_candidates(survey):
    _, _, _, runs = survey
    false = [int((~_match(run)[3]).sum()) for run in runs.values()]
    assert np.mean(false) <= 3.0, false


def test_psf_matching_chi2_on_static_stars(survey):
    _, _, _, runs = survey
    chi2_sum, npix = 0.0, 0
    for run in runs.values():
        sci, msk, wgt = run.diff()
        fwhm = float(run.truth_ccd["psf_fwhm"]) / PIXEL_SCALE
        o = run.objects
        stars = o[(o["kind"] == b"star") & o["in_bounds"] & ~o["saturated"]]
        if len(run.transients):  # non-variable: nothing transient within 4 FWHM
            d = np.hypot(stars["x_image"][:, None] - run.transients["x_image"][None],
                         stars["y_image"][:, None] - run.transients["y_image"][None]).min(axis=1)
            stars = stars[d > 4 * fwhm]
        ny, nx = sci.shape
        yy, xx = np.mgrid[0:ny, 0:nx]
        foot = np.zeros(sci.shape, dtype=bool)
        r = 2 * fwhm
        for x, y in zip(stars["x_image"] - 1, stars["y_image"] - 1):
            y0, y1 = int(max(y - r - 1, 0)), int(min(y + r + 2, ny))
            x0, x1 = int(max(x - r - 1, 0)), int(min(x + r + 2, nx))
            foot[y0:y1, x0:x1] |= (xx[y0:y1, x0:x1] - x) ** 2 + (yy[y0:y1, x0:x1] - y) ** 2 <= r * r
        good = foot & (wgt > 0) & ((msk & (NEAR_SATURATED | TEMPLATE_PARTIAL)) == 0)
        chi2_sum += float((sci[good].astype(float) ** 2 * wgt[good]).sum())
        npix += int(good.sum())
        assert len(stars) >= 20
    assert npix > 20_000
    assert chi2_sum / npix < 1.5


# ----------------------------------------------------------------------------- other paths
def test_search_sharper_than_templates_convolves_the_search(tmp_path):
    """A search night of excellent seeing: the search image is the one convolved, the photometry
    uses the templates' PSF, and bright transients are still found with good magnitudes."""
    p = get_preset("demo")
    nights = tuple(dataclasses.replace(n, seeing_range=(0.70, 0.75)) if n.kind == "search" else n for n in p.nights)
    s, res = _build(tmp_path / "archive", 12, (20, 33), nights=nights)
    runs = {c: _run(s, res, tmp_path / "archive", c, tmp_path / f"w{c}") for c in (20, 33)}
    for run in runs.values():
        assert run.result.ok, run.result.error
        m = run.result.metrics
        assert m["convolved"] == "search" and m["fwhm_search_pix"] < m["fwhm_template_pix"]
        assert fitsio.read_header(run.result.output_paths("gw_diff_image")[0], 0)["DIFFCONV"] == "search"
    snr, found, dmag = _pooled(runs)
    assert found[snr >= 10].mean() >= 0.9
    sel = (snr >= 20) & found
    assert sel.sum() >= 10 and np.median(np.abs(dmag[sel])) < 0.05
    assert np.mean([(~_match(r)[3]).sum() for r in runs.values()]) <= 3.0


def test_psfex_model_for_the_photometry(survey, tmp_path):
    """With the search CCD's PSFEx model (as gw.se_ccd makes it) the fluxes agree with the stacked PSF's."""
    from skyops.imaging.astromatic import psfex, sextractor

    s, res, root, runs = survey
    run = runs[40]
    ldac = sextractor(f"{run.search}[0]", tmp_path / "psf.ldac", workdir=tmp_path,
                      params=["VIGNET(35,35)", "X_IMAGE", "Y_IMAGE", "XWIN_IMAGE", "YWIN_IMAGE", "FLUX_APER(1)",
                              "FLUXERR_APER(1)", "FLUX_RADIUS", "ELONGATION", "FLAGS", "SNR_WIN", "FLUX_MAX"],
                      weight=f"{run.search}[2]", filter_fwhm=4.0,
                      config={"DETECT_THRESH": 10, "PHOT_APERTURES": 20, "SATUR_LEVEL": 1.5e5, "GAIN": 1.0,
                              "BACK_TYPE": "MANUAL", "BACK_VALUE": 0.0})
    model = psfex(ldac, tmp_path / "search.psf", workdir=tmp_path,
                  config={"PSF_SIZE": "35,35", "PSFVAR_DEGREES": 1, "SAMPLE_FWHMRANGE": "2,10"})
    again = _run(s, res, root / "archive", 40, tmp_path / "work", search_psf=str(model))
    assert again.result.ok, again.result.error
    assert again.result.metrics["psf_source"] == "psfex"
    assert str(model.resolve()) in {u["path"] for u in again.result.used}
    a, b = run.candidates(), again.candidates()
    sep = _sep_arcsec(a["ra"], a["dec"], b["ra"], b["dec"])
    i, j = np.nonzero(sep < 0.5)
    bright = a["snr"][i] > 20
    assert bright.sum() >= 5
    ratio = b["flux"][j][bright] / a["flux"][i][bright]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.02)


def test_magnitudes_need_a_zeropoint(survey, tmp_path):
    """No zeropoint parameter: a MAGZERO header keyword is used; without one, magnitudes are NaN."""
    s, res, root, runs = survey
    run = runs[28]
    copy = tmp_path / "search_zp.fits"
    shutil.copy(run.search, copy)
    with fitsio.FITS(str(copy), "rw") as f:
        f[0].write_key("MAGZERO", 30.0, "test zeropoint")
    r1 = run_step("gw.diffimg_ccd", {"search": str(copy), "templates": [str(p) for p in run.templates]},
                  tmp_path / "with")
    assert r1.ok and r1.metrics["zeropoint"] == 30.0
    c1 = fitsio.read(r1.output_paths("gw_diff_candidates")[0], ext="CANDIDATES")
    assert np.allclose(c1["mag"], 30.0 - 2.5 * np.log10(c1["flux"]), atol=1e-4)
    r2 = run_step("gw.diffimg_ccd", {"search": str(run.search), "templates": [str(p) for p in run.templates],
                                     "max_stamp_pngs": 0}, tmp_path / "without")
    assert r2.ok and r2.metrics["zeropoint"] is None and not r2.output_paths("gw_diff_stamp")
    c2 = fitsio.read(r2.output_paths("gw_diff_candidates")[0], ext="CANDIDATES")
    assert len(c2) and np.all(np.isnan(c2["mag"])) and np.all(np.isfinite(c2["flux"]))


def test_bad_inputs_are_input_errors(survey, tmp_path):
    _, _, _, runs = survey
    run = runs[28]
    base = {"search": str(run.search), "templates": [str(p) for p in run.templates]}
    r = run_step("gw.diffimg_ccd", {**base, "templates": []}, tmp_path / "a")
    assert r.exit_code == 2 and "parameter 'templates' is empty" in r.error["message"]
    r = run_step("gw.diffimg_ccd", {**base, "templates": [str(tmp_path / "nope.fits")]}, tmp_path / "b")
    assert r.exit_code == 2 and "nope.fits does not exist" in r.error["message"]
    r = run_step("gw.diffimg_ccd", {**base, "band": "g"}, tmp_path / "c")
    assert r.exit_code == 2 and "parameter 'band' is 'g'" in r.error["message"]
    r = run_step("gw.diffimg_ccd", {**base, "convolve": "both", "snr_min": -1}, tmp_path / "d")
    assert r.exit_code == 2 and "'convolve'" in r.error["message"] and "'snr_min'" in r.error["message"]
    r = run_step("gw.diffimg_ccd", {**base, "kernel_degrees": [6, 4]}, tmp_path / "e")
    assert r.exit_code == 2 and "kernel_sigmas" in r.error["message"]
    for rr in (tmp_path / x for x in "abcde"):
        assert not list(rr.glob("*.fits"))  # nothing written on bad input
