"""``balrog.coadd`` (blocks 2 and 16): per-band coadds, the detection image and dual-mode catalogs.

For each band (``balrog.coadd_band``) the srclist's single-epoch images are background-subtracted
(their red_bkg), their bad pixels (``bad_mask_bits`` of MSK) given weight 0, and handed to SWarp
with ``FLXSCALE = 10**(0.4 (magzp_ref - magzp))`` in each header, so the coadd is at the common
zeropoint ``magzp_ref`` (30). SWarp resamples them (LANCZOS3) onto the tile's own grid (the
COADDTILE_GEOM CRVAL, CRPIX, CD and NAXIS: checked after the run) and combines them WEIGHTED;
the result is assembled into ``coadd/<tile>_<band>.fits``: SCI (primary), MSK (1 where no image
contributes), WGT (inverse variance at magzp_ref).

``balrog.detect`` then combines the ``det_bands`` (r, i, z) coadds into a CHI-MEAN detection image
(SWarp ``COMBINE_TYPE CHI-MEAN``, ``coadd/<tile>_det.fits``) and runs SExtractor in dual mode for
every band -- detection on the det image, measurement on the band's coadd -- so all bands share
one NUMBER per object: catalog ``cat/<tile>_<band>_cat.fits`` (FITS_LDAC) and segmentation map
``seg/<tile>_<band>_segmap.fits``. It also fits a PSFEx model to each band's coadd
(``psf/<tile>_<band>_psfcat.psf``): the PSF of cutout 0 in the MEDS files.

``balrog.coadd`` runs both for every band of the tile; the DAG maps ``balrog.coadd_band`` over
bands instead (BalrogBase.py used a Pool there). With ``realization=r`` the same is done on the
realization's injected images under ``balrog_images/r/``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import fitsio
import numpy as np

from skyops.campaigns.balrog.config import MedsConf, load_medsconf
from skyops.campaigns.balrog.layout import TileLayout
from skyops.campaigns.balrog.params import parse_bands
from skyops.campaigns.balrog.prep import SourceImage, read_srclist
from skyops.errors import InputError, ProcessingError
from skyops.imaging import astromatic
from skyops.steps.context import StepContext
from skyops.steps.registry import step

log = logging.getLogger(__name__)

#: SExtractor outputs of the coadd catalogs (the dual-mode measurement in each band).
CATALOG_PARAMS = (
    "NUMBER", "ALPHAWIN_J2000", "DELTAWIN_J2000", "XWIN_IMAGE", "YWIN_IMAGE", "X_IMAGE", "Y_IMAGE",
    "XMIN_IMAGE", "XMAX_IMAGE", "YMIN_IMAGE", "YMAX_IMAGE", "FLUX_AUTO", "FLUXERR_AUTO", "MAG_AUTO", "MAGERR_AUTO",
    "FLUX_RADIUS", "ISOAREA_IMAGE", "A_IMAGE", "B_IMAGE", "THETA_IMAGE", "ELLIPTICITY", "KRON_RADIUS", "FLAGS",
    "IMAFLAGS_ISO", "CLASS_STAR", "SNR_WIN", "BACKGROUND",
)
#: SExtractor outputs PSFEx needs from the coadd (single-image run).
PSF_VIGNET = 25
PSF_PARAMS = ("NUMBER", "X_IMAGE", "Y_IMAGE", "XWIN_IMAGE", "YWIN_IMAGE", "FLUX_APER(1)", "FLUXERR_APER(1)",
              "FLUX_RADIUS", "ELONGATION", "FLAGS", "SNR_WIN", "FLUX_MAX", f"VIGNET({PSF_VIGNET},{PSF_VIGNET})")
#: MSK bit of coadd pixels that no single-epoch image covers.
NO_DATA = 1
_WCS_KEYS = ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2",
             "CD2_1", "CD2_2", "EQUINOX", "RADESYS")


def read_geometry(layout: TileLayout) -> dict[str, Any]:
    """The tile's COADDTILE_GEOM row saved by block 1."""
    p = layout.base().geometry()
    if not p.is_file():
        raise InputError(f"{p}: no tile geometry; run block 1 (balrog.prep, mode bit 1) for tile "
                         f"{layout.tilename} first")
    return json.loads(p.read_text())


