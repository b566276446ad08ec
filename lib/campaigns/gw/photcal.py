"""Photometric calibration against GAIA: BLISS's per-CCD zeropoints, as functions.

``BLISS-expCalib_Y3apass.py`` calibrates GW images outside the DES footprint: it matches each
CCD's stars to a GAIA DR2 catalog, transforms GAIA G (and BP-RP) into the DECam band, and
takes a sigma-clipped zeropoint ``mag_zero = mag_ref - mag_inst`` with
``mag_inst = -2.5 log10(flux [e-])`` -- DESDM's ZEROPOINT.MAG_ZERO convention for an image in
electrons over the whole exposure.

The GAIA-to-DECam transformation is ``mag_band = G + c0 + c1 (BP-RP)``; the default
coefficients (:data:`GAIA_TO_DECAM`) are those of the catalog skyops' archive serves (the
synthetic survey's GAIA-like reference catalog, see :mod:`skyops.sim.refcat`), and are a
parameter of the calibration step for a real GAIA catalog.

Blends: :func:`predicted_blend` is how much light a star's neighbours put into its aperture,
each spread as a Moffat profile (:func:`moffat_fraction_in_circle`), on a tangent plane
(:func:`tangent_plane`) -- gw.calibrate's isolation test.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from skyops.errors import InputError
from skyops.imaging.gaia import GAIA_TO_DECAM
from skyops.skygeom import gnomonic


#: ZEROPOINT.FLAG bits written by gw.calibrate.
FLAG_FEW_STARS = 1  # fewer than min_stars calibration stars (mag_zero from what there is, or NaN)
FLAG_NO_STARS = 2  # no calibration star at all: mag_zero is NaN
FLAG_LARGE_SCATTER = 4  # clipped rms above max_rms

#: Moffat beta with which a neighbour's light is spread when predicting blends: heavier wings than
#: ground-based PSFs have (beta ~3-4.5), so that the prediction errs on the side of rejecting a star.
BLEND_BETA = 2.5


def reference_mag(g_mag: np.ndarray, bp_rp: np.ndarray, band: str,
                  color_terms: tuple[float, float] | None = None) -> np.ndarray:
    """The DECam-band magnitude of reference stars from GAIA G and BP-RP."""
    if color_terms is None:
        if band not in GAIA_TO_DECAM:
            raise InputError(f"band {band!r} has no GAIA-to-DECam transformation; expected one of "
                             f"{', '.join(GAIA_TO_DECAM)} or give color_terms [c0, c1]")
        color_terms = GAIA_TO_DECAM[band]
    c0, c1 = color_terms
    return np.asarray(g_mag, float) + c0 + c1 * np.asarray(bp_rp, float)


def match_sky(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray,
              radius_arcsec: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest neighbour of each (ra1, dec1) among (ra2, dec2) within the radius, one-to-one.

    Returns indices into the first and second lists and the separations (arcsec).
    """
    if len(ra1) == 0 or len(ra2) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)

    def unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        r, d = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
        return np.column_stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])

    chord = 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)
    dist, idx = cKDTree(unit(ra2, dec2)).query(unit(ra1, dec1), distance_upper_bound=chord)
    ok = np.isfinite(dist)
    i1, i2, d = np.flatnonzero(ok), idx[ok], dist[ok]
    order = np.argsort(d)
    _, first = np.unique(i2[order], return_index=True)  # a reference star pairs with its closest detection
    keep = np.sort(order[first])
    sep = np.degrees(2.0 * np.arcsin(d[keep] / 2.0)) * 3600.0
    return i1[keep], i2[keep], sep


