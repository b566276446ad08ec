"""A fixed grid of sky cells in which static sources (stars, galaxies) are generated.

The sky is cut into cells of ``CELL_DEG`` in RA and Dec; each cell's sources come from the
random stream keyed by (seed, kind, cell), uniformly distributed on the sphere within the
cell. So the catalog of a region does not depend on which exposures asked for it: two
overlapping pointings, or a survey built pointing by pointing, see the same stars with the
same ids.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

CELL_DEG = 0.05
N_RA = int(round(360.0 / CELL_DEG))
N_DEC = int(round(180.0 / CELL_DEG))


def cells_near(pointings: Iterable[tuple[float, float]], radius_deg: float) -> list[tuple[int, int]]:
    """Sorted, unique (i_ra, j_dec) cells within ``radius_deg`` (bounding box) of any pointing."""
    cells: set[tuple[int, int]] = set()
    for ra0, dec0 in pointings:
        dmin, dmax = max(-90.0, dec0 - radius_deg), min(90.0, dec0 + radius_deg)
        j0 = int(np.floor((dmin + 90.0) / CELL_DEG))
        j1 = min(N_DEC - 1, int(np.floor((dmax + 90.0) / CELL_DEG)))
        cosd = np.cos(np.radians(max(abs(dmin), abs(dmax))))
        half = 180.0 if cosd < 1e-3 else min(180.0, radius_deg / cosd)
        i0 = int(np.floor((ra0 - half) / CELL_DEG))
        i1 = int(np.floor((ra0 + half) / CELL_DEG))
        if i1 - i0 + 1 >= N_RA:
            i0, i1 = 0, N_RA - 1
        for j in range(j0, j1 + 1):
            for i in range(i0, i1 + 1):
                cells.add((i % N_RA, j))
    return sorted(cells, key=lambda c: (c[1], c[0]))


def cell_area_deg2(j: int) -> float:
    """Solid angle of a cell in Dec row ``j`` (square degrees)."""
    d1 = np.radians(-90.0 + j * CELL_DEG)
    d2 = np.radians(-90.0 + (j + 1) * CELL_DEG)
    return float(np.radians(CELL_DEG) * (np.sin(d2) - np.sin(d1)) * (180.0 / np.pi) ** 2)


def uniform_in_cell(g: np.random.Generator, n: int, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform on the sphere within cell (i, j): (ra, dec) in degrees."""
    ra = (i + g.random(n)) * CELL_DEG
    s1 = np.sin(np.radians(-90.0 + j * CELL_DEG))
    s2 = np.sin(np.radians(-90.0 + (j + 1) * CELL_DEG))
    dec = np.degrees(np.arcsin(s1 + g.random(n) * (s2 - s1)))
    return ra, dec


def cell_index(i: int, j: int) -> int:
    """A unique non-negative integer per cell (for ids and random streams)."""
    return j * N_RA + i


def power_law_mags(g: np.random.Generator, n: int, mag_min: float, mag_max: float, slope: float) -> np.ndarray:
    """Magnitudes with dN/dm proportional to 10**(slope m) between the limits."""
    a, b = 10.0 ** (slope * mag_min), 10.0 ** (slope * mag_max)
    return np.log10(a + g.random(n) * (b - a)) / slope
