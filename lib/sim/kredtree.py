"""Writing a kred field: the ``DECam_MEF/<field>/`` tree, its field config and its truth.

Files (paths relative to the archive root; registered in DESFILE/FILE_ARCHIVE_INFO by
:func:`skyops.sim.register_parts.register_kred`):

=================================================  ============  ================================
path                                               filetype      content
=================================================  ============  ================================
``DECam_MEF/<field>/c4d_<yymmdd>_<hhmmss>_ooi_``   kred_mef      one InstCal-like exposure: a
``<filter>_v1.fits``                                             header-only primary HDU and one
                                                                 float32 image HDU per CCD
                                                                 (EXTNAME = DETPOS)
``KRED/config/<field>.yaml``                       kred_config   the field config (below)
``SIM/truth/kred/<field>/<field>_*.fits|csv``      sim_truth     truth tables (below)
=================================================  ============  ================================

MEF headers
-----------
Primary: ``OBSERVAT TELESCOP INSTRUME EXPNUM NITE OBSTYPE PROCTYPE=InstCal PRODTYPE=image
OBJECT PROPID FILTER BAND EXPTIME MJD-OBS DATE-OBS TIME-OBS AIRMASS TELRA TELDEC RA DEC
MAGZERO BUNIT=counts GAIN=1 NEXTEND FILENAME``. ``MAGZERO`` is the exposure's photometric
zeropoint for counts in the whole exposure (mag = MAGZERO - 2.5 log10 counts).
Each CCD HDU: ``EXTNAME CCDNUM DETPOS EXPNUM FILTER EXPTIME MJD-OBS BUNIT GAIN RDNOISE
SATURATE``, the TAN WCS (``CRVAL`` = boresight) and the CP footprint keys ``CENRA1 CENDEC1
COR1RA1 COR1DEC1 .. COR4RA1 COR4DEC1`` (corners in DESDM order) that kred's FindOverlaps
reads. No sky has been subtracted and no sky keyword is given: the pipeline measures it.

Field config (``KRED/config/<field>.yaml``, format ``skyops-kred-field/1``)
-----------------------------------------------------------------------------
::

    format: skyops-kred-field/1
    field: LMC_c42
    mef_dir: DECam_MEF/LMC_c42        # relative to the archive root
    center: {ra: 80.55, dec: -69.45}  # degrees
    pixel_scale: 0.263                # arcsec/pixel of the CCDs
    filters: [N662, N673, r]
    exptimes: [30.0, 400.0]
    tile_size_deg: 0.03
    tiles:                            # square tiles, centres in degrees
    - {name: T01, ra: 80.5072, dec: -69.465, size_deg: 0.03, naxis: 411}
    - ...
    mef_files: [c4d_190110_010000_ooi_N662_v1.fits, ...]   # the field's MEFs, in mef_dir

``naxis`` is the tile side in pixels at ``pixel_scale``. Tiles are numbered in rows of
increasing Dec, RA increasing within a row. ``mef_files`` lets a campaign stage the field
with the archive's ``files_by_name`` query (kred itself globs ``mef_dir``).

Truth (``SIM/truth/kred/<field>/``)
-----------------------------------
``<field>_exposures``  expnum, filename, filter, exptime, dither, mjd_obs, telra, teldec,
                       airmass, seeing, transparency, sky_factor, magzero, sky_counts (at the
                       boresight), **offset_counts** (the per-exposure additive offset)
``<field>_ccds``       expnum, ccdnum, detpos, filter, exptime, sky_counts (at the CCD centre),
                       sky_dcdx, sky_dcdy (counts/pixel: sky = sky_counts + dcdx (x - xc) +
                       dcdy (y - yc)), sky_sigma, read_noise, saturate, offset_counts,
                       psf_fwhm (arcsec), n_stars, ra_cent, dec_cent, corners
``<field>_overlaps``   every pair of CCD images of the same filter and exposure time (different
                       exposures) whose footprints overlap: the overlap box (ra/dec centre,
                       area) and the true total background of each image there (sky + offset)
                       and their difference -- what kred's BackStats/BackCalc estimate
``<field>_stars``      the stars (refcat STAR_DTYPE + ``mag_N662``, ``mag_N673``)
``<field>_emission``   the emission components (blob centre, sigma, peak counts/s/pixel in
                       H-alpha, [SII] and continuum): ``KredField.emission_rate`` evaluates them
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from skyops.fileio import atomic_open
from skyops.sim import products
from skyops.sim.fitswrite import HDU, FitsAppender, write_table
from skyops.sim.headers import Card, sexagesimal
from skyops.sim.kred import KRED_FILTERS, KredCCD, KredExposure, KredField
from skyops.sim.layout import TRUTH_DIR, ArchiveFile
from skyops.sim.survey import Progress
from skyops.sim.wcs import gnomonic, inverse_gnomonic

log = logging.getLogger(__name__)

MEF_ROOT = "DECam_MEF"
CONFIG_DIR = "KRED/config"
CONFIG_FORMAT = "skyops-kred-field/1"

KRED_EXPOSURE_DTYPE = np.dtype([
    ("expnum", "i4"), ("filename", "S40"), ("filter", "S4"), ("exptime", "f8"), ("dither", "i2"),
    ("mjd_obs", "f8"), ("telra", "f8"), ("teldec", "f8"), ("airmass", "f4"), ("seeing", "f4"),
    ("transparency", "f4"), ("sky_factor", "f4"), ("magzero", "f8"), ("sky_counts", "f8"), ("offset_counts", "f8"),
])
KRED_CCD_DTYPE = np.dtype(
    [("expnum", "i4"), ("ccdnum", "i2"), ("detpos", "S3"), ("filter", "S4"), ("exptime", "f8"),
     ("sky_counts", "f8"), ("sky_dcdx", "f8"), ("sky_dcdy", "f8"), ("sky_sigma", "f4"), ("read_noise", "f4"),
     ("saturate", "f4"), ("offset_counts", "f8"), ("psf_fwhm", "f4"), ("n_stars", "i4"),
     ("ra_cent", "f8"), ("dec_cent", "f8")]
    + [(f"{c}{i}", "f8") for i in range(1, 5) for c in ("rac", "decc")]
)
KRED_OVERLAP_DTYPE = np.dtype([
    ("filter", "S4"), ("exptime", "f8"), ("expnum_a", "i4"), ("ccdnum_a", "i2"), ("expnum_b", "i4"),
    ("ccdnum_b", "i2"), ("ra", "f8"), ("dec", "f8"), ("area_deg2", "f8"),
    ("bkg_a", "f8"), ("bkg_b", "f8"), ("bkg_diff", "f8"),
])


def mef_file(field: str, filename: str) -> ArchiveFile:
    return ArchiveFile(f"{MEF_ROOT}/{field}", filename, "kred_mef")


def config_file(field: str) -> ArchiveFile:
    return ArchiveFile(CONFIG_DIR, f"{field}.yaml", "kred_config")


def truth_file(field: str, name: str) -> ArchiveFile:
    return ArchiveFile(f"{TRUTH_DIR}/kred/{field}", f"{field}_{name}", "sim_truth")


@dataclass
class KredBuildResult:
    """What :func:`build_field` wrote."""

    field: str
    files: list[products.WrittenFile]
    exposures: np.ndarray  # KRED_EXPOSURE_DTYPE
    ccds: np.ndarray  # KRED_CCD_DTYPE
    overlaps: np.ndarray  # KRED_OVERLAP_DTYPE


def primary_cards(kf: KredField, e: KredExposure) -> list[Card]:
    p = kf.plan
    telra, teldec = sexagesimal(e.telra, e.teldec)
    return [
        ("OBSERVAT", "CTIO", "Observatory name"),
        ("TELESCOP", "CTIO 4.0-m telescope", "Telescope name"),
        ("INSTRUME", "DECam", "Instrument used to obtain these data"),
        ("EXPNUM", e.expnum, "DECam exposure number"),
        ("NITE", p.nite, "Observing night"),
        ("OBSTYPE", "object", "Observation type"),
        ("PROCTYPE", "InstCal", "Processing type"),
        ("PRODTYPE", "image", "Product type"),
        ("OBJECT", f"{p.field} {e.filter}", "Object name"),
        ("PROPID", p.propid, "Proposal ID"),
        ("FILTER", KRED_FILTERS[e.filter].filter, "Unique filter identifier"),
        ("BAND", e.filter, "Short name for filter"),
        ("EXPTIME", e.exptime, "[s] Exposure duration"),
        ("MJD-OBS", e.mjd_obs, "MJD of observation start"),
        ("DATE-OBS", e.date_obs, "UTC date and time of shutter open"),
        ("TIME-OBS", e.date_obs[11:], "UTC time of shutter open"),
        ("AIRMASS", e.airmass, "Airmass"),
        ("TELRA", telra, "[HH:MM:SS] Telescope RA"),
        ("TELDEC", teldec, "[DD:MM:SS] Telescope Dec"),
        ("RA", telra, "[HH:MM:SS] Target RA"),
        ("DEC", teldec, "[DD:MM:SS] Target Dec"),
        ("MAGZERO", round(kf.zeropoint(e.expnum), 4), "[mag] Zeropoint: mag = MAGZERO - 2.5 log10(counts)"),
        ("BUNIT", "counts", "Pixel units (gain-normalised: 1 count = 1 e-)"),
        ("GAIN", 1.0, "[e-/count]"),
        ("NEXTEND", len(kf.ccdnums), "Number of extensions"),
        ("FILENAME", e.filename, "File name"),
    ]


def ccd_cards(e: KredExposure, c: KredCCD) -> list[Card]:
    ra, dec = c.wcs.corners(true=True)
    nx, ny = c.wcs.ccd.nx, c.wcs.ccd.ny
    rac, decc = c.wcs.pixel_to_sky((nx + 1) / 2.0, (ny + 1) / 2.0)
    cards: list[Card] = [
        ("CCDNUM", c.ccdnum, "CCD number"),
        ("DETPOS", c.detpos, "Detector position"),
        ("EXPNUM", e.expnum, "DECam exposure number"),
        ("FILTER", KRED_FILTERS[e.filter].filter, "Unique filter identifier"),
        ("EXPTIME", e.exptime, "[s] Exposure duration"),
        ("MJD-OBS", e.mjd_obs, "MJD of observation start"),
        ("BUNIT", "counts", "Pixel units"),
        ("GAIN", 1.0, "[e-/count]"),
        ("RDNOISE", round(c.read_noise, 3), "[counts] Read noise"),
        ("SATURATE", round(c.saturate, 1), "[counts] Saturation level"),
    ] + c.wcs.cards(true=True) + [
        ("CENRA1", float(rac), "[deg] RA of the CCD centre"),
        ("CENDEC1", float(decc), "[deg] Dec of the CCD centre"),
    ]
    for i in range(4):
        cards += [(f"COR{i + 1}RA1", float(ra[i]), f"[deg] RA of corner {i + 1}"),
                  (f"COR{i + 1}DEC1", float(dec[i]), f"[deg] Dec of corner {i + 1}")]
    return cards


def write_exposure(kf: KredField, expnum: int, root: Path) -> tuple[products.WrittenFile, np.ndarray]:
    """One exposure's MEF (every CCD of the plan) and its CCD truth rows."""
    e = kf.exposure(expnum)
    af = mef_file(kf.plan.field, e.filename)
    rows = np.zeros(len(kf.ccdnums), KRED_CCD_DTYPE)
    out = FitsAppender(root / af.relpath, primary_cards(kf, e))
    try:
        for i, num in enumerate(kf.ccdnums):
            c = kf.render_ccd(expnum, num)
            out.append(HDU(c.image, ccd_cards(e, c), c.detpos))
            _fill_ccd_row(rows[i], e, c)
    except BaseException as exc:
        out.abort(exc)
        raise
    out.close()
    return products.record(root, af, expnum=e.expnum, filter=e.filter, exptime=e.exptime), rows


