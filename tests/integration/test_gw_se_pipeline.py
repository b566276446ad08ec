"""gw.se_ccd and gw.calibrate on a synthetic GW night, checked against the simulation's truth.

One search exposure (668439, with noise, defects and header-WCS errors) is built for three
CCDs at a quarter of DECam's size (512 x 1024, ~80 stars each), with the night's master
calibrations and the GAIA-like reference catalog. ``gw.se_ccd`` runs through
``run_step`` for two CCDs and through the CLI (``python -m skyops.cli.main step run``) in a
subprocess for the third -- the real tools (SExtractor, PSFEx) every time -- then
``gw.calibrate`` takes the three catalogs. The science: astrometric offsets, zeropoints,
detrending and the PSF against the truth the pixels were made from.

The zeropoints are checked a second time where they are hard: six crowded CCDs of the gw-demo
preset (256 x 512, 60,000 stars and 60,000 galaxies per deg2, 8-14 calibration stars each), the
ones furthest from the truth (+0.010 to +0.018 mag) before gw.calibrate dropped blended stars.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.wcs import WCS

from skyops.campaigns.gw.calibrate import read_ldac_header
from skyops.campaigns.gw.photcal import match_sky
from skyops.sim import Survey, layout
from skyops.sim.fitswrite import write_table
from skyops.steps.runner import StepResult, run_step

SEED, EXPNUM, NITE = 11, 668439, "20170817"
CCDS = (10, 28, 47)
CLI_CCD = 47
ARCSEC_PER_PIX = 0.263


@dataclass
class Night:
    root: Path
    survey: Survey
    truth: np.ndarray  # CCD truth rows
    objects: np.ndarray
    params: dict[int, dict]
    se: dict[int, StepResult]
    cli: subprocess.CompletedProcess
    cal: StepResult

    def t(self, ccd: int) -> np.void:
        return self.truth[self.truth["ccdnum"] == ccd][0]

    def out(self, ccd: int, filetype: str) -> str:
        return self.se[ccd].output_paths(filetype)[0]


def _params(s: Survey, root: Path, ccd: int, refcat: Path) -> dict:
    spec, cal = s.exposure(EXPNUM), s.calib_run(NITE)
    return {"raw": str(root / layout.raw(spec).relpath), "ccd": ccd,
            "bias": str(root / layout.biascor(cal, ccd).relpath),
            "flat": str(root / layout.flatcor(cal, spec.band, ccd).relpath),
            "bpm": str(root / layout.bpm(cal, ccd).relpath), "refcat": str(refcat)}


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Night:
    root = tmp_path_factory.mktemp("gw_se")
    s = Survey("demo", SEED, ccd_shape=(512, 1024))
    refcat = root / layout.refcat(s.refcat_name).relpath
    write_table(refcat, s.refcat, "REFCAT")
    s.make_calibrations(NITE, root, ccds=CCDS)
    res = s.make_exposure(EXPNUM, root, ccds=CCDS, raw=True)
    params = {c: _params(s, root, c, refcat) for c in CCDS}
    se = {c: run_step("gw.se_ccd", params[c], root / f"se{c}") for c in CCDS if c != CLI_CCD}
    pfile = root / "cli_params.json"
    pfile.write_text(json.dumps(params[CLI_CCD]))
    cli = subprocess.run([sys.executable, "-m", "skyops.cli.main", "step", "run", "gw.se_ccd", "--params",
                          str(pfile), "--workdir", str(root / f"se{CLI_CCD}")], capture_output=True, text=True,
                         env=dict(os.environ), timeout=300)
    se[CLI_CCD] = StepResult.load(root / f"se{CLI_CCD}")
    cats = [se[c].output_paths("cat_finalcut")[0] for c in CCDS if se[c] is not None and se[c].ok]
    cal = run_step("gw.calibrate", {"catalogs": cats, "refcat": str(refcat)}, root / "cal")
    return Night(root, s, res.ccds, res.objects, params, se, cli, cal)


def test_steps_succeed_through_run_step_and_the_cli(night):
    assert night.cli.returncode == 0, night.cli.stderr[-2000:]
    assert "gw.se_ccd success" in night.cli.stderr
    for c in CCDS:
        r = night.se[c]
        assert r is not None and r.ok, r.error if r else "no result.json"
        assert r.metrics["verified"] is True
    assert night.cal.ok, night.cal.error


def test_astrometric_offsets_are_recovered(night):
    """The header WCS of each CCD is off by the truth's astrom_dra/ddec; the fit finds it to 0.02 arcsec."""
    for c in CCDS:
        m, t = night.se[c].metrics, night.t(c)
        assert abs(t["astrom_dra_arcsec"]) + abs(t["astrom_ddec_arcsec"]) > 0.05  # there is something to find
        assert m["astrom_dra_arcsec"] == pytest.approx(t["astrom_dra_arcsec"], abs=0.02)
        assert m["astrom_ddec_arcsec"] == pytest.approx(t["astrom_ddec_arcsec"], abs=0.02)
        assert 0.0 < m["astrom_rms_arcsec"] < 0.05
        assert m["astrom_nstars"] >= 20 and m["astrom_model"] == "affine"


