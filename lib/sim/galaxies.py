"""Galaxies: a static catalog per sky cell, drawn with GalSim profiles.

Each galaxy is a pure exponential disk (60%), a pure de Vaucouleurs spheroid (15%) or a
bulge + disk (25%), with an i-band magnitude from a power-law count distribution, colours
to the other bands, a half-light radius that shrinks with magnitude (log-normal scatter)
and an intrinsic shape (reduced shear, Rayleigh-distributed |g| with sigma 0.2). Bulge and
disk share the centre, so every galaxy is point-symmetric and its centroid is its position.

The de Vaucouleurs component is truncated at 8 half-light radii (GalSim ``trunc``, flux
normalised inside it), which keeps its flux inside a finite stamp; disks are not truncated
(the flux beyond 8 half-light radii is 2e-5).
"""
from __future__ import annotations

from typing import Iterable

import galsim
import numpy as np

from skyops.sim.photometry import BANDS
from skyops.sim.seeding import rng
from skyops.sim.skycells import cell_area_deg2, cell_index, power_law_mags, uniform_in_cell

DISK, DEV, BULGE_DISK = 0, 1, 2
MORPHOLOGY = {DISK: "disk", DEV: "dev", BULGE_DISK: "bulge+disk"}
DEV_TRUNC = 8.0  # in half-light radii
GALAXIES_PER_CELL_ID = 1_000_000

#: Colours relative to i per unit of "redness" r in [0, 1]: mag_b = mag_i + a + b * r.
_COLORS: dict[str, tuple[float, float]] = {
    "u": (1.2, 2.0), "g": (0.5, 1.3), "r": (0.2, 0.5), "i": (0.0, 0.0), "z": (-0.1, -0.3), "Y": (-0.15, -0.4),
}

GALAXY_DTYPE = np.dtype(
    [("galaxy_id", "i8"), ("ra", "f8"), ("dec", "f8")]
    + [(f"mag_{b}", "f4") for b in BANDS]
    + [("morphology", "i2"), ("bulge_frac", "f4"), ("hlr_disk", "f4"), ("hlr_bulge", "f4"),
       ("g1", "f4"), ("g2", "f4"), ("g1_bulge", "f4"), ("g2_bulge", "f4")]
)


def make_galaxies(seed: int, cells: Iterable[tuple[int, int]], density: float,
                  mag_range: tuple[float, float] = (18.0, 25.0), slope: float = 0.33) -> np.ndarray:
    """The galaxies in ``cells`` (``density`` per square degree); sizes in arcsec."""
    parts: list[np.ndarray] = []
    for i, j in cells:
        cid = cell_index(i, j)
        g = rng(seed, "galaxies", cid)
        n = int(g.poisson(density * cell_area_deg2(j)))
        if n == 0:
            continue
        ra, dec = uniform_in_cell(g, n, i, j)
        mag_i = power_law_mags(g, n, mag_range[0], mag_range[1], slope)
        red = g.random(n)
        kind = np.where(g.random(n) < 0.6, DISK, np.where(g.random(n) < 0.375, DEV, BULGE_DISK))
        hlr = np.clip(0.9 * 10.0 ** (-0.12 * (mag_i - 20.0)) * np.exp(g.normal(0.0, 0.35, n)), 0.12, 5.0)
        bf = np.where(kind == DISK, 0.0, np.where(kind == DEV, 1.0, g.uniform(0.1, 0.6, n)))
        hlr_bulge = np.where(kind == DEV, 0.6 * hlr, np.where(kind == BULGE_DISK, hlr * g.uniform(0.25, 0.6, n), 0.0))
        hlr_bulge = np.where(kind == DISK, 0.0, np.maximum(hlr_bulge, 0.08))
        gmod = np.clip(np.sqrt(g.normal(0, 0.2, n) ** 2 + g.normal(0, 0.2, n) ** 2), 0.0, 0.7)
        phi = g.uniform(0.0, np.pi, n)
        gal = np.zeros(n, GALAXY_DTYPE)
        gal["galaxy_id"] = cid * GALAXIES_PER_CELL_ID + np.arange(n)
        gal["ra"], gal["dec"] = ra, dec
        for b, (a, k) in _COLORS.items():
            gal[f"mag_{b}"] = mag_i + a + k * red
        gal["morphology"] = kind
        gal["bulge_frac"] = bf
        gal["hlr_disk"] = np.where(kind == DEV, 0.0, hlr)
        gal["hlr_bulge"] = hlr_bulge
        gal["g1"], gal["g2"] = gmod * np.cos(2 * phi), gmod * np.sin(2 * phi)
        gal["g1_bulge"], gal["g2_bulge"] = 0.5 * gal["g1"], 0.5 * gal["g2"]
        parts.append(gal)
    return np.concatenate(parts) if parts else np.zeros(0, GALAXY_DTYPE)


def galaxy_profile(row: np.void, gsparams: galsim.GSParams | None = None) -> galsim.GSObject:
    """The galaxy's GalSim profile with unit flux (before the PSF), sizes in arcsec."""
    bf = float(row["bulge_frac"])
    comps: list[galsim.GSObject] = []
    if bf < 1.0:
        comps.append(galsim.Exponential(half_light_radius=float(row["hlr_disk"]), flux=1.0 - bf, gsparams=gsparams)
                     .shear(g1=float(row["g1"]), g2=float(row["g2"])))
    if bf > 0.0:
        h = float(row["hlr_bulge"])
        comps.append(galsim.DeVaucouleurs(half_light_radius=h, trunc=DEV_TRUNC * h, flux=bf, gsparams=gsparams)
                     .shear(g1=float(row["g1_bulge"]), g2=float(row["g2_bulge"])))
    return comps[0] if len(comps) == 1 else galsim.Add(comps)


def extent_arcsec(gal: np.ndarray) -> np.ndarray:
    """Radius (arcsec) holding essentially all of each galaxy's light: 8 half-light radii."""
    return 8.0 * np.maximum(gal["hlr_disk"], gal["hlr_bulge"]).astype(float)
