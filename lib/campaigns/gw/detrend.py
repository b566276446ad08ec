"""Instrumental signature removal for one raw DECam CCD: overscan, bias, gain, flat, masks.

``SE_job_mod.sh`` starts every CCD from the raw exposure and the night's master
calibrations. This module does the same for one CCD HDU:

1. per amplifier, subtract the overscan (``BIASSECA/B``) from its data section (``DATASECA/B``)
   and trim -- a robust median of the whole strip, or a smoothed row-by-row level;
2. subtract the master bias (ADU above the overscan), multiply by each amplifier's gain
   (``GAINA/B``) and divide by the normalised dome flat: the image is then in detected
   electrons with the sky still in it;
3. build the DESDM ``BADPIX`` mask: the BPM's bits, ``SATURATE`` where the raw value reaches
   the amplifier's ``SATURATA/B`` level, ``BPM`` where the flat is unusable (zero weight).

The weight map needs the sky, so it is made after sky estimation (:func:`weight_map`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import fitsio
import numpy as np
from scipy.ndimage import uniform_filter1d

from skyops.errors import InputError
from skyops.sim.ccd import BAD_BITS, BADPIX  # DESDM's BADPIX bits (defined once, with the synthetic survey)

log = logging.getLogger(__name__)

#: A raw pixel this close (ADU) below SATURATA/B is saturated: the header level is the full well
#: over the gain plus the nominal overscan level, which drifts by a few ADU exposure to exposure.
SATURATION_MARGIN_ADU = 25.0
#: Flat values below this are not a response but a hole: the pixel gets BPM and zero weight.
MIN_FLAT = 0.2
AMPS = ("A", "B")

__all__ = ["BADPIX", "BAD_BITS", "RawCCD", "Detrended", "Amplifier", "read_raw_ccd", "read_calibration",
           "parse_section", "amplifiers", "overscan_subtract", "detrend", "trimmed_x_offset", "weight_map"]


@dataclass
class RawCCD:
    """One CCD HDU of a raw exposure: pixels (ADU), its header and the exposure's primary header."""

    path: Path
    extname: str
    data: np.ndarray  # (ny, nx_raw) ADU, uint16 or float
    header: fitsio.FITSHDR
    primary: fitsio.FITSHDR

    def key(self, name: str, default: object = None) -> object:
        """A keyword from the CCD header, else the primary header."""
        if name in self.header:
            return self.header[name]
        return self.primary.get(name, default)


@dataclass
class Detrended:
    """A CCD in detected electrons (sky not subtracted), its mask and what made it."""

    image: np.ndarray  # float32 (ny, nx), e-
    mask: np.ndarray  # int16 BADPIX bits
    flat: np.ndarray  # float32, the master flat used (1 where unusable)
    gain: np.ndarray  # (nx,) e-/ADU per column
    read_noise: np.ndarray  # (nx,) e- per column
    overscan: tuple[float, float]  # ADU, median level per amplifier
    saturate_e: tuple[float, float]  # e- (detected, flat-fielded) at which each amplifier saturates
    n_saturated: int = 0
    stats: dict[str, float] = field(default_factory=dict)


def parse_section(value: str, where: str = "") -> tuple[slice, slice]:
    """A FITS section ``[x0:x1,y0:y1]`` (1-based, inclusive) as numpy (row, column) slices."""
    try:
        xs, ys = str(value).strip().strip("[]").split(",")
        x0, x1 = (int(v) for v in xs.split(":"))
        y0, y1 = (int(v) for v in ys.split(":"))
    except ValueError:
        raise InputError(f"{where}: {value!r} is not a FITS section like [1:1024,1:4096]; "
                         "check the raw header's DATASEC/BIASSEC keywords") from None
    return slice(min(y0, y1) - 1, max(y0, y1)), slice(min(x0, x1) - 1, max(x0, x1))