def tile_wcs_cards(geom: dict[str, Any]) -> list[dict[str, Any]]:
    """FITS cards of the tile's TAN WCS, from its COADDTILE_GEOM row."""
    cards = [("CTYPE1", geom["ctype1"]), ("CTYPE2", geom["ctype2"]), ("CUNIT1", "deg"), ("CUNIT2", "deg"),
             ("CRVAL1", geom["crval1"]), ("CRVAL2", geom["crval2"]), ("CRPIX1", geom["crpix1"]),
             ("CRPIX2", geom["crpix2"]), ("CD1_1", geom["cd1_1"]), ("CD1_2", geom["cd1_2"]),
             ("CD2_1", geom["cd2_1"]), ("CD2_2", geom["cd2_2"]), ("EQUINOX", 2000.0), ("RADESYS", "ICRS")]
    return [{"name": k, "value": v} for k, v in cards]


def _cards(pairs: list[tuple[str, Any, str]]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v, "comment": c} for k, v, c in pairs]


def swarp_grid(geom: dict[str, Any]) -> dict[str, Any]:
    """SWarp settings that put the output exactly on the tile's grid."""
    return {"CENTER_TYPE": "MANUAL", "CENTER": f"{geom['crval1']:.10f},{geom['crval2']:.10f}",
            "PIXELSCALE_TYPE": "MANUAL", "PIXEL_SCALE": f"{geom['pixelscale']:.6f}",
            "IMAGE_SIZE": f"{int(geom['naxis1'])},{int(geom['naxis2'])}", "PROJECTION_TYPE": "TAN",
            "CELESTIAL_TYPE": "EQUATORIAL", "SUBTRACT_BACK": "N", "FSCALE_KEYWORD": "FLXSCALE",
            "COPY_KEYWORDS": "", "WRITE_FILEINFO": "N"}


def _check_grid(path: Path, geom: dict[str, Any]) -> None:
    h = fitsio.read_header(str(path))
    got = (h["NAXIS1"], h["NAXIS2"], h["CRPIX1"], h["CRPIX2"])
    want = (geom["naxis1"], geom["naxis2"], geom["crpix1"], geom["crpix2"])
    if got[:2] != want[:2] or abs(got[2] - want[2]) > 1e-6 or abs(got[3] - want[3]) > 1e-6:
        raise ProcessingError(f"SWarp wrote {path} on grid NAXIS/CRPIX {got}, not the tile's {want}; check the "
                              "SWarp version (SWarp --version) and the tile's COADDTILE_GEOM row")


def swarp_inputs(images: list[SourceImage], scratch: Path, magzp_ref: float, bad_bits: int
                 ) -> tuple[list[Path], list[Path]]:
    """Background-subtracted, masked single-HDU copies of the images (with FLXSCALE) for SWarp."""
    sci_paths, wgt_paths = [], []
    for img in images:
        with fitsio.FITS(img.image_path) as f:
            sci, hdr = f[0].read().astype(np.float32), f[0].read_header()
            msk, wgt = f[1].read(), f[2].read().astype(np.float32)
        sci -= fitsio.read(img.bkg_path, ext=0).astype(np.float32) if _hdu0_has_data(img.bkg_path) \
            else fitsio.read(img.bkg_path, ext=1).astype(np.float32)
        bad = (msk.astype(np.int64) & int(bad_bits)) != 0
        wgt[bad] = 0.0
        sci[bad] = 0.0
        cards = [{"name": k, "value": hdr[k]} for k in _WCS_KEYS if k in hdr]
        cards += _cards([("FLXSCALE", img.fscale(magzp_ref), "flux scale to magzp_ref"),
                         ("MAGZERO", img.magzp, "image zeropoint"), ("FILENAME", img.filename, "source image")])
        sp, wp = scratch / f"se{img.image_id:05d}.fits", scratch / f"se{img.image_id:05d}.weight.fits"
        fitsio.write(str(sp), sci, header=cards, clobber=True)
        fitsio.write(str(wp), wgt, header=cards[:-3], clobber=True)
        sci_paths.append(sp)
        wgt_paths.append(wp)
    return sci_paths, wgt_paths


def _hdu0_has_data(path: str) -> bool:
    with fitsio.FITS(path) as f:
        return bool(f[0].get_dims())


def effective_gain(images: list[SourceImage], magzp_ref: float) -> float:
    """Electrons per coadd count, roughly: exposures stacked over the mean flux scale (for SExtractor errors)."""
    n_exp = len({i.expnum for i in images})
    return float(n_exp / np.mean([i.fscale(magzp_ref) for i in images]))


