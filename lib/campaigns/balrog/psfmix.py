"""The PSF as a Gaussian mixture, fitted to a PSF image by expectation-maximisation.

SOF/MOF convolve galaxy mixtures with the PSF analytically, so each epoch's PSF (a PSFEx image
drawn at the object's position, in MEDS ``psf`` cutouts) is replaced by a few Gaussians. The image
is the *effective* PSF (pixel response included) sampled at pixel centres, which is exactly what the
mixture renderer reproduces (:mod:`skyops.campaigns.balrog.gmix`).

The fit is in two stages. First a short run of EM on the pixel values taken as weights (the
Gaussian-mixture analogue of fitting a histogram): each iteration assigns every pixel's flux to the
components in proportion to their density there and re-estimates each component's amplitude,
centre and covariance from its share. EM is robust from a crude start and keeps every covariance
positive definite, but it crawls near the optimum (thousands of iterations for a Moffat's wings).
So it stops after ``em_iter`` iterations and a Levenberg-Marquardt fit (every component's flux, centre,
g1, g2 and T, with the analytic derivatives of :func:`gmix.render_unit_derivs`) finishes the job.
PSF images are nearly noiseless, so the few negative pixels of a PSFEx model are clipped to zero
for EM. Starting points are concentric and round with sizes spread around the image's own second
moment (0.4x ... 2x), which converges for the unimodal PSFs of ground-based imaging.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from skyops.campaigns.balrog.gmix import Jacobian, moments, render, render_unit_derivs
from skyops.campaigns.balrog.levmar import levmar
from skyops.errors import InputError, ProcessingError


@dataclass(frozen=True)
class PSFFit:
    """A fitted PSF mixture (unit flux, in sky coordinates about the Jacobian centre)."""

    gmix: np.ndarray
    niter: int
    #: max |image - model| over the image peak (both normalised to unit flux).
    max_resid: float

    @property
    def T(self) -> float:
        _, _, iuu, _, ivv = moments(self.gmix)
        return iuu + ivv


@njit(cache=True, fastmath=True)
def _em(img: np.ndarray, jac: np.ndarray, gm: np.ndarray, maxiter: int, tol: float) -> int:
    """EM iterations on ``gm`` (k, 6) in place; returns the number of iterations done."""
    nrow, ncol = img.shape
    k = gm.shape[0]
    npix = nrow * ncol
    us = np.empty(npix)
    vs = np.empty(npix)
    ws = np.empty(npix)
    p = 0
    tot = 0.0
    for r in range(nrow):
        for c in range(ncol):
            dr = r - jac[0]
            dc = c - jac[1]
            us[p] = jac[2] * dr + jac[3] * dc
            vs[p] = jac[4] * dr + jac[5] * dc
            w = img[r, c]
            ws[p] = w if w > 0.0 else 0.0
            tot += ws[p]
            p += 1
    dens = np.empty(k)
    sw = np.empty(k)
    su = np.empty(k)
    sv = np.empty(k)
    suu = np.empty(k)
    suv = np.empty(k)
    svv = np.empty(k)
    it = 0
    for it in range(1, maxiter + 1):
        sw[:] = 0.0
        su[:] = 0.0
        sv[:] = 0.0
        suu[:] = 0.0
        suv[:] = 0.0
        svv[:] = 0.0
        for p in range(npix):
            if ws[p] == 0.0:
                continue
            s = 0.0
            for j in range(k):
                det = gm[j, 3] * gm[j, 5] - gm[j, 4] * gm[j, 4]
                x = us[p] - gm[j, 1]
                y = vs[p] - gm[j, 2]
                chi2 = (gm[j, 5] * x * x - 2.0 * gm[j, 4] * x * y + gm[j, 3] * y * y) / det
                d = gm[j, 0] / math.sqrt(det) * math.exp(-0.5 * chi2) if chi2 < 200.0 else 0.0
                dens[j] = d
                s += d
            if s <= 0.0:
                continue
            for j in range(k):
                t = ws[p] * dens[j] / s
                sw[j] += t
                su[j] += t * us[p]
                sv[j] += t * vs[p]
                suu[j] += t * us[p] * us[p]
                suv[j] += t * us[p] * vs[p]
                svv[j] += t * vs[p] * vs[p]
        change = 0.0
        for j in range(k):
            if sw[j] <= 0.0:
                continue
            u = su[j] / sw[j]
            v = sv[j] / sw[j]
            iuu = suu[j] / sw[j] - u * u
            iuv = suv[j] / sw[j] - u * v
            ivv = svv[j] / sw[j] - v * v
            # keep a component resolvable: at least (0.01 arcsec)^2
            if iuu < 1e-4:
                iuu = 1e-4
            if ivv < 1e-4:
                ivv = 1e-4
            if iuv * iuv > 0.999 * iuu * ivv:
                iuv = math.copysign(math.sqrt(0.999 * iuu * ivv), iuv)
            told = gm[j, 3] + gm[j, 5]
            change = max(change, abs(iuu + ivv - told) / told, abs(sw[j] / tot - gm[j, 0]))
            gm[j, 0] = sw[j] / tot
            gm[j, 1] = u
            gm[j, 2] = v
            gm[j, 3] = iuu
            gm[j, 4] = iuv
            gm[j, 5] = ivv
        if change < tol:
            break
    return it


def _to_shape_pars(gm: np.ndarray) -> np.ndarray:
    """Rows (flux, u, v, Iuu, Iuv, Ivv) -> rows (u, v, g1, g2, T, flux)."""
    out = np.empty((gm.shape[0], 6))
    for k, (f, u, v, iuu, iuv, ivv) in enumerate(gm):
        T = iuu + ivv
        e1, e2 = (iuu - ivv) / T, 2.0 * iuv / T
        esq = min(e1 * e1 + e2 * e2, 0.8)
        scale = 1.0 / (1.0 + math.sqrt(1.0 - esq))
        out[k] = (u, v, e1 * scale, e2 * scale, T, f)
    return out


def _from_shape_pars(pars: np.ndarray) -> np.ndarray:
    out = np.empty((pars.shape[0], 6))
    for k, (u, v, g1, g2, T, f) in enumerate(pars):
        s = 1.0 + g1 * g1 + g2 * g2
        e1, e2 = 2 * g1 / s, 2 * g2 / s
        out[k] = (f, u, v, 0.5 * T * (1 + e1), 0.5 * T * e2, 0.5 * T * (1 - e1))
    return out


def _refine(img: np.ndarray, jac: Jacobian, gm: np.ndarray, maxiter: int) -> np.ndarray:
    """Least-squares polish of an EM mixture (image normalised to unit sum, uniform weights)."""
    k = gm.shape[0]
    npix = img.size
    data = img.ravel()
    one = np.ones(1)
    table = (one, one, np.zeros(1, dtype=np.int64))
    delta = np.zeros((1, 1, 6))
    delta[0, 0, 0] = 1.0
    geom = (delta, np.ones(1, dtype=np.int64), jac.array[None, :], np.zeros(1, dtype=np.int64),
            np.array([img.shape], dtype=np.int64), np.ones(npix))
    units = np.zeros((k, npix))
    dunits = np.zeros((k, npix, 6))
    J = np.empty((npix, k, 6))

    def fun(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pars = x.reshape(k, 6)
        for j in range(k):
            theta = np.array([pars[j, 0], pars[j, 1], pars[j, 2], pars[j, 3], pars[j, 4], 0.0])
            render_unit_derivs(theta, 1.0, *table, *geom, units[j], dunits[j])
            J[:, j, :5] = dunits[j, :, :5] * pars[j, 5]
            J[:, j, 5] = units[j]
        return pars[:, 5] @ units - data, J.reshape(npix, 6 * k)

    lo = np.tile([-np.inf, -np.inf, -0.9, -0.9, 1e-4, -np.inf], k)
    hi = np.tile([np.inf, np.inf, 0.9, 0.9, np.inf, np.inf], k)
    res = levmar(fun, _to_shape_pars(gm).ravel(), lo, hi, maxiter=maxiter, ftol=1e-6)
    return _from_shape_pars(res.x.reshape(k, 6))


def fit_psf(image: np.ndarray, jac: Jacobian, ngauss: int = 3, em_iter: int = 100, lm_iter: int = 30) -> PSFFit:
    """Fit ``ngauss`` Gaussians to a PSF image whose pixels map to the sky through ``jac``.

    ``jac``'s centre should be the PSF's nominal centre in the image (MEDS ``psf_cutout_row/col``);
    the fitted mixture keeps its own centroid, which :func:`gmix.convolve` removes. ``lm_iter=0``
    skips the least-squares polish (EM only).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 5:
        raise InputError(f"fit_psf: the PSF image must be 2-D and at least 5x5 pixels; got shape {img.shape}")
    total = float(img[img > 0].sum()) if np.all(np.isfinite(img)) else float("nan")
    if not np.isfinite(total) or total <= 0:
        raise ProcessingError("fit_psf: the PSF image has no positive flux (all zero, negative or NaN); check "
                              "the MEDS psf cutouts or the PSF model it was drawn from")
    if not 1 <= ngauss <= 8:
        raise InputError(f"fit_psf: ngauss={ngauss} is out of range; expected 1..8 (3 is the usual choice)")
    img = img / total
    # starting point: concentric round components around the image's own second moments
    rr, cc = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    w = np.clip(img, 0, None)
    w = w / w.sum()
    u = jac.dudrow * (rr - jac.row0) + jac.dudcol * (cc - jac.col0)
    v = jac.dvdrow * (rr - jac.row0) + jac.dvdcol * (cc - jac.col0)
    mu, mv = float((w * u).sum()), float((w * v).sum())
    T = float((w * ((u - mu) ** 2 + (v - mv) ** 2)).sum())
    scales = np.geomspace(0.4, 2.0, ngauss) if ngauss > 1 else np.array([1.0])
    gm = np.zeros((ngauss, 6))
    gm[:, 0] = 1.0 / ngauss
    gm[:, 1], gm[:, 2] = mu, mv
    gm[:, 3] = gm[:, 5] = 0.5 * T * scales
    niter = _em(img, jac.array, gm, em_iter, 1e-7)
    if lm_iter > 0:
        gm = _refine(img, jac, gm, lm_iter)
    if not np.all(np.isfinite(gm)):
        raise ProcessingError("fit_psf: the fit of the PSF image diverged (non-finite parameters); check the "
                              "PSF image (it must be a centred, positive, sky-free PSF)")
    gm[:, 0] /= gm[:, 0].sum()
    model = render(gm, jac, img.shape)
    resid = float(np.abs(img - model).max() / img.max())
    return PSFFit(gm, niter, resid)


def gaussian_psf(fwhm_arcsec: float) -> np.ndarray:
    """A round Gaussian PSF mixture of the given FWHM (the fallback when a MEDS file has no PSF images)."""
    if not fwhm_arcsec > 0:
        raise InputError(f"gaussian_psf: FWHM {fwhm_arcsec!r} arcsec must be positive")
    sigma2 = (fwhm_arcsec / (2.0 * math.sqrt(2.0 * math.log(2.0)))) ** 2
    return np.array([[1.0, 0.0, 0.0, sigma2, 0.0, sigma2]])
