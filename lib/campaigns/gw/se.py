"""``gw.se_ccd``: single-epoch processing of one DECam CCD, as ``SE_job_mod.sh -c CCD`` does it.

raw CCD -> detrended electrons -> sky-subtracted SCI + MSK + WGT -> SExtractor pass 1 (VIGNETs)
-> PSFEx model -> astrometric refinement against GAIA -> red_immask with the refined WCS ->
SExtractor pass 2 with the PSF (MAG_PSF, SPREAD_MODEL) -> final catalog.

Outputs (in the workdir, named DESDM-style ``D<expnum:08d>_<band>_c<ccd:02d>[_<run>]_<kind>``):

``red_immask``  ``..._immasked.fits``: SCI (primary HDU, float32 e-, sky-subtracted), MSK (int16
                DESDM BADPIX bits), WGT (float32 inverse variance, e-^-2, 0 on bad pixels); every
                HDU carries the refined TAN WCS. SCI also has the exposure keywords, GAIN = 1,
                RDNOISE, SATURATE (e-, sky-subtracted), SKYBRITE/SKYSIGMA, FWHM (PSF, pixels),
                the astrometric fit (ASTRRMS1/2 deg, ASTRNSTR, ASTRDRA/ASTRDDEC arcsec,
                ASTRMODL, HCRPIX1/2 = header CRPIX before refinement) and what was done
                (DESOSCN, DESBIAS, DESFLAT, DESBPM, DESSKY, BIASFIL, FLATFIL, BPMFIL).
``cat_finalcut`` ``..._fullcat.fits``: FITS_LDAC (LDAC_IMHEAD = the SCI header, LDAC_OBJECTS =
                the ``gw_se_final.param`` columns; ALPHA/DELTA through the refined WCS).
``psfex_model`` ``..._psfexcat.psf``: the PSFEx model (PSF_MASK basis, polynomial in
                XWIN/YWIN_IMAGE), fitted on pass-1 VIGNETs.

The step's scratch (pass-1 catalog, PSFEx work files) lives in a temporary folder of the
workdir and is removed however the step ends.
"""
from __future__ import annotations

import resource
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import fitsio
import numpy as np

from skyops.campaigns.gw import astrometry as astrom
from skyops.campaigns.gw.detrend import (BAD_BITS, Detrended, RawCCD, amplifiers, detrend, read_calibration,
                                         read_raw_ccd, trimmed_x_offset, weight_map)
from skyops.campaigns.gw.psf import PSFExModel
from skyops.campaigns.gw.sky import SkyModel, estimate_sky
from skyops.errors import InputError, ProcessingError, StepParameterError
from skyops.imaging.astromatic import psfex, read_config, read_ldac, sextractor
from skyops.sim.focalplane import BAD_CCDS, DETPOS
from skyops.steps.context import StepContext
from skyops.steps.registry import step

DECAM_BANDS = ("u", "g", "r", "i", "z", "Y")
OVERSCAN_MODES = ("row", "median")
#: Header keywords of the raw file that do not describe the reduced image.
_DROP = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "BZERO",
         "BSCALE", "EXTNAME", "NEXTEND", "COMMENT", "HISTORY", "CHECKSUM", "DATASUM", "DATASEC", "TRIMSEC",
         "DATASECA", "DATASECB", "BIASSECA", "BIASSECB", "TRIMSECA", "TRIMSECB", "LTV1", "LTV2", "LTM1_1",
         "LTM2_2", "BUNIT", "FILENAME", "PROCTYPE", "PRODTYPE", "SATURATA", "SATURATB", "SATURATE", "WCSAXES",
         "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2",
         "CD2_1", "CD2_2", "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2", "EQUINOX", "RADESYS"}
