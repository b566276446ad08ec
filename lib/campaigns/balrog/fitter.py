"""Maximum-likelihood fit of one object across all its epochs and bands (SOF, and each step of MOF).

The model is one galaxy profile (:mod:`gmix`: gauss, exp, dev or bdf) with parameters shared by every
epoch and band -- centre offset ``(du, dv)`` in arcsec from the cutout's Jacobian centre, shape
``(g1, g2)``, size ``T`` (arcsec^2) and, for bdf, ``fracdev`` -- and one flux per band. Each epoch
brings its own pixels, inverse-variance weight map, affine Jacobian and PSF mixture; the model is
convolved with that PSF analytically and drawn through that Jacobian, so the fit never resamples an
image. The likelihood is Gaussian in the pixels: chi^2 = sum w (model - image)^2.

Minimisation is Levenberg-Marquardt (:mod:`levmar`) with analytic derivatives: the shape parameters'
come from :func:`gmix.render_unit_derivs` (one pass over the pixels gives the model and all its
derivatives), and the model is linear in the fluxes. Flux errors are from the inverse of the Fisher
matrix J^T J at the solution, marginalised over the shape parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from skyops.campaigns.balrog import gmix
from skyops.campaigns.balrog.gmix import Jacobian
from skyops.campaigns.balrog.levmar import FLAG_MAXITER, FLAG_NONFINITE, FLAG_SINGULAR, levmar
from skyops.errors import InputError

#: FitResult.flags bits (the low bits are levmar's).
FLAG_NO_DATA = 8  # no epoch with positive weight
FLAG_BAND_MISSING = 16  # a band has no usable epoch: its flux is NaN
FLAG_FAILED = 32  # any failure that leaves no usable parameters
FLAG_NAMES = {FLAG_MAXITER: "maxiter", FLAG_SINGULAR: "singular", FLAG_NONFINITE: "nonfinite",
              FLAG_NO_DATA: "no_data", FLAG_BAND_MISSING: "band_missing", FLAG_FAILED: "failed"}

#: Parameter vector: these shape parameters, then one flux per band.
NSHAPE = 6
IDU, IDV, IG1, IG2, IT, IFRACDEV = range(NSHAPE)


@dataclass
class Epoch:
    """One cutout of one object in one band: pixels, inverse variance, Jacobian and PSF mixture.

    ``file_id``, ``orig_row/col`` (the object's position in the source image) and ``orig_start_row/
    col`` (the cutout's corner there) are MEDS's and are needed only by MOF, to place neighbours.
    """

    image: np.ndarray
    weight: np.ndarray
    jac: Jacobian
    psf: np.ndarray
    band: int = 0
    file_id: int = -1
    orig_row: float = math.nan
    orig_col: float = math.nan
    orig_start_row: int = 0
    orig_start_col: int = 0

    def __post_init__(self) -> None:
        self.image = np.ascontiguousarray(self.image, dtype=np.float64)
        self.weight = np.ascontiguousarray(self.weight, dtype=np.float64)
        if self.image.shape != self.weight.shape or self.image.ndim != 2:
            raise InputError(f"Epoch: image {self.image.shape} and weight {self.weight.shape} must be 2-D arrays of "
                             "the same shape")
        self.psf = gmix.recenter(np.asarray(self.psf, dtype=np.float64))

    def with_image(self, image: np.ndarray, weight: np.ndarray | None = None) -> "Epoch":
        """A copy with other pixels (neighbour-subtracted, metacal-sheared) and the same geometry."""
        return Epoch(image, self.weight if weight is None else weight, self.jac, self.psf, self.band, self.file_id,
                     self.orig_row, self.orig_col, self.orig_start_row, self.orig_start_col)


@dataclass
class FitResult:
    """The fit of one object: parameters (shape + one flux per band), errors, covariance, flags."""

    model: str
    nband: int
    pars: np.ndarray
    errors: np.ndarray
    cov: np.ndarray | None
    flags: int
    chi2: float
    ndata: int
    niter: int
    TdByTe: float = 1.0
    band_has_data: np.ndarray = field(default_factory=lambda: np.ones(0, dtype=bool))

    @property
    def ok(self) -> bool:
        return not self.flags & (FLAG_FAILED | FLAG_NO_DATA | FLAG_NONFINITE)

    @property
    def flux(self) -> np.ndarray:
        return self.pars[NSHAPE:]

    @property
    def flux_err(self) -> np.ndarray:
        return self.errors[NSHAPE:]

    @property
    def g(self) -> tuple[float, float]:
        return float(self.pars[IG1]), float(self.pars[IG2])

    @property
    def T(self) -> float:
        return float(self.pars[IT])

    @property
    def chi2per(self) -> float:
        dof = self.ndata - np.count_nonzero(self.errors > 0)
        return self.chi2 / dof if dof > 0 else math.nan

    def gmix(self, band: int) -> np.ndarray:
        """The fitted (unconvolved) model in ``band`` as a mixture about the Jacobian centre."""
        p = self.pars
        return gmix.make_model(self.model, p[IDU], p[IDV], p[IG1], p[IG2], p[IT], p[NSHAPE + band], p[IFRACDEV],
                               self.TdByTe)


@dataclass
class Packed:
    """Every epoch's pixels in flat arrays, the layout :func:`gmix.render_unit_derivs` reads."""

    image: np.ndarray
    sqrtw: np.ndarray
    pixband: np.ndarray
    psf: np.ndarray
    psf_n: np.ndarray
    jacs: np.ndarray
    starts: np.ndarray
    shapes: np.ndarray
    band_has_data: np.ndarray

    @classmethod
    def of(cls, epochs: list[Epoch], nband: int) -> "Packed":
        sizes = [e.image.size for e in epochs]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        kmax = max(e.psf.shape[0] for e in epochs)
        psf = np.zeros((len(epochs), kmax, 6))
        for i, e in enumerate(epochs):
            psf[i, :e.psf.shape[0]] = e.psf
        w = np.concatenate([np.clip(e.weight, 0, None).ravel() for e in epochs])
        img = np.concatenate([e.image.ravel() for e in epochs])
        bad = ~np.isfinite(img) | ~np.isfinite(w)
        w[bad], img[bad] = 0.0, 0.0
        pixband = np.concatenate([np.full(e.image.size, e.band, dtype=np.int64) for e in epochs])
        has = np.array([np.any(w[pixband == b] > 0) for b in range(nband)])
        return cls(img, np.sqrt(w), pixband, psf, np.array([e.psf.shape[0] for e in epochs], dtype=np.int64),
                   np.array([e.jac.array for e in epochs]), starts,
                   np.array([e.image.shape for e in epochs], dtype=np.int64), has)


@njit(cache=True)
def _residuals(unit: np.ndarray, dunit: np.ndarray, image: np.ndarray, sqrtw: np.ndarray, pixband: np.ndarray,
               flux: np.ndarray, shape_idx: np.ndarray, flux_idx: np.ndarray, npar: int) -> tuple[np.ndarray,
                                                                                              np.ndarray]:
    """r = sqrt(w) (F_band unit - image) and its Jacobian in the free parameters."""
    n = unit.size
    r = np.empty(n)
    J = np.zeros((n, npar))
    ns = shape_idx.size
    for p in range(n):
        s = sqrtw[p]
        if s == 0.0:
            r[p] = 0.0
            continue
        b = pixband[p]
        f = flux[b]
        r[p] = s * (f * unit[p] - image[p])
        for q in range(ns):
            J[p, q] = s * f * dunit[p, shape_idx[q]]
        if flux_idx[b] >= 0:
            J[p, flux_idx[b]] = s * unit[p]
    return r, J


class ObjectFitter:
    """Fits one model to one object's packed epochs; reusable for repeated fits (MOF, metacal)."""

    def __init__(self, epochs: list[Epoch], nband: int, model: str = "bdf", TdByTe: float = 1.0,
                 fit_fracdev: bool = True) -> None:
        if model not in gmix.MODELS:
            raise InputError(f"unknown model {model!r}; expected one of {', '.join(gmix.MODELS)}")
        if nband < 1:
            raise InputError(f"nband must be at least 1, got {nband}")
        bad = [e.band for e in epochs if not 0 <= e.band < nband]
        if bad:
            raise InputError(f"epoch band index {bad[0]} is outside 0..{nband - 1}")
        self.model, self.nband, self.TdByTe = model, nband, TdByTe
        self.epochs = epochs
        tab = gmix.profile_table(model)
        self.table = (tab.frac, tab.fvar, tab.kind)
        self.packed = Packed.of(epochs, nband) if epochs else None
        shape_free = [IDU, IDV, IG1, IG2, IT] + ([IFRACDEV] if model == "bdf" and fit_fracdev else [])
        self.shape_idx = np.array(shape_free, dtype=np.int64)

    def unit_model(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit-flux model of all pixels and its derivatives in the 6 shape parameters."""
        pk = self.packed
        unit = np.zeros(pk.image.size)
        dunit = np.zeros((pk.image.size, NSHAPE))
        gmix.render_unit_derivs(theta, self.TdByTe, *self.table, pk.psf, pk.psf_n, pk.jacs, pk.starts, pk.shapes,
                                pk.sqrtw, unit, dunit)
        return unit, dunit

    def initial_fluxes(self, theta: np.ndarray) -> np.ndarray:
        """Linear least-squares fluxes for fixed shape parameters."""
        pk = self.packed
        unit, _ = self.unit_model(theta)
        w = pk.sqrtw ** 2
        num = np.bincount(pk.pixband, w * unit * pk.image, minlength=self.nband)
        den = np.bincount(pk.pixband, w * unit * unit, minlength=self.nband)
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)

    def default_guess(self) -> np.ndarray:
        """Centred, round, T of half the mean PSF T, fracdev 0.5, linear fluxes."""
        tpsf = float(np.mean([gmix.T_of(e.psf) for e in self.epochs]))
        theta = np.array([0.0, 0.0, 0.0, 0.0, 0.5 * tpsf, 0.5 if self.model == "bdf" else 0.0])
        return np.concatenate([theta, self.initial_fluxes(theta)])

    def fit(self, guess: np.ndarray | None = None, maxiter: int = 100) -> FitResult:
        """Fit from ``guess`` (full parameter vector, shape + fluxes) or :meth:`default_guess`."""
        nb = self.nband
        if self.packed is None or not np.any(self.packed.sqrtw > 0):
            pars = np.full(NSHAPE + nb, np.nan)
            return FitResult(self.model, nb, pars, pars.copy(), None, FLAG_NO_DATA, math.nan, 0, 0, self.TdByTe,
                             np.zeros(nb, dtype=bool))
        pk = self.packed
        full = self.default_guess() if guess is None else np.asarray(guess, dtype=np.float64).copy()
        if self.model != "bdf":
            full[IFRACDEV] = 0.0
        has = pk.band_has_data
        flux_bands = np.flatnonzero(has)
        ns = self.shape_idx.size
        flux_idx = np.full(nb, -1, dtype=np.int64)
        flux_idx[flux_bands] = ns + np.arange(flux_bands.size)
        free = np.concatenate([self.shape_idx, NSHAPE + flux_bands])
        npar = free.size
        lo_all = np.concatenate([[-5.0, -5.0, -0.99, -0.99, 0.0, 0.0], np.full(nb, -np.inf)])
        hi_all = np.concatenate([[5.0, 5.0, 0.99, 0.99, 1e4, 1.0], np.full(nb, np.inf)])
        full = np.clip(np.nan_to_num(full), lo_all, hi_all)

        def fun(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            p = full.copy()
            p[free] = x
            unit, dunit = self.unit_model(p[:NSHAPE])
            return _residuals(unit, dunit, pk.image, pk.sqrtw, pk.pixband, p[NSHAPE:], self.shape_idx, flux_idx, npar)

        res = levmar(fun, full[free], lo_all[free], hi_all[free], maxiter=maxiter)
        pars = full.copy()
        pars[free] = res.x
        errors = np.full(NSHAPE + nb, 0.0)
        cov = None
        if res.cov is not None:
            cov = np.zeros((NSHAPE + nb, NSHAPE + nb))
            cov[np.ix_(free, free)] = res.cov
            errors[free] = res.errors
        flags = res.flags
        if not np.all(has):
            flags |= FLAG_BAND_MISSING
            pars[NSHAPE + np.flatnonzero(~has)] = np.nan
            errors[NSHAPE + np.flatnonzero(~has)] = np.nan
        if not np.all(np.isfinite(pars[free])):
            flags |= FLAG_FAILED
        return FitResult(self.model, nb, pars, errors, cov, flags, res.chi2, int(np.count_nonzero(pk.sqrtw)),
                         res.niter, self.TdByTe, has)


def fit_object(epochs: list[Epoch], nband: int, model: str = "bdf", guess: np.ndarray | None = None,
               TdByTe: float = 1.0, maxiter: int = 100) -> FitResult:
    """SOF: fit one object's model jointly to all its epochs and bands (see the module docstring)."""
    return ObjectFitter(epochs, nband, model, TdByTe).fit(guess, maxiter)


def render_fit(result: FitResult, epoch: Epoch, jac: Jacobian | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """The fitted model (with fluxes) convolved with ``epoch``'s PSF, drawn into its pixel grid.

    ``jac`` overrides the epoch's Jacobian: MOF draws a neighbour through its own Jacobian recentred
    on its position in another object's cutout.
    """
    flux = result.pars[NSHAPE + epoch.band]
    if not np.isfinite(flux):
        return np.zeros(epoch.image.shape) if out is None else out
    conv = gmix.convolve(result.gmix(epoch.band), epoch.psf)
    return gmix.render(conv, jac or epoch.jac, epoch.image.shape, out)
