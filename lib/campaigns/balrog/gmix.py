"""Gaussian mixtures: galaxy profiles, PSF convolution and rendering through a MEDS Jacobian.

A galaxy model is a sum of elliptical Gaussians in sky coordinates ``(u, v)`` (arcsec, tangent plane
centred on the object). Because a Gaussian convolved with a Gaussian is a Gaussian whose covariance
is the sum of the two, a model convolved with a PSF that is itself a mixture is again a mixture, and
drawing it costs one ``exp`` per component and pixel -- no FFT. This is what makes multi-epoch,
multi-band fitting (SOF/MOF) cheap enough for a DES tile.

Mixtures are float64 arrays of shape ``(n, 6)``, one row per component::

    flux, u0, v0, Iuu, Iuv, Ivv        (flux in counts; centre in arcsec; covariance in arcsec^2)

Profiles
--------
The exponential and de Vaucouleurs profiles are the published mixture approximations of Hogg & Lang
(2013, PASP 125, 719; Table 1: "exp", M=6 and "dev", M=10, fitted out to 8 half-light radii).
Their amplitudes ``a_m`` are given for a profile with surface brightness 1 at the half-light radius
``r_e`` and variances ``v_m`` in units of ``r_e^2``. Here the amplitudes are divided by the analytic
total flux of the *untruncated* Sersic profile with the same normalisation, so that **the flux
parameter of a model is the total flux of the untruncated profile** -- what GalSim's
``Exponential``/``DeVaucouleurs`` mean by ``flux``. The mixture itself carries the part within
8 r_e: 99.86% (exp) and 93.93% (dev) of it.

Size is parameterised by ``T = <u^2> + <v^2>`` of the mixture normalised to unit sum (ngmix's
convention), so that a Gaussian has ``T = 2 sigma^2``; :data:`T_PER_HLR2` converts a half-light
radius: ``T = T_PER_HLR2[model] * hlr**2`` for a round profile. Shape is the reduced shear
``(g1, g2)`` applied to the round profile as GalSim's ``shear`` does (area-preserving), written
through ``e = 2 g / (1 + |g|^2)``: ``I = T/2 [[1 + e1, e2], [e2, 1 - e1]]`` with
``T = T_round (1 + |g|^2) / (1 - |g|^2)``.

"bdf" is bulge + disk with a fixed size ratio (``T_dev = TdByTe * T_exp``) and a free ``fracdev``:
flux fraction in the de Vaucouleurs part, as the DES Y3 BDF fits do.

Rendering
---------
A MEDS cutout maps pixel ``(row, col)`` (0-based) to the sky through its affine Jacobian::

    u = dudrow (row - row0) + dudcol (col - col0)
    v = dvdrow (row - row0) + dvdcol (col - col0)

with ``(row0, col0)`` the object position in the cutout (MEDS ``cutout_row/col``). A pixel gets the
model's surface brightness at its centre times the pixel area ``|det J|``: the pixel response is not
integrated, because the PSF mixture is fitted to the *effective* (pixel-convolved) PSF image, so the
model convolved with it and sampled at pixel centres is the pixelated image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from skyops.errors import InputError

#: Hogg & Lang (2013) Table 1: amplitudes (surface brightness 1 at r_e) and sqrt(variance) / r_e.
_HL_EXP_A = np.array([0.00735, 0.09481, 0.63572, 2.60077, 5.42848, 3.16445])
_HL_EXP_S = np.array([0.05072, 0.13756, 0.28781, 0.53195, 0.91209, 1.50157])
_HL_DEV_A = np.array([0.00139, 0.00941, 0.04441, 0.16162, 0.48121, 1.20357, 2.54182, 4.46441, 6.22820, 6.15393])
_HL_DEV_S = np.array([0.00087, 0.00296, 0.00792, 0.01902, 0.04289, 0.09351, 0.20168, 0.44126, 1.01833,
                      2.74555])

#: Model names this module knows; "bdf" is exp + dev with a free fracdev.
MODELS = ("gauss", "exp", "dev", "bdf")
#: Columns of a mixture row.
FLUX, U0, V0, IUU, IUV, IVV = range(6)
#: Component kinds in a profile table: how a component's amplitude depends on fracdev.
KIND_PLAIN, KIND_DISK, KIND_BULGE = 0, 1, 2


def _sersic_total(n: float) -> float:
    """Total flux of a Sersic-n profile with surface brightness 1 at the half-light radius r_e = 1."""
    from scipy.special import gamma, gammaincinv

    b = gammaincinv(2 * n, 0.5)
    return float(2 * math.pi * n * math.exp(b) * gamma(2 * n) / b ** (2 * n))


def _profile(amps: np.ndarray, sigmas: np.ndarray, sersic_n: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(flux fractions of the untruncated profile, variance per unit T, T per hlr^2) of a published table."""
    frac = amps / _sersic_total(sersic_n)
    var = sigmas ** 2
    t_unit = 2.0 * float(np.sum(amps * var) / np.sum(amps))  # T of the unit-sum mixture with r_e = 1
    return frac, 2.0 * var / t_unit, t_unit