#: SExtractor FLAGS: 1 neighbours, 2 blended -- fine for astrometry; 4 saturated and above are not.
ASTROM_FLAGS_OK = 3
PSFEX_CONFIG = {
    "BASIS_TYPE": "PIXEL_AUTO", "PSF_SIZE": "25,25", "PSF_SAMPLING": 1.0, "PSF_ACCURACY": 0.01,
    "CENTER_KEYS": "XWIN_IMAGE,YWIN_IMAGE", "PSFVAR_KEYS": "XWIN_IMAGE,YWIN_IMAGE", "PSFVAR_GROUPS": "1,1",
    "PHOTFLUX_KEY": "FLUX_APER(1)", "PHOTFLUXERR_KEY": "FLUXERR_APER(1)",
    "SAMPLE_AUTOSELECT": "Y", "SAMPLEVAR_TYPE": "SEEING", "SAMPLE_FWHMRANGE": "1.5,15.0",
    "SAMPLE_VARIABILITY": 0.2, "SAMPLE_MINSN": 20, "SAMPLE_MAXELLIP": 0.3, "SAMPLE_FLAGMASK": "0x00fc",
    "SAMPLE_IMAFLAGMASK": f"0x{int(BAD_BITS) & 0xff:02x}",  # PSFEx takes 8 bits
}


class StageClock:
    """Wall and CPU seconds (this process plus the tools it ran) per pipeline stage."""

    def __init__(self) -> None:
        self.stages: dict[str, list[float]] = {}

    @staticmethod
    def _cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        w0, c0 = time.perf_counter(), self._cpu()
        try:
            yield
        finally:
            w, c = self.stages.setdefault(name, [0.0, 0.0])
            self.stages[name] = [round(w + time.perf_counter() - w0, 4), round(c + self._cpu() - c0, 4)]


def check_ccd(ccd: int) -> None:
    """StepParameterError unless ``ccd`` is a usable DECam science CCD."""
    if ccd not in DETPOS:
        raise StepParameterError(f"step 'gw.se_ccd': parameter 'ccd': {ccd} is not a DECam science CCD; "
                                 "expected 1..62 (CCDs 2 and 61 are unusable)")
    if ccd in BAD_CCDS:
        raise StepParameterError(f"step 'gw.se_ccd': parameter 'ccd': CCD {ccd} ({DETPOS[ccd]}) is unusable on "
                                 "DECam and is not processed; nightly processing runs CCDs 1, 3-60 and 62")


def staged_input(ctx: StepContext, path: str, filetype: str, param: str) -> Path:
    """Declare an input file (provenance) after checking it is there; InputError naming the parameter if not."""
    p = ctx.path(path)
    if not p.is_file():
        raise InputError(f"step '{ctx.step}': parameter '{param}': {p} does not exist or is not a file; stage it "
                         "into the workspace first (or fix the path)")
    return ctx.use(p, filetype)


def product_stem(expnum: int, band: str, ccd: int, run: str = "") -> str:
    """DESDM-style file-name stem ``D00668439_i_c28[_r4p05]``."""
    return f"D{expnum:08d}_{band}_c{ccd:02d}" + (f"_{run}" if run else "")


def _records(h: fitsio.FITSHDR) -> list[dict]:
    return [r for r in h.records() if r.get("name") and r["name"].upper() not in _DROP]


def _sci_cards(raw, extra: list[tuple[str, object, str]]) -> list[dict]:
    """Exposure keywords (raw primary), the CCD's own keywords, then the processing cards."""
    out: dict[str, dict] = {}
    for rec in _records(raw.primary) + _records(raw.header):
        out.setdefault(rec["name"].upper(), rec)
    for name, value, comment in extra:
        out[name] = {"name": name, "value": value, "comment": comment}
    return list(out.values())


def _card_list(cards: list[tuple[str, object, str]]) -> list[dict]:
    return [{"name": k, "value": v, "comment": c} for k, v, c in cards]


def _write_immask(path: Path, sci: np.ndarray, msk: np.ndarray, wgt: np.ndarray, sci_cards: list[dict],
                  key_cards: list[tuple[str, object, str]], wcs_cards: list[tuple[str, object, str]]) -> None:
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(sci, header=sci_cards, extname="SCI")
        f.write(msk, header=_card_list(key_cards + [("DES_EXT", "MASK", "DESDM extension type"),
                                                    ("BUNIT", "BADPIX", "DESDM mask bits")] + wcs_cards),
                extname="MSK")
        f.write(wgt, header=_card_list(key_cards + [("DES_EXT", "WEIGHT", "DESDM extension type"),
                                                    ("BUNIT", "1/electrons**2", "Inverse variance")] + wcs_cards),
                extname="WGT")


