"""Metacalibration: the shear response of a shape measurement, measured on the object itself.

For each epoch the image is turned into a GalSim profile (``InterpolatedImage``), the PSF is
deconvolved (``Deconvolve`` of the PSF image's own ``InterpolatedImage``), the result is sheared by
+-``step`` (0.01) in g1 and in g2 -- or not at all, "noshear" -- and reconvolved with a round Gaussian
PSF a little larger than the original in every direction (so the division by the PSF never
amplifies frequencies the new PSF keeps). The same measurement -- a "gauss" model fitted jointly to
all epochs and bands with :mod:`fitter` -- on the five images gives the shape ``g`` (noshear) and the
2x2 response ``R_ij = (g_i[j+] - g_i[j-]) / (2 step)``; <g> = <R> gamma for an ensemble, so the
shear estimate is <R>^-1 <g>.

Shearing the image also shears its noise, which makes the noise correlated and biases R. With
``fixnoise`` an independent noise field of the same variance goes through the same operations with
the shear and the PSF rotated by 90 degrees -- i.e. rotated noise, processed, rotated back, as
Sheldon & Huff (2017) prescribe -- and is added: the two anisotropies cancel, at the price of twice
the noise variance (the weight is halved).

Images are drawn with ``method="no_pixel"``: the InterpolatedImage of a pixelated image already
contains the pixel, and the new PSF is the *effective* PSF (its mixture is exact: one Gaussian).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import galsim
import numpy as np

from skyops.campaigns.balrog.fitter import Epoch, FitResult, ObjectFitter
from skyops.campaigns.balrog.gmix import Jacobian
from skyops.campaigns.balrog.psfmix import fit_psf
from skyops.errors import InputError

STEP = 0.01
TYPES = ("noshear", "1p", "1m", "2p", "2m")
_SHEARS = {"noshear": (0.0, 0.0), "1p": (STEP, 0.0), "1m": (-STEP, 0.0), "2p": (0.0, STEP), "2m": (0.0, -STEP)}
#: The metacal PSF's sigma is the PSF's largest principal sigma times this factor (1 + 2 |step|).
DILATION = 1.0 + 2.0 * STEP
_GSPARAMS = galsim.GSParams(maximum_fft_size=8192)


@dataclass
class MetacalEpoch:
    """The inputs of one epoch: pixels, inverse variance, object Jacobian, PSF image and its Jacobian."""

    image: np.ndarray
    weight: np.ndarray
    jac: Jacobian
    psf_image: np.ndarray
    psf_jac: Jacobian
    band: int = 0
    #: unit-variance field for ``fixnoise`` (scaled by the weight map); drawn from ``rng`` when None
    fixnoise: np.ndarray | None = None


@dataclass
class MetacalResult:
    """Per type: the gauss fit; and the response matrix R[i, j] = d g_i / d gamma_j."""

    fits: dict[str, FitResult]
    R: np.ndarray
    flags: int
    psf_T: float

    @property
    def g(self) -> np.ndarray:
        return np.array(self.fits["noshear"].g)


def reconvolution_psf(epochs: list[MetacalEpoch]) -> galsim.GSObject:
    """The round Gaussian all epochs are reconvolved with: wider than every epoch's PSF in every direction.

    A one-Gaussian fit to each PSF image gives its covariance; the largest principal variance over
    epochs, dilated by (1 + 2 step)^2, is the new PSF's sigma^2 (the ngmix "gauss" recipe, made
    common to all epochs so that a joint fit sees one PSF).
    """
    smax = 0.0
    for ep in epochs:
        g = fit_psf(ep.psf_image, ep.psf_jac, ngauss=1, lm_iter=20).gmix[0]
        cov = np.array([[g[3], g[4]], [g[4], g[5]]])
        smax = max(smax, float(np.linalg.eigvalsh(cov).max()))
    return galsim.Gaussian(sigma=math.sqrt(smax) * DILATION, gsparams=_GSPARAMS)


def _interp(image: np.ndarray, jac: Jacobian) -> galsim.InterpolatedImage:
    im = galsim.ImageD(np.ascontiguousarray(image, dtype=np.float64), wcs=jac.galsim_wcs())
    return galsim.InterpolatedImage(im, x_interpolant="lanczos15", gsparams=_GSPARAMS)


def metacal_images(ep: MetacalEpoch, new_psf: galsim.GSObject, rng: np.random.Generator | None = None,
                   fixnoise: bool = True, types: tuple[str, ...] = TYPES) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The sheared, reconvolved images of one epoch: {type: (image, weight)}.

    The output pixel grid is the input's (same shape, same Jacobian): the InterpolatedImage is
    centred on the image's true centre and drawn back at the same place.
    """
    if fixnoise and rng is None and ep.fixnoise is None:
        raise InputError("metacal_images: fixnoise needs a random generator (rng) for the extra noise field")
    wcs = ep.jac.galsim_wcs()
    nrow, ncol = ep.image.shape
    psf_ii = _interp(ep.psf_image, ep.psf_jac)
    deconv = galsim.Convolve(_interp(ep.image, ep.jac), galsim.Deconvolve(psf_ii), gsparams=_GSPARAMS)
    noise_deconv = None
    weight = ep.weight
    if fixnoise:
        var = np.where(ep.weight > 0, 1.0 / np.where(ep.weight > 0, ep.weight, 1.0), 0.0)
        unit = ep.fixnoise if ep.fixnoise is not None else rng.normal(0.0, 1.0, ep.image.shape)
        noise = unit * np.sqrt(var)
        rot_psf = psf_ii.rotate(-90.0 * galsim.degrees)
        noise_deconv = galsim.Convolve(_interp(noise, ep.jac), galsim.Deconvolve(rot_psf), gsparams=_GSPARAMS)
        weight = ep.weight * 0.5
    out = {}
    for t in types:
        g1, g2 = _SHEARS[t]
        obj = deconv.shear(g1=g1, g2=g2) if t != "noshear" else deconv
        img = galsim.Convolve(obj, new_psf).drawImage(nx=ncol, ny=nrow, wcs=wcs, method="no_pixel").array
        if noise_deconv is not None:
            # rotated noise sheared by g and rotated back == noise sheared by -g, PSF rotated by -90 deg
            nobj = noise_deconv.shear(g1=-g1, g2=-g2) if t != "noshear" else noise_deconv
            img = img + galsim.Convolve(nobj, new_psf).drawImage(nx=ncol, ny=nrow, wcs=wcs, method="no_pixel").array
        out[t] = (img, weight)
    return out


