"""The SOF fitter and MOF against GalSim-drawn objects through random per-epoch Jacobians and PSFs.

What is checked, and the tolerances:
* noiseless, 3 bands x 3 epochs, each epoch its own rotated/flipped/distorted WCS and Moffat PSF
  (mixture fitted to its image): exp model recovers flux to 0.5% (the PSF stamp holds ~99.7% of
  the Moffat's flux, which sets the floor), g to 2e-3, T to 1.5%, centre to 2 milliarcsec; bdf
  recovers the flux of a GalSim bulge+disk to 1%;
* noisy objects: flux pulls (fit - truth) / error over 24 objects have |mean| < 3/sqrt(24) + 0.2
  (model/PSF floor) and a standard deviation in [0.6, 1.6] -- the errors are neither
  inflated nor far too small;
* SOF photometry (zeropoint 30): isolated bdf galaxies of mag 18-21 with DES-like single-epoch noise
  (sky sigma 8 counts/pixel, 2 epochs in each of 3 bands): median |delta mag| < 0.01;
* MOF: blended pairs (separation 1.6-2.2 arcsec) in a MEDS file: MOF's median |delta mag| is below
  SOF's, both unmasked and with neighbours' seg pixels masked, and below 0.02.
"""
from __future__ import annotations

import galsim
import numpy as np
import pytest

from skyops.campaigns.balrog import fitter, gmix, mof
from skyops.campaigns.balrog import measuresim as ms
from skyops.campaigns.balrog.measure import TileData

ZP = 30.0


def _bdf(flux: float, hlr: float, fracdev: float, g1: float, g2: float) -> galsim.GSObject:
    return galsim.Add([galsim.Exponential(half_light_radius=hlr, flux=(1 - fracdev) * flux),
                       galsim.DeVaucouleurs(half_light_radius=0.6 * hlr, flux=fracdev * flux)]).shear(g1=g1, g2=g2)


def test_noiseless_multi_epoch_multi_band_recovery() -> None:
    rng = np.random.default_rng(11)
    hlr, g1, g2 = 0.6, 0.15, -0.08
    fluxes = [1000.0, 2000.0, 1500.0]
    obj = ms.draw_object([galsim.Exponential(half_light_radius=hlr, flux=f).shear(g1=g1, g2=g2) for f in fluxes],
                         rng, nepoch=3, noise=1e-4, du=0.1, dv=-0.05)
    res = fitter.fit_object(obj.epochs, 3, "exp")
    assert res.ok and res.flags == 0
    np.testing.assert_allclose(res.flux, fluxes, rtol=5e-3)
    assert abs(res.g[0] - g1) < 2e-3 and abs(res.g[1] - g2) < 2e-3
    assert abs(res.T / gmix.hlr_to_T("exp", hlr, g1, g2) - 1) < 0.015
    assert np.hypot(res.pars[0] - 0.1, res.pars[1] + 0.05) < 2e-3

    bdf = ms.draw_object([_bdf(f, 0.7, 0.3, -0.1, 0.05) for f in fluxes], rng, nepoch=2, noise=1e-4)
    res = fitter.fit_object(bdf.epochs, 3, "bdf")
    assert res.ok
    np.testing.assert_allclose(res.flux, fluxes, rtol=1e-2)


def test_noisy_flux_errors_are_calibrated() -> None:
    rng = np.random.default_rng(5)
    pulls = []
    for _ in range(24):
        f = rng.uniform(300, 800)
        obj = ms.draw_object([galsim.Exponential(half_light_radius=0.5, flux=f).shear(g1=0.1, g2=0.0)] * 2, rng,
                             nepoch=2, stamp=32, noise=2.0)
        res = fitter.fit_object(obj.epochs, 2, "exp")
        assert res.ok
        pulls.extend((res.flux - f) / res.flux_err)
    pulls = np.array(pulls)
    assert abs(pulls.mean()) < 3 / np.sqrt(pulls.size / 2) + 0.2, pulls.mean()
    assert 0.6 < pulls.std() < 1.6, pulls.std()


def test_sof_photometry_bright_isolated_objects() -> None:
    rng = np.random.default_rng(2024)
    dmag = []
    for _ in range(20):
        mag = rng.uniform(18.0, 21.0, 3)
        flux = 10 ** (0.4 * (ZP - mag))
        g = rng.normal(0, 0.2, 2).clip(-0.5, 0.5)
        hlr = rng.uniform(0.3, 0.9)
        gals = [_bdf(f, hlr, 0.3, *g) for f in flux]
        obj = ms.draw_object(gals, rng, nepoch=2, stamp=36, noise=8.0)
        res = fitter.fit_object(obj.epochs, 3, "bdf")
        assert res.ok
        dmag.extend(ZP - 2.5 * np.log10(res.flux) - mag)
    med = float(np.median(np.abs(dmag)))
    assert med < 0.01, f"median |delta mag| = {med:.4f}"


@pytest.fixture(scope="module")
def blend_meds(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ms.Scene, list[float]]:
    """Four blended pairs in one band, 3 exposures + a 'coadd', written as a MEDS file."""
    rng = np.random.default_rng(7)
    pos, gals, flux = [], [], []
    for k in range(4):
        cu, cv = -30.0 + 20.0 * k, 0.0
        sep, ang = rng.uniform(1.6, 2.2), rng.uniform(0, np.pi)
        for sgn in (-0.5, 0.5):
            f = 10 ** (0.4 * (ZP - rng.uniform(19.5, 20.5)))
            pos.append((cu + sgn * sep * np.cos(ang), cv + sgn * sep * np.sin(ang)))
            gals.append([_bdf(f, 0.5, 0.3, *rng.normal(0, 0.15, 2))])
            flux.append(f)
    scene = ms.Scene(40.0, -20.0, np.array(pos), gals)
    for i in range(4):
        jac = ms.random_jacobian(rng, 99.5, 149.5)
        scene.exposures.append(ms.Exposure(0, (200, 300), jac, ms.random_psf(rng), 8.0 if i else 3.0))
    scene.render(rng)
    path = str(tmp_path_factory.mktemp("meds") / "blend_meds.fits")
    ms.write_meds(path, scene, 0, box_size=40)
    return path, scene, flux


def test_mof_improves_blended_fluxes(blend_meds: tuple[str, ms.Scene, list[float]]) -> None:
    path, scene, flux = blend_meds
    data = TileData([path])
    try:
        od = data.readers[0].object_data
        groups = mof.groups(od["ra"], od["dec"], 40 * 0.263)
        assert sorted(len(g) for g in groups) == [2, 2, 2, 2]
        d_sof, d_masked, d_mof = [], [], []
        for grp in groups:
            eps = [data.epochs(i, mask_neighbours=False) for i in grp]
            sof = [fitter.fit_object(e, 1, "bdf") for e in eps]
            masked = [fitter.fit_object(data.epochs(i, mask_neighbours=True), 1, "bdf") for i in grp]
            res, npass = mof.fit_group(eps, masked, 1, "bdf")
            assert npass < 40
            for i, s, sm, m in zip(grp, sof, masked, res):
                d_sof.append(abs(2.5 * np.log10(s.flux[0] / flux[i])))
                d_masked.append(abs(2.5 * np.log10(sm.flux[0] / flux[i])))
                d_mof.append(abs(2.5 * np.log10(m.flux[0] / flux[i])))
    finally:
        data.close()
    med = {k: float(np.median(v)) for k, v in (("sof", d_sof), ("sof_masked", d_masked), ("mof", d_mof))}
    assert med["mof"] < min(med["sof"], med["sof_masked"]), med
    assert med["mof"] < 0.02, med
