"""DECam's focal plane: 62 science CCDs in 12 rows, with a size knob.

The layout follows DECam's hexagon: rows of 3, 4, 5, 6, 6, 7 CCDs on the South half
(S29-S31 outermost ... S1-S7 next to the centre) mirrored on the North half (N1-N7 ...
N29-N31), numbered CCDNUM 1..62 in DECam's order (S29=1, S30=2, S31=3, S25=4, ..., S1=25,
S7=31, N1=32, ..., N30=61, N31=62). CCDs 2 (S30) and 61 (N30) are dead, as on the real
camera; they are built but flagged (:attr:`CCD.bad`).

Geometry is approximate, not DECam's measured one: each CCD is ``nx x ny`` pixels
(2048 x 4096 at full size) at 0.263 arcsec/pixel, the short side (x) across rows and the long
side (y) along them; rows are stacked along x with a gap of 150 pixels and CCDs within a row
are separated along y by 200 pixels (gaps scale with the CCD size). There is no optical
distortion: one tangent-plane projection around the boresight covers the whole focal plane.

Focal-plane coordinates ``(u, v)`` are in pixels from the boresight, parallel to the CCD axes:
pixel ``(x, y)`` (FITS, 1-based) of a CCD sits at ``u = u0 + x - 1``, ``v = v0 + y - 1``.
The size knob (``ccd_shape``) keeps the pixel scale and shrinks the CCDs and gaps, so a demo
focal plane is a miniature DECam with the same topology and naming.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from skyops.errors import SimulationError

#: DECam rows from the South edge to the North edge of the focal plane (DETPOS names).
ROWS: tuple[tuple[str, ...], ...] = (
    ("S29", "S30", "S31"),
    ("S25", "S26", "S27", "S28"),
    ("S20", "S21", "S22", "S23", "S24"),
    ("S14", "S15", "S16", "S17", "S18", "S19"),
    ("S8", "S9", "S10", "S11", "S12", "S13"),
    ("S1", "S2", "S3", "S4", "S5", "S6", "S7"),
    ("N1", "N2", "N3", "N4", "N5", "N6", "N7"),
    ("N8", "N9", "N10", "N11", "N12", "N13"),
    ("N14", "N15", "N16", "N17", "N18", "N19"),
    ("N20", "N21", "N22", "N23", "N24"),
    ("N25", "N26", "N27", "N28"),
    ("N29", "N30", "N31"),
)
#: CCDNUM -> DETPOS, in DECam's numbering.
DETPOS: dict[int, str] = {i + 1: name for i, name in enumerate(n for row in ROWS for n in row)}
CCDNUM: dict[str, int] = {name: num for num, name in DETPOS.items()}
#: Dead CCDs (S30, N30): nightly processing runs the other 60.
BAD_CCDS: frozenset[int] = frozenset({2, 61})
ALL_CCDS: tuple[int, ...] = tuple(range(1, 63))
GOOD_CCDS: tuple[int, ...] = tuple(c for c in ALL_CCDS if c not in BAD_CCDS)

FULL_SHAPE = (2048, 4096)
PIXEL_SCALE = 0.263  # arcsec / pixel
#: Gaps between CCDs at full size, in pixels: between rows (along x), within a row (along y).
FULL_GAP_X = 150
FULL_GAP_Y = 200


@dataclass(frozen=True)
class CCD:
    """One CCD of the focal plane: its names, size, and where its pixel (1, 1) sits."""

    ccdnum: int
    detpos: str
    row: int
    nx: int
    ny: int
    u0: float
    v0: float

    @property
    def bad(self) -> bool:
        return self.ccdnum in BAD_CCDS

    @property
    def center_uv(self) -> tuple[float, float]:
        """Focal-plane position of the CCD centre (pixels from the boresight)."""
        return self.u0 + (self.nx - 1) / 2.0, self.v0 + (self.ny - 1) / 2.0

    def to_uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FITS pixel coordinates -> focal-plane coordinates."""
        return self.u0 + np.asarray(x) - 1.0, self.v0 + np.asarray(y) - 1.0

    def to_xy(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Focal-plane coordinates -> FITS pixel coordinates of this CCD."""
        return np.asarray(u) - self.u0 + 1.0, np.asarray(v) - self.v0 + 1.0


@dataclass(frozen=True)
class FocalPlane:
    """The 62-CCD DECam focal plane at a given CCD size (``ccd_shape = (nx, ny)``)."""

    ccd_shape: tuple[int, int] = FULL_SHAPE
    pixel_scale: float = PIXEL_SCALE
    ccds: dict[int, CCD] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nx, ny = (int(v) for v in self.ccd_shape)
        if nx < 16 or ny < 16 or nx % 2 or ny % 2:
            raise SimulationError(
                f"ccd_shape must be two even sizes of at least 16 pixels (two amplifiers per "
                f"CCD), got {self.ccd_shape!r}; DECam is (2048, 4096), the demo uses (128, 256)"
            )
        object.__setattr__(self, "ccd_shape", (nx, ny))
        gx, gy = self.gaps
        pitch_u, pitch_v = nx + gx, ny + gy
        ccds: dict[int, CCD] = {}
        for r, row in enumerate(ROWS):
            uc = (len(ROWS) / 2.0 - 0.5 - r) * pitch_u  # S rows at +u (South), N rows at -u
            for j, name in enumerate(row):
                vc = (j - (len(row) - 1) / 2.0) * pitch_v
                num = CCDNUM[name]
                ccds[num] = CCD(num, name, r, nx, ny, uc - (nx - 1) / 2.0, vc - (ny - 1) / 2.0)
        object.__setattr__(self, "ccds", ccds)

    @classmethod
    def scaled(cls, factor: float) -> "FocalPlane":
        """DECam with CCDs ``factor`` times the full size (1/16 -> 128 x 256)."""
        nx = max(16, int(round(FULL_SHAPE[0] * factor / 2.0)) * 2)
        return cls((nx, 2 * nx))

    @property
    def nx(self) -> int:
        return self.ccd_shape[0]

    @property
    def ny(self) -> int:
        return self.ccd_shape[1]

    @property
    def scale_factor(self) -> float:
        """CCD size relative to DECam's (1.0 at full size)."""
        return self.nx / FULL_SHAPE[0]

    @property
    def gaps(self) -> tuple[int, int]:
        """Inter-CCD gaps (pixels) at this size: between rows, within a row."""
        return (max(2, round(FULL_GAP_X * self.nx / FULL_SHAPE[0])),
                max(2, round(FULL_GAP_Y * self.ny / FULL_SHAPE[1])))

    def ccd(self, ccdnum: int) -> CCD:
        try:
            return self.ccds[int(ccdnum)]
        except (KeyError, ValueError, TypeError):
            raise SimulationError(f"CCDNUM {ccdnum!r} is not a DECam science CCD; expected 1..62") from None

    def by_detpos(self, detpos: str) -> CCD:
        if detpos not in CCDNUM:
            raise SimulationError(f"DETPOS {detpos!r} is not a DECam science CCD; expected S1..S31 or N1..N31")
        return self.ccds[CCDNUM[detpos]]

    @cached_property
    def radius_pix(self) -> float:
        """Distance from the boresight to the farthest CCD corner (pixels)."""
        r = 0.0
        for c in self.ccds.values():
            for du in (-0.5, c.nx - 0.5):
                for dv in (-0.5, c.ny - 0.5):
                    r = max(r, float(np.hypot(c.u0 + du, c.v0 + dv)))
        return r

    @property
    def radius_deg(self) -> float:
        return self.radius_pix * self.pixel_scale / 3600.0

    def locate(self, u: np.ndarray, v: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """CCDNUM whose pixel area (grown by ``margin`` pixels) contains each (u, v); 0 if none.

        With a margin, a point in an overlap of grown areas gets the lowest CCDNUM; use
        :meth:`ccds_near` to find every CCD a stamp touches.
        """
        u = np.asarray(u, dtype=float)
        v = np.asarray(v, dtype=float)
        out = np.zeros(u.shape, dtype=np.int16)
        for num in sorted(self.ccds, reverse=True):
            c = self.ccds[num]
            inside = ((u >= c.u0 - 0.5 - margin) & (u < c.u0 + c.nx - 0.5 + margin)
                      & (v >= c.v0 - 0.5 - margin) & (v < c.v0 + c.ny - 0.5 + margin))
            out[inside] = num
        return out

    def ccds_near(self, u: np.ndarray, v: np.ndarray, ccdnum: int, margin: np.ndarray | float) -> np.ndarray:
        """Boolean mask: points whose ``margin``-pixel neighbourhood touches CCD ``ccdnum``."""
        c = self.ccd(ccdnum)
        u = np.asarray(u, dtype=float)
        v = np.asarray(v, dtype=float)
        return ((u >= c.u0 - 0.5 - margin) & (u < c.u0 + c.nx - 0.5 + margin)
                & (v >= c.v0 - 0.5 - margin) & (v < c.v0 + c.ny - 0.5 + margin))

    def normalized(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Focal-plane coordinates in units of the focal-plane radius (edge ~ 1)."""
        return np.asarray(u) / self.radius_pix, np.asarray(v) / self.radius_pix
