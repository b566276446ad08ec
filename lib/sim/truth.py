"""Truth tables: what was put into the pixels, for every science check.

Written under ``<archive root>/SIM/truth/`` as FITS binary tables (the small ones also as
CSV). They are registered with filetype ``sim_truth`` but never used as pipeline inputs.

Per exposure, in ``SIM/truth/D<expnum:08d>/``:
``D<expnum>_ccds``        one row per CCD built (:data:`CCD_DTYPE`, FITS + CSV)
``D<expnum>_objects``     every source drawn on every CCD (:data:`OBJECT_DTYPE`, FITS)
``D<expnum>_transients``  search exposures: every transient drawn (:data:`TRANSIENT_TRUTH_DTYPE`)

For the survey, in ``SIM/truth/``: ``exposures`` (spec, conditions, ``mag_zero_fp``, ``sky_e``,
``psf_*`` pattern), ``ccds`` and ``transients`` (all exposures merged), ``transient_catalog``
(:data:`TRANSIENT_DTYPE`), ``stars`` (:data:`~skyops.sim.refcat.STAR_DTYPE`), ``galaxies``
(:data:`~skyops.sim.galaxies.GALAXY_DTYPE`) and ``survey.json`` (preset, seed, exposures).

Object columns: ``kind`` star/galaxy/transient; ``obj_id`` = refcat ``source_id``,
``galaxy_id`` or ``transient_id``; ``ra``/``dec`` true position; ``x_image``/``y_image``
true FITS (1-based) pixel position through the *true* WCS (the header WCS differs by
``astrom_dx_pix``/``astrom_dy_pix`` of the CCD row); ``mag`` in the exposure's band;
``flux`` electrons in SCI; ``peak_e`` brightest pixel of the source alone; ``saturated``
(peak + sky reaches the full well); ``in_bounds`` (centre on the CCD; sources just off the
edge are drawn too); ``aperture_pix`` radius of the bookkeeping aperture (4 PSF FWHM +
3 galaxy half-light radii); ``blend_frac`` neighbours' light in that aperture / own flux;
``isolated`` = blend_frac < 1e-3; ``nn_dist_pix`` distance to the nearest other source;
``stamp_radius_pix`` GalSim stamp radius; ``psf_fwhm`` (arcsec), ``psf_g1``, ``psf_g2``
the PSF at the source (GalSim shear, sky frame).

CCD columns: ``mag_zero`` the CCD's truth zeropoint and ``zp_ccd_offset`` its static part;
``sky_e`` sky (e-) subtracted at the CCD centre with gradients ``sky_dedx``/``sky_dedy``
(e-/pixel) -- the subtracted plane is ``sky_e + dedx (x - xc) + dedy (y - yc)``;
``sky_sigma``; the PSF at the centre; ``astrom_dx_pix``/``astrom_dy_pix`` (header CRPIX minus
true) and ``astrom_dra_arcsec``/``astrom_ddec_arcsec`` (header minus true sky at the centre,
RA term times cos Dec); amplifier gains, read noise, full well (e-) and the exposure's
overscan levels (ADU); counts of in-bounds stars/galaxies/transients; true centre.

Conventions: fluxes are electrons in the reduced image, ``flux = 10**(-0.4 (mag - mag_zero))``;
``snr_expected`` is the PSF-optimal S/N against sky + read noise.
"""
from __future__ import annotations

import numpy as np

OBJECT_DTYPE = np.dtype([
    ("expnum", "i4"), ("ccdnum", "i2"), ("kind", "S9"), ("obj_id", "i8"),
    ("ra", "f8"), ("dec", "f8"), ("x_image", "f8"), ("y_image", "f8"),
    ("mag", "f4"), ("flux", "f8"), ("peak_e", "f4"),
    ("saturated", "?"), ("in_bounds", "?"), ("isolated", "?"), ("blend_frac", "f4"),
    ("aperture_pix", "f4"), ("nn_dist_pix", "f4"), ("stamp_radius_pix", "f4"),
    ("psf_fwhm", "f4"), ("psf_g1", "f4"), ("psf_g2", "f4"),
])

CCD_DTYPE = np.dtype([
    ("expnum", "i4"), ("ccdnum", "i2"), ("detpos", "S3"), ("bad", "?"), ("band", "S1"),
    ("mag_zero", "f8"), ("zp_ccd_offset", "f4"),
    ("sky_e", "f8"), ("sky_dedx", "f8"), ("sky_dedy", "f8"), ("sky_sigma", "f4"),
    ("psf_fwhm", "f4"), ("psf_g1", "f4"), ("psf_g2", "f4"),
    ("astrom_dx_pix", "f8"), ("astrom_dy_pix", "f8"), ("astrom_dra_arcsec", "f8"), ("astrom_ddec_arcsec", "f8"),
    ("gain_a", "f4"), ("gain_b", "f4"), ("rdnoise_a", "f4"), ("rdnoise_b", "f4"),
    ("fullwell_a", "f4"), ("fullwell_b", "f4"), ("overscan_a", "f4"), ("overscan_b", "f4"),
    ("n_stars", "i4"), ("n_galaxies", "i4"), ("n_transients", "i4"),
    ("ra_cent", "f8"), ("dec_cent", "f8"),
])

#: The static transients of a night: reference magnitude at mjd_ref, linear light curve.
TRANSIENT_DTYPE = np.dtype([
    ("transient_id", "i8"), ("ra", "f8"), ("dec", "f8"), ("nite", "S8"), ("band", "S1"),
    ("mag_ref", "f4"), ("mjd_ref", "f8"), ("rate_mag_per_day", "f4"), ("snr_target", "f4"),
    ("host_id", "i8"), ("host_sep_arcsec", "f4"),
])

TRANSIENT_TRUTH_DTYPE = np.dtype([
    ("transient_id", "i8"), ("expnum", "i4"), ("ccdnum", "i2"), ("nite", "S8"), ("band", "S1"),
    ("mjd", "f8"), ("ra", "f8"), ("dec", "f8"), ("x_image", "f8"), ("y_image", "f8"),
    ("mag", "f4"), ("flux", "f8"), ("snr_expected", "f4"), ("in_bounds", "?"),
    ("host_id", "i8"), ("host_sep_arcsec", "f4"),
])


def empty(dtype: np.dtype) -> np.ndarray:
    return np.zeros(0, dtype)


def concat(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)