def _update_keys(path: Path, cards: list[tuple[str, object, str]], hdus: tuple[int, ...]) -> None:
    """Overwrite existing keywords in place (they were written as placeholders: no header growth)."""
    with fitsio.FITS(str(path), "rw") as f:
        for i in hdus:
            h = f[i].read_header()
            for k, v, c in cards:
                if i == 0 or k in h:
                    f[i].write_key(k, v, comment=c)


def _astrometry_sample(cat: np.ndarray, min_snr: float) -> np.ndarray:
    return ((cat["FLAGS"] <= ASTROM_FLAGS_OK) & (cat["IMAFLAGS_ISO"] == 0) & (cat["SNR_WIN"] >= min_snr)
            & np.isfinite(cat["XWIN_IMAGE"]) & np.isfinite(cat["YWIN_IMAGE"]))


def _psf_degree(n_candidates: int, wanted: int) -> int:
    """The PSF variation degree the star count supports: about 5 stars per polynomial term."""
    for d in range(wanted, 0, -1):
        if n_candidates >= 5 * (d + 1) * (d + 2) // 2:
            return d
    return 0


@dataclass
class ReducedCCD:
    """One CCD after detrending and sky subtraction, ready to be written as red_immask."""

    expnum: int
    band: str
    ccd: int
    sci: np.ndarray  # float32 e-, sky-subtracted
    msk: np.ndarray  # int16 BADPIX
    wgt: np.ndarray  # float32 e-^-2
    det: Detrended  # (its image moved to ``sci``)
    sky: SkyModel
    raw: RawCCD
    tan: tuple[tuple[float, float], tuple[float, float], np.ndarray]  # header CRVAL, CRPIX (trimmed), CD

    @property
    def shape(self) -> tuple[int, int]:
        return self.msk.shape  # type: ignore[return-value]  # (sci and wgt are released once written)

    @property
    def pixscale(self) -> float:
        """arcsec / pixel of the header WCS."""
        return float(np.sqrt(abs(np.linalg.det(self.tan[2]))) * 3600.0)

    @property
    def saturate(self) -> float:
        """e- (sky-subtracted) from which a pixel may be saturated: the lower amplifier's level."""
        return min(self.det.saturate_e) - float(self.sky.background.max())

    @property
    def mjd(self) -> float | None:
        v = self.raw.key("MJD-OBS")
        return float(v) if v is not None else None


def _check_params(ccd: int, band: str | None, overscan: str, sky_box: int, psf_degree: int, run: str,
                  paths: dict[str, str | None], workdir: Path) -> None:
    check_ccd(ccd)
    if overscan not in OVERSCAN_MODES:
        raise StepParameterError(f"step 'gw.se_ccd': parameter 'overscan': {overscan!r} is not an overscan mode; "
                                 f"expected one of {', '.join(OVERSCAN_MODES)}")
    if band is not None and band not in DECAM_BANDS:
        raise StepParameterError(f"step 'gw.se_ccd': parameter 'band': {band!r} is not a DECam band; expected "
                                 f"one of {', '.join(DECAM_BANDS)}")
    if sky_box < 16:
        raise StepParameterError(f"step 'gw.se_ccd': parameter 'sky_box': {sky_box} pixels is too small; "
                                 "expected at least 16 (DESDM uses 256)")
    if not 0 <= psf_degree <= 4:
        raise StepParameterError(f"step 'gw.se_ccd': parameter 'psf_degree': {psf_degree} is out of range; "
                                 "expected 0..4")
    if run and not run.replace("_", "").replace("-", "").isalnum():
        raise StepParameterError(f"step 'gw.se_ccd': parameter 'run': {run!r} must be letters, digits, '-' or "
                                 "'_' (it goes into file names), e.g. 'r4p5'")
    # SExtractor splits file arguments at commas (dual-image mode): such a path cannot be read
    for name, value in list(paths.items()) + [("workdir", str(workdir))]:
        if value and "," in value:
            what = f"parameter '{name}'" if name != "workdir" else "the workdir"
            raise StepParameterError(f"step 'gw.se_ccd': {what}: {value!r} contains ',', which SExtractor reads as "
                                     "a list separator; stage the file (or run the step) under a path without commas")


