"""``gw.calibrate``: BLISS photometric calibration of GW images against GAIA (``BLISS-expCalib_Y3apass.py``).

Input: the ``cat_finalcut`` catalogs of ``gw.se_ccd`` (one CCD or many, of one exposure or
several) and the GAIA-like reference catalog. Each catalog's LDAC_IMHEAD gives the image it
came from (FILENAME, EXPNUM, CCDNUM, BAND, MJD-OBS). Per CCD:

1. match detections to reference stars within ``match_radius`` (positions through the refined
   WCS; proper motions carried to the exposure's epoch);
2. keep clean, unsaturated, point-like stars (FLAGS = 0, IMAFLAGS_ISO = 0, S/N >= ``min_snr``,
   |SPREAD_MODEL| small, BP-RP within ``color_range``) that are *isolated*: the light their
   neighbours are predicted to add to the measuring aperture -- every reference star (from its
   reference magnitude) and every detection that is no reference star (FLUX_AUTO), spread as a
   Moffat profile of the image's FWHM -- is at most ``max_blend`` of their flux; and whose profile
   is the PSF's: the magnitude difference between the core aperture (half the diameter) and the
   measuring one within ``profile_clip`` sigma of the CCD's median, which catches the neighbours no
   catalog lists (faint galaxies SExtractor did not deblend from the star);
3. ``mag_ref`` = GAIA G + colour terms (:func:`~skyops.campaigns.gw.photcal.reference_mag`),
   ``mag_inst = -2.5 log10(flux)`` of the chosen ``mag_type``, made a total magnitude (which
   MAG_ZERO refers to) by an aperture correction to ``total_aperture``: the curve of growth of
   bright (S/N >= ``apcorr_min_snr``) stars isolated within ``total_aperture``, as the sum over
   successive apertures of their *median* magnitude increment (a neighbour entering one annulus of
   one star moves no median). Per CCD, its own curve of growth and the exposure's (a line in the
   CCD's PSF FWHM through all its CCDs' curves of growth, weighted by their errors) are combined by
   their errors: a CCD with a few bright stars takes the exposure's (:func:`aperture_corrections`);
4. ``mag_zero`` = ``clip_sigma``-clipped weighted mean of ``mag_ref - mag_inst`` (weights
   1 / (err^2 + ``weight_floor``^2)).

Why (measured against the synthetic survey's truth, where reference magnitudes are exact, the
sky map's error moves a CCD's zeropoint by well under 0.001 mag and saturated stars are flagged): on the
crowded gw-demo CCDs (256x512 pixels, 60,000 stars and 60,000 galaxies per deg2, 13-15
calibration stars per CCD) neighbours put a mean 1.1% of a star's flux into the 18.5-pixel
``aper_7`` (median 0.01%, but 22% of the stars get more than 0.5%): 55% of it from stars (60% of
those not deblended from the star) and 45% from galaxies no catalog lists. Blends only
ever add light, so a clipped mean of a few stars came out bright: zeropoints +0.004 mag on
average and up to +0.033 too high (rms 0.0074 over 180 CCDs, 22 beyond 0.01), with the same
neighbours inflating the per-CCD curves of growth of 2-6 bright stars by up to 0.014. The
isolation and profile tests remove those stars; the 14.8-pixel ``aper_6`` halves the neighbour
light again and lowers the sky noise, which with a 2700 e- sky is what limits a CCD of 7-15 stars;
its ~0.03 mag aperture correction comes from the exposure's FWHM model to 0.001. Result on
gw-demo: |mag_zero - truth| rms 0.0027 mag, mean +0.0006, largest 0.013 on a CCD of 8 stars whose
sigma_mag_zero is 0.007 (statistics, not bias); on 512x1024 CCDs rms 0.0014. The curve of growth
to ``aper_10`` (29.6 pixels) holds all but 0.1-0.3% of the PSF (left uncorrected); a 44-pixel
"total" aperture collects more light from neighbours than it recovers from the wings. SExtractor's
FLUX_PSF (``psf``) runs 0.4% high for bright stars and 4% for S/N 50 ones, and FLUX_AUTO
(``auto``) loses 1% (bright) to 2.5% (faint) outside its Kron ellipse: a magnitude-dependent
error no aperture correction from bright stars removes, so neither is the default.

The exposure's zeropoint pools the stars of all its CCDs (each with its CCD's aperture
correction). Output: one FITS file (``bliss_zeropoint``) with HDU ``ZEROPOINT`` (one row per
CCD, DESDM ZEROPOINT columns: imagename, catalogname, expnum, ccdnum, band, mag_zero,
sigma_mag_zero, rms_mag_zero, nstars, nrejected, aper_corr, aper_corr_src, mag_type,
source = 'BLISS', version, flag -- 0 is good; bits in :mod:`.photcal` and FLAG_APCORR_NONE) and
HDU ``EXPOSURE_ZP`` (one row per exposure). An archive step ingests the ZEROPOINT rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits
from scipy.spatial import cKDTree

from skyops.campaigns.gw import photcal
from skyops.campaigns.gw.astrometry import at_epoch, mjd_to_epoch
from skyops.campaigns.gw.se import staged_input
from skyops.errors import InputError, StepParameterError
from skyops.imaging.astromatic import read_config
from skyops.steps.context import StepContext
from skyops.steps.registry import step

FLAG_APCORR_NONE = 8  # too few bright stars in the whole exposure: no aperture correction (mag_zero biased)
ZP_DTYPE = np.dtype([
    ("imagename", "S80"), ("catalogname", "S80"), ("expnum", "i8"), ("ccdnum", "i2"), ("band", "S2"),
    ("mag_zero", "f8"), ("sigma_mag_zero", "f8"), ("rms_mag_zero", "f8"), ("nstars", "i4"), ("nrejected", "i4"),
    ("aper_corr", "f8"), ("aper_corr_src", "S8"), ("mag_type", "S12"), ("source", "S8"), ("version", "S24"),
    ("flag", "i4"),
])
EXP_DTYPE = np.dtype([
    ("expnum", "i8"), ("band", "S2"), ("mag_zero", "f8"), ("sigma_mag_zero", "f8"), ("rms_mag_zero", "f8"),
    ("nstars", "i4"), ("nccds", "i4"), ("mag_type", "S12"), ("source", "S8"), ("version", "S24"), ("flag", "i4"),
])
#: Aperture correction: at least this many bright stars on a CCD, else the exposure's pooled value.
APCORR_MIN_STARS = 3


@dataclass
class CCDStars:
    """The calibration stars of one catalog."""

    catalog: Path
    header: fits.Header
    mag_ref: np.ndarray
    err_ref: np.ndarray
    flux: np.ndarray  # of mag_type, before aperture correction
    flux_err: np.ndarray
    growth: np.ndarray | None  # (n, k) mag increments through apertures to total_aperture, aperture-correction stars
    snr: np.ndarray
    growth_snr: np.ndarray | None = None  # SNR_WIN of the growth rows
    fwhm: float = float("nan")  # PSF FWHM (pixels) of the image
    counts: dict[str, int] | None = None  # matched, clean, blended, profile: how the stars were selected

    @property
    def expnum(self) -> int:
        return int(self.header["EXPNUM"])

    @property
    def ccdnum(self) -> int:
        return int(self.header["CCDNUM"])


def read_ldac_header(path: Path) -> fits.Header:
    """The image header SExtractor copied into a FITS_LDAC catalog (LDAC_IMHEAD)."""
    with fitsio.FITS(str(path)) as f:
        names = [h.get_extname() for h in f]
        if "LDAC_IMHEAD" not in names or "LDAC_OBJECTS" not in names:
            raise InputError(f"{path} is not a FITS_LDAC catalog (no LDAC_IMHEAD/LDAC_OBJECTS); pass the "
                             "cat_finalcut catalogs of gw.se_ccd (parameter 'catalogs')")
        cards = f["LDAC_IMHEAD"].read()[0][0]
    text = "".join(str(c).ljust(80)[:80] for c in np.atleast_1d(cards))
    return fits.Header.fromstring(text)


def _mag_column(mag_type: str, n_apertures: int) -> tuple[str, int | None]:
    if mag_type in ("psf", "auto"):
        return f"FLUX_{mag_type.upper()}", None
    if mag_type.startswith("aper_") and mag_type[5:].isdigit() and 1 <= int(mag_type[5:]) <= n_apertures:
        return "FLUX_APER", int(mag_type[5:]) - 1
    raise StepParameterError(f"step 'gw.calibrate': parameter 'mag_type': {mag_type!r} is not a magnitude type; "
                             f"expected 'psf', 'auto' or 'aper_N' with N in 1..{n_apertures} (BLISS: mag_psf, "
                             "mag_auto, mag_aper_8)")


def _flux(obj: np.ndarray, column: str, index: int | None) -> tuple[np.ndarray, np.ndarray]:
    f, e = obj[column], obj[column.replace("FLUX_", "FLUXERR_")]
    if index is not None:
        f, e = np.atleast_2d(f.T).T[:, index], np.atleast_2d(e.T).T[:, index]
    return f.astype(float), e.astype(float)


def default_aperture_diameters() -> list[float]:
    """The FLUX_APER diameters (pixels) of gw.se_ccd's catalogs: its SExtractor configuration's."""
    return [float(v) for v in read_config("gw_se_final")["PHOT_APERTURES"].split(",")]


def _pixel_scale(hdr: fits.Header) -> float:
    """arcsec / pixel of the image's WCS (CD matrix, or CDELT); NaN without one."""
    if "CD1_1" in hdr:
        det = float(hdr["CD1_1"]) * float(hdr.get("CD2_2", 0.0)) - float(hdr.get("CD1_2", 0.0)) * float(
            hdr.get("CD2_1", 0.0))
        return float(np.sqrt(abs(det)) * 3600.0)
    if "CDELT1" in hdr:
        return float(abs(float(hdr["CDELT1"])) * 3600.0)
    return float("nan")