def _fill_ccd_row(row: np.void, e: KredExposure, c: KredCCD) -> None:
    ra, dec = c.wcs.corners(true=True)
    nx, ny = c.wcs.ccd.nx, c.wcs.ccd.ny
    rac, decc = c.wcs.pixel_to_sky((nx + 1) / 2.0, (ny + 1) / 2.0)
    row["expnum"], row["ccdnum"], row["detpos"], row["filter"], row["exptime"] = (
        e.expnum, c.ccdnum, c.detpos, e.filter, e.exptime)
    row["sky_counts"], row["sky_dcdx"], row["sky_dcdy"], row["sky_sigma"] = c.sky_c, c.sky_dcdx, c.sky_dcdy, c.sky_sigma
    row["read_noise"], row["saturate"], row["offset_counts"] = c.read_noise, c.saturate, e.offset
    row["psf_fwhm"], row["n_stars"], row["ra_cent"], row["dec_cent"] = c.psf_fwhm, c.n_stars, rac, decc
    for i in range(4):
        row[f"rac{i + 1}"], row[f"decc{i + 1}"] = ra[i], dec[i]


def field_config(kf: KredField) -> dict:
    """The field config document (see the module docstring)."""
    p = kf.plan
    naxis = int(round(p.tile_size_deg * 3600.0 / kf.fp.pixel_scale))
    return {
        "format": CONFIG_FORMAT,
        "field": p.field,
        "mef_dir": f"{MEF_ROOT}/{p.field}",
        "center": {"ra": float(p.ra), "dec": float(p.dec)},
        "pixel_scale": float(kf.fp.pixel_scale),
        "filters": list(p.filters),
        "exptimes": [float(t) for t in p.exptimes],
        "tile_size_deg": float(p.tile_size_deg),
        "tiles": [{"name": t.name, "ra": round(t.ra, 7), "dec": round(t.dec, 7), "size_deg": float(t.size_deg),
                   "naxis": naxis} for t in p.tiles],
        "mef_files": [e.filename for e in kf.exposures.values()],
    }


