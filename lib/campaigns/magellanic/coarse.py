"""Images on a coarse common grid, in memory: what kred's BackPrep wrote to disk, without the disk.

kred compared the backgrounds of two overlapping CCDs on a common coarse grid: BackPrep ran
SWarp to reproject every prepared CCD onto one WCS with large pixels (about 420 GB for LMC_c42),
then BackStats read pairs of those files back. Here each CCD is binned straight onto the grid:
every fine pixel goes, through the image's own WCS, to the coarse cell containing its centre,
and a cell's value is the mean of its good pixels (``np.bincount``, a few rows at a time so a
full 2048x4096 CCD never needs more than a few tens of MB). Only the CCD's footprint on the
grid is kept -- a few hundred kB -- and only while a batch of pairs needs it.

The grid is a TAN projection about the field centre with square cells of ``scale_arcsec``
(kred: 2 arcsec); cell (i, j) is centred on standard coordinates (i, j) x scale. The map from a
CCD's pixels to grid coordinates is smooth (TAN to TAN), so it is evaluated exactly through the
WCS on a lattice every ``LATTICE`` pixels and bilinearly interpolated in between (error far below
a micro-cell; 30x faster than projecting every pixel of a full-size CCD).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import fitsio
import numpy as np

from skyops.campaigns.magellanic.mef import header_wcs
from skyops.campaigns.magellanic.skygeom import gnomonic

ROWS_PER_CHUNK = 256
LATTICE = 16


@dataclass(frozen=True)
class CoarseGrid:
    """The field's common coarse grid: TAN about (ra0, dec0), cells of ``scale_arcsec``."""

    ra0: float
    dec0: float
    scale_arcsec: float = 2.0

    def coords(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous grid coordinates (cell centres at integers) of sky positions."""
        xi, eta = gnomonic(ra, dec, self.ra0, self.dec0)
        s = self.scale_arcsec / 3600.0
        return xi / s, eta / s

    def cell(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer cell indices (i along xi/East, j along eta/North) of sky positions."""
        gx, gy = self.coords(ra, dec)
        return np.floor(gx + 0.5).astype(np.int64), np.floor(gy + 0.5).astype(np.int64)


class PixelMap:
    """Grid coordinates of a CCD's pixels: exact on a lattice, bilinear in between."""

    def __init__(self, wcs, grid: CoarseGrid, ny: int, nx: int, step: int = LATTICE) -> None:
        self.ys = np.unique(np.r_[np.arange(1, ny + 1, step), ny]).astype(float)
        self.xs = np.unique(np.r_[np.arange(1, nx + 1, step), nx]).astype(float)
        yy, xx = np.meshgrid(self.ys, self.xs, indexing="ij")
        ra, dec = wcs.all_pix2world(xx.ravel(), yy.ravel(), 1)
        gx, gy = grid.coords(ra, dec)
        self.gx, self.gy = gx.reshape(yy.shape), gy.reshape(yy.shape)
        x = np.arange(1, nx + 1, dtype=float)
        self._i = np.clip(np.searchsorted(self.xs, x, side="right") - 1, 0, len(self.xs) - 2)
        self._u = (x - self.xs[self._i]) / (self.xs[self._i + 1] - self.xs[self._i])

    def rows(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """Grid coordinates (gx, gy) of pixel rows r0..r1-1 (0-based), each (r1 - r0, nx)."""
        y = np.arange(r0 + 1, r1 + 1, dtype=float)
        j = np.clip(np.searchsorted(self.ys, y, side="right") - 1, 0, len(self.ys) - 2)
        t = ((y - self.ys[j]) / (self.ys[j + 1] - self.ys[j]))[:, None]
        u, i = self._u[None, :], self._i
        out = []
        for g in (self.gx, self.gy):
            row = (1.0 - t) * g[j] + t * g[j + 1]  # (rows, lattice columns)
            out.append((1.0 - u) * row[:, i] + u * row[:, i + 1])
        return out[0], out[1]


@dataclass
class CoarseImage:
    """One CCD binned on the grid: cells [j0, j0 + h) x [i0, i0 + w); mean and pixel count per cell."""

    i0: int
    j0: int
    mean: np.ndarray  # float32 (h, w), NaN where empty
    count: np.ndarray  # uint16 (h, w)
    nominal: float  # fine pixels in a fully covered cell

    @property
    def nbytes(self) -> int:
        return int(self.mean.nbytes + self.count.nbytes)


def bin_image(data: np.ndarray, header: fitsio.FITSHDR | dict, grid: CoarseGrid,
              good: np.ndarray | None = None) -> CoarseImage:
    """Bin ``data`` (with its header's WCS) onto ``grid``; ``good`` masks the pixels to use."""
    ny, nx = data.shape
    wcs = header_wcs(header)
    good = np.isfinite(data) if good is None else good & np.isfinite(data)
    # the footprint on the grid, from the pixel corners (TAN over a CCD: the edges are straight)
    cra, cdec = wcs.all_pix2world([0.5, nx + 0.5, nx + 0.5, 0.5], [0.5, 0.5, ny + 0.5, ny + 0.5], 1)
    ci, cj = grid.cell(cra, cdec)
    i0, j0 = int(ci.min()) - 1, int(cj.min()) - 1
    w, h = int(ci.max()) - i0 + 2, int(cj.max()) - j0 + 2
    sums = np.zeros(w * h)
    counts = np.zeros(w * h, dtype=np.int64)
    pmap = PixelMap(wcs, grid, ny, nx)
    for r0 in range(0, ny, ROWS_PER_CHUNK):
        r1 = min(ny, r0 + ROWS_PER_CHUNK)
        ok = good[r0:r1]
        gx, gy = pmap.rows(r0, r1)
        i = np.floor(gx[ok] + 0.5).astype(np.int64)
        j = np.floor(gy[ok] + 0.5).astype(np.int64)
        flat = (j - j0) * w + (i - i0)
        sums += np.bincount(flat, weights=data[r0:r1][ok].astype(np.float64), minlength=w * h)
        counts += np.bincount(flat, minlength=w * h)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (sums / counts).astype(np.float32).reshape(h, w)
    pixel_arcsec = 3600.0 * float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))))
    nominal = (grid.scale_arcsec / pixel_arcsec) ** 2
    return CoarseImage(i0, j0, mean, np.minimum(counts, 65535).astype(np.uint16).reshape(h, w), nominal)


