"""gw.se_ccd / gw.calibrate building blocks on small synthetic inputs: parameters, overscan and
amplifier layout, the astrometric fit, sigma-clipped zeropoints, sky, the GAIA transformation."""
from __future__ import annotations

import json
from pathlib import Path

import fitsio
import numpy as np
import pytest

from skyops.campaigns.gw import astrometry, photcal
from skyops.campaigns.gw.detrend import RawCCD, amplifiers, detrend, overscan_subtract, parse_section, weight_map
from skyops.campaigns.gw.sky import estimate_sky
from skyops.errors import InputError, ProcessingError
from skyops.sim.refcat import band_mag
from skyops.steps.registry import get_step
from skyops.steps.runner import run_step

SE_MESSAGE_61 = ("step 'gw.se_ccd': parameter 'ccd': CCD 61 (N30) is unusable on DECam and is not processed; "
                 "nightly processing runs CCDs 1, 3-60 and 62")


def _se_params(tmp_path: Path, **over) -> dict:
    p = {"raw": str(tmp_path / "raw.fits"), "ccd": 28, "bias": str(tmp_path / "b.fits"),
         "flat": str(tmp_path / "f.fits"), "refcat": str(tmp_path / "ref.fits")}
    p.update(over)
    return p


@pytest.mark.parametrize("ccd, message", [
    (61, SE_MESSAGE_61),
    (2, "step 'gw.se_ccd': parameter 'ccd': CCD 2 (S30) is unusable on DECam and is not processed; nightly "
        "processing runs CCDs 1, 3-60 and 62"),
    (63, "step 'gw.se_ccd': parameter 'ccd': 63 is not a DECam science CCD; expected 1..62 (CCDs 2 and 61 are "
         "unusable)"),
    (0, "step 'gw.se_ccd': parameter 'ccd': 0 is not a DECam science CCD; expected 1..62 (CCDs 2 and 61 are "
        "unusable)"),
])
def test_se_ccd_rejects_unusable_ccds_before_touching_files(tmp_path, ccd, message):
    r = run_step("gw.se_ccd", _se_params(tmp_path, ccd=ccd), tmp_path / "w")
    assert r.exit_code == 2 and r.error["type"] == "StepParameterError"
    assert r.error["message"] == message
    assert r.outputs == [] and r.used == []


def test_se_ccd_parameter_errors_name_the_parameter(tmp_path):
    r = run_step("gw.se_ccd", _se_params(tmp_path, overscan="poly"), tmp_path / "a")
    assert r.exit_code == 2
    assert r.error["message"] == ("step 'gw.se_ccd': parameter 'overscan': 'poly' is not an overscan mode; expected "
                                  "one of row, median")
    r = run_step("gw.se_ccd", _se_params(tmp_path, band="H"), tmp_path / "b")
    assert r.error["message"] == ("step 'gw.se_ccd': parameter 'band': 'H' is not a DECam band; expected one of "
                                  "u, g, r, i, z, Y")
    r = run_step("gw.se_ccd", _se_params(tmp_path, bias=str(tmp_path / "a,b.fits")), tmp_path / "c")
    assert r.exit_code == 2 and "parameter 'bias'" in r.error["message"]
    assert "contains ','" in r.error["message"]
    r = run_step("gw.se_ccd", _se_params(tmp_path, ccd="twenty"), tmp_path / "d")
    assert r.exit_code == 2 and "parameter 'ccd'" in r.error["message"]
    r = run_step("gw.se_ccd", _se_params(tmp_path), tmp_path / "e")  # files that do not exist: bad input, exit 2
    assert r.exit_code == 2 and r.error["type"] == "InputError"
    assert r.error["message"] == (f"step 'gw.se_ccd': parameter 'raw': {tmp_path / 'raw.fits'} does not exist or "
                                  "is not a file; stage it into the workspace first (or fix the path)")