def write_config(kf: KredField, root: Path) -> products.WrittenFile:
    af = config_file(kf.plan.field)
    text = f"# kred field configuration written by skyops.sim ({CONFIG_FORMAT})\n" + yaml.safe_dump(
        field_config(kf), sort_keys=False, default_flow_style=None)
    with atomic_open(root / af.relpath, "w") as f:
        f.write(text)
    return products.record(root, af)


def exposure_table(kf: KredField) -> np.ndarray:
    out = np.zeros(len(kf.exposures), KRED_EXPOSURE_DTYPE)
    for i, e in enumerate(kf.exposures.values()):
        out[i] = (e.expnum, e.filename, e.filter, e.exptime, e.dither, e.mjd_obs, e.telra, e.teldec, e.airmass,
                  e.seeing, e.transparency, e.sky_factor, kf.zeropoint(e.expnum), kf.sky_level(e.expnum), e.offset)
    return out


def overlaps(kf: KredField, ccds: np.ndarray) -> np.ndarray:
    """Pairs of CCD images with the same filter and exposure time whose footprints overlap.

    Footprints are boxes in the tangent plane about the field centre (the CCDs are aligned
    with RA/Dec); the background of each image at the overlap centre is its sky plane there
    plus its exposure's offset.
    """
    p = kf.plan
    xi, eta = gnomonic(np.column_stack([ccds[f"rac{i}"] for i in range(1, 5)]),
                       np.column_stack([ccds[f"decc{i}"] for i in range(1, 5)]), p.ra, p.dec)
    lo_x, hi_x, lo_y, hi_y = xi.min(1), xi.max(1), eta.min(1), eta.max(1)
    rows = []
    for a in range(len(ccds)):
        for b in range(a + 1, len(ccds)):
            ca, cb = ccds[a], ccds[b]
            if ca["expnum"] == cb["expnum"] or ca["filter"] != cb["filter"] or ca["exptime"] != cb["exptime"]:
                continue
            x0, x1 = max(lo_x[a], lo_x[b]), min(hi_x[a], hi_x[b])
            y0, y1 = max(lo_y[a], lo_y[b]), min(hi_y[a], hi_y[b])
            if x1 <= x0 or y1 <= y0:
                continue
            ra, dec = inverse_gnomonic(0.5 * (x0 + x1), 0.5 * (y0 + y1), p.ra, p.dec)
            bkg = [_background_at(kf, c, float(ra), float(dec)) for c in (ca, cb)]
            rows.append((ca["filter"], ca["exptime"], ca["expnum"], ca["ccdnum"], cb["expnum"], cb["ccdnum"],
                         float(ra), float(dec), float((x1 - x0) * (y1 - y0)), bkg[0], bkg[1], bkg[0] - bkg[1]))
    return np.array(rows, dtype=KRED_OVERLAP_DTYPE) if rows else np.zeros(0, KRED_OVERLAP_DTYPE)