def metacal_fit(epochs: list[MetacalEpoch], nband: int, rng: np.random.Generator | None = None,
                fixnoise: bool = True, model: str = "gauss") -> MetacalResult:
    """Metacalibrate all epochs and fit ``model`` to each of the five image sets; the response R."""
    if not epochs:
        raise InputError("metacal_fit: no epochs given")
    new_psf = reconvolution_psf(epochs)
    sigma2 = new_psf.sigma ** 2
    psf_gm = np.array([[1.0, 0.0, 0.0, sigma2, 0.0, sigma2]])
    per_epoch = [metacal_images(ep, new_psf, rng, fixnoise) for ep in epochs]
    fits: dict[str, FitResult] = {}
    guess = None
    for t in TYPES:
        eps = [Epoch(im[t][0], im[t][1], ep.jac, psf_gm, ep.band) for ep, im in zip(epochs, per_epoch)]
        f = ObjectFitter(eps, nband, model).fit(guess)
        fits[t] = f
        if t == "noshear" and f.ok:
            guess = f.pars  # the sheared fits start from the unsheared solution
    R = np.empty((2, 2))
    for j, (p, m) in enumerate((("1p", "1m"), ("2p", "2m"))):
        R[:, j] = (np.array(fits[p].g) - np.array(fits[m].g)) / (2 * STEP)
    flags = 0
    for f in fits.values():
        flags |= f.flags
    return MetacalResult(fits, R, flags, 2 * sigma2)