def _inner_aperture(diam: np.ndarray, outer: int) -> int | None:
    """The largest aperture at most half as wide as ``outer`` (1% slack for rounded diameters: DESDM's
    7.41 is half of 14.81): the core of the profile test."""
    inner = [j for j in range(outer) if diam[j] <= 0.505 * diam[outer]]
    return inner[-1] if inner else None


def calibration_stars(path: Path, ref: np.ndarray, band: str, *, mag_type: str, total_aperture: int,
                      match_radius: float, min_snr: float, max_spread: float,
                      color_range: tuple[float, float], color_terms: tuple[float, float] | None,
                      max_blend: float = 0.005, profile_clip: float = 3.0, apcorr_min_snr: float = 300.0,
                      diameters: list[float] | None = None) -> CCDStars:
    """Match one catalog to the reference catalog and keep its clean, isolated calibration stars.

    Beyond the clean-detection cuts, a star is kept only when (1) the light of its neighbours -- every
    reference star (predicted from its reference magnitude) and every detection that is no reference
    star (galaxies: FLUX_AUTO), spread as a Moffat (:data:`~.photcal.BLEND_BETA`) of the image's FWHM --
    is predicted to add at most ``max_blend`` of its flux to its measuring aperture, and (2) its
    profile is the PSF's: its core-to-aperture magnitude difference is within ``profile_clip`` sigma
    (plus :data:`PROFILE_FLOOR`) of the CCD's median, which catches neighbours no catalog has
    (undeblended faint galaxies). Stars for the curve of growth must pass (1) in the total aperture.
    """
    hdr = read_ldac_header(path)
    for key in ("EXPNUM", "CCDNUM"):
        if key not in hdr:
            raise InputError(f"{path}: the image header (LDAC_IMHEAD) has no {key}; the catalog must come from "
                             "gw.se_ccd")
    obj = fitsio.read(str(path), ext="LDAC_OBJECTS")
    naper = obj["FLUX_APER"].shape[1] if obj["FLUX_APER"].ndim == 2 else 1
    column, index = _mag_column(mag_type, naper)
    if total_aperture > naper:
        raise StepParameterError(f"step 'gw.calibrate': parameter 'total_aperture': {total_aperture} is beyond "
                                 f"the catalog's {naper} apertures; expected 1..{naper} or 0 (no aperture "
                                 "correction)")
    diam = np.asarray(diameters if diameters is not None else default_aperture_diameters(), float)
    if len(diam) < naper:
        raise InputError(f"{path} has {naper} apertures but parameter 'aperture_diameters' gives {len(diam)} "
                         "diameters; pass the PHOT_APERTURES the catalog was made with")
    ra, dec = at_epoch(ref, mjd_to_epoch(float(hdr["MJD-OBS"])) if "MJD-OBS" in hdr else None)
    i_obj, i_ref, _ = photcal.match_sky(obj["ALPHAWIN_J2000"], obj["DELTAWIN_J2000"], ra, dec, match_radius)
    o, r = obj[i_obj], ref[i_ref]
    flux, ferr = _flux(o, column, index)
    ok = (o["FLAGS"] == 0) & (o["SNR_WIN"] >= min_snr) & (flux > 0) & np.isfinite(flux)
    if "IMAFLAGS_ISO" in o.dtype.names:
        ok &= o["IMAFLAGS_ISO"] == 0
    if "SPREAD_MODEL" in o.dtype.names:
        spread_err = o["SPREADERR_MODEL"] if "SPREADERR_MODEL" in o.dtype.names else 0.0
        ok &= np.abs(o["SPREAD_MODEL"]) <= max_spread + 3.0 * spread_err
    bp_rp = r["bp_rp"].astype(float) if "bp_rp" in r.dtype.names else np.zeros(len(r))
    ok &= np.isfinite(bp_rp) & (bp_rp >= color_range[0]) & (bp_rp <= color_range[1])
    mag_ref = photcal.reference_mag(r["phot_g_mean_mag"], bp_rp, band, color_terms)
    ok &= np.isfinite(mag_ref)
    foe = r["phot_g_mean_flux_over_error"].astype(float) if "phot_g_mean_flux_over_error" in r.dtype.names \
        else np.full(len(r), np.inf)
    err_ref = 1.0857 / np.where(foe > 0, foe, np.inf)
    counts = {"matched": int(len(o)), "clean": int(ok.sum()), "blended": 0, "profile": 0}

    apers = np.atleast_2d(obj["FLUX_APER"].T).T.astype(float)[i_obj]
    aper_errs = np.atleast_2d(obj["FLUXERR_APER"].T).T.astype(float)[i_obj]
    meas = index if index is not None else min(GROWTH_START, naper - 1)  # the aperture the magnitude fills
    snr = o["SNR_WIN"].astype(float)
    bright = ok & (snr >= apcorr_min_snr)
    fwhm = float(hdr.get("FWHM", 0.0) or 0.0)
    if not fwhm > 0 and ok.any():
        fwhm = float(np.median(o["FWHM_IMAGE"][ok])) if "FWHM_IMAGE" in o.dtype.names else float("nan")
    scale = _pixel_scale(hdr)
    blend_meas = np.zeros(len(o))
    blend_total = np.zeros(len(o))
    if ok.any() and np.isfinite(fwhm) and fwhm > 0 and np.isfinite(scale) and max_blend < np.inf:
        blend_meas, blend_total = _blends(obj, ref, ra, dec, band, color_terms, i_ref, ok, bright, mag_ref, flux,
                                          fwhm, scale, match_radius, diam[meas] / 2.0,
                                          diam[total_aperture - 1] / 2.0 if total_aperture else diam[meas] / 2.0)
    isolated = blend_meas <= max_blend
    counts["blended"] = int((ok & ~isolated).sum())
    profile_ok = _profile_ok(apers, aper_errs, meas, _inner_aperture(diam, meas), ok & isolated, snr,
                             2.0 * min_snr, profile_clip)
    counts["profile"] = int((ok & isolated & ~profile_ok).sum())
    use = ok & isolated & profile_ok
    growth_rows = bright & profile_ok & (blend_total <= max_blend)
    growth = _growth(o[growth_rows], flux[growth_rows], index, total_aperture)
    return CCDStars(path, hdr, mag_ref[use], err_ref[use], flux[use], ferr[use], growth, snr[use],
                    growth_snr=snr[growth_rows] if growth is not None else None, fwhm=fwhm, counts=counts)


