"""The Alard-Lupton fit alone (skyops.campaigns.gw.psfmatch) on synthetic Gaussian PSFs with known kernels.

The reference image is Gaussian stars; the target is the reference convolved with a known
kernel -- constant, or changing linearly across the image -- computed here independently of
the module (a direct sum over kernel offsets). With white noise the fit must give back the
kernel itself to 1% of its peak; with shot noise the kernel's high frequencies are not
constrained by stars (a Gaussian PSF has no power there), so what must come back is the
PSF-matched star (PSF * kernel) and a difference image of chi2 ~ 1 per pixel.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve

from skyops.campaigns.gw import psfmatch as pm

SHAPE = (300, 400)
H = 10


def _stars(shape, x, y, flux, sigma):
    ny, nx = shape
    img = np.zeros(shape)
    yy, xx = np.mgrid[0:ny, 0:nx]
    for xi, yi, fi in zip(x, y, flux):
        y0, y1, x0, x1 = int(max(yi - 12, 0)), int(min(yi + 13, ny)), int(max(xi - 12, 0)), int(min(xi + 13, nx))
        r2 = (xx[y0:y1, x0:x1] - xi) ** 2 + (yy[y0:y1, x0:x1] - yi) ** 2
        img[y0:y1, x0:x1] += fi / (2 * np.pi * sigma**2) * np.exp(-0.5 * r2 / sigma**2)
    return img


def _gauss_kernel(sigma, norm, dx=0.0, dy=0.0, h=H):
    r = np.arange(-h, h + 1)
    v, u = np.meshgrid(r, r, indexing="ij")
    g = np.exp(-((u - dx) ** 2 + (v - dy) ** 2) / (2 * sigma**2))
    return norm * g / g.sum()


def _varying_convolve(ref, kernel_at_x):
    """sum_{v,u} K(v,u; x) ref(y - v, x - u): the truth, written without the module's FFT path."""
    ny, nx = ref.shape
    ks = np.array([kernel_at_x(x) for x in range(nx)])  # (nx, 2H+1, 2H+1)
    pad = np.pad(ref, H)
    out = np.zeros_like(ref)
    for iv, dv in enumerate(range(-H, H + 1)):
        for iu, du in enumerate(range(-H, H + 1)):
            out += ks[None, :, iv, iu] * pad[H - dv:H - dv + ny, H - du:H - du + nx]
    return out


@pytest.fixture(scope="module")
def field():
    g = np.random.default_rng(1)
    n = 150
    x, y = g.uniform(15, SHAPE[1] - 15, n), g.uniform(15, SHAPE[0] - 15, n)
    return x, y, 10 ** g.uniform(4, 5.5, n)


def _fit(ref, sci, var_ref, var_sci, spatial_degree, **kw):
    bad = np.zeros(SHAPE, dtype=bool)
    xy = pm.select_stamps(ref, sci, bad, var_ref, var_sci, half=8, pad=H, max_stamps=100, snr_min=30, cell=100)
    return pm.fit_kernel(ref, sci, var_ref, var_sci, bad, xy, basis=pm.alard_lupton_basis(H), half=8,
                         spatial_degree=spatial_degree, bg_degree=1, **kw)


def test_basis_is_normalised_orthonormal_and_spans_a_delta():
    b = pm.alard_lupton_basis(10, (0.7, 1.5, 3.0), (6, 4, 2))
    assert b.n == 49 and b.images.shape == (49, 21, 21)
    assert b.images[0].sum() == pytest.approx(1.0)
    assert np.abs(b.images[1:].sum(axis=(1, 2))).max() < 1e-12  # the kernel sum is the first coefficient alone
    flat = b.images[1:].reshape(b.n - 1, -1)
    assert np.allclose(flat @ flat.T, np.eye(b.n - 1), atol=1e-10)
    delta = np.zeros((21, 21))
    delta[10, 10] = 1.0
    c, *_ = np.linalg.lstsq(b.images.reshape(b.n, -1).T, delta.ravel(), rcond=None)
    assert np.abs(b.images.reshape(b.n, -1).T @ c - delta.ravel()).max() < 1e-3  # equal seeing is matchable


def test_constant_kernel_is_recovered(field):
    x, y, f = field
    ref = _stars(SHAPE, x, y, f, 1.0)
    k_true = _gauss_kernel(1.2, 1.3, dx=0.3, dy=-0.2)
    sci = fftconvolve(ref, k_true, mode="same")
    g = np.random.default_rng(2)
    ref_n, sci_n = ref + g.normal(0, 1, SHAPE), sci + g.normal(0, 1, SHAPE)
    var = np.ones(SHAPE)
    sol = _fit(ref_n, sci_n, var, var, spatial_degree=0)
    k = sol.kernel_at(200, 150)
    assert np.abs(k - k_true).max() < 0.01 * k_true.max()
    assert sol.norm == pytest.approx(1.3, rel=1e-3)
    assert sol.n_used >= 50


def test_spatially_varying_kernel_is_recovered(field):
    """K(x) = (1 - t) Ka + t Kb with t linear in x: a kernel whose width and centre change across the image."""
    x, y, f = field
    ref = _stars(SHAPE, x, y, f, 1.0)
    ka, kb = _gauss_kernel(1.0, 1.3), _gauss_kernel(1.3, 1.3, dx=0.3, dy=-0.2)
    t = lambda xx: xx / (SHAPE[1] - 1)  # noqa: E731
    sci = _varying_convolve(ref, lambda xx: (1 - t(xx)) * ka + t(xx) * kb)
    g = np.random.default_rng(3)
    ref_n, sci_n = ref + g.normal(0, 1, SHAPE), sci + g.normal(0, 1, SHAPE)
    var = np.ones(SHAPE)
    sol = _fit(ref_n, sci_n, var, var, spatial_degree=2)
    for px, py in [(20, 20), (200, 150), (380, 280), (100, 250), (380, 20)]:
        k_true = (1 - t(px)) * ka + t(px) * kb
        assert np.abs(sol.kernel_at(px, py) - k_true).max() < 0.01 * k_true.max(), (px, py)
    # applying the solution to the whole image reproduces the target (no background was added)
    resid = sci_n - sol.convolve(ref_n) - sol.background_image()
    inner = (slice(2 * H, -2 * H), slice(2 * H, -2 * H))
    assert np.abs(resid[inner]).max() < 2e-3 * sci.max()
    assert abs(sol.bg_coeffs[0]) < 0.05


