"""FITS header cards as DECam and DESDM write them, built only from the exposure's spec.

Nothing here reads a clock: DATE-OBS, MJD-OBS and every other time come from the spec, so
the same survey seed gives byte-identical files. Cards are ``(name, value, comment)``
tuples in a fixed order.

Deliberately absent: the truth (MAGZERO, true PSF, astrometric offsets), which lives in the
truth tables, never in the data a pipeline reads.
"""
from __future__ import annotations

from skyops.sim.ccd import Detector
from skyops.sim.exposure_spec import ExposureSpec
from skyops.sim.focalplane import CCD
from skyops.sim.photometry import band as get_band

Card = tuple[str, object, str]

OBS_LAT, OBS_LONG, OBS_ELEV = -30.16606, 70.81489, 2215.0


def sexagesimal(ra: float, dec: float) -> tuple[str, str]:
    """RA as ``HH:MM:SS.SSS`` and Dec as ``+DD:MM:SS.SS`` (DECam's TELRA/TELDEC strings)."""
    h = (ra % 360.0) / 15.0
    hh = int(h)
    mm = int((h - hh) * 60)
    ss = (h - hh - mm / 60.0) * 3600.0
    sign = "-" if dec < 0 else "+"
    d = abs(dec)
    dd = int(d)
    dm = int((d - dd) * 60)
    ds = (d - dd - dm / 60.0) * 3600.0
    return f"{hh:02d}:{mm:02d}:{ss:06.3f}", f"{sign}{dd:02d}:{dm:02d}:{ds:05.2f}"


def exposure_cards(spec: ExposureSpec) -> list[Card]:
    """Exposure-level keywords (raw primary header; repeated in every reduced CCD file)."""
    b = get_band(spec.band)
    telra, teldec = sexagesimal(spec.telra, spec.teldec)
    date_obs = spec.date_obs
    return [
        ("OBSERVAT", "CTIO", "Observatory name"),
        ("TELESCOP", "CTIO 4.0-m telescope", "Telescope name"),
        ("INSTRUME", "DECam", "Instrument used to obtain these data"),
        ("OBS-LAT", OBS_LAT, "[deg] Observatory latitude"),
        ("OBS-LONG", OBS_LONG, "[deg] Observatory east longitude"),
        ("OBS-ELEV", OBS_ELEV, "[m] Observatory elevation"),
        ("EXPNUM", spec.expnum, "DECam exposure number"),
        ("NITE", spec.nite, "Observing night (local date at start of night)"),
        ("OBSTYPE", "object", "Observation type"),
        ("PROGRAM", spec.program, "Observing program"),
        ("PROPID", spec.propid, "Proposal ID"),
        ("OBJECT", spec.object, "Object name"),
        ("FIELD", spec.field, "Survey field"),
        ("DATE-OBS", date_obs, "UTC date and time of shutter open"),
        ("TIME-OBS", date_obs[11:], "UTC time of shutter open"),
        ("MJD-OBS", round(spec.mjd_obs, 8), "MJD of observation start"),
        ("EXPREQ", float(spec.exptime), "[s] Requested exposure duration"),
        ("EXPTIME", float(spec.exptime), "[s] Exposure duration"),
        ("DARKTIME", float(spec.exptime) + 1.1, "[s] Dark time"),
        ("BAND", spec.band, "Short name for filter"),
        ("FILTER", b.filter, "Unique filter identifier"),
        ("TELRA", telra, "[HH:MM:SS] Telescope RA"),
        ("TELDEC", teldec, "[DD:MM:SS] Telescope Dec"),
        ("TELEQUIN", 2000.0, "Equinox of telescope coordinates"),
        ("RA", telra, "[HH:MM:SS] Target RA"),
        ("DEC", teldec, "[DD:MM:SS] Target Dec"),
        ("AIRMASS", round(float(spec.airmass), 4), "Airmass"),
        ("CAMSYM", "D", "Camera symbol (DECam)"),
    ]


def gain_cards(det: Detector) -> list[Card]:
    """Gain and read noise of the two amplifiers."""
    return [
        ("GAINA", round(det.gain[0], 4), "[e-/ADU] Gain of amplifier A"),
        ("GAINB", round(det.gain[1], 4), "[e-/ADU] Gain of amplifier B"),
        ("RDNOISEA", round(det.read_noise[0], 3), "[e-] Read noise of amplifier A"),
        ("RDNOISEB", round(det.read_noise[1], 3), "[e-] Read noise of amplifier B"),
    ]


def raw_saturation_cards(det: Detector) -> list[Card]:
    """Raw saturation levels (ADU): full well over gain, plus the overscan level."""
    return [
        ("SATURATA", round(det.full_well[0] / det.gain[0] + det.overscan_level[0], 1),
         "[ADU] Saturation level of amplifier A"),
        ("SATURATB", round(det.full_well[1] / det.gain[1] + det.overscan_level[1], 1),
         "[ADU] Saturation level of amplifier B"),
    ]


def reduced_saturation_cards(saturate: tuple[float, float]) -> list[Card]:
    """Reduced saturation levels (e-, sky-subtracted): the lowest value a saturated pixel can have."""
    return [
        ("SATURATA", round(saturate[0], 1), "[e-] Saturation level of amplifier A (sky-subtracted)"),
        ("SATURATB", round(saturate[1], 1), "[e-] Saturation level of amplifier B (sky-subtracted)"),
        ("SATURATE", round(min(saturate), 1), "[e-] Saturation level (sky-subtracted)"),
    ]


def ccd_cards(ccd: CCD) -> list[Card]:
    return [
        ("CCDNUM", ccd.ccdnum, "CCD number"),
        ("DETPOS", ccd.detpos, "Detector position on the focal plane"),
        ("DETECTOR", f"SIM-{ccd.ccdnum:02d}", "Detector identifier"),
    ]
