"""Metacalibration on a constant-shear simulation (g1 = 0.02, g2 = 0) with the +- noise-cancelling pair.

Each unit is a quad: the same exponential galaxy (hlr 0.5", intrinsic shape sigma_e = 0.2) sheared
by +0.02 and -0.02 with the same noise (m from the difference: intrinsic shape and noise cancel),
and its 90-degree rotated twin (intrinsic shape and noise rotated together by +90 degrees on the
sky, PSF not: c from the sum of all four cancels shape and noise to first order but keeps the PSF's
leakage). The PSF is a Moffat with anisotropy (g1, g2) = (0.02, -0.01); every epoch has its own WCS
orientation and parity.

m = <g1+ - g1->/2 / <R11> / 0.02 - 1, c = <g2 (all four)> / <R22>; errors by jackknife over quads.

* noiseless, 8 quads: the full-size targets apply directly, |m| < 5e-3 and |c| < 1e-4 (the noise-
  free pairs cancel shape noise completely; what is left is the method's own bias; the jackknife
  error is ~2e-5);
* noisy, S/N ~ 180 (flux / error of the gauss fit before metacal's noise doubling), fixnoise on,
  12 quads: sigma_m ~ 8e-3 and sigma_c ~ 6e-5 at this size, so the assertions are
  |m| < max(5e-3, 3 sigma_m) and |c| < max(1e-4, 3 sigma_c) with the measured jackknife sigmas,
  plus sigma_m < 0.03 and sigma_c < 1.2e-4 (a broken noise cancellation in the +- pair or in the
  twin -- e.g. noise turned the other way than the galaxy: 1.9e-4 -- would blow them up). The
  full-size run (bench/bench_balrog_fit.py) reaches the 5e-3 / 1e-4 targets.
"""
from __future__ import annotations

import numpy as np

from skyops.campaigns.balrog import metacal
from skyops.campaigns.balrog import measuresim as ms

SHEAR = 0.02