def test_shot_noise_matched_psf_and_difference_chi2(field):
    x, y, f = field
    ref = _stars(SHAPE, x, y, f, 1.3)
    ka, kb = _gauss_kernel(1.0, 1.3), _gauss_kernel(1.3, 1.3, dx=0.3, dy=-0.2)
    t = lambda xx: xx / (SHAPE[1] - 1)  # noqa: E731
    sci = _varying_convolve(ref, lambda xx: (1 - t(xx)) * ka + t(xx) * kb)
    g = np.random.default_rng(4)
    var_ref, var_sci = 25.0 + ref, 25.0 + sci
    ref_n = ref + g.normal(0, 1, SHAPE) * np.sqrt(var_ref)
    sci_n = sci + g.normal(0, 1, SHAPE) * np.sqrt(var_sci)
    sol = _fit(ref_n, sci_n, var_ref, var_sci, spatial_degree=2)
    psf = _gauss_kernel(1.3, 1.0, h=12)
    for px, py in [(20, 20), (200, 150), (380, 280), (100, 250), (380, 20)]:
        k_true = (1 - t(px)) * ka + t(px) * kb
        matched, truth = fftconvolve(psf, sol.kernel_at(px, py)), fftconvolve(psf, k_true)
        assert np.abs(matched - truth).max() < 0.02 * truth.max(), (px, py)
    d = sci_n - sol.convolve(ref_n) - sol.background_image()
    chi2 = d**2 / (var_sci + sol.convolve_variance(var_ref))
    assert chi2[2 * H:-2 * H, 2 * H:-2 * H].mean() == pytest.approx(1.0, abs=0.03)


def test_convolve_with_margin_equals_convolving_the_padded_image(field):
    """The padded path (template pixels beyond the CCD edge) uses the same kernel at the same pixels."""
    x, y, f = field
    ref = _stars(SHAPE, x, y, f, 1.0)
    sci = fftconvolve(ref, _gauss_kernel(1.2, 1.1), mode="same")
    g = np.random.default_rng(5)
    var = np.ones(SHAPE)
    sol = _fit(ref + g.normal(0, 1, SHAPE), sci + g.normal(0, 1, SHAPE), var, var, spatial_degree=2)
    m = 12
    big = np.pad(ref, m)
    full = sol.convolve(big, margin=m)[m:-m, m:-m]
    assert np.allclose(full[H:-H, H:-H], sol.convolve(ref)[H:-H, H:-H], atol=1e-3 * ref.max())
    direct = _varying_convolve(ref, lambda xx: sol.kernel_at(xx, 150.0))  # kernel exact along y = 150
    assert np.allclose(full[150, H:-H], direct[150, H:-H], atol=1e-3 * ref.max())
    power = sol.kernel_power_map(margin=m)
    assert power[150 + m, 200 + m] == pytest.approx((sol.kernel_at(200, 150) ** 2).sum(), rel=1e-5)


def test_variable_sources_on_stamps_are_clipped(field):
    x, y, f = field
    ref = _stars(SHAPE, x, y, f, 1.0)
    k_true = _gauss_kernel(1.2, 1.0)
    sci = fftconvolve(ref, k_true, mode="same")
    g = np.random.default_rng(6)
    var_ref, var_sci = 25.0 + ref, 25.0 + sci
    ref_n = ref + g.normal(0, 1, SHAPE) * np.sqrt(var_ref)
    sci_n = sci + g.normal(0, 1, SHAPE) * np.sqrt(var_sci)
    bad = np.zeros(SHAPE, dtype=bool)
    xy = pm.select_stamps(ref_n, sci_n, bad, var_ref, var_sci, half=8, pad=H, max_stamps=100, snr_min=30, cell=100)
    # three stamps get a transient 3 pixels from their star, in the target only
    for xi, yi in xy[:3]:
        sci_n += _stars(SHAPE, [xi + 3.0], [yi - 2.0], [3e4], 1.56)
    sol = pm.fit_kernel(ref_n, sci_n, var_ref, var_sci, bad, xy, basis=pm.alard_lupton_basis(H), half=8,
                        spatial_degree=0)
    assert not sol.stamp_used[:3].any() and sol.stamp_used[3:].mean() > 0.9
    psf = _gauss_kernel(1.0, 1.0, h=12)
    matched, truth = fftconvolve(psf, sol.kernel_at(200, 150)), fftconvolve(psf, k_true)
    assert np.abs(matched - truth).max() < 0.01 * truth.max()
    assert sol.norm == pytest.approx(1.0, abs=2e-3)


def test_too_few_stamps_is_a_processing_error():
    from skyops.errors import ProcessingError

    img = np.zeros((64, 64))
    with pytest.raises(ProcessingError, match="usable stamps"):
        pm.fit_kernel(img, img, np.ones_like(img), np.ones_like(img), np.zeros_like(img, dtype=bool),
                      np.zeros((1, 2), dtype=int), basis=pm.alard_lupton_basis(5), half=5)
