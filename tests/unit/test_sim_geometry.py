"""skyops.sim geometry: DECam's focal plane, the per-CCD TAN WCS, and the header-WCS offsets."""
from __future__ import annotations

import galsim
import numpy as np
import pytest
from astropy.wcs import WCS

from skyops.errors import SimulationError
from skyops.sim.focalplane import BAD_CCDS, CCDNUM, DETPOS, FocalPlane
from skyops.sim.wcs import ccd_wcs, footprint, gnomonic, inverse_gnomonic


def test_decam_naming_and_dead_ccds():
    assert len(DETPOS) == 62
    assert {n[0] for n in DETPOS.values()} == {"S", "N"}
    assert sorted(int(n[1:]) for n in DETPOS.values() if n[0] == "S") == list(range(1, 32))
    assert (CCDNUM["S29"], CCDNUM["S30"], CCDNUM["S1"], CCDNUM["S7"], CCDNUM["N1"], CCDNUM["N30"], CCDNUM["N31"]) == (
        1, 2, 25, 31, 32, 61, 62)
    assert BAD_CCDS == {2, 61}
    fp = FocalPlane((128, 256))
    assert [c for c in fp.ccds if fp.ccd(c).bad] == [2, 61]


@pytest.mark.parametrize("shape", [(128, 256), (2048, 4096)])
def test_ccds_tile_the_focal_plane_without_overlap(shape):
    fp = FocalPlane(shape)
    assert all((c.nx, c.ny) == shape for c in fp.ccds.values())
    boxes = [(c.u0 - 0.5, c.u0 + c.nx - 0.5, c.v0 - 0.5, c.v0 + c.ny - 0.5) for c in fp.ccds.values()]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[1] <= b[0] or b[1] <= a[0] or a[3] <= b[2] or b[3] <= a[2]
    # every CCD centre maps back to its own CCD
    for num, c in fp.ccds.items():
        assert fp.locate(*c.center_uv) == num
    assert fp.locate(0.0, 0.0) == 0  # the boresight falls in a gap between S and N halves
    if shape == (2048, 4096):
        assert 1.0 < fp.radius_deg < 1.3  # DECam's field is ~2.2 degrees across


def test_bad_ccd_shape_is_refused_with_a_clear_message():
    with pytest.raises(SimulationError, match="ccd_shape"):
        FocalPlane((127, 256))
    with pytest.raises(SimulationError, match="CCDNUM 63"):
        FocalPlane((128, 256)).ccd(63)


def test_gnomonic_round_trip_and_astropy_agreement():
    rng = np.random.default_rng(1)
    ra0, dec0 = 197.45, -23.38
    ra = ra0 + rng.uniform(-1.2, 1.2, 200)
    dec = dec0 + rng.uniform(-1.2, 1.2, 200)
    xi, eta = gnomonic(ra, dec, ra0, dec0)
    ra2, dec2 = inverse_gnomonic(xi, eta, ra0, dec0)
    assert np.allclose(ra2, ra, atol=1e-11) and np.allclose(dec2, dec, atol=1e-11)


@pytest.mark.parametrize("ccdnum", [1, 28, 40, 62])
def test_ccd_wcs_matches_astropy_and_galsim(ccdnum):
    fp = FocalPlane((2048, 4096))
    w = ccd_wcs(fp, ccdnum, 359.9, -10.0)  # near RA = 0: wrap handled
    rng = np.random.default_rng(ccdnum)
    x = rng.uniform(1, 2048, 50)
    y = rng.uniform(1, 4096, 50)
    ra, dec = w.pixel_to_sky(x, y)
    ara, adec = WCS(w.header_dict(true=True)).all_pix2world(x, y, 1)
    assert np.allclose(np.mod(ara - ra + 180, 360) - 180, 0, atol=1e-10) and np.allclose(adec, dec, atol=1e-10)
    gx, gy = w.galsim(true=True).radecToxy(ra, dec, units=galsim.degrees)
    assert np.allclose(gx, x, atol=1e-6) and np.allclose(gy, y, atol=1e-6)
    x2, y2 = w.sky_to_pixel(ra, dec)
    assert np.allclose(x2, x, atol=1e-7) and np.allclose(y2, y, atol=1e-7)
    # pixel scale and parity: 0.263"/pixel, x toward South, y toward West
    jac = w.galsim().local(galsim.PositionD(1024, 2048))
    assert abs(np.sqrt(abs(jac.pixelArea())) - 0.263) < 1e-4
    r1, d1 = w.pixel_to_sky(1024, 2048)
    r2, d2 = w.pixel_to_sky(1025, 2048)
    r3, d3 = w.pixel_to_sky(1024, 2049)
    assert d2 < d1 and ((r3 - r1 + 180) % 360 - 180) < 0


def test_header_wcs_shift_is_the_recorded_offset():
    fp = FocalPlane((2048, 4096))
    w = ccd_wcs(fp, 28, 197.45, -23.38, shift=(0.7, -1.1))
    ra, dec = w.pixel_to_sky(np.array([10.0, 1500.0]), np.array([20.0, 4000.0]), true=True)
    xh, yh = WCS(w.header_dict(true=False)).all_world2pix(ra, dec, 1)
    assert np.allclose(xh - [10.0, 1500.0], 0.7, atol=1e-6) and np.allclose(yh - [20.0, 4000.0], -1.1, atol=1e-6)
    # header WCS at pixel p = true WCS at p - shift: 0.7 px toward North (-x) and 1.1 px toward West (+y)
    dra, ddec = w.offset_arcsec()
    assert ddec == pytest.approx(0.7 * 0.263, rel=1e-3)
    assert dra == pytest.approx(-1.1 * 0.263, rel=1e-3)


def test_footprint_across_ra_zero():
    fp = footprint(np.array([359.9, 359.9, 0.1, 0.1]), np.array([-1.0, 1.0, 1.0, -1.0]))
    assert fp["crossra0"] == "Y" and fp["racmin"] == pytest.approx(359.9) and fp["racmax"] == pytest.approx(0.1)
    assert fp["ra_cent"] == pytest.approx(0.0, abs=1e-9) or fp["ra_cent"] == pytest.approx(360.0)
    fp2 = footprint(np.array([10.0, 10.0, 10.2, 10.2]), np.array([-1.0, 1.0, 1.0, -1.0]))
    assert fp2["crossra0"] == "N" and fp2["racmin"] < fp2["racmax"]
