"""Tangent-plane geometry for kred: projecting footprints about a centre, boxes and their overlaps.

DECam has no rotator and its CCDs are aligned with RA and Dec, so in the gnomonic projection
about a nearby centre a CCD is (to well under a pixel over a field) an axis-aligned box; kred's
SetupTile and FindOverlaps reason with exactly those boxes, built from the CP's corner keywords.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skyops.skygeom import gnomonic, inverse_gnomonic  # noqa: F401  (the shared projection, re-exported)


@dataclass(frozen=True)
class Boxes:
    """Axis-aligned boxes in a tangent plane (degrees): one per footprint."""

    x0: np.ndarray
    x1: np.ndarray
    y0: np.ndarray
    y1: np.ndarray

    @classmethod
    def from_corners(cls, ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> "Boxes":
        """Boxes bounding footprints given by corner arrays of shape (n, 4)."""
        xi, eta = gnomonic(ra, dec, ra0, dec0)
        return cls(xi.min(axis=1), xi.max(axis=1), eta.min(axis=1), eta.max(axis=1))

    def __len__(self) -> int:
        return len(self.x0)

    @property
    def centres(self) -> np.ndarray:
        return np.column_stack([0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1)])

    def overlap(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For index arrays ``i``, ``j``: the overlap boxes' widths, heights (<= 0: none) and centres (n, 2)."""
        x0, x1 = np.maximum(self.x0[i], self.x0[j]), np.minimum(self.x1[i], self.x1[j])
        y0, y1 = np.maximum(self.y0[i], self.y0[j]), np.minimum(self.y1[i], self.y1[j])
        return x1 - x0, y1 - y0, np.column_stack([0.5 * (x0 + x1), 0.5 * (y0 + y1)])

    def intersects_square(self, xc: float, yc: float, half: float) -> np.ndarray:
        """Which boxes overlap the square of half-side ``half`` centred on (xc, yc)."""
        return (self.x0 < xc + half) & (self.x1 > xc - half) & (self.y0 < yc + half) & (self.y1 > yc - half)


def corner_arrays(table) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) corner arrays of shape (n, 4) from a table with ra1..ra4 and dec1..dec4 columns."""
    ra = np.column_stack([np.asarray(table[f"ra{i}"], float) for i in range(1, 5)])
    dec = np.column_stack([np.asarray(table[f"dec{i}"], float) for i in range(1, 5)])
    return ra, dec
