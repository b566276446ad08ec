"""Writing simulated products in DESDM's formats.

``red_immask``: one FITS per CCD with SCI (primary HDU, float32 electrons, sky-subtracted),
MSK (int16 BADPIX bits) and WGT (float32 inverse variance, e-^-2), the header WCS in all
three, exposure and amplifier keywords in SCI, as DESDM's finalcut ``immask`` step leaves
them. Raw: one multi-extension FITS per exposure, a header-only primary HDU with exposure
keywords and one uint16 HDU per CCD named by DETPOS (``S29`` ... ``N31``). Master
calibrations: one FITS per CCD (``biascor`` in ADU above overscan, ``norm-dflatcor``
dimensionless, ``bpm`` BADPIX bits), each a single SCI/BPM HDU.

Every writer returns :class:`WrittenFile` records: where the file went, its md5 and size,
and the columns the archive registration needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skyops.fileio import md5sum
from skyops.sim import layout
from skyops.sim.ccd import Detector
from skyops.sim.exposure import CCDProduct
from skyops.sim.exposure_spec import ExposureSpec
from skyops.sim.fitswrite import HDU, Card, FitsAppender, write_fits
from skyops.sim.focalplane import CCD
from skyops.sim.headers import ccd_cards, exposure_cards, gain_cards, raw_saturation_cards, reduced_saturation_cards
from skyops.sim.photometry import band as get_band
from skyops.sim.raw import overscan_width, section_cards
from skyops.sim.wcs import footprint


@dataclass
class WrittenFile:
    """A file written into the archive tree, with what registration needs to know about it."""

    file: layout.ArchiveFile
    md5sum: str
    filesize: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return self.file.filename


def record(root: Path, af: layout.ArchiveFile, **meta: Any) -> WrittenFile:
    p = Path(root) / af.relpath
    return WrittenFile(af, md5sum(p), p.stat().st_size, meta)


def _wcs_cards(prod: CCDProduct, x_offset: float = 0.0) -> list[Card]:
    cards = prod.wcs.cards(true=False)
    if x_offset:
        cards = [(k, v + x_offset if k == "CRPIX1" else v, c) for k, v, c in cards]
    return cards


def red_immask_hdus(spec: ExposureSpec, prod: CCDProduct, filename: str) -> list[HDU]:
    ccd = prod.wcs.ccd
    common = exposure_cards(spec) + ccd_cards(ccd)
    sci = (common + [
        ("FILENAME", filename, "File name"),
        ("PROCTYPE", "Reduced", "Processing type"),
        ("PRODTYPE", "image", "Product type"),
        ("DES_EXT", "IMAGE", "DESDM extension type"),
        ("BUNIT", "electrons", "Pixel units"),
        ("GAIN", 1.0, "[e-/count] SCI is in electrons"),
        ("RDNOISE", round(prod.det.mean_read_noise, 3), "[e-] Mean read noise of the amplifiers"),
    ] + gain_cards(prod.det) + reduced_saturation_cards(prod.saturate) + [
        ("SKYBRITE", round(prod.skybrite, 4), "[e-] Sky level subtracted (CCD centre)"),
        ("SKYSIGMA", round(prod.skysigma, 4), "[e-] Sky noise"),
        ("SKYSUB", "plane", "Sky model subtracted from SCI"),
        ("BADCCD", bool(ccd.bad), "Dead CCD: no usable pixels"),
    ] + _wcs_cards(prod))
    key = [("EXPNUM", spec.expnum, "DECam exposure number"), ("CCDNUM", ccd.ccdnum, "CCD number"),
           ("DETPOS", ccd.detpos, "Detector position"), ("BAND", spec.band, "Short name for filter")]
    msk = key + [("DES_EXT", "MASK", "DESDM extension type"), ("BUNIT", "BADPIX", "DESDM mask bits")] + _wcs_cards(prod)
    wgt = key + [("DES_EXT", "WEIGHT", "DESDM extension type"),
                 ("BUNIT", "1/electrons**2", "Inverse variance")] + _wcs_cards(prod)
    return [HDU(prod.sci, sci, "SCI"), HDU(prod.msk, msk, "MSK"), HDU(prod.wgt, wgt, "WGT")]


def write_red_immask(root: Path, spec: ExposureSpec, prod: CCDProduct) -> WrittenFile:
    af = layout.red_immask(spec, prod.ccdnum)
    write_fits(Path(root) / af.relpath, red_immask_hdus(spec, prod, af.filename))
    return record(root, af, **image_meta(spec, prod))


def image_meta(spec: ExposureSpec, prod: CCDProduct) -> dict[str, Any]:
    """IMAGE-table columns of a red_immask CCD (header WCS and its footprint)."""
    ccd = prod.wcs.ccd
    wcs = {k.lower(): v for k, v, _ in prod.wcs.cards(true=False)
           if k in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")}
    meta: dict[str, Any] = dict(
        expnum=spec.expnum, ccdnum=ccd.ccdnum, band=spec.band, nite=spec.nite, exptime=float(spec.exptime),
        airmass=float(spec.airmass), fwhm=float(prod.truth["psf_fwhm"]) / prod.wcs.pixel_scale,
        skybrite=float(prod.skybrite), skysigma=float(prod.skysigma), gaina=prod.det.gain[0],
        gainb=prod.det.gain[1], naxis1=ccd.nx, naxis2=ccd.ny, bad=ccd.bad,
    )
    meta.update(wcs)
    meta.update(footprint(*prod.wcs.corners(true=False)))
    return meta


def raw_primary_cards(spec: ExposureSpec) -> list[Card]:
    return exposure_cards(spec) + [
        ("FILENAME", layout.raw_filename(spec.expnum), "File name"),
        ("PROCTYPE", "RAW", "Processing type"),
        ("PRODTYPE", "image", "Product type"),
        ("NEXTEND", 62, "Number of extensions"),
    ]


def raw_hdu(spec: ExposureSpec, prod: CCDProduct) -> HDU:
    ccd = prod.wcs.ccd
    ov = overscan_width(ccd.nx)
    cards = ccd_cards(ccd) + [
        ("EXPNUM", spec.expnum, "DECam exposure number"),
        ("BAND", spec.band, "Short name for filter"),
        ("FILTER", get_band(spec.band).filter, "Unique filter identifier"),
        ("EXPTIME", float(spec.exptime), "[s] Exposure duration"),
        ("MJD-OBS", round(spec.mjd_obs, 8), "MJD of observation start"),
        ("BUNIT", "ADU", "Pixel units"),
    ] + section_cards(ccd.nx, ccd.ny) + gain_cards(prod.det) + raw_saturation_cards(prod.det) + _wcs_cards(
        prod, x_offset=ov)
    return HDU(prod.raw, cards, ccd.detpos)


class RawWriter:
    """Writes a raw exposure CCD by CCD into its MEF; ``close`` returns the file record."""

    def __init__(self, root: Path, spec: ExposureSpec) -> None:
        self.root, self.spec = Path(root), spec
        self.file = layout.raw(spec)
        self._out = FitsAppender(self.root / self.file.relpath, raw_primary_cards(spec))

    def add(self, hdu: HDU) -> None:
        """Append one CCD's raw HDU (from :func:`raw_hdu`); CCDs go in the order added."""
        self._out.append(hdu)

    def close(self) -> WrittenFile:
        self._out.close()
        return record(self.root, self.file, expnum=self.spec.expnum, nite=self.spec.nite, band=self.spec.band)

    def abort(self, exc: BaseException) -> None:
        self._out.abort(exc)