def tangent_plane(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection about (ra0, dec0): standard coordinates (xi east, eta north) in arcsec."""
    xi, eta = gnomonic(ra, dec, ra0, dec0)
    return xi * 3600.0, eta * 3600.0


def moffat_fraction_in_circle(d: np.ndarray, radius: float, fwhm: float, beta: float = BLEND_BETA,
                              nring: int = 400) -> np.ndarray:
    """The fraction of a unit-flux round Moffat profile (``fwhm``, ``beta``) centred at distance ``d``
    from the centre of a circle of ``radius`` that falls inside the circle (all lengths alike, e.g. pixels).

    The profile is cut into ``nring`` thin rings about its own centre (their fluxes exact, from the
    Moffat curve of growth); each ring contributes the fraction of its circumference inside the circle.
    """
    d = np.atleast_1d(np.asarray(d, float))
    rd = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    edges = np.linspace(0.0, float(np.max(d, initial=0.0)) + radius, nring + 1)
    ring_flux = np.diff(1.0 - (1.0 + (edges / rd) ** 2) ** (1.0 - beta))
    rho = 0.5 * (edges[1:] + edges[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_half = (rho[None, :] ** 2 + d[:, None] ** 2 - radius**2) / (2.0 * rho[None, :] * d[:, None])
    arc = np.arccos(np.clip(np.nan_to_num(cos_half, nan=1.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)) / np.pi
    centred = d[:, None] == 0.0
    arc = np.where(centred, (rho[None, :] < radius).astype(float), arc)
    return arc @ ring_flux


def predicted_blend(x: np.ndarray, y: np.ndarray, flux: np.ndarray, src_x: np.ndarray, src_y: np.ndarray,
                    src_flux: np.ndarray, radius: float, fwhm: float, *, exclude: np.ndarray | None = None,
                    beta: float = BLEND_BETA, reach_fwhm: float = 8.0) -> np.ndarray:
    """Per star at (x, y) with ``flux``: the light of the sources (``src_*``) that falls in a circle of
    ``radius`` around it, as a fraction of its own flux, each source spread as a Moffat of ``fwhm``.

    ``exclude[k]`` is the index of star k itself among the sources (-1: not among them). Sources farther
    than ``radius + reach_fwhm * fwhm`` are ignored (they add < 1e-4 of their flux for beta >= 2.5).
    """
    x, y, flux = (np.atleast_1d(np.asarray(v, float)) for v in (x, y, flux))
    out = np.zeros(len(x))
    if len(x) == 0 or len(src_x) == 0:
        return out
    src_flux = np.clip(np.nan_to_num(np.asarray(src_flux, float)), 0.0, None)
    tree = cKDTree(np.column_stack([src_x, src_y]))
    pairs = tree.query_ball_point(np.column_stack([x, y]), radius + reach_fwhm * fwhm)
    star = np.concatenate([np.full(len(p), k) for k, p in enumerate(pairs)]).astype(int)
    src = np.concatenate([np.asarray(p, int) for p in pairs]).astype(int)
    if exclude is not None:
        keep = src != np.asarray(exclude)[star]
        star, src = star[keep], src[keep]
    if len(star) == 0:
        return out
    dist = np.hypot(np.asarray(src_x)[src] - x[star], np.asarray(src_y)[src] - y[star])
    light = src_flux[src] * moffat_fraction_in_circle(dist, radius, fwhm, beta)
    np.add.at(out, star, light)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, out / flux, np.inf)


@dataclass
class Zeropoint:
    """A sigma-clipped zeropoint."""

    mag_zero: float
    sigma_mag_zero: float  # error of the mean
    rms: float  # clipped scatter of the stars
    nstars: int  # used after clipping
    nrejected: int
    used: np.ndarray  # boolean, per input star


def clipped_zeropoint(zp: np.ndarray, err: np.ndarray | None = None, *, nsigma: float = 3.0,
                      floor: float | None = None, max_iter: int = 10) -> Zeropoint:
    """Iterative ``nsigma`` clipping about the median; the weighted mean of the survivors.

    A star is clipped beyond ``nsigma`` times its error and the robust scatter in quadrature.
    Weights are 1 / (err^2 + floor^2), ``floor`` (mag) defaulting to the robust scatter, so a
    few very bright stars cannot dominate when the scatter is not photon noise.
    """
    zp = np.asarray(zp, float)
    n = len(zp)
    if n == 0:
        return Zeropoint(float("nan"), float("nan"), float("nan"), 0, 0, np.zeros(0, bool))
    err = np.zeros(n) if err is None else np.nan_to_num(np.asarray(err, float), nan=1.0)
    used = np.isfinite(zp)
    for _ in range(max_iter):
        med = np.median(zp[used])
        rms = 1.4826 * np.median(np.abs(zp[used] - med))
        rms = max(rms, 1e-4)
        new = np.isfinite(zp) & (np.abs(zp - med) <= nsigma * np.hypot(rms, err))
        if new.sum() == 0 or np.array_equal(new, used):
            break
        used = new
    w = 1.0 / (err[used] ** 2 + (rms if floor is None else floor) ** 2)
    mean = float(np.sum(w * zp[used]) / np.sum(w))
    scatter = float(np.std(zp[used], ddof=1)) if used.sum() > 1 else float("nan")
    sigma = float(np.sqrt(1.0 / np.sum(w))) if used.sum() > 1 else float("nan")
    return Zeropoint(mean, sigma, scatter, int(used.sum()), int(n - used.sum()), used)