_EXP_P, _EXP_F, _EXP_T = _profile(_HL_EXP_A, _HL_EXP_S, 1.0)
_DEV_P, _DEV_F, _DEV_T = _profile(_HL_DEV_A, _HL_DEV_S, 4.0)

#: T of a round profile of unit half-light radius (T = T_PER_HLR2 * hlr^2).
T_PER_HLR2: dict[str, float] = {"gauss": 2.0 / (2.0 * math.log(2.0)), "exp": _EXP_T, "dev": _DEV_T}


@dataclass(frozen=True)
class ProfileTable:
    """A model's components for unit flux and unit T: flux fraction, variance factor and kind.

    A component of a model with size ``T`` has covariance ``T * fvar / 2 * [[1+e1, e2], [e2, 1-e1]]``
    (times ``TdByTe`` for a bulge component) and flux ``flux * frac`` (times ``fracdev`` for a
    bulge component, ``1 - fracdev`` for a disk one).
    """

    frac: np.ndarray
    fvar: np.ndarray
    kind: np.ndarray


def profile_table(model: str) -> ProfileTable:
    """The component table of ``model`` (one of :data:`MODELS`)."""
    if model == "gauss":
        return ProfileTable(np.array([1.0]), np.array([1.0]), np.array([KIND_PLAIN], dtype=np.int64))
    if model == "exp":
        return ProfileTable(_EXP_P.copy(), _EXP_F.copy(), np.full(_EXP_P.size, KIND_PLAIN, dtype=np.int64))
    if model == "dev":
        return ProfileTable(_DEV_P.copy(), _DEV_F.copy(), np.full(_DEV_P.size, KIND_PLAIN, dtype=np.int64))
    if model == "bdf":
        return ProfileTable(np.concatenate([_EXP_P, _DEV_P]), np.concatenate([_EXP_F, _DEV_F]),
                            np.concatenate([np.full(_EXP_P.size, KIND_DISK), np.full(_DEV_P.size, KIND_BULGE)])
                            .astype(np.int64))
    raise InputError(f"unknown galaxy model {model!r}; expected one of {', '.join(MODELS)}")


def g_to_e(g1: float, g2: float) -> tuple[float, float]:
    """Reduced shear -> distortion ``e = 2 g / (1 + |g|^2)`` (defined for any g; g and g/|g|^2 agree)."""
    s = 1.0 + g1 * g1 + g2 * g2
    return 2.0 * g1 / s, 2.0 * g2 / s


def hlr_to_T(model: str, hlr: float, g1: float = 0.0, g2: float = 0.0) -> float:
    """T of a profile of half-light radius ``hlr`` (of the round profile, GalSim's meaning) sheared by g."""
    if model not in T_PER_HLR2:
        raise InputError(f"hlr_to_T: model {model!r} has no single half-light radius; expected gauss, exp or dev")
    gsq = g1 * g1 + g2 * g2
    return T_PER_HLR2[model] * hlr * hlr * (1.0 + gsq) / (1.0 - gsq)


def make_model(model: str, u0: float, v0: float, g1: float, g2: float, T: float, flux: float,
               fracdev: float = 0.0, TdByTe: float = 1.0) -> np.ndarray:
    """The mixture ``(n, 6)`` of a galaxy model (see the module docstring for the parameters)."""
    tab = profile_table(model)
    e1, e2 = g_to_e(g1, g2)
    out = np.empty((tab.frac.size, 6))
    for i in range(tab.frac.size):
        amp, tfac = tab.frac[i], 1.0
        if tab.kind[i] == KIND_DISK:
            amp *= 1.0 - fracdev
        elif tab.kind[i] == KIND_BULGE:
            amp *= fracdev
            tfac = TdByTe
        half = 0.5 * T * tab.fvar[i] * tfac
        out[i] = (flux * amp, u0, v0, half * (1 + e1), half * e2, half * (1 - e1))
    return out