def read_raw_ccd(path: str | Path, ccdnum: int) -> RawCCD:
    """The HDU of CCD ``ccdnum`` (by its CCDNUM keyword) in a raw DECam exposure."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"raw exposure {path} does not exist; stage it first (parameter 'raw')")
    with fitsio.FITS(str(path)) as f:
        primary = f[0].read_header()
        seen = []
        for hdu in f:
            h = hdu.read_header()
            if "CCDNUM" not in h or hdu.get_exttype() != "IMAGE_HDU" or not h.get("NAXIS"):
                continue
            seen.append(int(h["CCDNUM"]))
            if int(h["CCDNUM"]) == int(ccdnum):
                return RawCCD(path, hdu.get_extname(), hdu.read(), h, primary)
    raise InputError(f"raw exposure {path} has no HDU with CCDNUM = {ccdnum} (it has {sorted(seen) or 'none'}); "
                     "pass the exposure that contains this CCD (parameters 'raw' and 'ccd')")


def read_calibration(path: str | Path, what: str, shape: tuple[int, int],
                     ccdnum: int) -> tuple[np.ndarray, fitsio.FITSHDR]:
    """A master calibration image (first HDU with data), checked against the CCD's shape and number."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist; stage the night's master calibrations "
                         f"(parameter '{what}')")
    with fitsio.FITS(str(path)) as f:
        hdu = next((h for h in f if h.get_exttype() == "IMAGE_HDU" and h.has_data()), None)
        if hdu is None:
            raise InputError(f"{what} file {path} holds no image; expected a master {what} (parameter '{what}')")
        data, hdr = hdu.read(), hdu.read_header()
    if data.shape != shape:
        raise InputError(f"{what} file {path} is {data.shape[1]}x{data.shape[0]} pixels but the trimmed CCD is "
                         f"{shape[1]}x{shape[0]}; pass the {what} of this CCD size (parameter '{what}')")
    if "CCDNUM" in hdr and int(hdr["CCDNUM"]) != int(ccdnum):
        raise InputError(f"{what} file {path} is for CCDNUM {hdr['CCDNUM']}, not {ccdnum}; pass this CCD's "
                         f"master {what} (parameter '{what}')")
    return data, hdr


def _overscan_level(strip: np.ndarray, mode: str, ny: int) -> np.ndarray:
    """Overscan level per row (shape (ny, 1)): one robust median, or a smoothed row-by-row median."""
    if mode == "median":
        return np.full((ny, 1), float(np.median(strip)), dtype=np.float32)
    rows = np.median(strip, axis=1).astype(np.float64)
    return uniform_filter1d(rows, size=min(51, ny), mode="nearest").astype(np.float32)[:, None]


@dataclass(frozen=True)
class Amplifier:
    """Where one amplifier's data and overscan are in the raw CCD, and its columns in the trimmed one."""

    name: str  # "A" or "B"
    data: tuple[slice, slice]  # raw (rows, columns)
    bias: tuple[slice, slice]
    columns: slice  # columns of the trimmed image


def amplifiers(raw: RawCCD) -> tuple[list[Amplifier], int]:
    """The two amplifiers of a raw CCD (from DATASECA/B, BIASSECA/B) and the raw column where the
    trimmed image starts (0-based): each amplifier keeps its place, whichever side it reads."""
    where = f"{raw.path}[{raw.extname}]"
    secs = {}
    for amp in AMPS:
        for key in (f"DATASEC{amp}", f"BIASSEC{amp}"):
            if key not in raw.header:
                raise InputError(f"{where}: keyword {key} is missing; a raw DECam CCD needs DATASECA/B and "
                                 "BIASSECA/B to remove the overscan")
            secs[key] = parse_section(raw.header[key], f"{where} {key}")
    x0 = min(secs[f"DATASEC{a}"][1].start for a in AMPS)
    rows = {(secs[f"DATASEC{a}"][0].start, secs[f"DATASEC{a}"][0].stop) for a in AMPS}
    if len(rows) != 1:
        raise InputError(f"{where}: DATASECA and DATASECB cover different rows; cannot trim the CCD")
    out = []
    for amp in AMPS:
        d = secs[f"DATASEC{amp}"]
        out.append(Amplifier(amp, d, secs[f"BIASSEC{amp}"], slice(d[1].start - x0, d[1].stop - x0)))
    return out, x0