def write_coadd(path: Path, sci: np.ndarray, wgt: np.ndarray, geom: dict[str, Any], extra: list[tuple[str, Any, str]]
                ) -> None:
    """A coadd MEF: SCI (primary), MSK (NO_DATA where the weight is 0), WGT; tile WCS in every HDU."""
    msk = np.where(wgt > 0, 0, NO_DATA).astype(np.int32)
    sci = np.where(wgt > 0, sci, 0.0).astype(np.float32)
    wcs = tile_wcs_cards(geom)
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(sci, header=wcs + _cards(extra + [("DES_EXT", "IMAGE", "")]), extname="SCI")
        f.write(msk, header=wcs + _cards([("DES_EXT", "MASK", ""), ("NODATA", NO_DATA, "bit: no input image")]),
                extname="MSK")
        f.write(wgt.astype(np.float32), header=wcs + _cards([("DES_EXT", "WEIGHT", "")]), extname="WGT")


def coadd_band(ctx: StepContext, layout: TileLayout, mc: MedsConf, band: str, ncpu: int = 1) -> dict[str, Any]:
    """SWarp one band's single-epoch images into the tile's coadd (see the module docstring)."""
    geom = read_geometry(layout)
    images = read_srclist(layout.srclist(band))
    if not images:
        raise InputError(f"tile {layout.tilename} band {band}: the srclist {layout.srclist(band)} lists no images")
    for img in images:
        for p, ft in ((img.image_path, "red_immask"), (img.bkg_path, "red_bkg")):
            if not Path(p).is_file():
                raise InputError(f"{p}: listed in {layout.srclist(band)} but missing; rerun block 1 (balrog.prep)"
                                 + (" or block 8 (balrog.inject)" if layout.realization is not None else ""))
            ctx.use(p, ft)
    with tempfile.TemporaryDirectory(dir=ctx.workdir, prefix=f".coadd_{band}_") as tmpname:
        scratch = Path(tmpname)
        sci_paths, wgt_paths = swarp_inputs(images, scratch, mc.magzp_ref, mc.bad_mask_bits)
        out_sci, out_wgt = scratch / "coadd.fits", scratch / "coadd.weight.fits"
        cfg = swarp_grid(geom) | {"COMBINE_TYPE": mc.swarp.combine_type, "RESAMPLING_TYPE": mc.swarp.resampling_type,
                                  "NTHREADS": ncpu}
        astromatic.swarp(sci_paths, out_sci, out_wgt, workdir=scratch, config=cfg, weights=wgt_paths, ctx=ctx)
        _check_grid(out_sci, geom)
        sci, wgt = fitsio.read(str(out_sci)), fitsio.read(str(out_wgt))
    gain = effective_gain(images, mc.magzp_ref)
    extra = [("TILENAME", layout.tilename, "DES tile"), ("BAND", band, "filter band"),
             ("MAGZERO", mc.magzp_ref, "zeropoint of the coadd (magzp_ref)"),
             ("GAIN", round(gain, 4), "[e-/count] effective"), ("NIMAGES", len(images), "single-epoch images"),
             ("NEXPOSUR", len({i.expnum for i in images}), "exposures"),
             ("MEDSCONF", mc.medsconf, "Balrog medsconf"),
             ("BALREAL", -1 if layout.realization is None else layout.realization, "Balrog realization (-1 base)")]
    with ctx.output(layout.coadd(band), filetype="coadd_image") as tmp:
        write_coadd(tmp, sci, wgt, geom, extra)
    covered = wgt > 0
    return {f"coadd_{band}_images": len(images), f"coadd_{band}_coverage": round(float(covered.mean()), 4),
            f"coadd_{band}_sky_sigma": round(float(np.median(1.0 / np.sqrt(wgt[covered]))) if covered.any() else 0, 4)}


def _single_hdus(coadd: Path, scratch: Path, name: str) -> tuple[Path, Path]:
    """SCI and WGT of a coadd MEF as single-HDU files (SWarp combines every HDU of a MEF)."""
    with fitsio.FITS(str(coadd)) as f:
        sci, hdr = f[0].read(), f[0].read_header()
        wgt = f[2].read()
    cards = [{"name": k, "value": hdr[k]} for k in _WCS_KEYS if k in hdr]
    sp, wp = scratch / f"{name}.fits", scratch / f"{name}.weight.fits"
    fitsio.write(str(sp), sci, header=cards, clobber=True)
    fitsio.write(str(wp), wgt, header=cards, clobber=True)
    return sp, wp


