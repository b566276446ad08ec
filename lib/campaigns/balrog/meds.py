"""``balrog.meds`` (blocks 3 and 6): MEDS files of a tile, one per band, written with fitsio.

The Multi-Epoch Data Structure (Sheldon's MEDS, as desmeds wrote it for DES) holds, for every
object of the coadd catalog, a square cutout of the coadd (cutout 0) and of every single-epoch
image whose pixels contain the object's centre, plus each cutout's weight, segmentation and bad-
pixel mask, and here also its PSF image. Extensions (names and columns are the standard ones):

``object_data``  one row per object (catalog NUMBER order). ``id``, ``number`` (SExtractor
                 NUMBER), ``box_size``, ``ra``, ``dec``, ``ncutout``; per cutout (array columns
                 sized to the largest ncutout, unused entries -1 / 0): ``file_id`` (row of
                 image_info), ``orig_row``/``orig_col`` (0-based position in the source image),
                 ``orig_start_row``/``orig_start_col`` (source pixel of the cutout's [0, 0]),
                 ``cutout_row``/``cutout_col`` (object position in the cutout), the WCS Jacobian
                 ``dudrow``, ``dudcol``, ``dvdrow``, ``dvdcol`` (arcsec per pixel, u = dRA cos(Dec)
                 toward East, v = dDec toward North, at the object), ``start_row`` (offset of
                 the cutout in the *_cutouts extensions), and for the PSF ``psf_box_size``,
                 ``psf_start_row``, ``psf_row``, ``psf_col`` (PSF centre in its stamp, 0-based; repeated as
                 ``psf_cutout_row``/``psf_cutout_col``, the names :mod:`.medsreader` reads). Also
                 ``flux_radius``, ``isoarea_image``, ``mag_auto``, ``flags`` from the catalog.
``image_info``   one row per image, row 0 the coadd: ``image_path``, ``image_ext``,
                 ``weight_path``/``_ext``, ``seg_path``/``_ext``, ``bmask_path``/``_ext``,
                 ``bkg_path``/``_ext`` (empty for the coadd), ``psf_path``, ``image_id``,
                 ``image_flags``, ``magzp``, ``scale`` (= 10**(0.4 (magzp_ref - magzp)), already
                 applied to the cutouts), ``position_offset`` (1: FITS = 0-based + 1),
                 ``psf_fwhm`` (arcsec: PSFEx's PSF_FWHM times the pixel scale), ``wcs`` (the image's
                 header WCS cards as text).
``metadata``     one row: ``magzp_ref``, ``medsconf``, ``tilename``, ``band``, ``realization``,
                 ``psf_box_size``, ``cutout_types``, conventions.
``image_cutouts``, ``weight_cutouts``, ``seg_cutouts``, ``bmask_cutouts``, ``psf_cutouts``
                 1-D image extensions; cutout j of object i is ``box_size**2`` pixels from
                 ``start_row[i, j]`` (row-major, ``box_size`` columns); its PSF ``psf_box_size**2``
                 pixels from ``psf_start_row[i, j]``.

Pixels: single-epoch cutouts are (SCI - red_bkg) * scale, weights WGT / scale**2 (both at
magzp_ref), seg the red_segmap, bmask the MSK bits; the coadd's are its SCI, WGT, the dual-mode
segmentation map and MSK. Cutout pixels outside the source image are 0 with weight 0 and bmask
bit ``OFF_IMAGE`` (2**30). PSF stamps are the image's PSFEx model (the coadd's for cutout 0)
rendered on the pixel grid at the object's sub-pixel phase (:mod:`skyops.imaging.psfex`), unit sum.

Box sizes follow desmeds: ``2 * sigma_fac * sigma * (1 + ellipticity)`` with sigma =
``2 FLUX_RADIUS / 2.3548``, at least ``2 sqrt(ISOAREA / pi)`` (the isophotal diameter) and rounded up
to the next allowed size in [min_boxsize, max_boxsize].

The file is written atomically (``ctx.output``); cutouts stream to disk image by image, so memory
stays at one source image plus the object table, whatever the tile size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
from astropy.io.fits import Header
from astropy.wcs import WCS

from skyops.campaigns.balrog.config import MedsConf, load_medsconf
from skyops.campaigns.balrog.layout import TileLayout
from skyops.campaigns.balrog.params import parse_bands
from skyops.campaigns.balrog.prep import SourceImage, read_srclist
from skyops.errors import InputError
from skyops.imaging.astromatic import read_ldac
from skyops.imaging.psfex import PSFExModel
from skyops.steps.context import StepContext
from skyops.steps.registry import step

log = logging.getLogger(__name__)

MEDS_VERSION = "skyops-meds/1"
OFF_IMAGE = 2 ** 30
FWHM_FAC = 2.3548
#: fitsio dtypes of the cutout extensions.
CUTOUT_DTYPES = {"image": "f4", "weight": "f4", "seg": "i4", "bmask": "i4", "psf": "f4"}


@dataclass
class MedsImage:
    """One image of the MEDS file (row of image_info): where its planes are and how to scale them."""

    file_id: int
    image_path: str
    weight_path: str
    seg_path: str
    bmask_path: str
    bkg_path: str
    psf_path: str
    image_ext: int
    weight_ext: int
    seg_ext: int
    bmask_ext: int
    bkg_ext: int
    magzp: float
    scale: float
    image_id: int

    def read_planes(self) -> dict[str, np.ndarray]:
        """image, weight, seg, bmask at magzp_ref (background subtracted for single-epoch images)."""
        with fitsio.FITS(self.image_path) as f:
            img = f[self.image_ext].read().astype(np.float32)
        if self.bkg_path:
            img -= _read_image(self.bkg_path, self.bkg_ext).astype(np.float32)
        img *= np.float32(self.scale)
        wgt = _read_image(self.weight_path, self.weight_ext).astype(np.float32) / np.float32(self.scale ** 2)
        seg = _read_image(self.seg_path, self.seg_ext).astype(np.int32)
        bmask = _read_image(self.bmask_path, self.bmask_ext).astype(np.int32)
        return {"image": img, "weight": wgt, "seg": seg, "bmask": bmask}


def _read_image(path: str, ext: int) -> np.ndarray:
    with fitsio.FITS(path) as f:
        if ext == 0 and not f[0].get_dims() and len(f) > 1:  # data in the first extension
            ext = 1
        return f[ext].read()


def image_wcs(path: str, ext: int = 0) -> tuple[WCS, str, tuple[int, int]]:
    """The header WCS of an image HDU, its WCS cards as text and the image shape (ny, nx)."""
    with fitsio.FITS(path) as f:
        h = f[ext].read_header()
        shape = tuple(f[ext].get_dims())
    hdr = Header()
    for rec in h.records():
        name = rec.get("name")
        if name and name[:5] in ("CTYPE", "CUNIT", "CRVAL", "CRPIX", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "EQUIN",
                                 "RADES") or (name and name.startswith(("PV", "CDELT", "PC"))):
            hdr[name] = rec["value"]
    hdr["NAXIS"], hdr["NAXIS1"], hdr["NAXIS2"] = 2, shape[1], shape[0]
    return WCS(hdr), hdr.tostring(sep="\n").strip(), shape  # type: ignore[return-value]


def jacobian(wcs: WCS, x: np.ndarray, y: np.ndarray, step_pix: float = 0.5) -> dict[str, np.ndarray]:
    """d(u, v)/d(row, col) in arcsec per pixel at FITS (x, y): u = dRA cos(Dec) (East), v = dDec (North)."""
    ra0, dec0 = wcs.all_pix2world(x, y, 1)
    cosd = np.cos(np.radians(dec0))
    out = {}
    for axis, (dx, dy) in (("col", (step_pix, 0.0)), ("row", (0.0, step_pix))):
        rp, dp = wcs.all_pix2world(x + dx, y + dy, 1)
        rm, dm = wcs.all_pix2world(x - dx, y - dy, 1)
        dra = ((rp - rm + 180.0) % 360.0 - 180.0)
        out[f"dud{axis}"] = dra * cosd * 3600.0 / (2 * step_pix)
        out[f"dvd{axis}"] = (dp - dm) * 3600.0 / (2 * step_pix)
    return out


def box_sizes(cat: np.ndarray, mc: MedsConf) -> np.ndarray:
    """desmeds' box sizes from FLUX_RADIUS, ELLIPTICITY and ISOAREA (see the module docstring)."""
    sigma = 2.0 * np.clip(cat["FLUX_RADIUS"], 0.5, None) / FWHM_FAC
    ell = np.clip(cat["ELLIPTICITY"], 0.0, 1.0) if "ELLIPTICITY" in cat.dtype.names else 0.0
    size = np.maximum(2.0 * mc.sigma_fac * sigma * (1.0 + ell), 2.0 * np.sqrt(cat["ISOAREA_IMAGE"] / np.pi))
    allowed = np.array(sorted(s for s in mc.allowed_box_sizes if mc.min_boxsize <= s <= mc.max_boxsize))
    idx = np.clip(np.searchsorted(allowed, np.ceil(size)), 0, len(allowed) - 1)
    return allowed[idx].astype(np.int32)


