"""The synthetic deep field Balrog injects from: bulge + disk galaxies and stars, seeded.

DES Balrog draws its injected galaxies from deep-field catalogs (objects measured with a few
times the survey's depth, fitted with bulge + disk models). skyops has no deep field, so it
makes one: ``n_objects`` galaxies with an i-band magnitude from a power-law count distribution,
colours in g, r, i, z, Y from one "redness" parameter, an exponential disk and a de Vaucouleurs
bulge sharing a centre (bulge fraction 0 for pure disks, 1 for pure spheroids, 0.1-0.6 for
composites), half-light radii shrinking with magnitude and intrinsic shapes (Rayleigh |g|,
sigma 0.2). Stars are drawn with a stellar-locus colour and no size. The same settings give the
same catalog, byte for byte (``numpy`` Generator seeded from the settings' seed).

:func:`profile` turns a row into its unit-flux GalSim profile (arcsec): the de Vaucouleurs
component is truncated at 8 half-light radii with its flux normalised inside, so a finite stamp
holds all of it; disks are not truncated (1e-5 of the light lies beyond 8 half-light radii).
Every profile is point-symmetric about its position, so its centroid is where it is put.
"""
from __future__ import annotations

import galsim
import numpy as np

from skyops.campaigns.balrog.config import DeepFieldSettings, StarSettings

BANDS = ("g", "r", "i", "z", "Y")
DISK, DEV, BULGE_DISK, STAR = 0, 1, 2, 3
MORPHOLOGY = {DISK: "disk", DEV: "dev", BULGE_DISK: "bulge+disk", STAR: "star"}
DEV_TRUNC = 8.0
#: Galaxy colours relative to i per unit redness t in [0, 1]: mag_b = mag_i + a + b t.
GALAXY_COLORS = {"g": (0.4, 1.4), "r": (0.15, 0.55), "i": (0.0, 0.0), "z": (-0.05, -0.35), "Y": (-0.1, -0.45)}
#: Stellar locus relative to i per unit temperature parameter t in [0, 1] (blue to red).
STAR_COLORS = {"g": (0.3, 1.9), "r": (0.1, 0.7), "i": (0.0, 0.0), "z": (-0.05, -0.35), "Y": (-0.07, -0.5)}

DEEPFIELD_DTYPE = np.dtype(
    [("df_id", "i8"), ("morphology", "i2")]
    + [(f"mag_{b}", "f4") for b in BANDS]
    + [("bulge_frac", "f4"), ("hlr_disk", "f4"), ("hlr_bulge", "f4"), ("g1", "f4"), ("g2", "f4"),
       ("g1_bulge", "f4"), ("g2_bulge", "f4")]
)


def _generator(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def power_law_mags(g: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Magnitudes with dN/dm proportional to 10**(slope m) between lo and hi."""
    if slope == 0:
        return g.uniform(lo, hi, n)
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + g.random(n) * (b - a)) / slope


def make_deepfield(s: DeepFieldSettings) -> np.ndarray:
    """The deep-field galaxy catalog of settings ``s`` (DEEPFIELD_DTYPE, sizes in arcsec)."""
    g = _generator(s.seed, 1)
    n = s.n_objects
    mag_i = power_law_mags(g, n, s.mag_range[0], s.mag_range[1], s.count_slope)
    red = g.random(n)
    u = g.random(n)
    kind = np.where(u < 0.45, DISK, np.where(u < 0.6, DEV, BULGE_DISK))
    hlr = np.clip(0.8 * 10.0 ** (-0.12 * (mag_i - 20.0)) * np.exp(g.normal(0.0, 0.3, n)), 0.1, 3.0)
    bf = np.where(kind == DISK, 0.0, np.where(kind == DEV, 1.0, g.uniform(0.1, 0.6, n)))
    hlr_bulge = np.where(kind == DEV, hlr, np.where(kind == BULGE_DISK, hlr * g.uniform(0.25, 0.6, n), 0.0))
    gmod = np.clip(np.hypot(g.normal(0, 0.2, n), g.normal(0, 0.2, n)), 0.0, 0.7)
    phi = g.uniform(0.0, np.pi, n)
    out = np.zeros(n, DEEPFIELD_DTYPE)
    out["df_id"] = np.arange(n) + 1
    out["morphology"] = kind
    for b, (a, k) in GALAXY_COLORS.items():
        out[f"mag_{b}"] = mag_i + a + k * red
    out["bulge_frac"] = bf
    out["hlr_disk"] = np.where(kind == DEV, 0.0, hlr)
    out["hlr_bulge"] = np.where(kind == DISK, 0.0, np.maximum(hlr_bulge, 0.08))
    out["g1"], out["g2"] = gmod * np.cos(2 * phi), gmod * np.sin(2 * phi)
    out["g1_bulge"], out["g2_bulge"] = 0.5 * out["g1"], 0.5 * out["g2"]
    return out


def make_stars(g: np.random.Generator, n: int, s: StarSettings) -> np.ndarray:
    """``n`` stars (DEEPFIELD_DTYPE with morphology STAR, no size), i-band counts rising as 10**(0.2 m)."""
    out = np.zeros(n, DEEPFIELD_DTYPE)
    mag_i = power_law_mags(g, n, s.mag_range[0], s.mag_range[1], 0.2)
    t = g.random(n)
    out["morphology"] = STAR
    out["df_id"] = -1
    for b, (a, k) in STAR_COLORS.items():
        out[f"mag_{b}"] = mag_i + a + k * t
    return out


def sample(deepfield: np.ndarray, stars: StarSettings, n: int, g: np.random.Generator) -> np.ndarray:
    """``n`` injection objects: deep-field galaxies (with replacement) and a ``stars.fraction`` of stars."""
    is_star = g.random(n) < stars.fraction
    out = np.zeros(n, DEEPFIELD_DTYPE)
    n_gal = int((~is_star).sum())
    out[~is_star] = deepfield[g.integers(0, len(deepfield), n_gal)]
    out[is_star] = make_stars(g, int(is_star.sum()), stars)
    return out


def extent_arcsec(obj: np.ndarray) -> np.ndarray:
    """Radius (arcsec) holding essentially all of each object's light before the PSF (0 for stars)."""
    return DEV_TRUNC * np.maximum(obj["hlr_disk"], obj["hlr_bulge"]).astype(float)


def profile(row: np.void, gsparams: galsim.GSParams | None = None) -> galsim.GSObject:
    """The object's unit-flux GalSim profile in arcsec (a delta function for a star)."""
    if int(row["morphology"]) == STAR:
        return galsim.DeltaFunction(flux=1.0, gsparams=gsparams)
    bf = float(row["bulge_frac"])
    comps: list[galsim.GSObject] = []
    if bf < 1.0:
        comps.append(galsim.Exponential(half_light_radius=float(row["hlr_disk"]), flux=1.0 - bf, gsparams=gsparams)
                     .shear(g1=float(row["g1"]), g2=float(row["g2"])))
    if bf > 0.0:
        h = float(row["hlr_bulge"])
        comps.append(galsim.DeVaucouleurs(half_light_radius=h, trunc=DEV_TRUNC * h, flux=bf, gsparams=gsparams)
                     .shear(g1=float(row["g1_bulge"]), g2=float(row["g2_bulge"])))
    return comps[0] if len(comps) == 1 else galsim.Add(comps, gsparams=gsparams)
