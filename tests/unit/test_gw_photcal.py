"""gw.calibrate's star selection and aperture corrections on small synthetic inputs (no sim, no tools).

A FITS_LDAC catalog is written with exact aperture fluxes of Moffat stars at a known zeropoint;
some stars get a neighbour's light -- one that only the reference catalog lists, one that is a
detection without a reference star (a galaxy), one that no catalog has -- and the calibration must
drop exactly those and return the true zeropoint.
"""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skyops.campaigns.gw import calibrate as cal
from skyops.campaigns.gw import photcal
from skyops.sim.refcat import REFCAT_DTYPE, band_mag
from skyops.steps.runner import run_step

DIAM = cal.default_aperture_diameters()
FWHM, BETA, ZP, SKY_SIGMA = 4.0, 3.5, 31.0, 50.0
SCALE = 0.263 / 3600.0


# ------------------------------------------------------------------ geometry
def test_moffat_fraction_in_circle_is_the_curve_of_growth_when_centred_and_the_integral_off_centre():
    rd = FWHM / (2.0 * np.sqrt(2.0 ** (1.0 / BETA) - 1.0))
    for r in (3.7, 7.4, 14.8):
        ee = 1.0 - (1.0 + (r / rd) ** 2) ** (1.0 - BETA)
        assert photcal.moffat_fraction_in_circle([0.0], r, FWHM, BETA)[0] == pytest.approx(ee, rel=1e-9)
    g = np.linspace(-50, 50, 2001)
    xx, yy = np.meshgrid(g, g)
    da = (g[1] - g[0]) ** 2
    for d in (2.0, 7.4, 12.0):
        img = (BETA - 1) / (np.pi * rd * rd) * (1 + ((xx - d) ** 2 + yy**2) / rd**2) ** (-BETA)
        brute = img[xx**2 + yy**2 <= 7.4**2].sum() * da
        assert photcal.moffat_fraction_in_circle([d], 7.4, FWHM, BETA)[0] == pytest.approx(brute, abs=2e-3)
    far = photcal.moffat_fraction_in_circle([60.0], 7.4, FWHM, BETA)[0]
    assert 0 < far < 1e-4


def test_predicted_blend_sums_neighbours_light_and_skips_the_star_itself():
    src_x, src_y = np.array([0.0, 6.0, 0.0, 200.0]), np.array([0.0, 0.0, -10.0, 0.0])
    src_f = np.array([1e5, 2e4, 5e3, 1e9])  # the star, two neighbours, a bright one out of reach
    blend = photcal.predicted_blend([0.0], [0.0], [1e5], src_x, src_y, src_f, 7.4, FWHM, exclude=np.array([0]),
                                    beta=BETA)
    phi = photcal.moffat_fraction_in_circle([6.0, 10.0], 7.4, FWHM, BETA)
    assert blend[0] == pytest.approx((2e4 * phi[0] + 5e3 * phi[1]) / 1e5, rel=1e-9)
    alone = photcal.predicted_blend([0.0], [0.0], [1e5], src_x[:1], src_y[:1], src_f[:1], 7.4, FWHM,
                                    exclude=np.array([0]))
    assert alone[0] == 0.0


def test_tangent_plane_is_arcsec_east_and_north():
    xi, eta = photcal.tangent_plane(np.array([30.0, 30.0 + 0.01]), np.array([60.0 + 0.01, 60.0]), 30.0, 60.0)
    assert xi[0] == pytest.approx(0.0, abs=1e-9) and eta[0] == pytest.approx(36.0, rel=1e-4)
    assert xi[1] == pytest.approx(36.0 * np.cos(np.radians(60.0)), rel=1e-4) and abs(eta[1]) < 0.01


# ------------------------------------------------------------------ a synthetic catalog
def _wcs_header(nx: int = 512, ny: int = 1024) -> fits.Header:
    h = fits.Header()
    h["DATE-OBS"] = "2017-08-18T00:00:00"
    h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, nx, ny
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"], h["CRPIX1"], h["CRPIX2"] = 150.0, -20.0, nx / 2, ny / 2
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -SCALE, 0.0, 0.0, SCALE
    h["EXPNUM"], h["CCDNUM"], h["BAND"], h["MJD-OBS"], h["FWHM"] = 900001, 28, "i", 57983.0, FWHM
    h["FILENAME"] = "D00900001_i_c28_immasked.fits"
    return h


