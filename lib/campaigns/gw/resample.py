"""Template CCDs resampled and stacked onto the search CCD's pixel grid with SWarp.

DES difference imaging warps the template images onto the search image's own pixels, so the
search image is never resampled (its noise stays uncorrelated and its PSF untouched). SWarp is
told the target grid the documented way: a ``.head`` file holding the output header (NAXIS,
CTYPE, CRVAL, CRPIX, CD of the search CCD) next to the output image. The step's SWarp wrapper
writes its output under a temporary name and renames it when complete, so the header file is
also named explicitly with ``HEADEROUT_NAME`` ("output header filename, overrides suffix").

Templates come from other nights: each is first brought to the search image's flux scale
(:func:`flux_scale`, large-aperture photometry of the same bright stars; SWarp applies it as
``FLXSCALE``), so that the stack has one flux scale also where only some templates cover.
Each template's SCI and WGT planes are split out of the red_immask file (SWarp would otherwise
stack the MSK and WGT extensions as more images); masked pixels -- and stars around saturated
cores, and a 4-pixel edge the Lanczos interpolant cannot fill -- get weight 0 and value 0, so
they neither enter the weighted mean nor ring through the interpolant. SWarp combines the
templates with inverse-variance weights (``RESCALE_WEIGHTS N``: the WGT planes are already
absolute inverse variances) and writes the combined weight map; a pixel no template covers has
weight 0 there, which is how the templates' masks reach the difference image.

Two numbers describe the stack's noise and PSF beyond that map: resampling averages
neighbouring pixels, so the per-pixel variance is a factor (sum of the squared interpolation
weights, :func:`resampling_variance_factor`) below 1/weight; and where a template drops out the
stack's PSF changes (:func:`template_psf_mismatch`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import fitsio
import numpy as np

from skyops.errors import InputError
from skyops.imaging.astromatic import swarp

log = logging.getLogger(__name__)

#: DESDM BADPIX bits that make a pixel unusable (as in the sim and finalcut's immask).
BAD_BITS = 1 | 2 | 8 | 16 | 512  # BPM, SATURATE, BADAMP, CRAY, EDGE
SATURATE_BIT = 2
#: Radius (pixels) by which saturated pixels are grown: the star around a saturated core is
#: dropped from that template, so that the stack there comes whole from the other templates
#: (a core from one template and wings from two is a PSF no kernel matches).
SATURATION_GROW = 12
#: Pixels trimmed from each template edge: LANCZOS3 reads 3 pixels either side, so resampled
#: pixels closer than that to a template's edge would be interpolated across missing data.
EDGE_TRIM = 4
#: Header keywords that define the target grid.
GRID_KEYS = ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
             "CD1_1", "CD1_2", "CD2_1", "CD2_2", "EQUINOX", "RADESYS")
#: SWarp settings for template stacking (the wrapper adds names, weights and verbosity).
SWARP_CONFIG: dict[str, Any] = {
    "COMBINE_TYPE": "WEIGHTED",
    "RESAMPLING_TYPE": "LANCZOS3",
    "SUBTRACT_BACK": "N",  # red_immask images are sky-subtracted; the kernel fit has a background term
    "FSCALASTRO_TYPE": "NONE",  # same pixel scale: no flux rescaling by pixel area
    "RESCALE_WEIGHTS": "N",
    "BLANK_BADPIXELS": "Y",
    "INTERPOLATE": "N",
    "CELESTIAL_TYPE": "NATIVE",
    "PROJECTION_TYPE": "TAN",
    "COPY_KEYWORDS": "BAND,EXPNUM,CCDNUM",
}


@dataclass
class RedImage:
    """One red_immask CCD: SCI (e-), MSK (BADPIX bits), WGT (inverse variance), SCI header.

    The derived masks are computed once (treat the arrays as read-only)."""

    path: Path
    sci: np.ndarray
    msk: np.ndarray
    wgt: np.ndarray
    header: fitsio.FITSHDR
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def bad(self) -> np.ndarray:
        if "bad" not in self._cache:
            self._cache["bad"] = ((self.msk & BAD_BITS) != 0) | ~(self.wgt > 0) | ~np.isfinite(self.sci)
        return self._cache["bad"]

    def key(self, name: str, default: Any = None) -> Any:
        return self.header[name] if name in self.header else default

    def near_saturated(self, grow: int = SATURATION_GROW) -> np.ndarray:
        """Pixels within ``grow`` pixels of a saturated one."""
        key = f"near_saturated_{grow}"
        if key not in self._cache:
            sat = (self.msk & SATURATE_BIT) != 0
            self._cache[key] = grow_mask(sat, grow) if sat.any() and grow > 0 else sat
        return self._cache[key]


def grow_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by a disk of ``radius`` pixels (work done only around the set pixels)."""
    from scipy import ndimage

    g = np.arange(-radius, radius + 1)
    disk = (g[:, None] ** 2 + g[None, :] ** 2) <= radius * radius
    out = np.zeros_like(mask, dtype=bool)
    lab, n = ndimage.label(mask)
    for sl in ndimage.find_objects(lab):
        y0, y1 = max(sl[0].start - radius, 0), min(sl[0].stop + radius, mask.shape[0])
        x0, x1 = max(sl[1].start - radius, 0), min(sl[1].stop + radius, mask.shape[1])
        out[y0:y1, x0:x1] |= ndimage.binary_dilation(mask[y0:y1, x0:x1], structure=disk)
    return out


