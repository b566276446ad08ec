"""Raw DECam data: digitised CCDs with overscan, and the night's master calibrations.

A raw CCD is what the amplifiers read out, in ADU (uint16), ``ny`` rows by
``nx + 2 * overscan`` columns:

    [ overscan A | data A (nx/2) | data B (nx/2) | overscan B ]

``raw = electrons / gain + bias_pattern + overscan_level`` in the data section, where the
electrons already carry the flat-field response, dark current of hot pixels, Poisson noise,
read noise and saturation at the full well; the overscan columns hold the level plus read
noise. DATASECA/B, BIASSECA/B and TRIMSEC say where each part is (FITS 1-based ranges), as
in DECam headers. A pipeline recovers the reduced image with

    reduced = ((raw[DATASEC] - median(overscan of its amplifier)) - master_bias) * gain / master_flat

(minus the sky, which reduced images have subtracted -- see ``SKYBRITE``). Master bias
(ADU above the overscan, ``biascor``) and normalised dome flat (``norm-dflatcor``) are per
CCD and per night, the flat per band, with the measurement noise of 20 biases and of
~250 ke- of dome-flat signal; the BPM files carry DESDM's BADPIX bits.
"""
from __future__ import annotations

import numpy as np

from skyops.sim.ccd import Detector
from skyops.sim.headers import Card

RAW_MAX = 65535


def overscan_width(nx: int) -> int:
    """Overscan columns per amplifier: DECam's 50 at full size, scaled, at least 8."""
    return max(8, int(round(50 * nx / 2048)))


def digitize(electrons: np.ndarray, det: Detector, bias: np.ndarray, levels: tuple[float, float],
             g: np.random.Generator | None) -> np.ndarray:
    """The raw uint16 array of one CCD (data + overscan), from detected electrons.

    ``g`` adds read noise to the overscan columns (None: noiseless overscan at the level).
    The read noise of the data section is already in ``electrons``.
    """
    ny, nx = electrons.shape
    ov = overscan_width(nx)
    half = nx // 2
    out = np.empty((ny, nx + 2 * ov), dtype=np.float32)  # exact to 0.004 ADU below 65536
    data = out[:, ov:ov + nx]
    np.divide(electrons, det.per_column(det.gain).astype(np.float32)[None, :], out=data)
    data += bias
    data += np.where(np.arange(nx) < half, levels[0], levels[1]).astype(np.float32)[None, :]
    for amp, cols in ((0, slice(0, ov)), (1, slice(ov + nx, nx + 2 * ov))):
        sigma = det.read_noise[amp] / det.gain[amp]
        noise = g.standard_normal((ny, ov)) * sigma if g is not None else 0.0
        out[:, cols] = levels[amp] + noise
    np.rint(out, out=out)
    np.clip(out, 0, RAW_MAX, out=out)
    return out.astype(np.uint16)


def section_cards(nx: int, ny: int) -> list[Card]:
    """DATASEC/BIASSEC keywords of a raw CCD laid out as in :func:`digitize`."""
    ov = overscan_width(nx)
    half = nx // 2
    a0, a1 = ov + 1, ov + half
    b0, b1 = ov + half + 1, ov + nx
    return [
        ("DETSIZE", f"[1:{nx},1:{ny}]", "Detector size"),
        ("DATASEC", f"[{a0}:{b1},1:{ny}]", "Data section"),
        ("TRIMSEC", f"[{a0}:{b1},1:{ny}]", "Trim section"),
        ("DATASECA", f"[{a0}:{a1},1:{ny}]", "Data section of amplifier A"),
        ("DATASECB", f"[{b0}:{b1},1:{ny}]", "Data section of amplifier B"),
        ("BIASSECA", f"[1:{ov},1:{ny}]", "Overscan section of amplifier A"),
        ("BIASSECB", f"[{b1 + 1}:{nx + 2 * ov},1:{ny}]", "Overscan section of amplifier B"),
        ("TRIMSECA", f"[{a0}:{a1},1:{ny}]", "Trim section of amplifier A"),
        ("TRIMSECB", f"[{b0}:{b1},1:{ny}]", "Trim section of amplifier B"),
        ("LTV1", float(-ov), "Offset of the data section (trimmed x = raw x + LTV1)"),
    ]


def parse_section(value: str) -> tuple[slice, slice]:
    """A FITS section ``[x0:x1,y0:y1]`` as numpy (row, column) slices."""
    xs, ys = value.strip("[]").split(",")
    x0, x1 = (int(v) for v in xs.split(":"))
    y0, y1 = (int(v) for v in ys.split(":"))
    return slice(y0 - 1, y1), slice(x0 - 1, x1)


def overscan_correct_and_trim(raw: np.ndarray, header: dict) -> np.ndarray:
    """Reference reduction step 1: subtract each amplifier's overscan median and trim (ADU, float)."""
    out = []
    for amp in ("A", "B"):
        bias = raw[parse_section(header[f"BIASSEC{amp}"])]
        data = raw[parse_section(header[f"DATASEC{amp}"])].astype(np.float64)
        out.append(data - np.median(bias))
    return np.concatenate(out, axis=1)