def test_refined_wcs_is_written_into_every_hdu_and_the_catalog(night):
    """Through the output header WCS, true star positions land on their true pixels (0.02 arcsec)."""
    for c in CCDS:
        path = night.out(c, "red_immask")
        with fitsio.FITS(path) as f:
            hdrs = [f[i].read_header() for i in range(3)]
        assert {h["CRPIX1"] for h in hdrs} == {hdrs[0]["CRPIX1"]} and {h["CD1_2"] for h in hdrs} == {hdrs[0]["CD1_2"]}
        assert hdrs[0]["ASTRDRA"] == pytest.approx(night.se[c].metrics["astrom_dra_arcsec"], abs=1e-5)
        assert hdrs[0]["CRPIX1"] != hdrs[0]["HCRPIX1"]
        o = night.objects[(night.objects["ccdnum"] == c) & night.objects["in_bounds"]]
        x, y = WCS(hdrs[0]).all_world2pix(o["ra"], o["dec"], 1)
        dx, dy = x - o["x_image"], y - o["y_image"]
        assert np.hypot(dx.mean(), dy.mean()) * ARCSEC_PER_PIX < 0.02
        assert np.hypot(dx, dy).max() * ARCSEC_PER_PIX < 0.05  # rotation/scale terms stay tiny over the CCD
        # the final catalog's sky positions (SExtractor pass 2 on the written image) agree
        cat = fitsio.read(night.out(c, "cat_finalcut"), ext="LDAC_OBJECTS")
        stars = o[(o["kind"].astype(str) == "star") & ~o["saturated"] & (o["blend_frac"] < 0.01)]
        i_t, i_c, sep = match_sky(stars["ra"], stars["dec"], cat["ALPHAWIN_J2000"], cat["DELTAWIN_J2000"], 1.0)
        bright = cat["SNR_WIN"][i_c] > 50
        assert bright.sum() >= 10
        assert np.median(sep[bright]) < 0.03
        assert read_ldac_header(Path(night.out(c, "cat_finalcut")))["CRPIX1"] == pytest.approx(hdrs[0]["CRPIX1"])


def test_zeropoints_match_the_truth(night):
    """BLISS zeropoints per CCD within 0.01 mag of the CCD's truth mag_zero; the exposure's from all stars."""
    path = night.cal.output_paths("bliss_zeropoint")[0]
    zp = fitsio.read(path, ext="ZEROPOINT")
    exp = fitsio.read(path, ext="EXPOSURE_ZP")
    assert sorted(zp["ccdnum"]) == list(CCDS)
    for row in zp:
        t = night.t(int(row["ccdnum"]))
        assert row["mag_zero"] == pytest.approx(t["mag_zero"], abs=0.01), (row["ccdnum"], row["mag_zero"])
        assert 0 < row["sigma_mag_zero"] < 0.005 and row["nstars"] >= 10 and row["flag"] == 0
        assert row["source"].strip() == "BLISS" and row["expnum"] == EXPNUM and row["band"].strip() == "i"
        assert row["imagename"].strip() == Path(night.out(int(row["ccdnum"]), "red_immask")).name
        assert row["aper_corr_src"].strip() in ("ccd", "exposure") and 0.0 < row["aper_corr"] < 0.1
        assert row["mag_type"].strip() == "aper_6"
    assert len(exp) == 1 and exp["nccds"][0] == 3
    assert abs(int(exp["nstars"][0]) - int(zp["nstars"].sum())) <= 0.1 * zp["nstars"].sum()  # clipped as one set
    assert exp["mag_zero"][0] == pytest.approx(np.mean([night.t(c)["mag_zero"] for c in CCDS]), abs=0.01)
    m = night.cal.metrics
    assert m["exposure_mag_zero"] == pytest.approx(float(exp["mag_zero"][0]), abs=1e-5) and m["n_flagged"] == 0