def test_step_contracts_are_registered():
    se, cal = get_step("gw.se_ccd"), get_step("gw.calibrate")
    assert se.outputs == ("red_immask", "cat_finalcut", "psfex_model")
    assert cal.outputs == ("bliss_zeropoint",)
    assert [p.name for p in se.params if p.required] == ["raw", "ccd", "bias", "flat", "refcat"]
    assert [p.name for p in cal.params if p.required] == ["catalogs", "refcat"]


def test_calibrate_parameter_errors(tmp_path):
    r = run_step("gw.calibrate", {"catalogs": [], "refcat": "x.fits"}, tmp_path / "a")
    assert r.exit_code == 2
    assert r.error["message"] == ("step 'gw.calibrate': parameter 'catalogs': the list is empty; give the "
                                  "cat_finalcut catalog of at least one CCD")
    r = run_step("gw.calibrate", {"catalogs": ["c.fits"], "refcat": "x.fits", "color_range": [2, 1]}, tmp_path / "b")
    assert r.exit_code == 2 and "parameter 'color_range'" in r.error["message"]


# ------------------------------------------------------------------ detrending
def _raw_ccd(tmp_path: Path, b_first: bool) -> tuple[RawCCD, np.ndarray]:
    """A 40x20 raw CCD with 4 overscan columns per side; amplifier B on the left when ``b_first``."""
    ny, half, ov = 20, 10, 4
    truth = np.arange(ny * 2 * half, dtype=float).reshape(ny, 2 * half) % 97 * 10.0 + 100.0  # electrons
    gain = {"A": 4.0, "B": 5.0}
    level = {"A": 1000.0, "B": 2000.0}
    raw = np.zeros((ny, 2 * half + 2 * ov))
    left, right = ("B", "A") if b_first else ("A", "B")
    raw[:, :ov] = level[left]
    raw[:, ov:ov + half] = truth[:, :half] / gain[left] + level[left]
    raw[:, ov + half:ov + 2 * half] = truth[:, half:] / gain[right] + level[right]
    raw[:, ov + 2 * half:] = level[right]
    h = fitsio.FITSHDR()
    sec = {left: (f"[{ov + 1}:{ov + half},1:{ny}]", f"[1:{ov},1:{ny}]"),
           right: (f"[{ov + half + 1}:{ov + 2 * half},1:{ny}]", f"[{ov + 2 * half + 1}:{2 * half + 2 * ov},1:{ny}]")}
    for amp in "AB":
        h[f"DATASEC{amp}"], h[f"BIASSEC{amp}"] = sec[amp]
        h[f"GAIN{amp}"], h[f"RDNOISE{amp}"], h[f"SATURAT{amp}"] = gain[amp], 6.0, 40000.0
    return RawCCD(tmp_path / "raw.fits", "S4", raw.astype(np.uint16), h, fitsio.FITSHDR()), truth


@pytest.mark.parametrize("b_first", [False, True])
def test_overscan_gain_and_amplifier_layout(tmp_path, b_first):
    raw, truth = _raw_ccd(tmp_path, b_first)
    amps, x0 = amplifiers(raw)
    assert x0 == 4 and [a.name for a in amps] == ["A", "B"]
    adu, levels, sat, _ = overscan_subtract(raw, "median")
    assert levels == (1000.0, 2000.0)  # per amplifier, wherever it sits
    assert not sat.any()
    det = detrend(raw, np.zeros_like(truth), np.ones_like(truth), None, "row")
    # uint16 rounding of the raw values: a fraction of an ADU
    assert np.abs(det.image - truth).max() < 0.5 * 5.0
    assert det.gain[0] == (5.0 if b_first else 4.0) and det.gain[-1] == (4.0 if b_first else 5.0)