def reduce_ccd(ctx: StepContext, *, raw: str, ccd: int, bias: str, flat: str, bpm: str | None,
               band: str | None, expnum: int | None, overscan: str, sky_box: int,
               clock: StageClock | None = None) -> ReducedCCD:
    """Read the raw CCD and its calibrations, detrend, estimate and subtract the sky, make the weight."""
    clock = clock or StageClock()
    with clock("overscan_bias_flat"):
        rawccd, det, band, expnum = _detrend_raw(ctx, raw=raw, ccd=ccd, bias=bias, flat=flat, bpm=bpm, band=band,
                                                 expnum=expnum, overscan=overscan)
    with clock("sky"):
        bad = (det.mask & np.int16(int(BAD_BITS))) != 0
        sky = estimate_sky(det.image, bad, box=sky_box)
        wgt = weight_map(det.flat, sky.background, det.read_noise, det.mask)
        sci, det.image = det.image, None
        sci -= sky.background
    crval, crpix, cd = astrom.tan_parameters(rawccd.header)
    tan = (crval, (crpix[0] + trimmed_x_offset(rawccd), crpix[1]), cd)
    return ReducedCCD(expnum, band, ccd, sci, det.mask, wgt, det, sky, rawccd, tan)


def _detrend_raw(ctx: StepContext, *, raw: str, ccd: int, bias: str, flat: str, bpm: str | None, band: str | None,
                 expnum: int | None, overscan: str) -> tuple[RawCCD, Detrended, str, int]:
    """The raw CCD, detrended; with the band and exposure number checked against its header."""
    rawccd = read_raw_ccd(staged_input(ctx, raw, "raw", "raw"), ccd)
    hdr_band = str(rawccd.key("BAND", "") or "").strip()
    hdr_exp = rawccd.key("EXPNUM")
    if band and hdr_band and band != hdr_band:
        raise InputError(f"parameter 'band' is {band!r} but {raw} was taken in {hdr_band!r}; omit 'band' or pass "
                         "the raw exposure's band")
    band = band or hdr_band
    if not band:
        raise InputError(f"{raw}: no BAND keyword; pass the band (parameter 'band')")
    if expnum is not None and hdr_exp is not None and int(hdr_exp) != expnum:
        raise InputError(f"parameter 'expnum' is {expnum} but {raw} is exposure {hdr_exp}; pass the matching raw "
                         "exposure")
    if expnum is None and hdr_exp is None:
        raise InputError(f"{raw}: no EXPNUM keyword; pass the exposure number (parameter 'expnum')")
    amps, _ = amplifiers(rawccd)
    shape = (amps[0].data[0].stop - amps[0].data[0].start, max(a.columns.stop for a in amps))
    bias_img = read_calibration(staged_input(ctx, bias, "cal_biascor", "bias"), "bias", shape, ccd)[0]
    flat_img, flat_hdr = read_calibration(staged_input(ctx, flat, "cal_norm_dflatcor", "flat"), "flat", shape, ccd)
    if "BAND" in flat_hdr and str(flat_hdr["BAND"]).strip() != band:
        raise InputError(f"parameter 'flat': {flat} is a {flat_hdr['BAND']}-band flat but the exposure is "
                         f"{band}-band; pass the night's {band}-band dome flat")
    bpm_img = read_calibration(staged_input(ctx, bpm, "cal_bpm", "bpm"), "bpm", shape, ccd)[0] if bpm else None
    det = detrend(rawccd, bias_img, flat_img, bpm_img, overscan)
    return rawccd, det, band, int(expnum if expnum is not None else hdr_exp)