def read_red_image(path: str | Path, what: str = "image") -> RedImage:
    """Read a red_immask-style file (SCI, MSK, WGT); InputError says which file and HDU is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist; pass the path of a red_immask FITS file (SCI/MSK/WGT)")
    try:
        with fitsio.FITS(str(path)) as f:
            names = [h.get_extname().upper() for h in f]
            idx = {n: names.index(n) if n in names else None for n in ("SCI", "MSK", "WGT")}
            sci_i = idx["SCI"] if idx["SCI"] is not None else 0
            if idx["MSK"] is None or idx["WGT"] is None:
                raise InputError(f"{what} {path} has HDUs {names}; a red_immask file needs SCI, MSK and WGT")
            sci = f[sci_i].read().astype(np.float32, copy=False)
            hdr = f[sci_i].read_header()
            msk = f[idx["MSK"]].read()
            wgt = f[idx["WGT"]].read().astype(np.float32, copy=False)
    except OSError as exc:
        raise InputError(f"{what} {path} cannot be read as FITS ({exc})") from None
    if sci.ndim != 2 or sci.shape != msk.shape or sci.shape != wgt.shape:
        raise InputError(f"{what} {path}: SCI {sci.shape}, MSK {msk.shape} and WGT {wgt.shape} must be the same "
                         "2-d shape")
    missing = [k for k in ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD2_2") if k not in hdr]
    if missing:
        raise InputError(f"{what} {path}: SCI header lacks WCS keyword(s) {', '.join(missing)}")
    return RedImage(path, sci, msk, wgt, hdr)


def target_head_text(header: fitsio.FITSHDR, shape: tuple[int, int], margin: int = 0) -> str:
    """The SWarp ``.head`` text (80-character cards, END) for the grid of ``header`` and ``shape``,
    extended by ``margin`` pixels on every side (CRPIX shifted, so pixels stay the same)."""
    from astropy.io.fits import Card

    ny, nx = shape
    cards = [Card("NAXIS", 2), Card("NAXIS1", int(nx) + 2 * margin), Card("NAXIS2", int(ny) + 2 * margin)]
    for k in GRID_KEYS:
        if k in header:
            value = header[k] + margin if k in ("CRPIX1", "CRPIX2") else header[k]
            cards.append(Card(k, value))
    return "".join(c.image for c in cards) + "END".ljust(80) + "\n"


@dataclass
class TemplateStack:
    """The templates on the search grid (e-, template flux scale) and their inverse-variance weight.

    ``image_full``/``weight_full`` extend the search grid by ``margin`` pixels on every side, so
    that convolving the template near the CCD's edges has the template pixels it needs;
    ``image``/``weight`` are the search grid itself.
    """

    image_full: np.ndarray
    weight_full: np.ndarray
    margin: int
    n_templates: int
    flux_scales: tuple[float, ...] = ()  # per template: search flux / template flux (FLXSCALE)
    sky_var: float = 1.0  # typical sky variance of one scaled template (search units)
    var_factor: float = 1.0  # per-pixel variance after resampling / 1/weight (see resampling_variance_factor)
    psf_mismatch: float = 0.0  # largest relative L2 difference of one template's PSF from the stack's

    def _crop(self, a: np.ndarray) -> np.ndarray:
        m = self.margin
        return a[m:a.shape[0] - m, m:a.shape[1] - m] if m else a

    @property
    def image(self) -> np.ndarray:
        return self._crop(self.image_full)

    @property
    def weight(self) -> np.ndarray:
        return self._crop(self.weight_full)

    @property
    def nodata(self) -> np.ndarray:
        return ~(self.weight > 0)


def _wcs(img: RedImage) -> Any:
    from astropy.wcs import WCS

    return WCS({k: img.header[k] for k in GRID_KEYS if k in img.header} | {"NAXIS": 2})


def bright_stars(img: RedImage, *, snr_min: float = 50.0, radius: int = 15, n_max: int = 200
                 ) -> tuple[np.ndarray, np.ndarray]:
    """0-based positions of bright, unsaturated peaks, the brightest within ``radius`` and at least
    ``radius`` from masks and edges (brightest first)."""
    if "bright_stars" in img._cache:
        return img._cache["bright_stars"]
    sm = img.sci  # at S/N 50 a star's peak pixel is its peak: no smoothing needed
    with np.errstate(divide="ignore"):
        above = sm * np.sqrt(np.maximum(img.wgt, 0.0)) > snr_min
    yy, xx = np.nonzero(above)
    inner = (yy > 0) & (xx > 0) & (yy < sm.shape[0] - 1) & (xx < sm.shape[1] - 1)
    yy, xx = yy[inner], xx[inner]
    peak = np.ones(len(yy), dtype=bool)  # local maxima among the bright pixels only: cheap
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                peak &= sm[yy, xx] >= sm[yy + dy, xx + dx]
    yy, xx = yy[peak], xx[peak]
    r = radius + 2
    ny, nx = img.sci.shape
    inside = (xx >= r) & (yy >= r) & (xx < nx - r) & (yy < ny - r)
    xx, yy = xx[inside], yy[inside]
    order = np.argsort(-sm[yy, xx])
    xx, yy = xx[order], yy[order]
    bad = img.bad | img.near_saturated()
    keep = []
    for x, y in zip(xx, yy):
        if len(keep) >= n_max:
            break
        cut = sm[y - radius:y + radius + 1, x - radius:x + radius + 1]
        if cut.max() <= sm[y, x] and not bad[y - r:y + r + 1, x - r:x + r + 1].any():
            keep.append((x, y))
    arr = np.array(keep, dtype=float).reshape(-1, 2)
    img._cache["bright_stars"] = (arr[:, 0], arr[:, 1])
    return img._cache["bright_stars"]


def aperture_flux(image: np.ndarray, bad: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Flux within ``radius`` of each 0-based position, less the median of an annulus (1.3-1.8 radius);
    NaN where a masked pixel is in the aperture or it leaves the image."""
    ny, nx = image.shape
    r_out = 1.8 * radius
    r = int(np.ceil(r_out))
    out = np.full(len(x), np.nan)
    for i, (xi, yi) in enumerate(zip(x, y)):
        ix, iy = int(round(xi)), int(round(yi))
        if ix - r < 0 or iy - r < 0 or ix + r >= nx or iy + r >= ny:
            continue
        sl = (slice(iy - r, iy + r + 1), slice(ix - r, ix + r + 1))
        gy, gx = np.mgrid[iy - r:iy + r + 1, ix - r:ix + r + 1]
        rr = np.hypot(gx - xi, gy - yi)
        disk, ring = rr <= radius, (rr >= 1.3 * radius) & (rr <= r_out) & ~bad[sl]
        if bad[sl][disk].any() or ring.sum() < 10:
            continue
        out[i] = image[sl][disk].sum() - float(np.median(image[sl][ring])) * disk.sum()
    return out