def detection_image(ctx: StepContext, layout: TileLayout, mc: MedsConf, scratch: Path, ncpu: int = 1) -> None:
    """The CHI-MEAN combination of the det_bands coadds: ``coadd/<tile>_det.fits`` (SCI, MSK, WGT)."""
    geom = read_geometry(layout)
    sci_paths, wgt_paths = [], []
    for band in mc.det_bands:
        coadd = layout.coadd(band)
        if not coadd.is_file():
            raise InputError(f"{coadd}: no {band} coadd for the detection image; run balrog.coadd_band for band "
                             f"{band} first (mode bit {2 if layout.realization is None else 16})")
        ctx.use(coadd, "coadd_image")
        sp, wp = _single_hdus(coadd, scratch, f"det_in_{band}")
        sci_paths.append(sp)
        wgt_paths.append(wp)
    out_sci, out_wgt = scratch / "det.fits", scratch / "det.weight.fits"
    cfg = swarp_grid(geom) | {"COMBINE_TYPE": mc.swarp.det_combine_type, "RESAMPLING_TYPE": "LANCZOS3",
                              "FSCALE_KEYWORD": "NOSUCHKEY", "NTHREADS": ncpu}
    astromatic.swarp(sci_paths, out_sci, out_wgt, workdir=scratch, config=cfg, weights=wgt_paths, ctx=ctx)
    _check_grid(out_sci, geom)
    extra = [("TILENAME", layout.tilename, "DES tile"), ("BAND", "det", "detection image"),
             ("DETBANDS", ",".join(mc.det_bands), "bands combined"),
             ("COMBINET", mc.swarp.det_combine_type, "SWarp COMBINE_TYPE")]
    with ctx.output(layout.det(), filetype="coadd_det") as tmp:
        write_coadd(tmp, fitsio.read(str(out_sci)), fitsio.read(str(out_wgt)), geom, extra)


def catalog_band(ctx: StepContext, layout: TileLayout, mc: MedsConf, band: str, scratch: Path,
                 ncpu: int = 1) -> int:
    """SExtractor in dual mode (detect on det, measure on the band's coadd): catalog and segmentation map."""
    coadd, det = layout.coadd(band), layout.det()
    ctx.use(coadd, "coadd_image")
    hdr = fitsio.read_header(str(coadd))
    se = mc.sextractor
    cfg = {"DETECT_THRESH": se.detect_thresh, "ANALYSIS_THRESH": se.analysis_thresh,
           "DETECT_MINAREA": se.detect_minarea, "DEBLEND_NTHRESH": se.deblend_nthresh,
           "DEBLEND_MINCONT": se.deblend_mincont, "BACK_SIZE": se.back_size, "BACK_FILTERSIZE": 3,
           "PHOT_APERTURES": ",".join(f"{a:g}" for a in se.phot_apertures), "MAG_ZEROPOINT": mc.magzp_ref,
           "GAIN": hdr.get("GAIN", 0.0), "SATUR_LEVEL": 1e9, "PIXEL_SCALE": 0, "SEEING_FWHM": 1.0,
           "FLAG_IMAGE": f"{coadd}[1]", "NTHREADS": ncpu, "INTERP_TYPE": "NONE"}
    with contextlib.ExitStack() as stack:
        cat_tmp = stack.enter_context(ctx.output(layout.catalog(band), filetype="coadd_cat"))
        seg_tmp = stack.enter_context(ctx.output(layout.segmap(band), filetype="coadd_segmap"))
        astromatic.sextractor(f"{coadd}[0]", cat_tmp, params=list(CATALOG_PARAMS), workdir=scratch,
                              weight=f"{coadd}[2]", detect_image=f"{det}[0]", detect_weight=f"{det}[2]",
                              filter_fwhm=se.filter_fwhm, config=cfg, checkimages={"SEGMENTATION": seg_tmp}, ctx=ctx)
        with fitsio.FITS(str(cat_tmp)) as f:
            n = int(f["LDAC_OBJECTS"].get_nrows())
    return n


