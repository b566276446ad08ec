"""Bands, zeropoints, sky brightness and the magnitude-to-electrons relation.

Convention (used everywhere in ``skyops.sim`` and recorded as truth): reduced images are in
electrons, and an object of magnitude ``mag`` in the exposure's band puts

    flux_e = 10 ** (-0.4 * (mag - mag_zero))

electrons in the image, where ``mag_zero`` is the zeropoint of that CCD in that exposure for
the whole exposure time (DESDM's ZEROPOINT.MAG_ZERO convention). It is built from a 1-second
zeropoint per band, the exposure time, the airmass (extinction), the night's transparency and
a small static CCD-to-CCD offset:

    mag_zero = zp_1s(band) + 2.5 log10(exptime) - k(band) (airmass - 1)
               + 2.5 log10(transparency) + ccd_offset

The numbers are DECam-like, not DECam's measured ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skyops.errors import SimulationError


@dataclass(frozen=True)
class Band:
    """A DECam filter: its FITS FILTER string, 1 s zeropoint (e-), dark sky, extinction."""

    name: str
    filter: str
    zp_1s: float  # AB mag giving 1 e-/s at airmass 1
    sky_mag: float  # dark-sky brightness, mag / arcsec^2
    extinction: float  # mag / airmass
    wavelength: float  # Angstrom, for headers


BANDS: dict[str, Band] = {
    "u": Band("u", "u DECam c0006 3500.0 1000.0", 24.10, 22.8, 0.45, 3500.0),
    "g": Band("g", "g DECam SDSS c0001 4720.0 1520.0", 26.45, 22.0, 0.18, 4720.0),
    "r": Band("r", "r DECam SDSS c0002 6415.0 1480.0", 26.65, 21.1, 0.09, 6415.0),
    "i": Band("i", "i DECam SDSS c0003 7835.0 1470.0", 26.55, 20.1, 0.06, 7835.0),
    "z": Band("z", "z DECam SDSS c0004 9260.0 1520.0", 26.25, 18.8, 0.06, 9260.0),
    "Y": Band("Y", "Y DECam c0005 10095.0 1130.0", 25.30, 18.0, 0.06, 10095.0),
}


def band(name: str) -> Band:
    try:
        return BANDS[name]
    except KeyError:
        raise SimulationError(f"band {name!r} is not a DECam band; expected one of {', '.join(BANDS)}") from None


def mag_to_flux(mag: np.ndarray | float, mag_zero: float) -> np.ndarray:
    """Electrons in the image for magnitude ``mag`` at zeropoint ``mag_zero``."""
    return np.power(10.0, -0.4 * (np.asarray(mag, dtype=float) - mag_zero))


def flux_to_mag(flux: np.ndarray | float, mag_zero: float) -> np.ndarray:
    return mag_zero - 2.5 * np.log10(np.asarray(flux, dtype=float))


def exposure_zeropoint(band_name: str, exptime: float, airmass: float, transparency: float) -> float:
    """The focal-plane zeropoint of an exposure (before CCD offsets)."""
    b = band(band_name)
    return float(b.zp_1s + 2.5 * np.log10(exptime) - b.extinction * (airmass - 1.0)
                 + 2.5 * np.log10(transparency))


def sky_electrons(band_name: str, exptime: float, pixel_scale: float, sky_factor: float = 1.0,
                  transparency: float = 1.0) -> float:
    """Sky electrons per pixel for the exposure (dark sky times ``sky_factor`` for moon/twilight)."""
    b = band(band_name)
    per_arcsec2 = 10.0 ** (-0.4 * (b.sky_mag - b.zp_1s)) * sky_factor * transparency
    return float(per_arcsec2 * pixel_scale**2 * exptime)


def point_source_snr(flux: np.ndarray, n_eff: np.ndarray, sky: float, read_noise: float) -> np.ndarray:
    """PSF-optimal S/N of a point source: flux / sqrt(flux + n_eff (sky + rn^2))."""
    flux = np.asarray(flux, dtype=float)
    return flux / np.sqrt(flux + n_eff * (sky + read_noise**2))


def flux_for_snr(snr: np.ndarray, n_eff: np.ndarray, sky: float, read_noise: float) -> np.ndarray:
    """The point-source flux (e-) that gives PSF-optimal S/N ``snr`` (inverse of the above)."""
    s2 = np.asarray(snr, dtype=float) ** 2
    b = n_eff * (sky + read_noise**2)
    return 0.5 * (s2 + np.sqrt(s2 * s2 + 4.0 * s2 * b))
