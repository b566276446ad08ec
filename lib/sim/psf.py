"""The PSF: a Moffat profile whose size and shape vary smoothly across the focal plane.

Each exposure has a seeing FWHM at the boresight; the FWHM grows toward the edge of the
field (a quadratic term, as DECam's does) with a small tilt, and the ellipticity has a
constant part plus an astigmatism-like pattern (``g1 ~ x^2 - y^2``, ``g2 ~ 2xy``) and a
linear term. Positions are in focal-plane units normalised to the field radius, so the
pattern is the same on the miniature demo focal plane as on the full one.

Why Moffat (beta = 3.5) rather than Kolmogorov: its wings fall fast enough that a finite
stamp holds the whole flux (drawn flux within 1e-4 of the truth), and GalSim draws it in
about 0.3 ms; truth tests need both.

Shears are GalSim reduced shears ``(g1, g2)`` in GalSim's local sky frame (``u`` toward West,
``v`` toward North); the FWHM is that of the round profile before shearing (the shear keeps
the area).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import galsim
import numpy as np

from skyops.sim.seeding import rng

DEFAULT_BETA = 3.5
#: Surface brightness (e- / pixel) below which a stamp may cut a profile's wings.
WING_LEVEL = 0.02


@dataclass(frozen=True)
class PSFModel:
    """The PSF of one exposure as a function of normalised focal-plane position (x, y)."""

    fwhm: float  # arcsec at the boresight
    beta: float = DEFAULT_BETA
    fwhm_r2: float = 0.05  # fractional FWHM increase at the field edge
    fwhm_x: float = 0.0
    fwhm_y: float = 0.0
    g1_0: float = 0.0
    g2_0: float = 0.0
    astig: float = 0.03
    g1_x: float = 0.0
    g2_y: float = 0.0

    @classmethod
    def random(cls, seed: int, expnum: int, fwhm: float, beta: float = DEFAULT_BETA) -> "PSFModel":
        """The exposure's PSF pattern, drawn from its own random stream."""
        g = rng(seed, "psf", expnum)
        return cls(
            fwhm=float(fwhm), beta=float(beta),
            fwhm_r2=float(g.uniform(0.03, 0.08)),
            fwhm_x=float(g.normal(0, 0.015)), fwhm_y=float(g.normal(0, 0.015)),
            g1_0=float(g.normal(0, 0.012)), g2_0=float(g.normal(0, 0.012)),
            astig=float(g.uniform(0.015, 0.035)),
            g1_x=float(g.normal(0, 0.008)), g2_y=float(g.normal(0, 0.008)),
        )

    def params(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FWHM (arcsec), g1, g2 at normalised focal-plane positions."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        fwhm = self.fwhm * (1.0 + self.fwhm_r2 * (x * x + y * y) + self.fwhm_x * x + self.fwhm_y * y)
        g1 = self.g1_0 + self.astig * (x * x - y * y) + self.g1_x * x
        g2 = self.g2_0 + self.astig * 2.0 * x * y + self.g2_y * y
        return fwhm, g1, g2

    def profile(self, fwhm: float, g1: float, g2: float,
                gsparams: galsim.GSParams | None = None) -> galsim.GSObject:
        """The GalSim PSF with unit flux for the given local parameters."""
        return galsim.Moffat(beta=self.beta, fwhm=float(fwhm), gsparams=gsparams).shear(g1=float(g1), g2=float(g2))

    def scale_radius(self, fwhm: np.ndarray) -> np.ndarray:
        """Moffat scale radius r_d for a FWHM (same units)."""
        return np.asarray(fwhm) / (2.0 * np.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    def n_eff(self, fwhm_pix: np.ndarray) -> np.ndarray:
        """Effective number of pixels (1 / sum p^2) of the PSF, for S/N: pi r_d^2 (2b-1)/(b-1)^2."""
        rd = self.scale_radius(fwhm_pix)
        b = self.beta
        return np.pi * rd * rd * (2.0 * b - 1.0) / (b - 1.0) ** 2

    def stamp_radius(self, flux: np.ndarray, fwhm_pix: np.ndarray, level: float = WING_LEVEL) -> np.ndarray:
        """Radius (pixels) beyond which a point source of ``flux`` e- is fainter than ``level`` e-/pixel."""
        rd = self.scale_radius(np.asarray(fwhm_pix, dtype=float))
        b = self.beta
        peak = np.asarray(flux, dtype=float) * (b - 1.0) / (np.pi * rd * rd)
        ratio = np.maximum(peak / level, 1.0) ** (1.0 / b)
        r = rd * np.sqrt(np.maximum(ratio - 1.0, 0.0))
        return np.clip(r, 4.0 * np.asarray(fwhm_pix), 400.0)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
