"""Drawing sources into a CCD image with GalSim, one small stamp per source.

Each source is drawn by GalSim into a stamp just big enough to hold its light down to
:data:`~skyops.sim.psf.WING_LEVEL` e-/pixel (the PSF's wings for its flux, plus eight
half-light radii for a galaxy), centred exactly on its true pixel position, and the stamp is
added into the CCD image where they overlap. Cost scales with the number and size of
sources, never with the CCD area: a 2048 x 4096 CCD with a few thousand sources takes
seconds.

Drawing uses the CCD's local Jacobian at its centre (TAN distortion changes the pixel scale
by < 1e-4 across one CCD); positions are exact because each stamp is centred on the
source's own true pixel coordinates. Pixel convolution is included (GalSim's ``auto``
method), so fluxes are exact integrals over pixels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import galsim
import numpy as np

from skyops.sim.galaxies import galaxy_profile
from skyops.sim.psf import PSFModel

STAR, GALAXY, TRANSIENT = 0, 1, 2
KIND_NAMES = {STAR: "star", GALAXY: "galaxy", TRANSIENT: "transient"}


@dataclass
class Sources:
    """Sources to draw on one CCD (arrays of equal length), positions in its FITS pixels."""

    kind: np.ndarray  # int8: STAR, GALAXY, TRANSIENT
    obj_id: np.ndarray  # int64
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray  # e- in the image
    fwhm: np.ndarray  # PSF FWHM at the source (arcsec)
    g1: np.ndarray
    g2: np.ndarray
    radius: np.ndarray  # stamp radius (pixels)
    galaxy_row: np.ndarray  # index into the galaxy catalog, -1 for point sources

    def __len__(self) -> int:
        return len(self.kind)

    def select(self, mask: np.ndarray) -> "Sources":
        return Sources(**{k: v[mask] for k, v in self.__dict__.items()})


def draw_sources(image: galsim.Image, jac: galsim.BaseWCS, psf: PSFModel, src: Sources,
                 galaxies: np.ndarray, gsparams: galsim.GSParams | None = None,
                 aperture: np.ndarray | None = None,
                 timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Add every source to ``image`` (e-).

    Returns each source's peak pixel value (e-) and its own light inside a circle of radius
    ``aperture`` (pixels, per source) around its position -- with :func:`aperture_sums` of
    the finished image this gives how much neighbours' light falls in the same circle.
    ``timings`` (if given) accumulates CPU seconds per kind (``draw_star``, ``draw_galaxy``...).
    """
    n_src = len(src)
    peak = np.zeros(n_src, dtype=np.float64)
    own = np.zeros(n_src, dtype=np.float64)
    full = image.bounds
    clock = time.process_time
    for k in range(n_src):
        t0 = clock()
        prof = psf.profile(src.fwhm[k], src.g1[k], src.g2[k], gsparams)
        if src.galaxy_row[k] >= 0:
            prof = galsim.Convolve(galaxy_profile(galaxies[src.galaxy_row[k]], gsparams), prof)
        prof = prof.withFlux(float(src.flux[k]))
        n = 2 * int(np.ceil(src.radius[k])) + 1
        stamp = prof.drawImage(nx=n, ny=n, wcs=jac, center=galsim.PositionD(float(src.x[k]), float(src.y[k])),
                               dtype=np.float64)
        overlap = stamp.bounds & full
        if overlap.isDefined():
            image[overlap] += stamp[overlap]
        peak[k] = float(stamp.array.max())
        if aperture is not None:
            own[k] = _circle_sum(stamp, src.x[k], src.y[k], aperture[k])
        if timings is not None:
            key = f"draw_{KIND_NAMES[int(src.kind[k])]}"
            timings[key] = timings.get(key, 0.0) + clock() - t0
    return peak, own


def _circle_sum(img: galsim.Image, x: float, y: float, r: float) -> float:
    """Sum of pixels of ``img`` whose centres lie within ``r`` of (x, y) (FITS coordinates)."""
    b = img.bounds
    x0, x1 = max(b.xmin, int(np.ceil(x - r))), min(b.xmax, int(np.floor(x + r)))
    y0, y1 = max(b.ymin, int(np.ceil(y - r))), min(b.ymax, int(np.floor(y + r)))
    if x0 > x1 or y0 > y1:
        return 0.0
    sub = img.array[y0 - b.ymin:y1 - b.ymin + 1, x0 - b.xmin:x1 - b.xmin + 1]
    xx = np.arange(x0, x1 + 1) - x
    yy = np.arange(y0, y1 + 1) - y
    inside = (xx[None, :] ** 2 + yy[:, None] ** 2) <= r * r
    return float(sub[inside].sum())


def aperture_sums(image: galsim.Image, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Sum of ``image`` in a circle of radius ``r`` around each (x, y)."""
    return np.array([_circle_sum(image, x[k], y[k], r[k]) for k in range(len(x))], dtype=np.float64)


def measure_aperture(fwhm_pix: np.ndarray, extent_pix: np.ndarray) -> np.ndarray:
    """The aperture used for truth bookkeeping: 4 PSF FWHM, plus 3/8 of a galaxy's light radius.

    A Moffat (beta 3.5) point source has 99.96% of its light inside 4 FWHM.
    """
    return 4.0 * np.asarray(fwhm_pix) + 0.375 * np.asarray(extent_pix)