def test_saturation_and_bad_flat_are_masked(tmp_path):
    raw, truth = _raw_ccd(tmp_path, False)
    data = raw.data.copy()
    data[3, 6] = 40000  # amplifier A, at its SATURATA
    raw.data = data
    flat = np.ones_like(truth)
    flat[5, 15] = 0.0
    bpm = np.zeros(truth.shape, np.int16)
    bpm[7, 2] = 1
    det = detrend(raw, np.zeros_like(truth), flat, bpm, "median")
    assert det.mask[3, 2] & 2 and det.mask[5, 15] & 1 and det.mask[7, 2] & 1
    assert det.n_saturated == 1 and det.image[5, 15] == 0.0
    wgt = weight_map(det.flat, np.full(truth.shape, 100.0, np.float32), det.read_noise, det.mask)
    assert wgt[3, 2] == 0 and wgt[5, 15] == 0 and wgt[7, 2] == 0
    assert wgt[0, 0] == pytest.approx(1.0 / (100.0 + 36.0), rel=1e-6)


def test_parse_section_errors_say_where():
    assert parse_section("[13:268,1:1024]") == (slice(0, 1024), slice(12, 268))
    assert parse_section("[268:13,1:1024]") == (slice(0, 1024), slice(12, 268))  # reversed readout
    with pytest.raises(InputError, match=r"raw\.fits\[S4\] DATASECA: '13:268' is not a FITS section"):
        parse_section("13:268", "raw.fits[S4] DATASECA")


def test_sky_ignores_sources_and_bad_pixels():
    g = np.random.default_rng(3)
    ny, nx = 256, 128
    yy, xx = np.mgrid[0:ny, 0:nx]
    sky = 1000.0 + 0.5 * xx + 0.2 * yy
    img = sky + g.normal(0, 30.0, (ny, nx))
    for x, y in g.uniform(10, 110, (40, 2)):
        img += 5e4 / (2 * np.pi * 4) * np.exp(-((xx - x) ** 2 + (yy - y * 2) ** 2) / 8.0)
    bad = np.zeros((ny, nx), bool)
    bad[:, 60] = True
    img[:, 60] = 60000.0
    model = estimate_sky(img.astype(np.float32), bad, box=64)
    assert abs(np.median((model.background - sky)[~bad])) < 0.1 * 30.0
    assert model.sigma == pytest.approx(30.0, rel=0.05)
    assert model.center == pytest.approx(sky[127:129, 63:65].mean(), abs=0.2 * 30.0)


# ------------------------------------------------------------------ astrometry
HEADER = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 197.45, "CRVAL2": -23.38,
          "CRPIX1": -2000.0, "CRPIX2": 3000.0, "CD1_1": 0.0, "CD1_2": -0.263 / 3600, "CD2_1": -0.263 / 3600,
          "CD2_2": 0.0}


def _true_sky(x, y, shift=(0.0, 0.0), rot_deg=0.0):
    """Sky positions through the header WCS moved by ``shift`` pixels and rotated about pixel (256, 512)."""
    th = np.radians(rot_deg)
    xc, yc = 256.0, 512.0
    xr = xc + np.cos(th) * (x - xc) - np.sin(th) * (y - yc) - shift[0]
    yr = yc + np.sin(th) * (x - xc) + np.cos(th) * (y - yc) - shift[1]
    crval, crpix, cd = astrometry.tan_parameters(HEADER)
    return astrometry.AstromSolution.unrefined(crval, crpix, cd).wcs((1024, 512)).all_pix2world(xr, yr, 1)


@pytest.mark.parametrize("n, model", [(60, "affine"), (7, "shift")])
def test_refine_wcs_recovers_shift_and_rotation(n, model):
    g = np.random.default_rng(5)
    x, y = g.uniform(1, 512, n), g.uniform(1, 1024, n)
    shift, rot = (2.3, -1.1), (0.004 if model == "affine" else 0.0)
    ra, dec = _true_sky(x, y, shift, rot)
    noise = 0.02  # pixels
    xd, yd = x + g.normal(0, noise, n), y + g.normal(0, noise, n)
    # unrelated reference stars and detections (galaxies) must not disturb the match
    ra_x, dec_x = _true_sky(*g.uniform(1, 512, (2, 30)) * np.array([[1], [2]]))
    sol = astrometry.refine_wcs(np.r_[xd, g.uniform(1, 512, 20)], np.r_[yd, g.uniform(1, 1024, 20)], HEADER,
                                np.r_[ra, ra_x], np.r_[dec, dec_x], (1024, 512), err=None, floor=0.005)
    assert sol.model == model
    assert sol.nmatch >= n - 1
    # the refined WCS puts the true sky positions where the stars are
    w = sol.wcs((1024, 512))
    xs, ys = w.all_world2pix(ra, dec, 1)
    assert np.sqrt(np.mean((xs - x) ** 2 + (ys - y) ** 2)) < 3 * noise
    # header minus refined at the centre: the shift in arcsec (+x South, +y West: dDec = -dx, dRA = -dy)
    assert sol.ddec_arcsec == pytest.approx(-0.263 * shift[0], abs=0.01)
    assert sol.dra_arcsec == pytest.approx(-0.263 * shift[1], abs=0.01)
    assert 0 < sol.rms_arcsec < 3 * noise * 0.263 * 1.5
    if model == "affine":
        assert abs(sol.rotation_deg) == pytest.approx(rot, abs=5e-4)