def immask_headers(red: ReducedCCD, filename: str, *, files: dict[str, str | None], overscan: str,
                   template: bool) -> tuple[list[dict], list[tuple[str, object, str]], list[tuple[str, object, str]]]:
    """SCI header records, the MSK/WGT identity cards and the (header, unrefined) WCS cards.

    Keywords the astrometry and PSF stages fill in later are written now with placeholder values,
    so updating them never grows a header (no rewrite of the pixels).
    """
    det, sky = red.det, red.sky
    top = float(sky.background.max())
    wcs_cards = astrom.AstromSolution.unrefined(*red.tan).cards() + [
        ("EQUINOX", 2000.0, "Equinox of the coordinates"), ("RADESYS", "ICRS", "Astrometric system")]
    sci = _sci_cards(red.raw, [
        ("FILENAME", filename, "File name"),
        ("PROCTYPE", "Reduced", "Processing type"),
        ("PRODTYPE", "image", "Product type"),
        ("DES_EXT", "IMAGE", "DESDM extension type"),
        ("BUNIT", "electrons", "Pixel units"),
        ("GAIN", 1.0, "[e-/count] SCI is in electrons"),
        ("RDNOISE", round(float(np.mean(det.read_noise)), 3), "[e-] Mean read noise of the amplifiers"),
        ("SATURATA", round(det.saturate_e[0] - top, 1), "[e-] Saturation of amplifier A (sky-subtracted)"),
        ("SATURATB", round(det.saturate_e[1] - top, 1), "[e-] Saturation of amplifier B (sky-subtracted)"),
        ("SATURATE", round(red.saturate, 1), "[e-] Saturation level (sky-subtracted)"),
        ("SKYBRITE", round(sky.center, 4), "[e-] Sky level subtracted (CCD centre)"),
        ("SKYSIGMA", round(sky.sigma, 4), "[e-] Sky noise"),
        ("SKYSUB", "sep", "Sky model subtracted from SCI (SEP mesh, objects masked)"),
        ("OVSCNA", round(det.overscan[0], 3), "[ADU] Overscan level of amplifier A"),
        ("OVSCNB", round(det.overscan[1], 3), "[ADU] Overscan level of amplifier B"),
        ("DESOSCN", f"overscan {overscan}", "Overscan corrected (gw.se_ccd)"),
        ("DESBIAS", "yes", "Bias subtracted"),
        ("DESFLAT", "yes", "Flat-fielded; gain applied"),
        ("DESBPM", "yes" if files.get("bpm") else "no", "Bad pixel mask applied"),
        ("DESSKY", "yes", "Sky subtracted"),
        ("BIASFIL", Path(files["bias"] or "").name[:68], "Master bias"),
        ("FLATFIL", Path(files["flat"] or "").name[:68], "Master flat"),
        ("BPMFIL", Path(files.get("bpm") or "").name[:68], "Bad pixel map"),
        ("TEMPLATE", bool(template), "Processed as a template (no verification)"),
        ("WCSREFCA", Path(files["refcat"] or "").name[:68], "Astrometric reference catalog"),
        ("HCRPIX1", red.tan[1][0], "CRPIX1 of the header WCS before refinement"),
        ("HCRPIX2", red.tan[1][1], "CRPIX2 of the header WCS before refinement"),
    ] + _late_cards(None, 0.0) + wcs_cards)
    keys = [("EXPNUM", red.expnum, "DECam exposure number"), ("CCDNUM", red.ccd, "CCD number"),
            ("DETPOS", DETPOS[red.ccd], "Detector position"), ("BAND", red.band, "Short name for filter")]
    return sci, keys, wcs_cards


