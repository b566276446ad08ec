"""Transients: point sources that exist only in a night's search exposures.

For each search night a list of transients is laid on the good CCDs of the night's first
search exposure: half of them (``host_fraction``) next to a galaxy (0.3-1.5 half-light
radii from its centre), the rest anywhere. Each gets a target S/N, log-uniform between
``snr_range`` (3 to 100 by default), converted to a magnitude with that exposure's
zeropoint, sky and PSF, and a linear light curve (``rate_mag_per_day``), so later search
exposures of the night see slightly different magnitudes. Templates never contain them.
"""
from __future__ import annotations

import numpy as np

from skyops.sim.exposure_spec import ExposureSpec
from skyops.sim.focalplane import GOOD_CCDS, FocalPlane
from skyops.sim.photometry import flux_for_snr
from skyops.sim.psf import PSFModel
from skyops.sim.seeding import rng
from skyops.sim.truth import TRANSIENT_DTYPE
from skyops.sim.wcs import sky_to_uv, uv_to_sky

NOMINAL_READ_NOISE = 6.3  # e-, for the S/N -> magnitude conversion


def make_transients(seed: int, ref: ExposureSpec, fp: FocalPlane, psf: PSFModel, zp: float, sky: float,
                    galaxies: np.ndarray, per_ccd: float, snr_range: tuple[float, float] = (3.0, 100.0),
                    host_fraction: float = 0.5) -> np.ndarray:
    """The night's transients, placed in exposure ``ref`` (the night's first search exposure)."""
    g = rng(seed, "transients", int(ref.nite))
    margin = max(4.0, 16.0 * fp.scale_factor)
    gu, gv = sky_to_uv(galaxies["ra"], galaxies["dec"], ref.telra, ref.teldec, fp.pixel_scale) \
        if len(galaxies) else (np.zeros(0), np.zeros(0))
    rows = []
    for ccdnum in GOOD_CCDS:
        ccd = fp.ccd(ccdnum)
        n = int(g.poisson(per_ccd))
        if n == 0:
            continue
        on_ccd = np.flatnonzero((gu >= ccd.u0 + margin) & (gu <= ccd.u0 + ccd.nx - 1 - margin)
                                & (gv >= ccd.v0 + margin) & (gv <= ccd.v0 + ccd.ny - 1 - margin))
        for _ in range(n):
            host, sep = -1, 0.0
            u = ccd.u0 + g.uniform(margin, ccd.nx - 1 - margin)
            v = ccd.v0 + g.uniform(margin, ccd.ny - 1 - margin)
            want_host = g.random() < host_fraction
            if want_host and len(on_ccd):
                k = int(on_ccd[g.integers(len(on_ccd))])
                hlr = float(max(galaxies["hlr_disk"][k], galaxies["hlr_bulge"][k]))
                sep = g.uniform(0.3, 1.5) * hlr
                phi = g.uniform(0.0, 2.0 * np.pi)
                u = gu[k] + sep / fp.pixel_scale * np.cos(phi)
                v = gv[k] + sep / fp.pixel_scale * np.sin(phi)
                host = int(galaxies["galaxy_id"][k])
            rows.append((ccdnum, u, v, host, sep, np.exp(g.uniform(np.log(snr_range[0]), np.log(snr_range[1]))),
                         g.uniform(-0.2, 0.6)))
    out = np.zeros(len(rows), TRANSIENT_DTYPE)
    if not rows:
        return out
    arr = np.array([r[1:] for r in rows], dtype=float)
    u, v, host, sep, snr, rate = arr.T
    ra, dec = uv_to_sky(u, v, ref.telra, ref.teldec, fp.pixel_scale)
    fwhm, _, _ = psf.params(*fp.normalized(u, v))
    n_eff = psf.n_eff(fwhm / fp.pixel_scale)
    flux = flux_for_snr(snr, n_eff, sky, NOMINAL_READ_NOISE)
    out["transient_id"] = int(ref.nite) * 100_000 + np.arange(len(rows))
    out["ra"], out["dec"] = ra, dec
    out["nite"] = ref.nite
    out["band"] = ref.band
    out["mag_ref"] = zp - 2.5 * np.log10(flux)
    out["mjd_ref"] = ref.mjd_obs
    out["rate_mag_per_day"] = rate
    out["snr_target"] = snr
    out["host_id"] = host.astype(np.int64)
    out["host_sep_arcsec"] = sep
    return out


def magnitude_at(cat: np.ndarray, mjd: float) -> np.ndarray:
    """Each transient's magnitude at ``mjd`` (linear light curve through mag_ref at mjd_ref)."""
    return cat["mag_ref"].astype(float) + cat["rate_mag_per_day"].astype(float) * (mjd - cat["mjd_ref"])
