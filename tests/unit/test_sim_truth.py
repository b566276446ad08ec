"""skyops.sim truth vs pixels: positions, fluxes, transients, dead CCDs, masks and weights.

A noiseless, defect-free build with exact header WCS is read back from the files it wrote;
every isolated source must sit where the truth table says (through the header WCS) and carry
the flux its magnitude and the CCD's truth zeropoint give.
"""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pytest
import sep
from astropy.wcs import WCS

from skyops.sim import BADPIX, Survey, layout
from skyops.sim.photometry import mag_to_flux

SEED = 11
SEARCH, TEMPLATE = 668439, 521360
CCDS = [1, 2, 3, 17, 28, 31, 35, 40, 47, 55, 61, 62]


@pytest.fixture(scope="module")
def noiseless(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sim_noiseless")
    s = Survey("demo", SEED, noise=False, defects=False, astrometric_offset_sigma=0.0)
    results = {e: s.make_exposure(e, root, ccds=CCDS, raw=False) for e in (SEARCH, TEMPLATE)}
    return s, root, results


def _read(root: Path, survey: Survey, expnum: int, ccdnum: int):
    af = layout.red_immask(survey.exposure(expnum), ccdnum)
    with fitsio.FITS(root / af.relpath) as f:
        return f["SCI"].read().astype(np.float64), f["SCI"].read_header(), f["MSK"].read(), f["WGT"].read()


def _measurable(o: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    r = o["aperture_pix"]
    return (o["isolated"] & o["in_bounds"] & ~o["saturated"]
            & (o["x_image"] - r > 1) & (o["x_image"] + r < shape[1])
            & (o["y_image"] - r > 1) & (o["y_image"] + r < shape[0]))


def _measure(noiseless):
    """(kind, dx, dy, measured/true flux - 1) for every measurable source, through the header WCS."""
    s, root, results = noiseless
    rows = []
    for expnum, res in results.items():
        for ccdnum in CCDS:
            if ccdnum in (2, 61):
                continue
            sci, hdr, msk, _ = _read(root, s, expnum, ccdnum)
            o = res.objects[res.objects["ccdnum"] == ccdnum]
            o = o[_measurable(o, sci.shape)]
            if not len(o):
                continue
            x, y = WCS(hdr).all_world2pix(o["ra"], o["dec"], 1)  # header WCS -> FITS pixels
            x0, y0 = x - 1.0, y - 1.0  # sep is 0-based
            sig = o["psf_fwhm"].astype(float) / 0.263 / 2.3548
            xw, yw, flag = sep.winpos(sci, x0 + 0.3, y0 - 0.2, sig)
            assert not flag.any()
            flux, _, _ = sep.sum_circle(sci, x0, y0, o["aperture_pix"].astype(float), subpix=0)
            zp = res.ccds["mag_zero"][res.ccds["ccdnum"] == ccdnum][0]
            truth_flux = mag_to_flux(o["mag"], zp)
            for k in range(len(o)):
                rows.append((o["kind"][k], xw[k] - x0[k], yw[k] - y0[k], flux[k] / truth_flux[k] - 1.0))
    return rows


def test_isolated_stars_and_galaxies_sit_at_their_catalog_positions(noiseless):
    rows = _measure(noiseless)
    stars = np.array([r[1:3] for r in rows if r[0] == b"star"])
    gals = np.array([r[1:3] for r in rows if r[0] == b"galaxy"])
    assert len(stars) >= 10 and len(gals) >= 5, "the demo should have isolated stars and galaxies to test"
    assert np.abs(stars).max() < 0.05
    assert np.abs(gals).max() < 0.05


def test_isolated_star_fluxes_match_truth_magnitudes_and_zeropoints(noiseless):
    rows = _measure(noiseless)
    rel = np.array([r[3] for r in rows if r[0] == b"star"])
    assert len(rel) >= 10
    assert np.abs(rel).max() < 0.005  # the 4-FWHM aperture holds 99.96% of a Moffat(3.5)


def test_truth_positions_round_trip_through_the_header_wcs(noiseless):
    s, root, results = noiseless
    res = results[SEARCH]
    for ccdnum in (1, 40):
        _, hdr, _, _ = _read(root, s, SEARCH, ccdnum)
        o = res.objects[res.objects["ccdnum"] == ccdnum]
        x, y = WCS(hdr).all_world2pix(o["ra"], o["dec"], 1)
        assert np.allclose(x, o["x_image"], atol=1e-6) and np.allclose(y, o["y_image"], atol=1e-6)


def test_refcat_stars_are_the_drawn_stars(noiseless):
    s, _, results = noiseless
    o = results[TEMPLATE].objects
    ids = o["obj_id"][o["kind"] == b"star"]
    ref = s.refcat
    idx = np.searchsorted(ref["source_id"], ids)
    assert np.array_equal(ref["source_id"][idx], ids)
    dra = (ref["ra"][idx] - o["ra"][o["kind"] == b"star"]) * 3.6e6 * np.cos(np.radians(-23.4))
    assert np.abs(dra).max() < 10.0  # refcat errors are GAIA-size (mas)
    assert np.all(ref["pmra"] == 0) and np.all(ref["ra_error"] > 0)


def test_transients_only_in_search_exposures_and_truth_is_complete(noiseless):
    s, _, results = noiseless
    assert len(results[TEMPLATE].transients) == 0
    assert not (results[TEMPLATE].objects["kind"] == b"transient").any()
    tr = results[SEARCH].transients
    assert len(tr) > 0
    cat = s.transients("20170817")
    assert len(s.transients("20160301")) == 0
    # every catalogued transient that falls inside a built good CCD appears, once per CCD it touches
    spec = s.exposure(SEARCH)
    built_good = [c for c in CCDS if c not in (2, 61)]
    u, v = _uv(s, spec, cat)
    for c in built_good:
        x, y = s.fp.ccd(c).to_xy(u, v)
        inside = (x >= 0.5) & (x < s.fp.nx + 0.5) & (y >= 0.5) & (y < s.fp.ny + 0.5)
        got = tr["transient_id"][(tr["ccdnum"] == c) & tr["in_bounds"]]
        assert sorted(got) == sorted(cat["transient_id"][inside])
    for col in tr.dtype.names:
        assert not np.any(np.isnan(tr[col])) if tr.dtype[col].kind == "f" else True
    assert np.all(tr["expnum"] == SEARCH) and np.all(tr["band"] == b"i") and np.all(tr["nite"] == b"20170817")
    zp = dict(zip(results[SEARCH].ccds["ccdnum"], results[SEARCH].ccds["mag_zero"]))
    assert np.allclose(tr["flux"], [mag_to_flux(m, zp[c]) for m, c in zip(tr["mag"], tr["ccdnum"])], rtol=1e-6)
    assert cat["snr_target"].min() >= 3.0 and cat["snr_target"].max() <= 100.0
    assert np.ptp(np.log10(cat["snr_target"])) > 1.0  # a real spread from ~3 to ~100
    assert (cat["host_id"] >= 0).any() and (cat["host_id"] < 0).any()


def _uv(s: Survey, spec, cat):
    from skyops.sim.wcs import sky_to_uv

    return sky_to_uv(cat["ra"], cat["dec"], spec.telra, spec.teldec, s.fp.pixel_scale)


def test_transient_snr_spread_in_the_noisy_survey():
    s = Survey("demo", SEED)
    cat = s.transients("20170817")
    assert len(cat) > 50
    assert np.quantile(cat["snr_target"], 0.1) < 6 and np.quantile(cat["snr_target"], 0.9) > 50


def test_dead_ccds_2_and_61_are_flagged(noiseless):
    s, root, results = noiseless
    for c in (2, 61):
        sci, hdr, msk, wgt = _read(root, s, SEARCH, c)
        assert hdr["BADCCD"] is True
        assert np.all((msk & BADPIX.BADAMP) != 0) and np.all((msk & BADPIX.BPM) != 0)
        assert np.all(wgt == 0)
        assert not (results[SEARCH].objects["ccdnum"] == c).any()
        assert bool(results[SEARCH].ccds["bad"][results[SEARCH].ccds["ccdnum"] == c][0])
    good = results[SEARCH].ccds[~results[SEARCH].ccds["bad"]]
    assert len(good) == len(CCDS) - 2


def test_noiseless_sci_is_exactly_the_sources(noiseless):
    """Sky-subtracted, noiseless, defect-free: empty sky is 0, up to GalSim's FFT ringing around
    bright stars (~1e-6 of their flux: a few e- next to a 16th-magnitude star, << sky noise)."""
    s, root, results = noiseless
    sci, hdr, msk, wgt = _read(root, s, TEMPLATE, 28)
    assert np.all(msk == 0)
    assert sci.min() > -0.1 * hdr["SKYSIGMA"]
    assert np.median(sci) < 0.05 * hdr["SKYSIGMA"]
    assert hdr["SKYBRITE"] > 0
    assert hdr["SKYSIGMA"] == pytest.approx(np.sqrt(hdr["SKYBRITE"] + hdr["RDNOISE"] ** 2), rel=0.01)
    assert np.all(wgt > 0)
    assert np.median(1.0 / wgt) == pytest.approx(hdr["SKYSIGMA"] ** 2, rel=0.1)


def test_headers_have_what_pipelines_read_and_no_truth(noiseless):
    s, root, _ = noiseless
    _, hdr, _, _ = _read(root, s, SEARCH, 28)
    for key in ("EXPNUM", "CCDNUM", "DETPOS", "BAND", "FILTER", "NITE", "MJD-OBS", "DATE-OBS", "EXPTIME", "GAIN",
                "GAINA", "GAINB", "RDNOISEA", "SATURATE", "SKYBRITE", "SKYSIGMA", "CRVAL1", "CD1_2", "TELRA",
                "AIRMASS"):
        assert key in hdr, key
    assert hdr["EXPNUM"] == SEARCH and hdr["CCDNUM"] == 28 and hdr["DETPOS"] == "S4" and hdr["BAND"] == "i"
    assert not any(k in hdr for k in ("MAGZERO", "MAG_ZERO", "DATE"))


def test_saturated_stars_are_masked_and_above_saturate(tmp_path):
    s = Survey("demo", SEED, noise=False, defects=False, star_mag_range=(12.0, 14.0), star_density=3000.0)
    for ccdnum in range(3, 20):
        p = s.render_ccd(TEMPLATE, ccdnum)
        sat = p.objects[p.objects["saturated"] & p.objects["in_bounds"]]
        if len(sat):
            break
    else:
        pytest.fail("no saturated star found")
    r = sat[0]
    iy, ix = int(round(r["y_image"] - 1)), int(round(r["x_image"] - 1))
    assert p.msk[iy, ix] & BADPIX.SATURATE
    assert p.wgt[iy, ix] == 0
    assert p.sci[iy, ix] >= min(p.saturate)


def test_header_wcs_carries_the_recorded_astrometric_offset():
    s = Survey("demo", SEED)  # default: 0.15" per axis of header-WCS error
    shifts = []
    for ccdnum in (5, 28, 50):
        p = s.render_ccd(SEARCH, ccdnum, raw=False)
        o, t = p.objects, p.truth
        x, y = p.wcs.astropy(true=False).all_world2pix(o["ra"], o["dec"], 1)
        assert np.allclose(x - o["x_image"], t["astrom_dx_pix"], atol=1e-6)
        assert np.allclose(y - o["y_image"], t["astrom_dy_pix"], atol=1e-6)
        assert np.hypot(t["astrom_dra_arcsec"], t["astrom_ddec_arcsec"]) == pytest.approx(
            np.hypot(t["astrom_dx_pix"], t["astrom_dy_pix"]) * 0.263, rel=1e-3)
        shifts.append(np.hypot(t["astrom_dx_pix"], t["astrom_dy_pix"]))
    assert 0.0 < max(shifts) < 5.0


def test_psf_in_the_pixels_is_the_truth_psf_and_varies_across_the_field(noiseless):
    import galsim

    s, _, _ = noiseless
    scene = s.scene(TEMPLATE)
    measured, expected, fwhm = [], [], []
    for ccdnum in (1, 28, 31, 62):  # corners and centre of the focal plane
        p = s.render_ccd(TEMPLATE, ccdnum, raw=False)
        o = p.objects
        for r in o[_measurable(o, p.sci.shape) & (o["kind"] == b"star")][:3]:
            ix, iy = int(round(r["x_image"])), int(round(r["y_image"]))
            h = 12
            if not (h < ix < p.sci.shape[1] - h and h < iy < p.sci.shape[0] - h):
                continue
            img = galsim.Image(np.ascontiguousarray(p.sci[iy - 1 - h:iy + h, ix - 1 - h:ix + h]), scale=0.263)
            model = scene.psf.profile(r["psf_fwhm"], r["psf_g1"], r["psf_g2"]).drawImage(nx=2 * h + 1, ny=2 * h + 1,
                                                                                          scale=0.263)
            measured.append(galsim.hsm.FindAdaptiveMom(img).moments_sigma)
            expected.append(galsim.hsm.FindAdaptiveMom(model).moments_sigma)
            fwhm.append(r["psf_fwhm"])
    assert len(measured) >= 4
    assert np.allclose(measured, expected, rtol=0.02)
    assert np.ptp(fwhm) > 0.005  # the PSF size changes over the field


def test_zeropoints_scatter_between_ccds_and_follow_transparency():
    s = Survey("demo", SEED)
    a = np.array([s.render_ccd(SEARCH, c, raw=False).truth["mag_zero"] for c in range(3, 60, 4)])
    assert 0.005 < np.std(a) < 0.05  # ~0.02 mag CCD-to-CCD
    from skyops.sim.photometry import exposure_zeropoint

    e1, e2 = s.exposure(SEARCH), s.exposure(TEMPLATE)
    t1 = s.render_ccd(SEARCH, 28, raw=False).truth
    t2 = s.render_ccd(TEMPLATE, 28, raw=False).truth
    assert t1["zp_ccd_offset"] == t2["zp_ccd_offset"]  # a static property of the CCD
    d = (t1["mag_zero"] - t2["mag_zero"]) - (exposure_zeropoint("i", 90.0, e1.airmass, e1.transparency)
                                             - exposure_zeropoint("i", 90.0, e2.airmass, e2.transparency))
    assert abs(d) < 1e-9
    assert e1.transparency != e2.transparency
