"""Postage stamps of difference-imaging candidates: search | template | difference, as small PNGs.

A scanner (human or machine) judges a candidate from three cutouts side by side, as DES's
autoscan does: the search image, the template resampled onto the search grid and brought to
the search image's flux scale, and the difference. Each cutout is ``size`` x ``size`` pixels
(31 by default) centred on the candidate, blank off the image edge. The search and template
panels share one grey scale (so a brightening shows); the difference has its own, symmetric
about zero, in a diverging colour map. The three panels are one RGB array (each pixel
magnified ``zoom`` times, 2-pixel white gutters) written by matplotlib's Agg PNG writer, with
the candidate's numbers in the PNG text chunks: a few milliseconds a stamp, so a CCD with
hundreds of candidates does not spend its time drawing axes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.image import imsave

GUTTER = 2


def cutout(image: np.ndarray, x: float, y: float, size: int = 31) -> np.ndarray:
    """``size`` x ``size`` cutout centred on 0-based (x, y); NaN where it leaves the image."""
    half = size // 2
    ix, iy = int(round(x)), int(round(y))
    out = np.full((size, size), np.nan, dtype=np.float32)
    ny, nx = image.shape
    y0, y1 = max(iy - half, 0), min(iy + half + 1, ny)
    x0, x1 = max(ix - half, 0), min(ix + half + 1, nx)
    if y0 < y1 and x0 < x1:
        out[y0 - (iy - half): y1 - (iy - half), x0 - (ix - half): x1 - (ix - half)] = image[y0:y1, x0:x1]
    return out


def _limits(*arrays: np.ndarray) -> tuple[float, float]:
    vals = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if not len(vals):
        return -1.0, 1.0
    lo, hi = np.percentile(vals, [1.0, 99.5])
    return float(lo), float(max(hi, lo + 1e-6))


def _rgb(img: np.ndarray, vmin: float, vmax: float, cmap: str) -> np.ndarray:
    scaled = np.clip((img - vmin) / (vmax - vmin), 0.0, 1.0)
    rgba = colormaps[cmap](np.nan_to_num(scaled, nan=0.0))
    rgba[~np.isfinite(img)] = (0.85, 0.85, 0.6, 1.0)  # off the image: pale yellow
    return rgba[..., :3]


def stamp_array(search: np.ndarray, template: np.ndarray, diff: np.ndarray, zoom: int = 3) -> np.ndarray:
    """The RGB image (rows, cols, 3) of the three panels, row 0 at the top (north-ish up as displayed)."""
    lo, hi = _limits(search, template)
    d = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
    d = max(d, 1e-6)
    panels = [_rgb(search, lo, hi, "gray"), _rgb(template, lo, hi, "gray"), _rgb(diff, -d, d, "RdBu_r")]
    panels = [np.repeat(np.repeat(p[::-1], zoom, axis=0), zoom, axis=1) for p in panels]  # FITS y up
    h = panels[0].shape[0]
    gutter = np.ones((h, GUTTER, 3))
    return np.concatenate([panels[0], gutter, panels[1], gutter, panels[2]], axis=1)


def write_stamp_png(path: Path, search: np.ndarray, template: np.ndarray, diff: np.ndarray,
                    info: dict[str, str] | None = None, zoom: int = 3) -> Path:
    """One PNG of three equal cutouts (search, template, difference); ``info`` goes in its text chunks."""
    meta = {"Software": "skyops gw.diffimg_ccd", "Description": "search | template | difference"}
    meta.update(info or {})
    imsave(path, stamp_array(search, template, diff, zoom), format="png", metadata=meta)
    return path