def gaussian(u0: float, v0: float, Iuu: float, Iuv: float, Ivv: float, flux: float = 1.0) -> np.ndarray:
    """A single-Gaussian mixture."""
    return np.array([[flux, u0, v0, Iuu, Iuv, Ivv]], dtype=np.float64)


def total_flux(gm: np.ndarray) -> float:
    return float(np.sum(gm[:, FLUX]))


def moments(gm: np.ndarray) -> tuple[float, float, float, float, float]:
    """(u, v, Iuu, Iuv, Ivv) of the whole mixture: centroid and second central moments."""
    f = gm[:, FLUX]
    s = f.sum()
    u, v = float((f * gm[:, U0]).sum() / s), float((f * gm[:, V0]).sum() / s)
    iuu = float((f * (gm[:, IUU] + (gm[:, U0] - u) ** 2)).sum() / s)
    iuv = float((f * (gm[:, IUV] + (gm[:, U0] - u) * (gm[:, V0] - v))).sum() / s)
    ivv = float((f * (gm[:, IVV] + (gm[:, V0] - v) ** 2)).sum() / s)
    return u, v, iuu, iuv, ivv


def T_of(gm: np.ndarray) -> float:
    """T = Iuu + Ivv of a mixture."""
    _, _, iuu, _, ivv = moments(gm)
    return iuu + ivv


def recenter(psf: np.ndarray) -> np.ndarray:
    """The PSF mixture with its flux-weighted centroid moved to the origin, flux normalised to 1.

    A PSF convolves the galaxy's shape, not its position: the object's centre is a fit parameter.
    """
    out = psf.copy()
    u, v, *_ = moments(psf)
    out[:, U0] -= u
    out[:, V0] -= v
    out[:, FLUX] /= out[:, FLUX].sum()
    return out


