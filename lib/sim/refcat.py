"""A GAIA-like reference catalog, and the true stars it was measured from.

Stars are static sources generated per sky cell (:mod:`skyops.sim.skycells`): a position, a
Gaia G magnitude from a power-law count distribution, and a BP-RP colour. The *reference
catalog* is what an astrometric/photometric calibration step gets (GAIA DR2 column names:
``source_id, ra, dec, ra_error, dec_error, pmra, pmdec, ..., phot_g_mean_mag, bp_rp``); its
positions carry GAIA-size errors (0.02-1 mas) around the true ones, proper motions and
parallaxes are zero (with errors).

The magnitude a star has in a DECam band is a *known* colour transformation of its G and
BP-RP (:func:`band_mag`), so photometric calibration against the catalog can be exact:
``mag_band = G + c0[band] + c1[band] * bp_rp``. Truth tables carry the band magnitudes.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from skyops.imaging.gaia import GAIA_TO_DECAM
from skyops.sim.photometry import BANDS
from skyops.sim.seeding import rng
from skyops.sim.skycells import cell_area_deg2, cell_index, power_law_mags, uniform_in_cell

#: mag_band = G + c0 + c1 * (BP - RP): the same table the calibration steps use.
COLOR_TERMS = GAIA_TO_DECAM

#: GAIA DR2 column names and types (errors in mas and mas/yr, as in GAIA).
REFCAT_DTYPE = np.dtype([
    ("source_id", "i8"), ("ra", "f8"), ("dec", "f8"), ("ra_error", "f4"), ("dec_error", "f4"),
    ("pmra", "f4"), ("pmdec", "f4"), ("pmra_error", "f4"), ("pmdec_error", "f4"),
    ("parallax", "f4"), ("parallax_error", "f4"), ("ref_epoch", "f8"),
    ("phot_g_mean_mag", "f4"), ("phot_g_mean_flux_over_error", "f4"),
    ("phot_bp_mean_mag", "f4"), ("phot_rp_mean_mag", "f4"), ("bp_rp", "f4"),
])

#: True stars: id (= refcat source_id), true position, G, colour and every DECam band magnitude.
STAR_DTYPE = np.dtype([("star_id", "i8"), ("ra", "f8"), ("dec", "f8"), ("g_mag", "f4"), ("bp_rp", "f4")]
                      + [(f"mag_{b}", "f4") for b in BANDS])

STARS_PER_CELL_ID = 1_000_000


def band_mag(g_mag: np.ndarray, bp_rp: np.ndarray, band: str) -> np.ndarray:
    """The star's magnitude in a DECam band from GAIA G and BP-RP (the simulation's exact relation)."""
    c0, c1 = COLOR_TERMS[band]
    return np.asarray(g_mag, dtype=float) + c0 + c1 * np.asarray(bp_rp, dtype=float)


def make_stars(seed: int, cells: Iterable[tuple[int, int]], density: float,
               mag_range: tuple[float, float] = (14.0, 21.5), slope: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """True stars and their reference catalog over ``cells``; ``density`` is per square degree.

    Returns ``(stars, refcat)`` with matching rows (``refcat.source_id == stars.star_id``).
    """
    parts_s: list[np.ndarray] = []
    parts_r: list[np.ndarray] = []
    for i, j in cells:
        cid = cell_index(i, j)
        g = rng(seed, "stars", cid)
        n = int(g.poisson(density * cell_area_deg2(j)))
        if n == 0:
            continue
        if n >= STARS_PER_CELL_ID:
            raise ValueError("star density too high for the id scheme")
        ra, dec = uniform_in_cell(g, n, i, j)
        gmag = power_law_mags(g, n, mag_range[0], mag_range[1], slope)
        bp_rp = np.clip(g.normal(1.0, 0.35, n), 0.2, 3.5)
        s = np.zeros(n, STAR_DTYPE)
        s["star_id"] = cid * STARS_PER_CELL_ID + np.arange(n)
        s["ra"], s["dec"], s["g_mag"], s["bp_rp"] = ra, dec, gmag, bp_rp
        for b in BANDS:
            s[f"mag_{b}"] = band_mag(gmag, bp_rp, b)
        parts_s.append(s)
        parts_r.append(_measure(seed, cid, s))
    if not parts_s:
        return np.zeros(0, STAR_DTYPE), np.zeros(0, REFCAT_DTYPE)
    return np.concatenate(parts_s), np.concatenate(parts_r)


def _measure(seed: int, cid: int, s: np.ndarray) -> np.ndarray:
    """GAIA's view of the true stars: positions with errors, zero proper motion and parallax."""
    g = rng(seed, "refcat-errors", cid)
    n = len(s)
    err = 0.02 + 0.6 * 10.0 ** (0.4 * (s["g_mag"] - 21.0))  # mas: bright ~0.02, G=21 ~0.6
    r = np.zeros(n, REFCAT_DTYPE)
    r["source_id"] = s["star_id"]
    cosd = np.cos(np.radians(s["dec"]))
    r["ra"] = s["ra"] + g.normal(0.0, 1.0, n) * err / 3.6e6 / cosd
    r["dec"] = s["dec"] + g.normal(0.0, 1.0, n) * err / 3.6e6
    r["ra_error"] = err
    r["dec_error"] = err
    r["pmra_error"] = 1.5 * err
    r["pmdec_error"] = 1.5 * err
    r["parallax_error"] = 1.2 * err
    r["ref_epoch"] = 2015.5
    r["phot_g_mean_mag"] = s["g_mag"]
    r["phot_g_mean_flux_over_error"] = 1.0 / np.clip(0.0005 + 0.01 * 10.0 ** (0.4 * (s["g_mag"] - 20.0)), 1e-4, None)
    r["phot_bp_mean_mag"] = s["g_mag"] + 0.3 + 0.42 * (s["bp_rp"] - 1.0)
    r["phot_rp_mean_mag"] = r["phot_bp_mean_mag"] - s["bp_rp"]
    r["bp_rp"] = s["bp_rp"]
    return r