def test_detrending_matches_the_simulated_reduction(night):
    """raw -> overscan, bias, gain, flat, sky: the sim's reduced SCI within a small fraction of the noise."""
    spec = night.survey.exposure(EXPNUM)
    for c in CCDS:
        with fitsio.FITS(night.out(c, "red_immask")) as f:
            sci, msk, wgt, h = f["SCI"].read(), f["MSK"].read(), f["WGT"].read(), f["SCI"].read_header()
        with fitsio.FITS(night.root / layout.red_immask(spec, c).relpath) as f:
            ref_sci, ref_msk, ref_wgt = f["SCI"].read(), f["MSK"].read(), f["WGT"].read()
        good = (msk == 0) & (ref_msk == 0)
        resid = (sci - ref_sci)[good]
        sigma = float(night.t(c)["sky_sigma"])
        assert abs(np.median(resid)) < 0.1 * sigma
        assert np.std(resid) < 0.15 * sigma  # overscan and master-bias noise, ADU rounding
        assert np.array_equal(msk, ref_msk)  # BPM bits + saturation, as the sim flagged them
        assert np.median(wgt[good] / ref_wgt[good]) == pytest.approx(1.0, abs=0.01)
        assert np.all(wgt[(msk & 1) != 0] == 0)
        assert h["SKYBRITE"] == pytest.approx(night.t(c)["sky_e"], abs=0.1 * sigma)
        assert night.se[c].metrics["sky_sigma"] == pytest.approx(sigma, rel=0.1)


def test_psf_model_fwhm_matches_the_truth(night):
    """The PSFEx model's FWHM at the CCD centre within 5% of the true PSF's there."""
    for c in CCDS:
        m, t = night.se[c].metrics, night.t(c)
        assert m["psf_fwhm_arcsec"] == pytest.approx(t["psf_fwhm"], rel=0.05)
        assert m["psf_stars"] >= 20
        assert fitsio.read_header(night.out(c, "red_immask"))["FWHM"] == pytest.approx(m["psf_fwhm_pix"], abs=1e-3)


def test_outputs_follow_the_contract(night):
    r = night.se[28]
    assert {o["filetype"] for o in r.outputs} == {"red_immask", "cat_finalcut", "psfex_model"}
    names = sorted(Path(p).name for p in r.output_paths())
    assert names == ["D00668439_i_c28_fullcat.fits", "D00668439_i_c28_immasked.fits", "D00668439_i_c28_psfexcat.psf"]
    assert all(len(o["md5"]) == 32 and o["size"] > 0 for o in r.outputs)
    assert [u["filetype"] for u in r.used] == ["raw", "cal_biascor", "cal_norm_dflatcor", "cal_bpm", "cal_refcat"]
    assert r.versions["source-extractor"].startswith("Source Extractor") and r.versions["psfex"].startswith("PSFEx")
    assert set(r.metrics["stage_seconds"]) == {"overscan_bias_flat", "sky", "write", "sextractor_pass1", "psfex",
                                               "astrometry", "sextractor_pass2"}
    workdir = night.root / "se28"
    assert sorted(p.name for p in workdir.iterdir()) == names + ["result.json"]  # no scratch, no .part
    with fitsio.FITS(night.out(28, "red_immask")) as f:
        assert [h.get_extname() for h in f] == ["SCI", "MSK", "WGT"]
        assert f[0].read().dtype == np.float32 and f[1].read().dtype == np.int16 and f[2].read().dtype == np.float32
        h = f[0].read_header()
    for key, value in (("EXPNUM", EXPNUM), ("CCDNUM", 28), ("BAND", "i"), ("BUNIT", "electrons"), ("GAIN", 1.0),
                       ("ASTRMODL", "affine"), ("NITE", NITE), ("FILENAME", "D00668439_i_c28_immasked.fits")):
        assert h[key] == value, key
    with fitsio.FITS(night.out(28, "cat_finalcut")) as f:
        assert [h.get_extname() for h in f[1:]] == ["LDAC_IMHEAD", "LDAC_OBJECTS"]
        cols = f["LDAC_OBJECTS"].get_colnames()
    assert {"ALPHAWIN_J2000", "FLUX_PSF", "SPREAD_MODEL", "FLUX_APER", "IMAFLAGS_ISO"} <= set(cols)
    with fitsio.FITS(night.out(28, "psfex_model")) as f:
        assert f[1].read_header()["POLNAME1"] == "XWIN_IMAGE"


