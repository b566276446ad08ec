"""The detector: each CCD's amplifiers, bias structure, flat-field response and defects.

Everything here is *static* -- seeded by (survey seed, CCDNUM), the same in every exposure --
as a real camera is: gains, read noise, full well and overscan level per amplifier (two
amplifiers per CCD, A on the low-x half and B on the high-x half, as DECam reads them), a
small 2-D bias pattern, a flat-field response made of a pixel-to-pixel part and a
large-scale part (vignetting across the focal plane plus a gentle band-dependent tilt), and a
bad-pixel map of hot pixels and bad columns. Only the master calibration frames
(:func:`master_bias`, :func:`master_flat`) carry a night's measurement noise.

Mask bits are DESDM's ``BADPIX_*`` values, so masks from skyops read like DESDM's.
Arrays are numpy ``(ny, nx)``: row index is FITS y - 1, column index FITS x - 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np

from skyops.sim.focalplane import CCD, FocalPlane
from skyops.sim.photometry import BANDS
from skyops.sim.seeding import rng


class BADPIX(IntFlag):
    """DESDM mask bits (``MSK`` HDU of red_immask images)."""

    BPM = 1
    SATURATE = 2
    INTERP = 4
    BADAMP = 8
    CRAY = 16
    STAR = 32
    TRAIL = 64
    EDGEBLEED = 128
    SSXTALK = 256
    EDGE = 512
    STREAK = 1024
    SUSPECT = 2048
    FIXED = 4096
    NEAREDGE = 8192
    TAPEBUMP = 16384


#: Bits that make a pixel unusable (weight 0).
BAD_BITS = BADPIX.BPM | BADPIX.SATURATE | BADPIX.BADAMP | BADPIX.CRAY | BADPIX.EDGE


@dataclass(frozen=True)
class Detector:
    """Static properties of one CCD's two amplifiers (index 0 = A, 1 = B)."""

    ccdnum: int
    nx: int
    ny: int
    gain: tuple[float, float]  # e- / ADU
    read_noise: tuple[float, float]  # e-
    full_well: tuple[float, float]  # e-
    overscan_level: tuple[float, float]  # ADU
    zp_offset: float  # mag, this CCD's zeropoint relative to the focal plane's

    @classmethod
    def for_ccd(cls, seed: int, ccd: CCD, zp_scatter: float = 0.02) -> "Detector":
        g = rng(seed, "detector", ccd.ccdnum)
        gain = g.normal(4.2, 0.15, 2).clip(3.6, 4.8)
        rn = g.normal(6.3, 0.4, 2).clip(5.0, 8.0)
        fw = g.normal(175_000.0, 8_000.0, 2).clip(150_000.0, 200_000.0)
        level = g.uniform(1500.0, 3500.0, 2)
        zp = float(g.normal(0.0, 1.0)) * zp_scatter
        return cls(ccd.ccdnum, ccd.nx, ccd.ny, _pair(gain), _pair(rn), _pair(fw), _pair(level), zp)

    @property
    def half(self) -> int:
        return self.nx // 2

    def amp_slices(self) -> tuple[slice, slice]:
        """Column slices of amplifiers A and B in a trimmed ``(ny, nx)`` array."""
        return slice(0, self.half), slice(self.half, self.nx)

    def per_column(self, values: tuple[float, float]) -> np.ndarray:
        """An amplifier quantity broadcast to the CCD's columns (shape ``(nx,)``)."""
        out = np.empty(self.nx)
        out[: self.half] = values[0]
        out[self.half:] = values[1]
        return out

    @property
    def saturate(self) -> float:
        """The lower amplifier full well (e-): a conservative SATURATE for the whole CCD."""
        return min(self.full_well)

    @property
    def mean_read_noise(self) -> float:
        return float(np.mean(self.read_noise))


def _pair(a: np.ndarray) -> tuple[float, float]:
    return float(a[0]), float(a[1])


def bias_pattern(seed: int, det: Detector) -> np.ndarray:
    """The true 2-D bias structure (ADU, above the overscan level): column ripple + row ramp."""
    g = rng(seed, "bias", det.ccdnum)
    cols = np.convolve(g.normal(0.0, 1.5, det.nx + 8), np.ones(9) / 3.0, mode="valid")[: det.nx]
    ramp = np.linspace(0.0, g.uniform(0.5, 3.0), det.ny)
    return (ramp[:, None] + cols[None, :]).astype(np.float32)