def _late_cards(sol: astrom.AstromSolution | None, fwhm_pix: float) -> list[tuple[str, object, str]]:
    """The keywords known only after PSFEx and the astrometric fit (placeholders when ``sol`` is None)."""
    rms = sol.rms_axis_arcsec if sol is not None else (0.0, 0.0)
    return [
        ("FWHM", round(fwhm_pix, 4), "[pixel] PSF FWHM at the CCD centre (PSFEx)"),
        ("ASTRMODL", sol.model if sol else "header", "Astrometric correction model (gw.astrometry)"),
        ("ASTRNSTR", sol.nmatch if sol else 0, "Reference stars in the astrometric fit"),
        ("ASTRRMS1", rms[0] / 3600.0, "[deg] Astrometric fit rms along axis 1"),
        ("ASTRRMS2", rms[1] / 3600.0, "[deg] Astrometric fit rms along axis 2"),
        ("ASTRDRA", round(sol.dra_arcsec, 5) if sol else 0.0, "[arcsec] Header minus refined RA*cos(Dec), centre"),
        ("ASTRDDEC", round(sol.ddec_arcsec, 5) if sol else 0.0, "[arcsec] Header minus refined Dec, CCD centre"),
    ]


def psf_model(ctx: StepContext, image: Path, out_name: str, scratch: Path, *, saturate: float,
              wanted_degree: int, clock: StageClock | None = None) -> tuple[np.ndarray, PSFExModel, int, float]:
    """SExtractor pass 1 (bright sources, VIGNETs) and PSFEx: the pass-1 catalog, the model, its
    polynomial degree and its FWHM (pixels) at the CCD centre."""
    clock = clock or StageClock()
    with clock("sextractor_pass1"):
        pass1 = scratch / "pass1.ldac"
        cfg = read_config("gw_se_psfex") | {"SATUR_LEVEL": saturate, "SEEING_FWHM": 1.0,
                                            "FLAG_IMAGE": f"{image}[1]", "CHECKIMAGE_TYPE": "NONE"}
        sextractor(f"{image}[0]", pass1, params="gw_se_psfex", workdir=scratch, config=cfg, weight=f"{image}[2]",
                   filter_fwhm=3.0, ctx=ctx)
        cat = read_ldac(pass1)
    with clock("psfex"):
        n_cand = int(((cat["SNR_WIN"] > 20) & (cat["FLAGS"] <= ASTROM_FLAGS_OK)).sum())
        degree = _psf_degree(n_cand, wanted_degree)
        with ctx.output(out_name, filetype="psfex_model") as tmp:
            psfex(pass1, tmp, workdir=scratch, config=PSFEX_CONFIG | {"PSFVAR_DEGREES": degree}, ctx=ctx)
        model = PSFExModel.read(ctx.path(out_name))
        with fitsio.FITS(str(image)) as f:
            ny, nx = f[0].get_dims()
        fwhm = model.fwhm((nx + 1) / 2.0, (ny + 1) / 2.0)
    return cat, model, degree, fwhm


def refine_astrometry(ctx: StepContext, red: ReducedCCD, cat: np.ndarray, refcat: str, *, search_radius: float,
                      match_radius: float, min_stars: int) -> astrom.AstromSolution:
    """Match pass-1 detections to the reference catalog through the header WCS and refine it."""
    sample = cat[_astrometry_sample(cat, 10.0)]
    header_wcs = astrom.AstromSolution.unrefined(*red.tan)
    epoch = astrom.mjd_to_epoch(red.mjd) if red.mjd is not None else None
    ref = astrom.read_refcat(staged_input(ctx, refcat, "cal_refcat", "refcat"), header_wcs.wcs(red.shape), red.shape, epoch=epoch)
    err = np.sqrt(sample["ERRAWIN_IMAGE"] * sample["ERRBWIN_IMAGE"]) * red.pixscale
    ref_err = (np.hypot(ref["ra_error"], ref["dec_error"]) / np.sqrt(2.0) / 1000.0
               if "ra_error" in ref.dtype.names else None)
    return astrom.refine_wcs(sample["XWIN_IMAGE"], sample["YWIN_IMAGE"], {k: v for k, v, _ in header_wcs.cards()},
                             ref["ra"], ref["dec"], red.shape, err=err, ref_err=ref_err,
                             search_radius=search_radius, match_radius=match_radius, min_stars=min_stars)


