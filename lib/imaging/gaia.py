"""GAIA G, BP-RP to DECam magnitudes: the transformation the reference catalog is served with.

One table for everyone: the synthetic survey draws its stars' DECam magnitudes through it,
and the calibration steps (BLISS) use it to predict each reference star's magnitude.
"""
from __future__ import annotations

#: mag_band = G + c0 + c1 * (BP - RP), per DECam band.
GAIA_TO_DECAM: dict[str, tuple[float, float]] = {
    "u": (0.70, 1.00),
    "g": (0.02, 0.45),
    "r": (-0.08, 0.12),
    "i": (-0.25, -0.05),
    "z": (-0.35, -0.15),
    "Y": (-0.40, -0.20),
}