def _apertures(flux: float, extra: dict[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FLUX_APER of a Moffat star; ``extra`` {distance: flux} adds point neighbours' light."""
    ee = np.array([photcal.moffat_fraction_in_circle([0.0], d / 2, FWHM, BETA)[0] for d in DIAM])
    f = flux * ee
    for dist, fn in (extra or {}).items():
        f = f + fn * np.array([photcal.moffat_fraction_in_circle([dist], d / 2, FWHM, BETA)[0] for d in DIAM])
    err = np.sqrt(np.pi * (np.asarray(DIAM) / 2) ** 2 * SKY_SIGMA**2 + f)
    return f, err


def _catalog(tmp_path: Path) -> tuple[Path, np.ndarray, dict[str, int]]:
    """A catalog of 24 stars on a grid plus a galaxy, and its reference catalog; which star is which."""
    hdr = _wcs_header()
    w = WCS(hdr)
    g = np.random.default_rng(5)
    xs, ys = np.meshgrid(np.arange(60.0, 500.0, 110.0), np.arange(60.0, 1000.0, 160.0))
    x, y = xs.ravel()[:24], ys.ravel()[:24]
    gmag = g.uniform(16.0, 19.5, len(x))
    gmag[:4] = [15.5, 15.6, 15.7, 15.8]  # bright enough for the curve of growth (S/N >= 300)
    bp_rp = np.full(len(x), 1.0)
    imag = band_mag(gmag, bp_rp, "i")
    flux = 10 ** (-0.4 * (imag - ZP))
    role = {"ref_neighbour": 10, "galaxy_neighbour": 11, "hidden_neighbour": 12}
    rows, refs = [], []
    for k in range(len(x)):
        extra = None
        if k == role["ref_neighbour"]:  # a fainter star 5 px away: blended into the detection, in the refcat
            extra = {5.0: 0.08 * flux[k]}
        elif k == role["galaxy_neighbour"]:  # a detected galaxy 9 px away, no reference star
            extra = {9.0: 0.3 * flux[k]}
        elif k == role["hidden_neighbour"]:  # 5 px away, in no catalog: only its profile shows it
            extra = {5.0: 0.05 * flux[k]}
        f, e = _apertures(flux[k], extra)
        rows.append((k, x[k], y[k], f, e, flux[k]))
    # the neighbours themselves
    nb_ref = (x[role["ref_neighbour"]] + 5.0, y[role["ref_neighbour"]])
    gal = (x[role["galaxy_neighbour"]] + 9.0, y[role["galaxy_neighbour"]], 0.3 * flux[role["galaxy_neighbour"]])
    n = len(rows) + 1
    obj = np.zeros(n, [("XWIN_IMAGE", "f8"), ("YWIN_IMAGE", "f8"), ("ALPHAWIN_J2000", "f8"),
                       ("DELTAWIN_J2000", "f8"), ("FLUX_APER", "f4", (len(DIAM),)),
                       ("FLUXERR_APER", "f4", (len(DIAM),)), ("FLUX_AUTO", "f4"), ("FLUXERR_AUTO", "f4"),
                       ("FLUX_PSF", "f4"), ("FLUXERR_PSF", "f4"), ("SNR_WIN", "f4"), ("FLAGS", "i2"),
                       ("IMAFLAGS_ISO", "i4"), ("SPREAD_MODEL", "f4"), ("SPREADERR_MODEL", "f4"),
                       ("FWHM_IMAGE", "f4")])
    for k, xk, yk, f, e, tot in rows:
        obj[k]["XWIN_IMAGE"], obj[k]["YWIN_IMAGE"] = xk, yk
        obj[k]["FLUX_APER"], obj[k]["FLUXERR_APER"] = f, e
        obj[k]["FLUX_AUTO"], obj[k]["FLUXERR_AUTO"] = f[-1], e[-1]
        obj[k]["SNR_WIN"] = tot / np.sqrt(tot + 50.0 * SKY_SIGMA**2)
    gf, ge = _apertures(gal[2])
    obj[-1]["XWIN_IMAGE"], obj[-1]["YWIN_IMAGE"] = gal[0], gal[1]
    obj[-1]["FLUX_APER"], obj[-1]["FLUXERR_APER"], obj[-1]["FLUX_AUTO"] = gf, ge, gal[2]
    obj[-1]["SNR_WIN"], obj[-1]["SPREAD_MODEL"] = 30.0, 0.02
    obj["FLUX_PSF"], obj["FWHM_IMAGE"] = obj["FLUX_AUTO"], FWHM
    obj["ALPHAWIN_J2000"], obj["DELTAWIN_J2000"] = w.all_pix2world(obj["XWIN_IMAGE"], obj["YWIN_IMAGE"], 1)
    ref = np.zeros(len(x) + 1, REFCAT_DTYPE)
    ref["source_id"] = np.arange(len(ref))
    ref["ra"][:-1], ref["dec"][:-1] = w.all_pix2world(x, y, 1)
    ra_nb, dec_nb = w.all_pix2world([nb_ref[0]], [nb_ref[1]], 1)
    ref["ra"][-1], ref["dec"][-1] = ra_nb[0], dec_nb[0]
    ref["phot_g_mean_mag"][:-1] = gmag
    ref["phot_g_mean_mag"][-1] = gmag[role["ref_neighbour"]] - 2.5 * np.log10(0.08)
    ref["bp_rp"] = 1.0
    ref["phot_g_mean_flux_over_error"] = 1e4
    ref["ref_epoch"] = 2015.5
    path = tmp_path / "D00900001_i_c28_fullcat.fits"
    cards = np.array([c.image for c in hdr.cards], dtype="S80")
    imhead = np.zeros(1, [("Field Header Card", "S80", (len(cards),))])
    imhead[0]["Field Header Card"] = cards
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(imhead, extname="LDAC_IMHEAD")
        f.write(obj, extname="LDAC_OBJECTS")
    return path, ref, role


def _ref_mags(ref: np.ndarray, rows) -> np.ndarray:
    rows = list(rows)
    return photcal.reference_mag(ref["phot_g_mean_mag"][rows], ref["bp_rp"][rows], "i")


STAR_KW = dict(mag_type="aper_6", total_aperture=10, match_radius=1.0, min_snr=50.0, max_spread=0.005,
               color_range=(0.2, 3.0), color_terms=None)


def test_calibration_stars_drop_the_blended_and_keep_the_true_zeropoint(tmp_path):
    path, ref, role = _catalog(tmp_path)
    s = cal.calibration_stars(path, ref, "i", **STAR_KW)
    assert s.counts == {"matched": 24, "clean": 24, "blended": 2, "profile": 1}
    assert len(s.flux) == 21 and s.fwhm == FWHM
    assert not np.isin(_ref_mags(ref, role.values()), s.mag_ref).any()  # exactly those three are gone
    assert np.isin(_ref_mags(ref, [k for k in range(24) if k not in role.values()]), s.mag_ref).all()
    apcorr = cal.aperture_corrections([s], [0], 300.0)[0]
    assert apcorr[1] == "ccd" and apcorr[2] == 0
    ee6, ee10 = (photcal.moffat_fraction_in_circle([0.0], DIAM[j] / 2, FWHM, BETA)[0] for j in (5, 9))
    assert apcorr[0] == pytest.approx(2.5 * np.log10(ee10 / ee6), abs=1e-6)  # aper_6 -> aper_10, exactly
    z = cal._zp_of([s], [apcorr[0] - 2.5 * np.log10(ee10)], 3.0, 0.005)  # (plus the light beyond aper_10)
    assert z.mag_zero == pytest.approx(ZP, abs=1e-4) and z.nstars == 21
    # without the selection the three blends stay in, and unless clipping catches them (here the
    # catalog is noiseless; in a real one their 2-8% hides in a 2-4% star-to-star scatter) they pull
    # the zeropoint bright
    loose = cal.calibration_stars(path, ref, "i", **STAR_KW, max_blend=1e9, profile_clip=np.inf)
    assert loose.counts["blended"] == 0 and len(loose.flux) == 24
    zl = cal._zp_of([loose], [apcorr[0] - 2.5 * np.log10(ee10)], 100.0, 0.005)
    assert zl.nstars == 24 and zl.mag_zero - ZP > 0.003


def test_the_profile_test_alone_catches_a_neighbour_no_catalog_has(tmp_path):
    path, ref, role = _catalog(tmp_path)
    s = cal.calibration_stars(path, ref, "i", **STAR_KW, max_blend=1e9)
    assert s.counts["blended"] == 0 and s.counts["profile"] >= 1
    assert not np.isin(_ref_mags(ref, [role["hidden_neighbour"]]), s.mag_ref).any()
    assert cal._inner_aperture(np.asarray(DIAM), 5) == 3 and cal._inner_aperture(np.asarray(DIAM), 6) == 3


def test_calibrate_step_on_the_synthetic_catalog(tmp_path):
    path, ref, _ = _catalog(tmp_path)
    refpath = tmp_path / "ref.fits"
    fitsio.write(str(refpath), ref, extname="REFCAT", clobber=True)
    r = run_step("gw.calibrate", {"catalogs": [str(path)], "refcat": str(refpath)}, tmp_path / "w")
    assert r.ok, r.error
    assert r.metrics["n_rejected_blend"] == 2 and r.metrics["n_rejected_profile"] == 1
    row = fitsio.read(r.output_paths("bliss_zeropoint")[0], ext="ZEROPOINT")[0]
    assert row["mag_type"].strip() == "aper_6" and row["aper_corr_src"].strip() == "ccd" and row["flag"] == 0
    tail = -2.5 * np.log10(photcal.moffat_fraction_in_circle([0.0], DIAM[9] / 2, FWHM, BETA)[0])
    assert row["mag_zero"] == pytest.approx(ZP - tail, abs=1e-4)  # the light beyond aper_10 is not corrected


@pytest.mark.parametrize("param, value, words", [
    ("max_blend", 0.0, "parameter 'max_blend': 0.0 must be a positive fraction"),
    ("profile_clip", -1.0, "parameter 'profile_clip': -1.0 must be a positive number of sigma"),
    ("aperture_diameters", [], "parameter 'aperture_diameters': [] must be the catalogs' positive"),
])
def test_calibrate_rejects_bad_selection_parameters(tmp_path, param, value, words):
    r = run_step("gw.calibrate", {"catalogs": ["c.fits"], "refcat": "r.fits", param: value}, tmp_path / "w")
    assert r.exit_code == 2 and words in r.error["message"]


# ------------------------------------------------------------------ aperture corrections
def _stars(fwhm: float, growth: np.ndarray) -> cal.CCDStars:
    n = len(growth)
    return cal.CCDStars(Path("x"), fits.Header(), np.zeros(1), np.zeros(1), np.ones(1), np.ones(1), growth,
                        np.full(1, 100.0), growth_snr=np.full(n, 500.0), fwhm=fwhm)


def _true_growth(fwhm: float) -> np.ndarray:
    """Increments aper_6 -> aper_10 of a Moffat star of this FWHM."""
    ee = [photcal.moffat_fraction_in_circle([0.0], DIAM[j] / 2, fwhm, BETA)[0] for j in range(5, 10)]
    return 2.5 * np.log10(np.array(ee[1:]) / np.array(ee[:-1]))


def test_ccds_with_few_bright_stars_take_the_exposures_fwhm_model():
    fwhms = np.linspace(3.7, 4.1, 12)  # the PSF grows ~10% from the centre of the field to its edge
    nstars = [2, 1, 3, 2, 0, 2, 60, 2, 3, 1, 2, 2]
    ccds = [_stars(f, np.tile(_true_growth(f), (n, 1))) for f, n in zip(fwhms, nstars)]
    ccds[6].growth = ccds[6].growth + 0.001  # this CCD's PSF has heavier wings: +0.004 over 4 annuli
    ccds[6].growth[::7] += 0.05  # and a few of its stars have a neighbour in an annulus (medians ignore them)
    out = cal.aperture_corrections(ccds, list(range(12)), 300.0)
    truth = [_true_growth(f).sum() for f in fwhms]
    assert np.ptp(truth) > 0.01  # a constant would be off by 0.005 at the ends
    for i in range(12):
        corr, source, flag = out[i]
        assert flag == 0
        if i == 6:  # enough stars for its own: used, and left out of the exposure's model
            assert source == "ccd" and corr == pytest.approx(truth[i] + 0.004, abs=3e-4)
        else:  # the line through the CCDs' values (within its curvature over 10% of FWHM)
            assert corr == pytest.approx(truth[i], abs=3e-4), (i, corr, truth[i])
            assert source == "exposure" or nstars[i] >= cal.APCORR_MIN_STARS  # (3 noiseless stars are precise)
    # one CCD alone: its own curve of growth
    alone = cal.aperture_corrections([ccds[2]], [0], 300.0)[0]
    assert alone[1] == "ccd" and alone[0] == pytest.approx(truth[2], abs=1e-9)
    # too few bright stars in the whole exposure: uncorrected and flagged
    few = cal.aperture_corrections([ccds[1], ccds[4]], [0, 1], 300.0)
    assert few[0] == (0.0, "none", cal.FLAG_APCORR_NONE) and few[1] == (0.0, "none", cal.FLAG_APCORR_NONE)


def test_aperture_corrections_of_noisy_ccds_are_no_worse_than_their_own():
    """With star-to-star noise, the combination beats each CCD's own few-star median."""
    g = np.random.default_rng(11)
    fwhms = np.linspace(3.7, 4.1, 30)
    err_comb, err_own = [], []
    for trial in range(20):
        nstars = g.integers(3, 7, len(fwhms))
        ccds = [_stars(f, np.tile(_true_growth(f), (n, 1)) + g.normal(0, 0.0015, (n, 4)))
                for f, n in zip(fwhms, nstars)]
        out = cal.aperture_corrections(ccds, list(range(len(ccds))), 300.0)
        for i, f in enumerate(fwhms):
            t = _true_growth(f).sum()
            err_comb.append(out[i][0] - t)
            err_own.append(cal.aperture_correction([ccds[i].growth], [np.full(nstars[i], 500.0)], 300.0)[0] - t)
    rms_comb, rms_own = np.sqrt(np.mean(np.square(err_comb))), np.sqrt(np.mean(np.square(err_own)))
    assert rms_comb < 0.7 * rms_own and rms_comb < 0.0013 and abs(np.mean(err_comb)) < 3e-4