def overscan_subtract(raw: RawCCD, mode: str = "row"
                      ) -> tuple[np.ndarray, tuple[float, float], np.ndarray, list[Amplifier]]:
    """Overscan-subtracted, trimmed data (float32 ADU), the median level per amplifier, a
    saturation map (raw value at the amplifier's SATURATA/B), and the amplifiers."""
    amps, _ = amplifiers(raw)
    ny = amps[0].data[0].stop - amps[0].data[0].start
    nx = max(a.columns.stop for a in amps)
    adu = np.zeros((ny, nx), dtype=np.float32)
    sat = np.zeros((ny, nx), dtype=bool)
    levels = []
    for a in amps:
        data = raw.data[a.data].astype(np.float32)
        satur = raw.key(f"SATURAT{a.name}", raw.key("SATURATE"))
        sat[:, a.columns] = data >= (float(satur) - SATURATION_MARGIN_ADU if satur is not None else 65535.0)
        level = _overscan_level(raw.data[a.bias].astype(np.float32), mode, ny)
        adu[:, a.columns] = data - level
        levels.append(float(np.median(level)))
    return adu, (levels[0], levels[1]), sat, amps


def _per_column(raw: RawCCD, key: str, amps: list[Amplifier], nx: int) -> np.ndarray:
    out = np.zeros(nx)
    for a in amps:
        v = raw.key(f"{key}{a.name}", raw.key(key))
        if v is None:
            raise InputError(f"{raw.path}[{raw.extname}]: keyword {key}{a.name} is missing; the raw header must "
                             f"give each amplifier's {key.lower()}")
        out[a.columns] = float(v)
    return out


def detrend(raw: RawCCD, bias: np.ndarray, flat: np.ndarray, bpm: np.ndarray | None = None,
            overscan_mode: str = "row") -> Detrended:
    """Overscan, bias, gain and flat: the CCD in detected electrons (sky included), with its mask."""
    adu, levels, saturated, amps = overscan_subtract(raw, overscan_mode)
    ny, nx = adu.shape
    gain = _per_column(raw, "GAIN", amps, nx)
    rdnoise = _per_column(raw, "RDNOISE", amps, nx)
    adu -= bias.astype(np.float32)
    adu *= gain.astype(np.float32)[None, :]
    flat = flat.astype(np.float32, copy=True)
    holes = ~np.isfinite(flat) | (flat < MIN_FLAT)
    flat[holes] = 1.0
    adu /= flat
    mask = np.zeros((ny, nx), dtype=np.int16)
    if bpm is not None:
        mask |= bpm.astype(np.int16)
    mask[holes] |= np.int16(BADPIX.BPM)
    mask[saturated] |= np.int16(BADPIX.SATURATE)
    adu[holes] = 0.0
    # the flat-fielded electrons at which each amplifier saturates (conservative: its highest flat)
    sat_e = []
    for i, a in enumerate(amps):
        lvl = raw.key(f"SATURAT{a.name}", raw.key("SATURATE"))
        full = (float(lvl) - levels[i] - SATURATION_MARGIN_ADU) * gain[a.columns][0] if lvl is not None else np.inf
        sat_e.append(float(full / flat[:, a.columns].max()))
    return Detrended(adu, mask, flat, gain, rdnoise, levels, (sat_e[0], sat_e[1]), int(saturated.sum()))


def trimmed_x_offset(raw: RawCCD) -> float:
    """Trimmed x minus raw x (``LTV1`` when present): what CRPIX1 moves by when the CCD is trimmed."""
    if "LTV1" in raw.header:
        return float(raw.header["LTV1"])
    return -float(amplifiers(raw)[1])


def weight_map(flat: np.ndarray, sky: np.ndarray, read_noise: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Inverse variance (e-^-2) of the flat-fielded image: flat^2 / (sky * flat + rn^2), 0 on bad pixels.

    ``sky`` is the sky in flat-fielded electrons, so ``sky * flat`` is what the pixel detected; only
    the sky and the read noise count, as in DESDM's weight maps (sources add their own Poisson noise
    in SExtractor through GAIN).
    """
    den = np.asarray(sky, dtype=np.float32) * flat
    np.maximum(den, 0.0, out=den)
    den += (read_noise.astype(np.float32) ** 2)[None, :]
    wgt = flat * flat
    wgt /= den
    wgt[(mask & np.int16(int(BAD_BITS))) != 0] = 0.0
    return wgt.astype(np.float32, copy=False)
