"""The gnomonic (TAN) projection: sky positions <-> standard coordinates about a tangent point.

One implementation for every campaign and the synthetic survey: GW's astrometric fit and
calibration-star isolation test, the Magellanic overlap and coarse-grid geometry, and the
simulator's WCS all project the same way, so they cannot drift apart. Angles in degrees;
standard coordinates xi toward East, eta toward North. Vectorised over numpy arrays.
"""
from __future__ import annotations

import numpy as np

DEG = np.pi / 180.0


def gnomonic(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates (xi East, eta North; degrees) of (ra, dec) about (ra0, dec0).

    Points 90 degrees or more from the tangent point have no projection and come back as NaN.
    """
    a = (np.asarray(ra, dtype=float) - ra0) * DEG
    d = np.asarray(dec, dtype=float) * DEG
    d0 = dec0 * DEG
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.where(cosc > 0, np.cos(d) * np.sin(a) / cosc, np.nan)
        eta = np.where(cosc > 0, (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cosc, np.nan)
    return xi / DEG, eta / DEG


def inverse_gnomonic(xi: np.ndarray, eta: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of standard coordinates (degrees) about (ra0, dec0); RA in [0, 360)."""
    x = np.asarray(xi, dtype=float) * DEG
    y = np.asarray(eta, dtype=float) * DEG
    d0 = dec0 * DEG
    denom = np.cos(d0) - y * np.sin(d0)
    ra = ra0 + np.arctan2(x, denom) / DEG
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, denom)) / DEG
    return np.mod(ra, 360.0), dec


__all__ = ["DEG", "gnomonic", "inverse_gnomonic"]
