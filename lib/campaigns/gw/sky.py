"""Sky background of a detrended CCD: a smooth map from SEP's mesh, with sources masked.

SEP (SExtractor's background algorithm as a library: sigma-clipped mode per mesh cell, median
filter over cells, bicubic spline) runs twice: once with the bad pixels masked, then again with
the pixels of detected objects (above ``object_sigma`` times the noise of a 3x3-smoothed
residual, grown by ``grow`` pixels) masked too, so that faint galaxy wings do not lift the sky. The map is what
the SCI image has subtracted; its value at the CCD centre is ``SKYBRITE``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep
from scipy.ndimage import binary_dilation, uniform_filter

from skyops.errors import ProcessingError


@dataclass
class SkyModel:
    """The sky of one CCD (electrons, flat-fielded)."""

    background: np.ndarray  # float32 (ny, nx)
    level: float  # median of the map
    center: float  # map value at the CCD centre (SKYBRITE)
    sigma: float  # global rms of the sky-subtracted image (SKYSIGMA)
    masked_fraction: float  # fraction of pixels excluded (bad + objects)


def _background(image: np.ndarray, mask: np.ndarray, box: int, filter_size: int) -> sep.Background:
    ny, nx = image.shape
    bw, bh = min(box, nx), min(box, ny)
    return sep.Background(image, mask=mask, bw=bw, bh=bh, fw=filter_size, fh=filter_size)


def estimate_sky(image: np.ndarray, bad: np.ndarray, *, box: int = 256, filter_size: int = 3,
                 object_sigma: float = 4.0, grow: int = 4) -> SkyModel:
    """The sky map of ``image`` (float32, C-contiguous), ignoring ``bad`` pixels and detected objects."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    bad = np.ascontiguousarray(bad, dtype=bool)
    if bad.all():
        raise ProcessingError("sky estimation: every pixel of the CCD is masked; check the BPM and the flat")
    bkg = _background(image, bad, box, filter_size)
    resid = image - bkg.back()
    smooth = uniform_filter(resid, size=3)
    objects = smooth > object_sigma * bkg.globalrms / 3.0  # the noise of a 3x3 mean is rms / 3
    objects &= ~bad
    if grow > 0:
        objects = binary_dilation(objects, structure=np.ones((3, 3), bool), iterations=grow)
    masked = bad | objects
    if masked.mean() > 0.9:  # a crowded or saturated CCD: fall back to the bad-pixel mask alone
        masked = bad
    bkg = _background(image, masked, box, filter_size)
    back = bkg.back().astype(np.float32)
    ny, nx = image.shape
    resid = image - back
    good = ~masked
    sigma = float(1.4826 * np.median(np.abs(resid[good] - np.median(resid[good]))))
    center = float(back[(ny - 1) // 2:ny // 2 + 1, (nx - 1) // 2:nx // 2 + 1].mean())  # FITS ((nx+1)/2, (ny+1)/2)
    return SkyModel(back, float(np.median(back)), center, sigma, float(masked.mean()))