def final_catalog(ctx: StepContext, image: Path, psf: Path, out_name: str, scratch: Path, *, saturate: float,
                  fwhm_pix: float, pixscale: float, detect_thresh: float) -> int:
    """SExtractor pass 2 on the written red_immask with the PSF model: the cat_finalcut; its row count."""
    cfg = read_config("gw_se_final") | {
        "DETECT_THRESH": detect_thresh, "SATUR_LEVEL": saturate, "SEEING_FWHM": fwhm_pix * pixscale,
        "FLAG_IMAGE": f"{image}[1]", "PSF_NAME": psf, "CHECKIMAGE_TYPE": "NONE"}
    with ctx.output(out_name, filetype="cat_finalcut") as tmp:
        sextractor(f"{image}[0]", tmp, params="gw_se_final", workdir=scratch, config=cfg, weight=f"{image}[2]",
                   filter_fwhm=fwhm_pix, ctx=ctx)
        with fitsio.FITS(str(tmp)) as f:
            return int(f["LDAC_OBJECTS"].get_nrows())


def verify(sol: astrom.AstromSolution, fwhm_pix: float, n_det: int, *, max_astrom_rms: float,
           min_astrom_stars: int) -> list[str]:
    """What is wrong with the products (SE_job_mod.sh's final checks); empty when all is well."""
    problems = []
    if not sol.rms_arcsec <= max_astrom_rms:
        problems.append(f"astrometric rms {sol.rms_arcsec:.3f} arcsec > max_astrom_rms {max_astrom_rms}")
    if sol.nmatch < min_astrom_stars:
        problems.append(f"{sol.nmatch} astrometric stars < min_astrom_stars {min_astrom_stars}")
    if not 1.0 < fwhm_pix < 20.0:
        problems.append(f"PSF FWHM {fwhm_pix:.2f} pixels is implausible")
    if n_det == 0:
        problems.append("the final catalog is empty")
    return problems


@step("gw.se_ccd", resources={"cpu": 1, "memory_mb": 3072, "scratch_mb": 1024},
      outputs=["red_immask", "cat_finalcut", "psfex_model"])