def coadd_psf(ctx: StepContext, layout: TileLayout, mc: MedsConf, band: str, scratch: Path) -> dict[str, Any]:
    """PSFEx fitted to the band's coadd stars (VIGNETs from a single-image SExtractor run)."""
    coadd = layout.coadd(band)
    cat = scratch / f"psfcat_{band}.ldac"
    astromatic.sextractor(f"{coadd}[0]", cat, params=list(PSF_PARAMS), workdir=scratch, weight=f"{coadd}[2]",
                          filter_fwhm=mc.sextractor.filter_fwhm, ctx=ctx,
                          config={"DETECT_THRESH": 5.0, "ANALYSIS_THRESH": 5.0, "DETECT_MINAREA": 5,
                                  "BACK_SIZE": mc.sextractor.back_size, "PHOT_APERTURES": 10,
                                  "MAG_ZEROPOINT": mc.magzp_ref, "SATUR_LEVEL": 1e9, "NTHREADS": 1})
    psfex_cfg = {"PSFVAR_KEYS": "X_IMAGE,Y_IMAGE", "PSFVAR_DEGREES": 1, "PSF_SIZE": f"{PSF_VIGNET},{PSF_VIGNET}",
                 "PSFVAR_NSNAP": 1, "SAMPLE_MINSN": 20, "SAMPLE_FWHMRANGE": "2.0,12.0", "SAMPLE_MAXELLIP": 0.3,
                 "BASIS_TYPE": "PIXEL_AUTO", "PSF_SAMPLING": 0.0}
    with ctx.output(layout.coadd_psf(band), filetype="coadd_psfex") as tmp:
        astromatic.psfex(cat, tmp, workdir=scratch, config=psfex_cfg, ctx=ctx)
        h = fitsio.read_header(str(tmp), ext="PSF_DATA")
    return {f"psf_{band}_accepted": int(h.get("ACCEPTED", 0)), f"psf_{band}_fwhm_pix": float(h.get("PSF_FWHM", 0.0))}


def detect(ctx: StepContext, layout: TileLayout, mc: MedsConf, bands: tuple[str, ...], ncpu: int = 1
           ) -> dict[str, Any]:
    """The detection image, then per band the dual-mode catalog, segmentation map and coadd PSF."""
    metrics: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=ctx.workdir, prefix=".detect_") as tmpname:
        scratch = Path(tmpname)
        detection_image(ctx, layout, mc, scratch, ncpu)
        for band in bands:
            metrics[f"n_objects_{band}"] = catalog_band(ctx, layout, mc, band, scratch, ncpu)
            metrics.update(coadd_psf(ctx, layout, mc, band, scratch))
    metrics["n_objects"] = metrics[f"n_objects_{bands[0]}"]
    return metrics


def _setup(tile: str, medsconf: str, meds_dir: str | None, realization: int | None, bands: list[str] | None
           ) -> tuple[MedsConf, TileLayout, tuple[str, ...]]:
    mc = load_medsconf(medsconf)
    use = parse_bands(bands, mc.bands) if bands else tuple(mc.bands)
    return mc, TileLayout.of(meds_dir, mc.medsconf, tile, realization), use


@step("balrog.coadd_band", resources={"cpu": 1, "memory_mb": 4096, "scratch_mb": 8192}, outputs=["coadd_image"])
def coadd_band_step(ctx: StepContext, *, tile: str, band: str, medsconf: str = "y3a1-v02",
                    meds_dir: str | None = None, realization: int | None = None, ncpu: int = 1) -> dict[str, Any]:
    """One band's coadd (SWarp at magzp_ref) of the base tile or of realization ``realization``."""
    mc, layout, use = _setup(tile, medsconf, meds_dir, realization, [band])
    return coadd_band(ctx, layout, mc, use[0], ncpu)


@step("balrog.detect", resources={"cpu": 1, "memory_mb": 4096, "scratch_mb": 8192},
      outputs=["coadd_det", "coadd_cat", "coadd_segmap", "coadd_psfex"])
def detect_step(ctx: StepContext, *, tile: str, medsconf: str = "y3a1-v02", meds_dir: str | None = None,
                realization: int | None = None, bands: list[str] | None = None, ncpu: int = 1) -> dict[str, Any]:
    """CHI-MEAN detection image and dual-mode SExtractor catalogs (after every band's coadd)."""
    mc, layout, use = _setup(tile, medsconf, meds_dir, realization, bands)
    return detect(ctx, layout, mc, use, ncpu)


@step("balrog.coadd", resources={"cpu": 1, "memory_mb": 4096, "scratch_mb": 8192},
      outputs=["coadd_image", "coadd_det", "coadd_cat", "coadd_segmap", "coadd_psfex"])
def coadd(ctx: StepContext, *, tile: str, medsconf: str = "y3a1-v02", meds_dir: str | None = None,
          realization: int | None = None, bands: list[str] | None = None, ncpu: int = 1) -> dict[str, Any]:
    """Blocks 2 / 16: every band's coadd, the detection image and the dual-mode catalogs of a tile."""
    mc, layout, use = _setup(tile, medsconf, meds_dir, realization, bands)
    metrics: dict[str, Any] = {"tile": tile, "realization": realization}
    for band in use:
        metrics.update(coadd_band(ctx, layout, mc, band, ncpu))
    metrics.update(detect(ctx, layout, mc, use, ncpu))
    return metrics