#: Magnitudes of slack in the profile test: PSF changes across a CCD and the median's own error.
PROFILE_FLOOR = 0.005


def _profile_ok(apers: np.ndarray, errs: np.ndarray, outer: int, inner: int | None, base: np.ndarray,
                snr: np.ndarray, ref_snr: float, clip: float) -> np.ndarray:
    """Stars whose light between the core aperture and the measuring one is the PSF's (the median star's)."""
    n = len(apers)
    if inner is None or clip <= 0 or clip == np.inf:
        return np.ones(n, bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        conc = 2.5 * np.log10(apers[:, outer] / apers[:, inner])
        sigma = 1.0857 * np.sqrt(np.clip(errs[:, outer] ** 2 - errs[:, inner] ** 2, 0.0, None)) / apers[:, outer]
    good = base & np.isfinite(conc) & np.isfinite(sigma)
    sample = good & (snr >= ref_snr)
    if sample.sum() < 5:
        sample = good
    if sample.sum() < 3:  # too few stars to know the PSF's profile: no test
        return np.ones(n, bool)
    ref = float(np.median(conc[sample]))
    return np.isfinite(conc) & (np.abs(conc - ref) <= clip * sigma + PROFILE_FLOOR)


def _blends(obj: np.ndarray, ref: np.ndarray, ra: np.ndarray, dec: np.ndarray, band: str,
            color_terms: tuple[float, float] | None, i_ref: np.ndarray, ok: np.ndarray, bright: np.ndarray,
            mag_ref: np.ndarray, flux: np.ndarray, fwhm: float, scale: float, match_radius: float,
            r_meas: float, r_total: float) -> tuple[np.ndarray, np.ndarray]:
    """Predicted neighbour light / own flux of the matched stars in the measuring aperture (stars ``ok``)
    and in the total aperture (stars ``bright``); 0 elsewhere. Pixels on a tangent plane of the CCD."""
    zp0 = float(np.median(mag_ref[ok] + 2.5 * np.log10(flux[ok])))  # only to turn reference mags into e-
    ra0, dec0 = float(np.median(obj["ALPHAWIN_J2000"])), float(np.median(obj["DELTAWIN_J2000"]))
    ox, oy = photcal.tangent_plane(obj["ALPHAWIN_J2000"], obj["DELTAWIN_J2000"], ra0, dec0)
    reach = (max(r_meas, r_total) + 8.0 * fwhm) * scale  # arcsec
    span = float(np.max(np.hypot(ox, oy))) + reach
    near = np.flatnonzero(np.abs(dec - dec0) < span / 3600.0 + 1e-9)
    rx, ry = photcal.tangent_plane(ra[near], dec[near], ra0, dec0)
    inside = np.hypot(rx, ry) < span
    near, rx, ry = near[inside], rx[inside], ry[inside]
    colour = ref["bp_rp"][near].astype(float) if "bp_rp" in ref.dtype.names else np.zeros(len(near))
    colour = np.where(np.isfinite(colour), colour, np.nanmedian(colour) if np.isfinite(colour).any() else 1.0)
    rflux = 10.0 ** (-0.4 * (photcal.reference_mag(ref["phot_g_mean_mag"][near], colour, band, color_terms) - zp0))
    rflux = np.nan_to_num(rflux)
    # detections that are not reference stars (galaxies, transients...) with their total flux
    if len(near):
        dist, _ = cKDTree(np.column_stack([rx, ry])).query(np.column_stack([ox, oy]))
    else:
        dist = np.full(len(ox), np.inf)
    other = dist > match_radius
    oflux = np.clip(np.nan_to_num(obj["FLUX_AUTO"].astype(float)), 0.0, None) if "FLUX_AUTO" in obj.dtype.names \
        else np.zeros(len(obj))
    sx = np.concatenate([rx, ox[other]]) / scale
    sy = np.concatenate([ry, oy[other]]) / scale
    sflux = np.concatenate([rflux, oflux[other]])
    pos = {int(j): k for k, j in enumerate(near)}
    self_index = np.array([pos.get(int(j), -1) for j in i_ref])
    star_x, star_y = sx[np.maximum(self_index, 0)], sy[np.maximum(self_index, 0)]
    own = 10.0 ** (-0.4 * (mag_ref - zp0))
    out_meas, out_total = np.zeros(len(i_ref)), np.zeros(len(i_ref))
    for sel, radius, out in ((ok, r_meas, out_meas), (bright, r_total, out_total)):
        sel = sel & (self_index >= 0)
        if sel.any():
            out[sel] = photcal.predicted_blend(star_x[sel], star_y[sel], own[sel], sx, sy, sflux, radius,
                                               fwhm, exclude=self_index[sel])
    return out_meas, out_total


#: PSF and AUTO magnitudes join the curve of growth at this aperture (0-based; DESDM's 18.5 pixels).
GROWTH_START = 6


def _growth(obj: np.ndarray, flux: np.ndarray, index: int | None, total_aperture: int) -> np.ndarray | None:
    """Per star, the magnitude increments from ``flux`` to each next aperture up to ``total_aperture``."""
    if not total_aperture or index == total_aperture - 1:
        return None
    apers = np.atleast_2d(obj["FLUX_APER"].T).T.astype(float)
    last = total_aperture - 1
    if index is None:
        chain = [flux] + [apers[:, j] for j in range(min(GROWTH_START, last), last + 1)]
    elif index < last:
        chain = [apers[:, j] for j in range(index, last + 1)]
    else:  # the total aperture is smaller: correct downwards in one step
        chain = [flux, apers[:, last]]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.column_stack([2.5 * np.log10(b / a) for a, b in zip(chain[:-1], chain[1:])])


def aperture_correction(growth: list[np.ndarray], snr: list[np.ndarray], min_snr: float) -> tuple[float, int]:
    """The aperture correction (mag, added to the zeropoint): the sum over successive apertures of the
    bright stars' median increment; and the number of bright stars."""
    g = np.concatenate([x[s >= min_snr] for x, s in zip(growth, snr)]) if growth else np.zeros((0, 1))
    if len(g) == 0:
        return float("nan"), 0
    steps = [np.median(col[np.isfinite(col)]) if np.isfinite(col).any() else np.nan for col in g.T]
    return float(np.sum(steps)), int(len(g))


def _zp_of(stars: list[CCDStars], apcorr: list[float], clip: float, floor: float) -> photcal.Zeropoint:
    zp = np.concatenate([s.mag_ref + 2.5 * np.log10(s.flux) + a for s, a in zip(stars, apcorr)]) \
        if stars else np.zeros(0)
    err = np.concatenate([np.hypot(1.0857 * s.flux_err / s.flux, s.err_ref) for s in stars]) if stars else np.zeros(0)
    return photcal.clipped_zeropoint(zp, err, nsigma=clip, floor=floor)


#: CCD-to-CCD scatter of aperture corrections that the exposure's FWHM model is assumed to leave at least (mag).
APCORR_TAU = 0.001
#: CCDs with their own aperture correction needed to measure that scatter instead of assuming APCORR_TAU.
APCORR_MIN_CCDS_TAU = 10


def _weighted_line(x: np.ndarray, y: np.ndarray, err: np.ndarray, sloped: bool,
                   nsigma: float = 3.0, max_iter: int = 10) -> tuple[float, float]:
    """Intercept and slope (0 unless ``sloped``) of y(x) weighted by 1 / err^2, iteratively refitted to
    the points within ``nsigma`` of it (in units of their errors, times the residuals' robust spread
    when that is larger)."""
    used = np.isfinite(x) & np.isfinite(y)
    coef = (float(np.median(y[used])), 0.0)
    for _ in range(max_iter):
        w = 1.0 / err[used] ** 2
        if sloped and used.sum() >= 3:
            a = np.column_stack([np.ones(used.sum()), x[used]]) * np.sqrt(w)[:, None]
            c = np.linalg.lstsq(a, y[used] * np.sqrt(w), rcond=None)[0]
            coef = (float(c[0]), float(c[1]))
        else:
            coef = (float(np.sum(w * y[used]) / np.sum(w)), 0.0)
        norm = (y - coef[0] - coef[1] * x) / err
        spread = max(1.4826 * float(np.median(np.abs(norm[used]))), 1.0)
        new = np.isfinite(norm) & (np.abs(norm) <= nsigma * spread)
        if new.sum() < 2 or np.array_equal(new, used):
            break
        used = new
    return coef


def aperture_corrections(ccds: list[CCDStars], idx: list[int],
                         min_snr: float) -> dict[int, tuple[float, str, int]]:
    """Per CCD of one exposure: the aperture correction, where it came from, and the flag bit to set.

    Each CCD's own curve of growth (the sum over annuli of its bright isolated stars' median
    increments) has an error 1.25 s / sqrt(n), s the star-to-star scatter within CCDs. The exposure's
    model is a line in the CCD's PSF FWHM through those per-CCD values, weighted by 1 / (error^2 +
    tau^2) (a constant when fewer than 3 CCDs, or under 1% of FWHM range, cannot say how it varies),
    tau being the CCD-to-CCD scatter the model leaves: :data:`APCORR_TAU`, or with
    APCORR_MIN_CCDS_TAU CCDs or more, what their values show beyond their errors (0.455 is the median
    of chi-square with one degree of freedom). A CCD with at least APCORR_MIN_STARS bright stars gets
    its own value and the model's combined by their errors (weight tau^2 / (tau^2 + error^2) on its
    own), one with fewer the model. Source 'ccd' when its own weighs at least half (or it is the only
    CCD with bright stars), else 'exposure'; 'none' with FLAG_APCORR_NONE when the whole exposure
    has fewer than APCORR_MIN_STARS bright stars.
    """
    out: dict[int, tuple[float, str, int]] = {}
    with_growth = [i for i in idx if ccds[i].growth is not None]
    for i in idx:
        if ccds[i].growth is None:  # the magnitude is the total one already (total_aperture 0 or itself)
            out[i] = (0.0, "none", 0)
    if not with_growth:
        return out
    growth = {}
    for i in with_growth:
        g, snr = ccds[i].growth, ccds[i].growth_snr if ccds[i].growth_snr is not None else ccds[i].snr
        growth[i] = g[snr >= min_snr] if len(snr) == len(g) else g
    if sum(len(g) for g in growth.values()) < APCORR_MIN_STARS:  # nothing to measure it with: flagged
        for i in with_growth:
            out[i] = (0.0, "none", FLAG_APCORR_NONE)
        return out
    have = [i for i in with_growth if len(growth[i])]
    own = {i: aperture_correction([growth[i]], [np.full(len(growth[i]), np.inf)], min_snr)[0] for i in have}
    n = {i: len(growth[i]) for i in have}
    # star-to-star scatter: per-star sums about their CCD's median (CCDs of 3+ stars), else about all
    sums = {i: np.nansum(growth[i], axis=1) for i in have}
    dev = np.concatenate([sums[i] - np.median(sums[i]) for i in have if n[i] >= 3] or [np.zeros(0)])
    if len(dev) < 5:
        allsums = np.concatenate(list(sums.values()))
        dev = allsums - np.median(allsums)
    scatter = max(1.4826 * float(np.median(np.abs(dev))), 1e-4)
    err = {i: (1.2533 if n[i] >= 3 else 1.0) * scatter / np.sqrt(n[i]) for i in have}
    x = np.array([ccds[i].fwhm for i in have])
    y, e = np.array([own[i] for i in have]), np.array([err[i] for i in have])
    x0 = float(np.nanmedian(x)) if np.isfinite(x).any() else 0.0
    sloped = len(have) >= 3 and bool(np.isfinite(x).all()) and float(np.ptp(x)) >= 0.01 * x0
    dx = np.nan_to_num(x - x0)
    tau2 = APCORR_TAU**2
    a, b = _weighted_line(dx, y, np.sqrt(e**2 + tau2), sloped)
    full = [k for k, i in enumerate(have) if n[i] >= APCORR_MIN_STARS]
    if len(full) >= APCORR_MIN_CCDS_TAU:  # do the CCDs scatter about the model beyond their errors?
        resid = (y[full] - a - b * dx[full]) ** 2
        tau2 = max(float(np.median(resid)) / 0.455 - float(np.median(e[full] ** 2)), tau2)
        a, b = _weighted_line(dx, y, np.sqrt(e**2 + tau2), sloped)
    for i in with_growth:
        f = ccds[i].fwhm
        m = a + b * (f - x0) if np.isfinite(f) else a
        only = have == [i]
        if i not in own or n[i] < APCORR_MIN_STARS:
            out[i] = (own[i] if only else m, "ccd" if only else "exposure", 0)
            continue
        w = tau2 / (tau2 + err[i] ** 2)
        out[i] = (own[i] if only else w * own[i] + (1.0 - w) * m, "ccd" if w >= 0.5 or only else "exposure", 0)
    return out


def _flag(z: photcal.Zeropoint, min_stars: int, max_rms: float) -> int:
    flag = 0
    if z.nstars == 0:
        flag |= photcal.FLAG_NO_STARS
    if z.nstars < min_stars:
        flag |= photcal.FLAG_FEW_STARS
    if np.isfinite(z.rms) and z.rms > max_rms:
        flag |= photcal.FLAG_LARGE_SCATTER
    return flag


@step("gw.calibrate", resources={"cpu": 1, "memory_mb": 1024}, outputs=["bliss_zeropoint"])
def calibrate(ctx: StepContext, *, catalogs: list[str], refcat: str, band: str | None = None,
              mag_type: str = "aper_6", total_aperture: int = 10, apcorr_min_snr: float = 300.0,
              match_radius: float = 1.0, min_snr: float = 50.0, max_spread: float = 0.005,
              max_blend: float = 0.005, profile_clip: float = 3.0,
              clip_sigma: float = 3.0, weight_floor: float = 0.005, min_stars: int = 5,
              max_rms: float = 0.05, color_range: list[float] = [0.2, 3.0],
              color_terms: list[float] | None = None, aperture_diameters: list[float] | None = None,
              version: str = "skyops-bliss-2", output: str | None = None) -> dict:
    """BLISS zeropoints per CCD and per exposure from gw.se_ccd catalogs and a GAIA catalog.

    ``mag_type`` is ``psf``, ``auto`` or ``aper_N`` (1-based FLUX_APER index; aperture magnitudes
    are corrected to ``total_aperture``). ``max_blend`` is the predicted fraction of a star's flux
    that neighbours may add to its aperture; ``profile_clip`` the sigma beyond which a star's
    core-to-aperture profile differs from the PSF's (both: :func:`calibration_stars`).
    ``color_terms`` [c0, c1] override the GAIA-to-DECam transformation ``G + c0 + c1 (BP-RP)``.
    ``aperture_diameters`` (pixels) are the catalogs' PHOT_APERTURES (default: gw.se_ccd's).
    ``output`` names the zeropoint file.
    """
    if not catalogs:
        raise StepParameterError("step 'gw.calibrate': parameter 'catalogs': the list is empty; give the "
                                 "cat_finalcut catalog of at least one CCD")
    if len(color_range) != 2 or color_range[0] >= color_range[1]:
        raise StepParameterError(f"step 'gw.calibrate': parameter 'color_range': expected [min, max] BP-RP with "
                                 f"min < max, got {color_range!r}")
    if color_terms is not None and len(color_terms) != 2:
        raise StepParameterError(f"step 'gw.calibrate': parameter 'color_terms': expected [c0, c1], got "
                                 f"{color_terms!r}")
    if clip_sigma <= 0 or min_stars < 1:
        raise StepParameterError("step 'gw.calibrate': parameters 'clip_sigma' and 'min_stars' must be "
                                 f"positive (got {clip_sigma}, {min_stars})")
    if not max_blend > 0:
        raise StepParameterError(f"step 'gw.calibrate': parameter 'max_blend': {max_blend} must be a positive "
                                 "fraction of a star's flux (e.g. 0.005)")
    if not profile_clip > 0:
        raise StepParameterError(f"step 'gw.calibrate': parameter 'profile_clip': {profile_clip} must be a "
                                 "positive number of sigma (e.g. 3)")
    if aperture_diameters is not None and (not aperture_diameters or min(aperture_diameters) <= 0):
        raise StepParameterError(f"step 'gw.calibrate': parameter 'aperture_diameters': {aperture_diameters!r} "
                                 "must be the catalogs' positive aperture diameters in pixels")
    if total_aperture < 0:
        raise StepParameterError(f"step 'gw.calibrate': parameter 'total_aperture': {total_aperture} must be a "
                                 "1-based aperture index, or 0 for no aperture correction")
    if output is not None and (not output or "/" in output):
        raise StepParameterError(f"step 'gw.calibrate': parameter 'output': {output!r} must be a file name "
                                 "(no folder)")
    ref_path = staged_input(ctx, refcat, "cal_refcat", "refcat")
    ref = fitsio.read(str(ref_path), ext=1)
    missing = [c for c in ("ra", "dec", "phot_g_mean_mag") if c not in ref.dtype.names]
    if missing:
        raise InputError(f"reference catalog {ref_path} lacks column(s) {', '.join(missing)}; expected GAIA DR2 names")

    diam = aperture_diameters if aperture_diameters is not None else default_aperture_diameters()
    ccds: list[CCDStars] = []
    for cat in catalogs:
        path = staged_input(ctx, cat, "cat_finalcut", "catalogs")
        hdr_band = str(read_ldac_header(path).get("BAND", "")).strip()
        b = band or hdr_band
        if not b:
            raise InputError(f"{path}: no BAND in the image header; pass the band (parameter 'band')")
        if band and hdr_band and hdr_band != band:
            raise InputError(f"parameter 'band' is {band!r} but {path} is a {hdr_band!r}-band image")
        ccds.append(calibration_stars(path, ref, b, mag_type=mag_type, total_aperture=total_aperture,
                                      match_radius=match_radius, min_snr=min_snr, max_spread=max_spread,
                                      color_range=(color_range[0], color_range[1]),
                                      color_terms=tuple(color_terms) if color_terms else None,
                                      max_blend=max_blend, profile_clip=profile_clip, apcorr_min_snr=apcorr_min_snr,
                                      diameters=diam))
    keys = [(s.expnum, s.ccdnum) for s in ccds]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise InputError(f"parameter 'catalogs': exposure/CCD {dup} given more than once")

    per_exp: dict[int, list[int]] = {}
    for i, s in enumerate(ccds):
        per_exp.setdefault(s.expnum, []).append(i)
    corrections: dict[int, tuple[float, str, int]] = {}
    for idx in per_exp.values():
        corrections.update(aperture_corrections(ccds, idx, apcorr_min_snr))
    apcorr = [corrections[i][0] for i in range(len(ccds))]

    rows = []
    mag_type_b = mag_type.encode()
    for i, s in enumerate(ccds):
        z = _zp_of([s], [apcorr[i]], clip_sigma, weight_floor)
        _, source, apflag = corrections[i]
        flag = _flag(z, min_stars, max_rms) | apflag
        rows.append((str(s.header.get("FILENAME", "")).encode()[:80], s.catalog.name.encode()[:80], s.expnum,
                     s.ccdnum, str(s.header.get("BAND", band or "")).strip().encode(), z.mag_zero, z.sigma_mag_zero,
                     z.rms, z.nstars, z.nrejected, apcorr[i], source.encode(), mag_type_b, b"BLISS",
                     version.encode()[:24], flag))
        c = s.counts or {}
        ctx.log.info("exposure %d CCD %d: mag_zero %.4f +- %.4f (rms %.3f, %d stars, %d clipped; of %d matched, "
                     "%d clean, %d blended, %d with a non-PSF profile; apcorr %.4f from %s, %d growth stars; "
                     "flag %d)", s.expnum, s.ccdnum, z.mag_zero, z.sigma_mag_zero, z.rms, z.nstars, z.nrejected,
                     c.get("matched", 0), c.get("clean", 0), c.get("blended", 0), c.get("profile", 0), apcorr[i],
                     source, 0 if s.growth is None else len(s.growth), flag)
    table = np.array(rows, dtype=ZP_DTYPE)
    exp_rows = []
    for exp, idx in per_exp.items():
        z = _zp_of([ccds[i] for i in idx], [apcorr[i] for i in idx], clip_sigma, weight_floor)
        exp_rows.append((exp, table["band"][idx[0]], z.mag_zero, z.sigma_mag_zero, z.rms, z.nstars, len(idx),
                         mag_type_b, b"BLISS", version.encode()[:24], _flag(z, min_stars, max_rms)))
        ctx.log.info("exposure %d: mag_zero %.4f +- %.4f from %d stars on %d CCDs", exp, z.mag_zero,
                     z.sigma_mag_zero, z.nstars, len(idx))
    exp_table = np.array(exp_rows, dtype=EXP_DTYPE)

    if output is None:
        b = table["band"][0].decode()
        if len(per_exp) == 1:
            exp = next(iter(per_exp))
            output = f"D{exp:08d}_{b}" + (f"_c{ccds[0].ccdnum:02d}" if len(ccds) == 1 else "") + "_bliss-zp.fits"
        else:
            output = "bliss_zeropoints.fits"
    with ctx.output(output, filetype="bliss_zeropoint") as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
            f.write(table, extname="ZEROPOINT", header=[
                {"name": "SOURCE", "value": "BLISS", "comment": "Calibration source"},
                {"name": "VERSION", "value": version, "comment": "Calibration version"},
                {"name": "MAGTYPE", "value": mag_type, "comment": "Instrumental magnitude used"},
                {"name": "REFCAT", "value": ref_path.name[:68], "comment": "Reference catalog"},
                {"name": "CLIPSIG", "value": clip_sigma, "comment": "Sigma clipping"}])
            f.write(exp_table, extname="EXPOSURE_ZP")
    metrics: dict = {"n_catalogs": len(ccds), "n_exposures": len(per_exp),
                     "nstars": int(table["nstars"].sum()),
                     "n_flagged": int((table["flag"] != 0).sum()),
                     "n_rejected_blend": int(sum((s.counts or {}).get("blended", 0) for s in ccds)),
                     "n_rejected_profile": int(sum((s.counts or {}).get("profile", 0) for s in ccds)),
                     "mag_zero": {f"{r['expnum']}/{r['ccdnum']}": round(float(r["mag_zero"]), 5) for r in table}}
    if len(exp_table) == 1:
        metrics.update(exposure_mag_zero=round(float(exp_table["mag_zero"][0]), 5),
                       exposure_sigma_mag_zero=round(float(exp_table["sigma_mag_zero"][0]), 5),
                       exposure_rms_mag_zero=round(float(exp_table["rms_mag_zero"][0]), 5))
    if len(table) == 1:
        metrics.update(ccd_mag_zero=round(float(table["mag_zero"][0]), 5),
                       ccd_sigma_mag_zero=round(float(table["sigma_mag_zero"][0]), 5))
    for k, v in metrics.items():
        ctx.metric(k, v)
    return metrics