def _background_at(kf: KredField, c: np.void, ra: float, dec: float) -> float:
    w = kf.ccd_wcs(int(c["expnum"]), int(c["ccdnum"]))
    x, y = w.sky_to_pixel(ra, dec, true=True)
    xc, yc = (w.ccd.nx + 1) / 2.0, (w.ccd.ny + 1) / 2.0
    return float(c["sky_counts"] + c["sky_dcdx"] * (x - xc) + c["sky_dcdy"] * (y - yc) + c["offset_counts"])


def build_field(kf: KredField, root: str | Path, progress: Progress | None = None) -> KredBuildResult:
    """Every exposure's MEF, the field config and the truth tables of ``kf``."""
    root = Path(root)
    field = kf.plan.field
    files: list[products.WrittenFile] = []
    ccd_rows = []
    expnums = list(kf.exposures)
    for i, expnum in enumerate(expnums):
        wf, rows = write_exposure(kf, expnum, root)
        files.append(wf)
        ccd_rows.append(rows)
        if progress:
            progress(f"kred {field}", i + 1, len(expnums))
    files.append(write_config(kf, root))
    ccds = np.concatenate(ccd_rows)
    exps = exposure_table(kf)
    ovl = overlaps(kf, ccds)
    cards: list[Card] = [("SIMSEED", kf.seed, "skyops.sim survey seed"), ("FIELD", field, "kred field"),
                         ("SIMFMT", "skyops-sim/1", "skyops.sim truth format")]
    for name, table, csv_too in (("exposures.fits", exps, True), ("ccds.fits", ccds, True),
                                 ("overlaps.fits", ovl, True), ("stars.fits", kf.stars, False),
                                 ("emission.fits", kf.emission, True)):
        af = truth_file(field, name)
        paths = write_table(root / af.relpath, table, name.split(".")[0].upper(), cards, csv_too)
        files.append(products.record(root, af, n_rows=len(table)))
        if csv_too:
            files.append(products.record(root, ArchiveFile(af.path, paths[1].name, af.filetype), n_rows=len(table)))
    log.info("kred field %s: %d exposures x %d CCDs, %d overlapping pairs", field, len(expnums), len(kf.ccdnums),
             len(ovl))
    return KredBuildResult(field, files, exps, ccds, ovl)