def se_ccd(ctx: StepContext, *, raw: str, ccd: int, bias: str, flat: str, refcat: str, bpm: str | None = None,
           band: str | None = None, expnum: int | None = None, template: bool = False, run: str = "",
           overscan: str = "row", sky_box: int = 256, detect_thresh: float = 1.5, psf_degree: int = 2,
           search_radius: float = 5.0, match_radius: float = 1.0, min_astrom_stars: int = 5,
           max_astrom_rms: float = 0.3) -> dict:
    """Detrend, sky-subtract, detect, model the PSF and refine the WCS of one DECam CCD (SE_job_mod.sh -c).

    ``raw`` is the raw exposure (its HDU with CCDNUM = ``ccd`` is used), ``bias``/``flat``/``bpm``
    the night's master calibrations of that CCD, ``refcat`` a GAIA-like catalog covering it.
    ``band``/``expnum`` default to the raw header's and must agree with it when given.
    ``template`` skips the final verification (as ``SE_job_mod.sh -t``). ``run`` (e.g. ``r4p5``)
    goes into the output names.
    """
    files = {"raw": raw, "bias": bias, "flat": flat, "bpm": bpm, "refcat": refcat}
    _check_params(ccd, band, overscan, sky_box, psf_degree, run, files, ctx.workdir)
    clock = StageClock()
    red = reduce_ccd(ctx, raw=raw, ccd=ccd, bias=bias, flat=flat, bpm=bpm, band=band, expnum=expnum,
                     overscan=overscan, sky_box=sky_box, clock=clock)
    ctx.log.info("CCD %d (%s) of exposure %d: %dx%d, overscan %.1f/%.1f ADU, %d saturated pixels, sky %.1f e- "
                 "(sigma %.2f)", ccd, DETPOS[ccd], red.expnum, red.shape[1], red.shape[0], *red.det.overscan,
                 red.det.n_saturated, red.sky.center, red.sky.sigma)
    stem = product_stem(red.expnum, red.band, ccd, run)
    names = {k: f"{stem}_{k}" for k in ("immasked.fits", "fullcat.fits", "psfexcat.psf")}
    with tempfile.TemporaryDirectory(dir=ctx.workdir, prefix=".se_scratch_") as scratch_name:
        scratch = Path(scratch_name)
        with ctx.output(names["immasked.fits"], filetype="red_immask") as img_tmp:
            with clock("write"):
                sci_cards, key_cards, wcs_cards = immask_headers(red, names["immasked.fits"], files=files,
                                                                 overscan=overscan, template=template)
                _write_immask(img_tmp, red.sci, red.msk, red.wgt, sci_cards, key_cards, wcs_cards)
                red.sci = red.wgt = None  # type: ignore[assignment]  # free ~100 MB before the tools run
            cat1, model, degree, fwhm_pix = psf_model(ctx, img_tmp, names["psfexcat.psf"], scratch,
                                                      saturate=red.saturate, wanted_degree=psf_degree, clock=clock)
            ctx.log.info("pass 1: %d detections; PSFEx: %d stars accepted (degree %d), chi2 %.2f, FWHM %.2f pixels",
                         len(cat1), model.n_accepted, degree, model.chi2, fwhm_pix)
            with clock("astrometry"):
                sol = refine_astrometry(ctx, red, cat1, refcat, search_radius=search_radius,
                                        match_radius=match_radius, min_stars=min_astrom_stars)
            with clock("write"):
                _update_keys(img_tmp, sol.cards() + _late_cards(sol, fwhm_pix), hdus=(0, 1, 2))
        with clock("sextractor_pass2"):
            n_det = final_catalog(ctx, ctx.path(names["immasked.fits"]), ctx.path(names["psfexcat.psf"]),
                                  names["fullcat.fits"], scratch, saturate=red.saturate, fwhm_pix=fwhm_pix,
                                  pixscale=red.pixscale, detect_thresh=detect_thresh)
    problems = verify(sol, fwhm_pix, n_det, max_astrom_rms=max_astrom_rms, min_astrom_stars=min_astrom_stars)
    metrics = {
        "expnum": red.expnum, "ccdnum": ccd, "band": red.band, "template": template,
        "overscan_a_adu": round(red.det.overscan[0], 3), "overscan_b_adu": round(red.det.overscan[1], 3),
        "n_saturated_pix": red.det.n_saturated,
        "bad_pixel_fraction": round(float(((red.msk & np.int16(int(BAD_BITS))) != 0).mean()), 6),
        "sky_level": round(red.sky.level, 3), "sky_center": round(red.sky.center, 3),
        "sky_sigma": round(red.sky.sigma, 4), "n_detections": n_det, "n_detections_pass1": int(len(cat1)),
        "psf_fwhm_pix": round(fwhm_pix, 4), "psf_fwhm_arcsec": round(fwhm_pix * red.pixscale, 4),
        "psf_stars": model.n_accepted, "psf_chi2": round(model.chi2, 4), "psf_degree": degree,
        "astrom_model": sol.model, "astrom_dra_arcsec": round(sol.dra_arcsec, 5),
        "astrom_ddec_arcsec": round(sol.ddec_arcsec, 5), "astrom_rms_arcsec": round(sol.rms_arcsec, 5),
        "astrom_nstars": sol.nmatch, "astrom_nmatched": sol.ncandidates,
        "astrom_rotation_deg": round(sol.rotation_deg, 7), "astrom_scale": round(sol.scale, 8),
        "verified": not problems, "stage_seconds": clock.stages,
    }
    for k, v in metrics.items():
        ctx.metric(k, v)
    if problems and not template:
        raise ProcessingError(f"gw.se_ccd verification failed for exposure {red.expnum} CCD {ccd}: "
                              + "; ".join(problems) + " (the outputs are written; check the inputs, or pass "
                              "template=true to skip verification)")
    for p in problems:
        ctx.log.warning("verification skipped (template): %s", p)
    return metrics