def test_bad_inputs_fail_early_with_exit_2(night, tmp_path):
    p = dict(night.params[28], bias=night.params[10]["bias"])
    r = run_step("gw.se_ccd", p, tmp_path / "a")
    assert r.exit_code == 2 and r.error["message"] == (
        f"bias file {night.params[10]['bias']} is for CCDNUM 10, not 28; pass this CCD's master bias "
        "(parameter 'bias')")
    r = run_step("gw.se_ccd", dict(night.params[28], band="r"), tmp_path / "b")
    assert r.exit_code == 2 and r.error["message"] == (
        f"parameter 'band' is 'r' but {night.params[28]['raw']} was taken in 'i'; omit 'band' or pass the raw "
        "exposure's band")
    r = run_step("gw.se_ccd", dict(night.params[28], ccd=3), tmp_path / "c")  # a CCD the raw file lacks
    assert r.exit_code == 2 and "has no HDU with CCDNUM = 3 (it has [10, 28, 47])" in r.error["message"]
    cli = subprocess.run([sys.executable, "-m", "skyops.cli.main", "step", "run", "gw.se_ccd", "--params",
                          *(f"{k}={v}" for k, v in night.params[28].items() if k != "ccd"), "ccd=61",
                          "--workdir", str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    assert "step 'gw.se_ccd': parameter 'ccd': CCD 61 (N30) is unusable on DECam" in cli.stderr


def test_verification_fails_a_search_ccd_but_not_a_template(night, tmp_path):
    strict = dict(night.params[10], max_astrom_rms=1e-4)
    r = run_step("gw.se_ccd", strict, tmp_path / "search")
    assert r.exit_code == 1 and r.error["type"] == "ProcessingError"
    assert r.error["message"].startswith("gw.se_ccd verification failed for exposure 668439 CCD 10: astrometric rms ")
    assert len(r.outputs) == 3 and r.metrics["verified"] is False  # written, and said to be unverified
    r = run_step("gw.se_ccd", dict(strict, template=True, run="r2379p01"), tmp_path / "template")
    assert r.ok and r.metrics["verified"] is False and r.metrics["template"] is True
    assert Path(r.output_paths("red_immask")[0]).name == "D00668439_i_c10_r2379p01_immasked.fits"


# ------------------------------------------------------------------ crowded CCDs (gw-demo)
GW_DEMO_SEED = 42  # make demo's
#: The gw-demo CCDs of exposure 668439 whose BLISS zeropoints were furthest from the truth before
#: gw.calibrate rejected blended stars (+0.018, +0.018, +0.016, +0.016, +0.015, +0.010 mag; found
#: by calibrating all 60 CCDs of the exposure against the sim's truth). Alone they still make an
#: exposure of several CCDs, so the aperture correction comes from the exposure's FWHM model.
CROWDED_CCDS = (4, 60, 32, 39, 19, 9)


@dataclass
class Crowded:
    truth: np.ndarray
    se: dict[int, StepResult]
    cal: StepResult


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Crowded:
    root = tmp_path_factory.mktemp("gw_crowded")
    s = Survey("gw-demo", GW_DEMO_SEED)
    refcat = root / layout.refcat(s.refcat_name).relpath
    write_table(refcat, s.refcat, "REFCAT")
    s.make_calibrations(NITE, root, ccds=CROWDED_CCDS)
    res = s.make_exposure(EXPNUM, root, ccds=CROWDED_CCDS, raw=True)
    se = {c: run_step("gw.se_ccd", _params(s, root, c, refcat), root / f"se{c}") for c in CROWDED_CCDS}
    cats = [r.output_paths("cat_finalcut")[0] for r in se.values() if r.ok]
    cal = run_step("gw.calibrate", {"catalogs": cats, "refcat": str(refcat)}, root / "cal")
    return Crowded(res.ccds, se, cal)


def test_zeropoints_of_crowded_ccds_match_the_truth(crowded):
    """Per CCD within 0.01 mag of the truth although neighbours add light to a fifth of the stars."""
    assert all(r.ok for r in crowded.se.values()), {c: r.error for c, r in crowded.se.items() if not r.ok}
    assert crowded.cal.ok, crowded.cal.error
    zp = fitsio.read(crowded.cal.output_paths("bliss_zeropoint")[0], ext="ZEROPOINT")
    assert sorted(zp["ccdnum"]) == sorted(CROWDED_CCDS)
    err = {}
    for row in zp:
        t = crowded.truth[crowded.truth["ccdnum"] == row["ccdnum"]][0]
        err[int(row["ccdnum"])] = float(row["mag_zero"] - t["mag_zero"])
        assert row["flag"] == 0 and row["nstars"] >= 5 and row["mag_type"].strip() == "aper_6"
    assert max(abs(e) for e in err.values()) < 0.01, err
    assert np.sqrt(np.mean(np.square(list(err.values())))) < 0.006, err
    m = crowded.cal.metrics
    assert m["n_rejected_blend"] > 0 and m["n_rejected_profile"] > 0  # both tests found blends here