def start_pixel(orig: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Source pixel of a cutout's first row/column: the object's nearest pixel minus box // 2."""
    return (np.floor(orig + 0.5).astype(np.int64) - box // 2).astype(np.int32)


def meds_images(layout: TileLayout, band: str, se: list[SourceImage], mc: MedsConf) -> list[MedsImage]:
    """image_info rows: the coadd (file_id 0) then the single-epoch images in srclist order."""
    coadd, seg, psf = layout.coadd(band), layout.segmap(band), layout.coadd_psf(band)
    for p, block in ((coadd, "balrog.coadd_band"), (seg, "balrog.detect"), (psf, "balrog.detect")):
        if not p.is_file():
            raise InputError(f"{p}: missing; run {block} (mode bit {2 if layout.realization is None else 16}) for "
                             f"tile {layout.tilename} first")
    rows = [MedsImage(0, str(coadd), str(coadd), str(seg), str(coadd), "", str(psf), 0, 2, 0, 1, -1,
                      mc.magzp_ref, 1.0, 0)]
    for i, img in enumerate(se, start=1):
        rows.append(MedsImage(i, img.image_path, img.image_path, img.seg_path, img.image_path, img.bkg_path,
                              img.psf_path, 0, 2, 0, 1, 0, img.magzp, img.fscale(mc.magzp_ref), img.image_id))
    return rows


@dataclass
class Epochs:
    """Which images hold which objects: per (object, cutout slot) file_id and positions."""

    file_id: np.ndarray  # (nobj, nmax) int32, -1 unused
    orig_row: np.ndarray
    orig_col: np.ndarray
    jac: dict[str, np.ndarray]  # each (nobj, nmax)
    ncutout: np.ndarray


def locate(images: list[MedsImage], ra: np.ndarray, dec: np.ndarray, buffer: int
           ) -> tuple[Epochs, dict[int, str], dict[int, float]]:
    """Every object's position (and Jacobian) in every image whose pixels contain it; coadd first.

    Also each image's WCS cards (text) and pixel scale (arcsec, at its centre).
    """
    nobj = len(ra)
    hits: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
    wcs_text: dict[int, str] = {}
    scales: dict[int, float] = {}
    for im in images:
        wcs, text, shape = image_wcs(im.image_path, im.image_ext)
        wcs_text[im.file_id] = text
        jc = jacobian(wcs, np.array([(shape[1] + 1) / 2.0]), np.array([(shape[0] + 1) / 2.0]))
        scales[im.file_id] = float(np.sqrt(abs(jc["dudrow"][0] * jc["dvdcol"][0] - jc["dudcol"][0] * jc["dvdrow"][0])))
        x, y = wcs.all_world2pix(ra, dec, 1)
        row, col = y - 1.0, x - 1.0
        inside = np.isfinite(row) & (row >= buffer) & (row <= shape[0] - 1 - buffer) & \
            (col >= buffer) & (col <= shape[1] - 1 - buffer)
        if im.file_id == 0:
            inside = np.ones(nobj, bool)  # the coadd always is cutout 0
        idx = np.flatnonzero(inside)
        if len(idx):
            hits.append((im.file_id, idx, row[idx], col[idx], jacobian(wcs, x[idx], y[idx])))
    ncut = np.zeros(nobj, np.int32)
    for _, idx, *_ in hits:
        ncut[idx] += 1
    nmax = max(1, int(ncut.max()) if nobj else 1)
    ep = Epochs(np.full((nobj, nmax), -1, np.int32), np.zeros((nobj, nmax)), np.zeros((nobj, nmax)),
                {k: np.zeros((nobj, nmax)) for k in ("dudrow", "dudcol", "dvdrow", "dvdcol")}, ncut)
    slot = np.zeros(nobj, np.int32)
    for fid, idx, row, col, jac in hits:
        s = slot[idx]
        ep.file_id[idx, s], ep.orig_row[idx, s], ep.orig_col[idx, s] = fid, row, col
        for k, v in jac.items():
            ep.jac[k][idx, s] = v
        slot[idx] += 1
    return ep, wcs_text, scales


def object_dtype(nmax: int) -> np.dtype:
    a = (nmax,)
    return np.dtype([
        ("id", "i8"), ("number", "i4"), ("box_size", "i4"), ("ra", "f8"), ("dec", "f8"), ("ncutout", "i4"),
        ("file_id", "i4", a), ("orig_row", "f8", a), ("orig_col", "f8", a), ("orig_start_row", "i4", a),
        ("orig_start_col", "i4", a), ("cutout_row", "f8", a), ("cutout_col", "f8", a), ("dudrow", "f8", a),
        ("dudcol", "f8", a), ("dvdrow", "f8", a), ("dvdcol", "f8", a), ("start_row", "i8", a),
        ("psf_box_size", "i4", a), ("psf_start_row", "i8", a), ("psf_row", "f8", a), ("psf_col", "f8", a),
        ("psf_cutout_row", "f8", a), ("psf_cutout_col", "f8", a),
        ("flux_radius", "f4"), ("isoarea_image", "i4"), ("mag_auto", "f4"), ("flags", "i4"),
    ])


def object_table(cat: np.ndarray, ep: Epochs, boxes: np.ndarray, psf_box: int) -> np.ndarray:
    """object_data rows, with every cutout's offset in the cutout extensions (objects in order)."""
    nobj, nmax = ep.file_id.shape
    od = np.zeros(nobj, object_dtype(nmax))
    od["id"] = od["number"] = cat["NUMBER"]
    od["box_size"], od["ra"], od["dec"], od["ncutout"] = boxes, cat["ALPHAWIN_J2000"], cat["DELTAWIN_J2000"], \
        ep.ncutout
    used = ep.file_id >= 0
    od["file_id"] = ep.file_id
    od["orig_row"], od["orig_col"] = np.where(used, ep.orig_row, 0.0), np.where(used, ep.orig_col, 0.0)
    b = boxes[:, None].astype(np.int64)
    od["orig_start_row"] = np.where(used, start_pixel(ep.orig_row, b), -1)
    od["orig_start_col"] = np.where(used, start_pixel(ep.orig_col, b), -1)
    od["cutout_row"] = np.where(used, od["orig_row"] - od["orig_start_row"], 0.0)
    od["cutout_col"] = np.where(used, od["orig_col"] - od["orig_start_col"], 0.0)
    for k, v in ep.jac.items():
        od[k] = v
    npix = np.where(used, b * b, 0)
    od["start_row"] = np.where(used, np.cumsum(npix.ravel()).reshape(npix.shape) - npix, -1)
    pp = np.where(used, psf_box * psf_box, 0).astype(np.int64)
    od["psf_box_size"] = np.where(used, psf_box, 0)
    od["psf_start_row"] = np.where(used, np.cumsum(pp.ravel()).reshape(pp.shape) - pp, -1)
    c = (psf_box - 1) / 2.0
    od["psf_row"] = np.where(used, c + ep.orig_row - np.floor(ep.orig_row + 0.5), 0.0)
    od["psf_col"] = np.where(used, c + ep.orig_col - np.floor(ep.orig_col + 0.5), 0.0)
    od["psf_cutout_row"], od["psf_cutout_col"] = od["psf_row"], od["psf_col"]  # the names medsreader reads
    od["flux_radius"], od["isoarea_image"] = cat["FLUX_RADIUS"], cat["ISOAREA_IMAGE"]
    od["mag_auto"], od["flags"] = cat["MAG_AUTO"], cat["FLAGS"]
    return od


def cut(plane: np.ndarray, r0: int, c0: int, box: int, fill: float | int) -> np.ndarray:
    """``plane[r0:r0+box, c0:c0+box]`` with ``fill`` where the box leaves the image."""
    ny, nx = plane.shape
    out = np.full((box, box), fill, dtype=plane.dtype)
    ra, rb = max(r0, 0), min(r0 + box, ny)
    ca, cb = max(c0, 0), min(c0 + box, nx)
    if ra < rb and ca < cb:
        out[ra - r0:rb - r0, ca - c0:cb - c0] = plane[ra:rb, ca:cb]
    return out


def image_info_table(images: list[MedsImage], wcs_text: dict[int, str], psf_fwhm: dict[int, float]) -> np.ndarray:
    def width(values: list[str]) -> int:
        return max(1, max(len(v) for v in values))

    paths = {k: [getattr(i, k) for i in images] for k in ("image_path", "weight_path", "seg_path", "bmask_path",
                                                          "bkg_path", "psf_path")}
    wcs = [wcs_text.get(i.file_id, "") for i in images]
    dt = [(k, f"S{width(v)}") for k, v in paths.items()] + [
        ("image_ext", "i2"), ("weight_ext", "i2"), ("seg_ext", "i2"), ("bmask_ext", "i2"), ("bkg_ext", "i2"),
        ("image_id", "i8"), ("image_flags", "i4"), ("magzp", "f4"), ("scale", "f8"), ("position_offset", "f8"),
        ("psf_fwhm", "f4"), ("wcs", f"S{width(wcs)}")]
    out = np.zeros(len(images), dt)
    for k, v in paths.items():
        out[k] = v
    for k in ("image_ext", "weight_ext", "seg_ext", "bmask_ext", "bkg_ext", "image_id", "magzp", "scale"):
        out[k] = [getattr(i, k) for i in images]
    out["position_offset"] = 1.0
    out["psf_fwhm"] = [psf_fwhm.get(i.file_id, 0.0) for i in images]
    out["wcs"] = wcs
    return out


def metadata_table(layout: TileLayout, band: str, mc: MedsConf) -> np.ndarray:
    vals = {"meds_version": MEDS_VERSION, "medsconf": mc.medsconf, "tilename": layout.tilename, "band": band,
            "cutout_types": ",".join(mc.cutout_types + ["psf"]),
            "jacobian": "u=dRA*cos(Dec) East, v=dDec North, arcsec per pixel",
            "pixels": "(SCI-bkg)*scale, weight/scale**2 at magzp_ref; cutout 0 = coadd"}
    dt = [(k, f"S{len(v)}") for k, v in vals.items()] + [("magzp_ref", "f8"), ("realization", "i4"),
                                                         ("psf_box_size", "i4"), ("off_image_bit", "i8")]
    out = np.zeros(1, dt)
    for k, v in vals.items():
        out[k] = v
    out["magzp_ref"], out["psf_box_size"], out["off_image_bit"] = mc.magzp_ref, mc.psf_box_size, OFF_IMAGE
    out["realization"] = -1 if layout.realization is None else layout.realization
    return out


def write_meds(path: Path, od: np.ndarray, images: list[MedsImage], info: np.ndarray, meta: np.ndarray,
               psf_box: int) -> dict[str, float]:
    """Write the MEDS file: tables first, then every image's cutouts streamed into the 1-D extensions."""
    used = od["file_id"] >= 0
    boxes = np.broadcast_to(od["box_size"][:, None], used.shape)
    total = int((boxes[used].astype(np.int64) ** 2).sum())
    total_psf = int(used.sum()) * psf_box * psf_box
    n_cut = 0
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(od, extname="object_data")
        f.write(info, extname="image_info")
        f.write(meta, extname="metadata")
        for kind in ("image", "weight", "seg", "bmask"):
            f.create_image_hdu(dims=[max(total, 1)], dtype=CUTOUT_DTYPES[kind], extname=f"{kind}_cutouts")
        f.create_image_hdu(dims=[max(total_psf, 1)], dtype="f4", extname="psf_cutouts")
        for im in images:
            obj, slot = np.nonzero(od["file_id"] == im.file_id)
            if not len(obj):
                continue
            planes = im.read_planes()
            fills = {"image": np.float32(0), "weight": np.float32(0), "seg": 0, "bmask": OFF_IMAGE}
            for o, s in zip(obj, slot):
                box, r0, c0 = int(od["box_size"][o]), int(od["orig_start_row"][o, s]), int(od["orig_start_col"][o, s])
                start = int(od["start_row"][o, s])
                for kind, plane in planes.items():
                    stamp = cut(plane, r0, c0, box, fills[kind])
                    if kind == "bmask":
                        stamp = _flag_off_image(stamp, plane.shape, r0, c0)
                    f[f"{kind}_cutouts"].write(stamp.ravel(), start=start)
                n_cut += 1
            psf = PSFExModel.read(im.psf_path)
            rows, cols = od["orig_row"][obj, slot], od["orig_col"][obj, slot]
            c = (psf_box - 1) / 2.0
            stamps = psf.render(cols + 1.0, rows + 1.0, psf_box, od["psf_row"][obj, slot] - c,
                                od["psf_col"][obj, slot] - c)
            for k, (o, s) in enumerate(zip(obj, slot)):
                f["psf_cutouts"].write(stamps[k].ravel(), start=int(od["psf_start_row"][o, s]))
    return {"n_cutouts": n_cut, "n_pixels": total}


def _flag_off_image(stamp: np.ndarray, shape: tuple[int, ...], r0: int, c0: int) -> np.ndarray:
    """Mark off-image pixels with OFF_IMAGE (inside pixels keep their mask bits)."""
    box = stamp.shape[0]
    rr = np.arange(r0, r0 + box)
    cc = np.arange(c0, c0 + box)
    off = ((rr < 0) | (rr >= shape[0]))[:, None] | ((cc < 0) | (cc >= shape[1]))[None, :]
    if off.any():
        stamp = stamp.copy()
        stamp[off] = OFF_IMAGE
    return stamp


def make_meds(ctx: StepContext, layout: TileLayout, mc: MedsConf, band: str) -> dict[str, Any]:
    """One band's MEDS file from the coadd catalog, the coadd and the srclist images."""
    se = read_srclist(layout.srclist(band))
    cat_path = layout.catalog(band)
    if not cat_path.is_file():
        raise InputError(f"{cat_path}: no coadd catalog; run balrog.detect (mode bit "
                         f"{2 if layout.realization is None else 16}) for tile {layout.tilename} first")
    cat = np.sort(read_ldac(ctx.use(cat_path, "coadd_cat")), order="NUMBER")
    images = meds_images(layout, band, se, mc)
    for im in images[1:]:
        ctx.use(im.image_path, "red_immask")
    ep, wcs_text, scales = locate(images, cat["ALPHAWIN_J2000"], cat["DELTAWIN_J2000"], mc.bounds_buffer)
    boxes = box_sizes(cat, mc)
    od = object_table(cat, ep, boxes, mc.psf_box_size)
    psf_fwhm = {im.file_id: PSFExModel.read(im.psf_path).fwhm * scales[im.file_id] for im in images}  # arcsec
    info = image_info_table(images, wcs_text, psf_fwhm)
    with ctx.output(layout.meds(band), filetype="meds") as tmp:
        stats = write_meds(tmp, od, images, info, metadata_table(layout, band, mc), mc.psf_box_size)
    return {f"meds_{band}_objects": len(od), f"meds_{band}_cutouts": stats["n_cutouts"],
            f"meds_{band}_pixels": stats["n_pixels"], f"meds_{band}_max_ncutout": int(ep.file_id.shape[1])}


@step("balrog.meds", resources={"cpu": 1, "memory_mb": 4096, "scratch_mb": 16384}, outputs=["meds"])
def meds(ctx: StepContext, *, tile: str, medsconf: str = "y3a1-v02", meds_dir: str | None = None,
         realization: int | None = None, bands: list[str] | None = None) -> dict[str, Any]:
    """Blocks 3 / 6: MEDS files (one per band) of the base tile or of realization ``realization``."""
    mc = load_medsconf(medsconf)
    use = parse_bands(bands, mc.bands) if bands else tuple(mc.bands)
    layout = TileLayout.of(meds_dir, mc.medsconf, tile, realization)
    metrics: dict[str, Any] = {"tile": tile, "realization": realization}
    for band in use:
        metrics.update(make_meds(ctx, layout, mc, band))
    return metrics