def flux_scale(template: RedImage, search: RedImage, *, radius: float = 15.0, min_stars: int = 5) -> tuple[float, int]:
    """Search flux / template flux of the same bright stars (large apertures, so seeing does not matter).

    Templates come from other nights, with other transparency and airmass: brought to the search
    image's scale before stacking, the stack has one flux scale everywhere, also where only some
    templates cover (otherwise the kernel's photometric scale would be wrong there).
    Returns (1.0, n) when fewer than ``min_stars`` stars are measurable in both.
    """
    x, y = bright_stars(search, radius=int(radius))
    if not len(x):
        return 1.0, 0
    ra, dec = _wcs(search).all_pix2world(x, y, 0)
    xt, yt = _wcs(template).all_world2pix(ra, dec, 0)
    fs = aperture_flux(search.sci, search.bad, x, y, radius)
    ft = aperture_flux(template.sci, template.bad | template.near_saturated(), xt, yt, radius)
    ok = np.isfinite(fs) & np.isfinite(ft) & (fs > 0) & (ft > 0)
    if ok.sum() < min_stars:
        log.warning("flux scale of template %s: only %d stars measurable in both images; using 1.0",
                    template.path.name, int(ok.sum()))
        return 1.0, int(ok.sum())
    return float(np.median(fs[ok] / ft[ok])), int(ok.sum())