def test_refine_wcs_fails_clearly_without_matches():
    x, y = np.arange(10.0) * 40 + 20, np.arange(10.0) * 90 + 20
    ra, dec = _true_sky(x, y, shift=(200.0, 0.0))  # 53 arcsec off: beyond the search radius
    with pytest.raises(ProcessingError, match="match reference stars within 1.0 arcsec"):
        astrometry.refine_wcs(x, y, HEADER, ra[:9], dec[:9], (1024, 512), search_radius=5.0)


# ------------------------------------------------------------------ photometric calibration
def test_reference_magnitudes_follow_the_archive_catalogs_transformation():
    g, c = np.array([16.0, 18.5]), np.array([0.5, 1.9])
    assert np.allclose(photcal.reference_mag(g, c, "i"), band_mag(g, c, "i"))
    assert np.allclose(photcal.reference_mag(g, c, "i", (0.1, 0.0)), g + 0.1)
    with pytest.raises(InputError, match="band 'H' has no GAIA-to-DECam transformation"):
        photcal.reference_mag(g, c, "H")


def test_clipped_zeropoint_rejects_outliers():
    g = np.random.default_rng(9)
    zp = 31.4 + g.normal(0, 0.02, 200)
    zp[:15] += g.uniform(0.3, 2.0, 15)  # blends and variables
    z = photcal.clipped_zeropoint(zp, np.full(200, 0.02), nsigma=3.0)
    assert z.mag_zero == pytest.approx(31.4, abs=0.006)
    assert z.nrejected >= 15 and not z.used[:15].any()
    # weights 1 / (err^2 + scatter^2) when no floor is given
    assert z.sigma_mag_zero == pytest.approx(np.hypot(0.02, z.rms) / np.sqrt(z.nstars), rel=0.05)
    empty = photcal.clipped_zeropoint(np.zeros(0))
    assert empty.nstars == 0 and np.isnan(empty.mag_zero)


def test_aperture_correction_is_a_median_curve_of_growth():
    from skyops.campaigns.gw.calibrate import aperture_correction

    growth = np.tile([0.020, 0.006, 0.002], (12, 1))
    growth[3, 1] += 0.30  # a galaxy enters the second annulus of one star
    growth[7, 2] += 0.15  # and the third of another
    snr = np.full(12, 500.0)
    snr[0] = 40.0  # too faint to count
    corr, n = aperture_correction([growth[:6], growth[6:]], [snr[:6], snr[6:]], 300.0)
    assert n == 11 and corr == pytest.approx(0.028, abs=1e-9)
    assert aperture_correction([growth], [np.zeros(12)], 300.0)[1] == 0


def test_match_sky_is_one_to_one():
    ra = np.array([10.0, 10.0 + 0.3 / 3600, 10.01])
    dec = np.array([0.0, 0.0, 0.0])
    i1, i2, sep = photcal.match_sky(ra, dec, np.array([10.0]), np.array([0.0]), 1.0)
    assert list(i1) == [0] and list(i2) == [0] and sep[0] == pytest.approx(0.0, abs=1e-6)
    assert json.dumps(list(map(int, i1)))  # plain ints for result.json