def convolve(gal: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Analytic convolution: every galaxy component with every PSF component (PSF recentred, unit flux)."""
    p = recenter(psf)
    ng, npsf = gal.shape[0], p.shape[0]
    out = np.empty((ng * npsf, 6))
    for i in range(ng):
        for j in range(npsf):
            k = i * npsf + j
            out[k, FLUX] = gal[i, FLUX] * p[j, FLUX]
            out[k, U0] = gal[i, U0] + p[j, U0]
            out[k, V0] = gal[i, V0] + p[j, V0]
            out[k, IUU:] = gal[i, IUU:] + p[j, IUU:]
    return out


@dataclass(frozen=True)
class Jacobian:
    """The affine map of a cutout from pixels to sky (MEDS ``cutout_row/col`` and ``dudrow`` ...).

    ``row0, col0`` are 0-based pixel coordinates of the point mapped to ``(u, v) = (0, 0)``.
    """

    row0: float
    col0: float
    dudrow: float
    dudcol: float
    dvdrow: float
    dvdcol: float

    @property
    def array(self) -> np.ndarray:
        return np.array([self.row0, self.col0, self.dudrow, self.dudcol, self.dvdrow, self.dvdcol])

    @property
    def area(self) -> float:
        """Pixel area in arcsec^2."""
        return abs(self.dudrow * self.dvdcol - self.dudcol * self.dvdrow)

    @property
    def scale(self) -> float:
        """Linear pixel scale (arcsec), sqrt of the area."""
        return math.sqrt(self.area)

    def recentred(self, row0: float, col0: float) -> "Jacobian":
        return Jacobian(row0, col0, self.dudrow, self.dudcol, self.dvdrow, self.dvdcol)

    def to_sky(self, row: float, col: float) -> tuple[float, float]:
        dr, dc = row - self.row0, col - self.col0
        return self.dudrow * dr + self.dudcol * dc, self.dvdrow * dr + self.dvdcol * dc

    def to_pixel(self, u: float, v: float) -> tuple[float, float]:
        det = self.dudrow * self.dvdcol - self.dudcol * self.dvdrow
        dr = (self.dvdcol * u - self.dudcol * v) / det
        dc = (-self.dvdrow * u + self.dudrow * v) / det
        return self.row0 + dr, self.col0 + dc

    def galsim_wcs(self):  # noqa: ANN201 -- galsim is imported lazily
        """The same map as a ``galsim.JacobianWCS`` (x = col, y = row; origin not included)."""
        import galsim

        return galsim.JacobianWCS(self.dudcol, self.dudrow, self.dvdcol, self.dvdrow)

    @classmethod
    def from_galsim(cls, wcs, row0: float, col0: float) -> "Jacobian":  # noqa: ANN001
        """From a ``galsim.JacobianWCS`` (or a local affine WCS) and the 0-based centre."""
        return cls(row0, col0, wcs.dudy, wcs.dudx, wcs.dvdy, wcs.dvdx)


#: Components are not evaluated where chi^2 exceeds this (exp(-25) = 1.4e-11 of the peak).
MAX_CHI2 = 50.0


@njit(cache=True, fastmath=True)
def _render_add(gm: np.ndarray, jac: np.ndarray, out: np.ndarray) -> None:
    """Add the mixture's pixel values to ``out`` (nrow, ncol) through Jacobian array ``jac``."""
    nrow, ncol = out.shape
    area = abs(jac[2] * jac[5] - jac[3] * jac[4])
    n = gm.shape[0]
    norm = np.empty(n)
    ia = np.empty(n)
    ib = np.empty(n)
    ic = np.empty(n)
    for k in range(n):
        det = gm[k, 3] * gm[k, 5] - gm[k, 4] * gm[k, 4]
        if det <= 0.0:
            norm[k] = 0.0
            ia[k] = ib[k] = ic[k] = 0.0
            continue
        norm[k] = gm[k, 0] * area / (2.0 * math.pi * math.sqrt(det))
        ia[k] = gm[k, 5] / det
        ib[k] = -gm[k, 4] / det
        ic[k] = gm[k, 3] / det
    for r in range(nrow):
        dr = r - jac[0]
        for c in range(ncol):
            dc = c - jac[1]
            u = jac[2] * dr + jac[3] * dc
            v = jac[4] * dr + jac[5] * dc
            s = 0.0
            for k in range(n):
                if norm[k] == 0.0:
                    continue
                du = u - gm[k, 1]
                dv = v - gm[k, 2]
                chi2 = ia[k] * du * du + 2.0 * ib[k] * du * dv + ic[k] * dv * dv
                if chi2 < 50.0:
                    s += norm[k] * math.exp(-0.5 * chi2)
            out[r, c] += s


def render(gm: np.ndarray, jac: Jacobian, shape: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Pixel image (``shape`` = nrow, ncol) of a mixture; added into ``out`` when given."""
    if out is None:
        out = np.zeros(shape, dtype=np.float64)
    _render_add(np.ascontiguousarray(gm, dtype=np.float64), jac.array, out)
    return out


# --------------------------------------------------------------------------------------------------
# The fitting kernel: a galaxy model convolved with each epoch's PSF, unit flux, with derivatives.
# --------------------------------------------------------------------------------------------------

#: Order of the shape parameters in :func:`render_unit_derivs`.
SHAPE_PARS = ("du", "dv", "g1", "g2", "T", "fracdev")


@njit(cache=True, fastmath=True)
def render_unit_derivs(theta: np.ndarray, TdByTe: float, frac: np.ndarray, fvar: np.ndarray, kind: np.ndarray,
                       psf: np.ndarray, psf_n: np.ndarray, jacs: np.ndarray, starts: np.ndarray,
                       shapes: np.ndarray, sqrtw: np.ndarray, unit: np.ndarray, dunit: np.ndarray) -> None:
    """Unit-flux model of every epoch, and its derivatives in the shape parameters.

    ``theta`` = (du, dv, g1, g2, T, fracdev). Epoch ``e`` occupies ``unit[starts[e]:starts[e] +
    nrow*ncol]`` (row-major), ``shapes[e] = (nrow, ncol)``; its PSF is ``psf[e, :psf_n[e]]`` (rows
    ``flux, u, v, Iuu, Iuv, Ivv``, recentred and of unit flux). Pixels with ``sqrtw == 0`` are
    skipped (left at zero). ``dunit[:, q]`` is d unit / d theta[q].
    """
    du0, dv0, g1, g2, T, fracdev = theta[0], theta[1], theta[2], theta[3], theta[4], theta[5]
    gsq = g1 * g1 + g2 * g2
    s = 1.0 + gsq
    e1 = 2.0 * g1 / s
    e2 = 2.0 * g2 / s
    de1dg1 = 2.0 * (1.0 + g2 * g2 - g1 * g1) / (s * s)
    de1dg2 = -4.0 * g1 * g2 / (s * s)
    de2dg1 = de1dg2
    de2dg2 = 2.0 * (1.0 + g1 * g1 - g2 * g2) / (s * s)
    ngal = frac.size
    nepoch = starts.size
    maxk = ngal * psf.shape[1]
    # per convolved component: base amplitude, fracdev weight and slope, centre, inverse cov, and
    # dC/dT, dC/de1, dC/de2 (dC/de1 = h diag(1,-1), dC/de2 = h offdiag(1) with h = T_i/2)
    amp = np.empty(maxk)
    wgt = np.empty(maxk)
    slope = np.empty(maxk)
    cu = np.empty(maxk)
    cv = np.empty(maxk)
    ia = np.empty(maxk)
    ib = np.empty(maxk)
    ic = np.empty(maxk)
    dTuu = np.empty(maxk)
    dTuv = np.empty(maxk)
    dTvv = np.empty(maxk)
    hh = np.empty(maxk)
    for e in range(nepoch):
        nrow, ncol = shapes[e, 0], shapes[e, 1]
        j0, j1, j2, j3, j4, j5 = jacs[e, 0], jacs[e, 1], jacs[e, 2], jacs[e, 3], jacs[e, 4], jacs[e, 5]
        area = abs(j2 * j5 - j3 * j4)
        nk = 0
        for i in range(ngal):
            tf = fvar[i]
            w = 1.0
            sl = 0.0
            if kind[i] == 1:
                w = 1.0 - fracdev
                sl = -1.0
            elif kind[i] == 2:
                tf *= TdByTe
                w = fracdev
                sl = 1.0
            h = 0.5 * T * tf
            guu = h * (1.0 + e1)
            guv = h * e2
            gvv = h * (1.0 - e1)
            for j in range(psf_n[e]):
                cuu = guu + psf[e, j, 3]
                cuv = guv + psf[e, j, 4]
                cvv = gvv + psf[e, j, 5]
                det = cuu * cvv - cuv * cuv
                if det <= 1e-300:
                    det = 1e-300
                amp[nk] = frac[i] * psf[e, j, 0] * area / (2.0 * math.pi * math.sqrt(det))
                wgt[nk] = w
                slope[nk] = sl
                cu[nk] = du0 + psf[e, j, 1]
                cv[nk] = dv0 + psf[e, j, 2]
                ia[nk] = cvv / det
                ib[nk] = -cuv / det
                ic[nk] = cuu / det
                dTuu[nk] = 0.5 * tf * (1.0 + e1)
                dTuv[nk] = 0.5 * tf * e2
                dTvv[nk] = 0.5 * tf * (1.0 - e1)
                hh[nk] = h
                nk += 1
        p = starts[e]
        for r in range(nrow):
            dr = r - j0
            for c in range(ncol):
                if sqrtw[p] == 0.0:
                    p += 1
                    continue
                dc = c - j1
                u = j2 * dr + j3 * dc
                v = j4 * dr + j5 * dc
                m = 0.0
                d_u = 0.0
                d_v = 0.0
                d_T = 0.0
                d_e1 = 0.0
                d_e2 = 0.0
                d_f = 0.0
                for k in range(nk):
                    x = u - cu[k]
                    y = v - cv[k]
                    chi2 = ia[k] * x * x + 2.0 * ib[k] * x * y + ic[k] * y * y
                    if chi2 > 50.0:
                        continue
                    nb = amp[k] * math.exp(-0.5 * chi2)
                    n = wgt[k] * nb
                    m += n
                    d_f += slope[k] * nb
                    xu = ia[k] * x + ib[k] * y
                    xv = ib[k] * x + ic[k] * y
                    d_u += n * xu
                    d_v += n * xv
                    # dN/dq = N/2 [ (P d)^T dC (P d) - tr(P dC) ]
                    q_T = dTuu[k] * xu * xu + 2.0 * dTuv[k] * xu * xv + dTvv[k] * xv * xv
                    t_T = ia[k] * dTuu[k] + 2.0 * ib[k] * dTuv[k] + ic[k] * dTvv[k]
                    d_T += 0.5 * n * (q_T - t_T)
                    q_1 = hh[k] * (xu * xu - xv * xv)
                    t_1 = hh[k] * (ia[k] - ic[k])
                    d_e1 += 0.5 * n * (q_1 - t_1)
                    q_2 = hh[k] * 2.0 * xu * xv
                    t_2 = hh[k] * 2.0 * ib[k]
                    d_e2 += 0.5 * n * (q_2 - t_2)
                unit[p] = m
                dunit[p, 0] = d_u
                dunit[p, 1] = d_v
                dunit[p, 2] = d_e1 * de1dg1 + d_e2 * de2dg1
                dunit[p, 3] = d_e1 * de1dg2 + d_e2 * de2dg2
                dunit[p, 4] = d_T
                dunit[p, 5] = d_f
                p += 1