def flat_response(seed: int, fp: FocalPlane, ccd: CCD, band: str) -> np.ndarray:
    """The true flat-field response (mean ~1): pixel-to-pixel x (vignetting + band tilt)."""
    flat = rng(seed, "flat-p2p", ccd.ccdnum).standard_normal((ccd.ny, ccd.nx), dtype=np.float32)
    flat *= np.float32(0.008)
    flat += np.float32(1.0)
    g = rng(seed, "flat-band", ccd.ccdnum, list(BANDS).index(band))
    tilt_x, tilt_y = g.normal(0.0, 0.01, 2)
    x = np.arange(1, ccd.nx + 1, dtype=float)
    y = np.arange(1, ccd.ny + 1, dtype=float)
    un, vn = fp.normalized(*ccd.to_uv(x, y))
    # the large-scale part is separable: 1 - 0.05 (un^2 + vn^2) + tilts = row(y) + col(x)
    col = -0.05 * un**2 + tilt_x * (x / ccd.nx - 0.5)
    row = 1.0 - 0.05 * vn**2 + tilt_y * (y / ccd.ny - 0.5)
    flat *= (row[:, None] + col[None, :]).astype(np.float32)
    return flat


@dataclass(frozen=True)
class Defects:
    """The CCD's static bad pixels: the BPM bits, and where they add or remove charge."""

    bpm: np.ndarray  # int16 (ny, nx), BADPIX bits
    hot_rate: np.ndarray  # e- / s of dark current in hot pixels and hot columns (ny, nx), float32
    dead: np.ndarray  # bool (ny, nx): pixels that collect (almost) no charge


def defects(seed: int, det: Detector, bad_ccd: bool, enabled: bool = True) -> Defects:
    """Hot pixels and hot or dead (partial) columns; the whole CCD for a dead one (2, 61)."""
    shape = (det.ny, det.nx)
    bpm = np.zeros(shape, dtype=np.int16)
    hot = np.zeros(shape, dtype=np.float32)
    dead = np.zeros(shape, dtype=bool)
    if bad_ccd:
        bpm[:] = int(BADPIX.BPM | BADPIX.BADAMP)
        dead[:] = True
        return Defects(bpm, hot, dead)
    if not enabled:
        return Defects(bpm, hot, dead)
    g = rng(seed, "bpm", det.ccdnum)
    n_cols = g.poisson(1.5 * det.nx / 2048.0 + 0.15)
    for _ in range(n_cols):
        x = int(g.integers(4, det.nx - 4))
        length = int(g.integers(det.ny // 4, det.ny + 1))
        y0 = int(g.integers(0, det.ny - length + 1))
        bpm[y0:y0 + length, x] |= int(BADPIX.BPM)
        if g.random() < 0.5:
            hot[y0:y0 + length, x] = g.uniform(2.0, 20.0)
        else:
            dead[y0:y0 + length, x] = True
    n_hot = g.poisson(2.0e-5 * det.nx * det.ny + 0.5)
    ys = g.integers(0, det.ny, n_hot)
    xs = g.integers(0, det.nx, n_hot)
    hot[ys, xs] = g.uniform(1.0, 60.0, n_hot)
    bpm[ys, xs] |= int(BADPIX.BPM)
    return Defects(bpm, hot, dead)


def master_bias(seed: int, det: Detector, nite: str, noise: bool) -> np.ndarray:
    """The night's master bias (ADU above overscan): the true pattern plus averaging noise."""
    pattern = bias_pattern(seed, det)
    if not noise:
        return pattern
    g = rng(seed, "masterbias", det.ccdnum, int(nite))
    sigma = det.per_column(det.read_noise) / det.per_column(det.gain) / np.sqrt(20.0)
    return (pattern + g.standard_normal((det.ny, det.nx), dtype=np.float32) * sigma[None, :]).astype(np.float32)


def master_flat(seed: int, fp: FocalPlane, ccd: CCD, band: str, nite: str, noise: bool,
                flat: np.ndarray | None = None) -> np.ndarray:
    """The night's normalised dome flat: the true response times 0.2% measurement noise.

    ``flat`` is the true response if the caller has it already (saves recomputing it).
    """
    if flat is None:
        flat = flat_response(seed, fp, ccd, band)
    if not noise:
        return flat
    g = rng(seed, "masterflat", ccd.ccdnum, list(BANDS).index(band), int(nite))
    err = g.standard_normal((ccd.ny, ccd.nx), dtype=np.float32)
    err *= np.float32(0.002)
    err += np.float32(1.0)
    err *= flat
    return err