def calibration_cards(cal: layout.CalibRun, ccd: CCD, det: Detector, obstype: str, filename: str) -> list[Card]:
    return [
        ("INSTRUME", "DECam", "Instrument"),
        ("NITE", cal.nite, "Night the calibration serves"),
        ("OBSTYPE", obstype, "Calibration type"),
        ("FILENAME", filename, "File name"),
    ] + ccd_cards(ccd) + gain_cards(det)


def write_biascor(root: Path, cal: layout.CalibRun, ccd: CCD, det: Detector, bias: np.ndarray) -> WrittenFile:
    af = layout.biascor(cal, ccd.ccdnum)
    cards = calibration_cards(cal, ccd, det, "zero", af.filename) + [
        ("PRODTYPE", "biascor", "Master bias"), ("BUNIT", "ADU", "Above the overscan level")]
    write_fits(Path(root) / af.relpath, [HDU(bias.astype(np.float32), cards, "SCI")])
    return record(root, af, ccdnum=ccd.ccdnum, nite=cal.nite)


def write_flatcor(root: Path, cal: layout.CalibRun, band: str, ccd: CCD, det: Detector,
                  flat: np.ndarray) -> WrittenFile:
    af = layout.flatcor(cal, band, ccd.ccdnum)
    cards = calibration_cards(cal, ccd, det, "dome flat", af.filename) + [
        ("BAND", band, "Short name for filter"), ("FILTER", get_band(band).filter, "Unique filter identifier"),
        ("PRODTYPE", "norm-dflatcor", "Normalised dome flat"), ("BUNIT", "", "Dimensionless response")]
    write_fits(Path(root) / af.relpath, [HDU(flat.astype(np.float32), cards, "SCI")])
    return record(root, af, ccdnum=ccd.ccdnum, nite=cal.nite, band=band)


def write_bpm(root: Path, cal: layout.CalibRun, ccd: CCD, det: Detector, bpm: np.ndarray) -> WrittenFile:
    af = layout.bpm(cal, ccd.ccdnum)
    cards = calibration_cards(cal, ccd, det, "bpm", af.filename) + [
        ("PRODTYPE", "bpm", "Bad pixel map"), ("BUNIT", "BADPIX", "DESDM mask bits")]
    write_fits(Path(root) / af.relpath, [HDU(bpm.astype(np.int16), cards, "BPM")])
    return record(root, af, ccdnum=ccd.ccdnum, nite=cal.nite)