def run_quads(nquad: int, seed: int, noise: float, stamp: int = 32) -> np.ndarray:
    """Rows: quad, twin, sign (0 = +, 1 = -), g1, g2, R11, R22, s2n, flags."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(nquad):
        s = int(rng.integers(1 << 30))
        for twin in (False, True):
            pair = ms.shear_pair(np.random.default_rng(s), SHEAR, noise=noise, stamp=stamp, rotate90=twin)
            for sign, eps in enumerate(pair):
                mes = [metacal.MetacalEpoch(e["image"], e["weight"], e["jac"], e["psf_image"], e["psf_jac"],
                                            fixnoise=e["fixnoise"]) for e in eps]
                r = metacal.metacal_fit(mes, 1, fixnoise=noise > 0)
                ns = r.fits["noshear"]
                rows.append((q, twin, sign, *r.g, r.R[0, 0], r.R[1, 1], ns.flux[0] / ns.flux_err[0], r.flags))
    return np.array(rows, dtype=float)


def shear_bias(rows: np.ndarray) -> tuple[float, float, float, float]:
    """(m, sigma_m, c, sigma_c), jackknife over quads."""
    quads = np.unique(rows[:, 0])

    def est(sel: np.ndarray) -> tuple[float, float]:
        r = rows[np.isin(rows[:, 0], sel)]
        p, m = r[r[:, 2] == 0], r[r[:, 2] == 1]
        R11, R22 = r[:, 5].mean(), r[:, 6].mean()
        return (p[:, 3].mean() - m[:, 3].mean()) / 2 / R11 / SHEAR - 1, r[:, 4].mean() / R22

    m, c = est(quads)
    n = quads.size
    jk = np.array([est(np.delete(quads, i)) for i in range(n)])
    sig = np.sqrt((n - 1) / n * ((jk - jk.mean(0)) ** 2).sum(0))
    return m, float(sig[0]), c, float(sig[1])


def test_metacal_noiseless_meets_full_targets() -> None:
    rows = run_quads(8, seed=1, noise=0.0)
    assert np.all(rows[:, 8] == 0)
    m, sm, c, sc = shear_bias(rows)
    assert 0.8 < rows[:, 5].mean() < 1.0  # R11 of a 0.5" exp under a 0.9" PSF
    assert abs(m) < 5e-3, f"m = {m:.2e} +- {sm:.1e}"
    assert abs(c) < 1e-4, f"c = {c:.2e} +- {sc:.1e}"


def test_metacal_noisy_with_fixnoise() -> None:
    rows = run_quads(12, seed=2, noise=3e-4)
    m, sm, c, sc = shear_bias(rows)
    assert 100 < np.median(rows[:, 7]) < 300
    assert sm < 0.03, f"sigma_m = {sm:.3f}: the +- pair no longer cancels the noise"
    assert sc < 1.2e-4, f"sigma_c = {sc:.1e}: the 90-degree twin no longer cancels shape and noise in g2"
    assert abs(m) < max(5e-3, 3 * sm), f"m = {m:.2e} +- {sm:.1e}"
    assert abs(c) < max(1e-4, 3 * sc), f"c = {c:.2e} +- {sc:.1e}"


def test_response_is_symmetric_for_a_round_psf_sim() -> None:
    """Off-diagonal responses are small and R11 ~ R22 (a check on the shear bookkeeping)."""
    pair = ms.shear_pair(np.random.default_rng(9), SHEAR, noise=0.0, sigma_e=0.0, psf_g=(0.0, 0.0))
    e = pair[0][0]
    r = metacal.metacal_fit([metacal.MetacalEpoch(e["image"], e["weight"], e["jac"], e["psf_image"], e["psf_jac"])],
                            1, fixnoise=False)
    assert abs(r.R[0, 0] - r.R[1, 1]) < 0.02
    assert abs(r.R[0, 1]) < 0.01 and abs(r.R[1, 0]) < 0.01
    assert abs(r.g[0] / r.R[0, 0] - SHEAR) < 1e-3 and abs(r.g[1]) < 1e-3


def test_fixnoise_is_the_published_recipe() -> None:
    """The fixnoise term is Sheldon & Huff's: the noise field turned by 90 degrees (np.rot90), put through
    the same deconvolution, shear and reconvolution as the image, and turned back -- for either parity
    of the WCS. (metacal_images does it on the sky: noise sheared by -g through the PSF turned by -90.)"""
    stamp = 32
    rng = np.random.default_rng(4)
    for seed in (0, 3):  # a WCS of positive and one of negative determinant
        e = ms.shear_pair(np.random.default_rng(seed), SHEAR, noise=1.0, stamp=stamp)[0][0]
        j = e["jac"]
        dets = j.dudcol * j.dvdrow - j.dudrow * j.dvdcol
        image, fix = e["image"], rng.normal(0.0, 1.0, (stamp, stamp))
        ep = metacal.MetacalEpoch(image, e["weight"], j, e["psf_image"], e["psf_jac"], fixnoise=fix)
        new_psf = metacal.reconvolution_psf([ep])
        with_fix = metacal.metacal_images(ep, new_psf, fixnoise=True)
        without = metacal.metacal_images(ep, new_psf, fixnoise=False)
        for t in ("noshear", "1p", "2m"):
            term = with_fix[t][0] - without[t][0]
            turned = metacal.MetacalEpoch(np.rot90(fix).copy(), e["weight"], j, e["psf_image"], e["psf_jac"])
            recipe = np.rot90(metacal.metacal_images(turned, new_psf, fixnoise=False, types=(t,))[t][0], -1)
            inner = np.s_[6:-6, 6:-6]
            scale = np.abs(recipe[inner]).max()
            # equal to GalSim's rendering accuracy (float32 images, FFT sizes chosen per profile)
            assert np.abs(term - recipe)[inner].max() < 1e-3 * scale, (seed, dets, t)
            np.testing.assert_allclose(with_fix[t][1], 0.5 * e["weight"])
            # and the check can tell: the same noise processed like the image, not turned, differs by ~20%
            plain = metacal.MetacalEpoch(fix, e["weight"], j, e["psf_image"], e["psf_jac"])
            other = metacal.metacal_images(plain, new_psf, fixnoise=False, types=(t,))[t][0]
            assert np.abs(term - other)[inner].max() > 0.05 * scale