def read_binned(path: Path, grid: CoarseGrid) -> CoarseImage:
    """A prepared CCD image from disk, binned (saturated and non-finite pixels left out)."""
    data, h = fitsio.read(str(path), header=True)
    good = np.isfinite(data)
    if "SATURATE" in h:
        good &= data < float(h["SATURATE"])
    return bin_image(data, h, grid, good)


def difference(a: CoarseImage, b: CoarseImage, min_fill: float = 0.75) -> np.ndarray:
    """``b - a`` on the cells both cover well (at least ``min_fill`` of a full cell's pixels each)."""
    i0, i1 = max(a.i0, b.i0), min(a.i0 + a.mean.shape[1], b.i0 + b.mean.shape[1])
    j0, j1 = max(a.j0, b.j0), min(a.j0 + a.mean.shape[0], b.j0 + b.mean.shape[0])
    if i1 <= i0 or j1 <= j0:
        return np.zeros(0, np.float32)

    def cut(c: CoarseImage) -> tuple[np.ndarray, np.ndarray]:
        s = (slice(j0 - c.j0, j1 - c.j0), slice(i0 - c.i0, i1 - c.i0))
        return c.mean[s], c.count[s]

    ma, ca = cut(a)
    mb, cb = cut(b)
    ok = (ca >= min_fill * a.nominal) & (cb >= min_fill * b.nominal)
    return (mb[ok] - ma[ok]).astype(np.float64)


class BinnedCache:
    """The most recently used binned images (at most ``size``), loaded on demand by ``load(name)``."""

    def __init__(self, load: Callable[[str], CoarseImage], size: int = 256) -> None:
        self._load, self._size = load, size
        self._items: OrderedDict[str, CoarseImage] = OrderedDict()
        self.loads = 0
        self.peak_bytes = 0

    def __getitem__(self, name: str) -> CoarseImage:
        if name in self._items:
            self._items.move_to_end(name)
            return self._items[name]
        img = self._items[name] = self._load(name)
        self.loads += 1
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        self.peak_bytes = max(self.peak_bytes, sum(c.nbytes for c in self._items.values()))
        return img