def lanczos3(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


def resampling_variance_factor(template: RedImage, search: RedImage, n: int = 5) -> float:
    """Per-pixel variance of a LANCZOS3-resampled image over that of its input pixels.

    An output pixel is a weighted sum of 6x6 input pixels, so its variance is sum(w^2) of the
    input's (less than 1 unless the grids line up); SWarp's weight map does not say so. The
    factor depends on the sub-pixel offset between the grids, averaged here over an n x n
    grid of positions.
    """
    ny, nx = search.sci.shape
    gy, gx = np.meshgrid(np.linspace(0, ny - 1, n), np.linspace(0, nx - 1, n), indexing="ij")
    ra, dec = _wcs(search).all_pix2world(gx.ravel(), gy.ravel(), 0)
    xt, yt = _wcs(template).all_world2pix(ra, dec, 0)
    k = np.arange(-2, 4)
    out = []
    for frac in (np.mod(xt, 1.0), np.mod(yt, 1.0)):
        w = lanczos3(k[None, :] - frac[:, None])
        out.append((w ** 2).sum(axis=1) / w.sum(axis=1) ** 2)
    return float(np.mean(out[0] * out[1]))


def template_psf(img: RedImage, half: int) -> np.ndarray | None:
    """The image's PSF stacked from its bright stars (unit sum, (2 half + 1)^2), or None if too few."""
    from skyops.campaigns.gw.candidates import empirical_psf
    from skyops.campaigns.gw.psfmatch import FWHM_PER_SIGMA, adaptive_sigma, cutouts

    x, y = bright_stars(img)
    if len(x) < 5:
        return None
    xy = np.column_stack([x, y]).astype(np.int64)
    sizes = adaptive_sigma(cutouts(img.sci, xy, 12))
    fwhm = float(np.nanmedian(sizes)) * FWHM_PER_SIGMA
    try:
        psf, _ = empirical_psf(img.sci, img.bad | img.near_saturated(), xy, fwhm, half)
    except ValueError:
        return None
    return psf.image


def template_psf_mismatch(templates: Sequence[RedImage], weights: np.ndarray, half: int = 12) -> float:
    """How much the stack's PSF changes where only some templates cover: max_i |P_i - P| / |P|.

    ``P`` is the weighted mean of the templates' PSFs (the stack's, where all cover). Where one
    template is missing -- along the dither edges, around another template's saturated stars --
    the stack's PSF is another mix, which the kernel fitted to the whole image does not match;
    this bounds that mismatch as a fraction of the template (0 for a single template, or when
    a template has too few stars to tell).
    """
    if len(templates) < 2:
        return 0.0
    psfs = [template_psf(t, half) for t in templates]
    if any(p is None for p in psfs):
        return 0.0
    w = np.asarray(weights, dtype=np.float64)
    mean = sum(wi * p for wi, p in zip(w, psfs)) / w.sum()
    norm = float(np.sqrt((mean ** 2).sum()))
    return float(max(np.sqrt(((p - mean) ** 2).sum()) / norm for p in psfs))


def resample_templates(templates: Sequence[RedImage], search: RedImage, workdir: Path, *, margin: int = 0,
                       ctx: Any | None = None, config: dict[str, Any] | None = None) -> TemplateStack:
    """Scale ``templates`` to the search flux, warp and co-add them onto ``search``'s grid (plus ``margin``)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    imgs, wts, scales, sky_vars, factors = [], [], [], [], []
    for i, t in enumerate(templates):
        scale, n_stars = flux_scale(t, search)
        scales.append(scale)
        factors.append(resampling_variance_factor(t, search))
        good = t.wgt > 0
        sky_vars.append(float(np.median(1.0 / t.wgt[good])) * scale * scale if good.any() else np.nan)
        log.info("template %s: flux scale to the search image %.4f from %d stars", t.path.name, scale, n_stars)
        bad = t.bad | t.near_saturated()
        e = EDGE_TRIM  # the interpolant needs this many real pixels on each side of a resampled one
        bad[:e, :] = bad[-e:, :] = bad[:, :e] = bad[:, -e:] = True
        sci = np.where(bad, np.float32(0.0), t.sci).astype(np.float32, copy=False)
        wgt = np.where(bad, np.float32(0.0), t.wgt).astype(np.float32, copy=False)
        hdr = [{"name": k, "value": t.header[k]} for k in GRID_KEYS + ("BAND", "EXPNUM", "CCDNUM") if k in t.header]
        hdr.append({"name": "FLXSCALE", "value": scale, "comment": "search flux / template flux"})
        ip, wp = workdir / f"template_{i:02d}.fits", workdir / f"template_{i:02d}.weight.fits"
        fitsio.write(str(ip), sci, header=hdr, clobber=True)
        fitsio.write(str(wp), wgt, header=hdr, clobber=True)
        imgs.append(ip)
        wts.append(wp)
    out_img, out_wgt = workdir / "template_stack.fits", workdir / "template_stack.weight.fits"
    head = out_img.with_suffix(".head")
    head.write_text(target_head_text(search.header, search.sci.shape, margin))
    opts = dict(SWARP_CONFIG)
    opts["HEADEROUT_NAME"] = head
    opts.update(config or {})
    swarp(imgs, out_img, out_wgt, workdir=workdir, weights=wts, config=opts, ctx=ctx)
    image = fitsio.read(str(out_img)).astype(np.float32, copy=False)
    weight = fitsio.read(str(out_wgt)).astype(np.float32, copy=False)
    want = (search.sci.shape[0] + 2 * margin, search.sci.shape[1] + 2 * margin)
    if image.shape != want:
        raise InputError(f"SWarp wrote a {image.shape} template stack where {want} was asked for; "
                         f"check the target header {head}")
    for p in imgs + wts:
        p.unlink(missing_ok=True)
    weight[~np.isfinite(image)] = 0.0
    image[~(weight > 0)] = 0.0
    sv = np.array(sky_vars)
    inv = np.where(np.isfinite(sv) & (sv > 0), 1.0 / sv, 0.0)
    var_factor = float((np.array(factors) * inv).sum() / inv.sum()) if inv.sum() > 0 else 1.0
    mismatch = template_psf_mismatch(templates, inv)
    stack = TemplateStack(image, weight, margin, len(templates), tuple(scales), float(np.nanmedian(sky_vars)),
                          var_factor, mismatch)
    log.info("template stack: PSF mismatch of single templates to the stack %.3f", mismatch)
    log.info("template stack: %d templates, %.1f%% of search pixels covered", len(templates),
             100.0 * float((stack.weight > 0).mean()))
    return stack
