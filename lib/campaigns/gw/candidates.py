"""Candidates on a difference image: detection, dipole and bad-pixel rejection, forced photometry.

Detection is the real SExtractor (``configs/astromatic/gw_diff.sex`` / ``gw_diff.param``) run
twice on the difference image with its absolute noise map: on ``D`` for the candidates and on
``-D`` for negative sources, which is how a subtraction artefact shows itself (a misaligned or
mis-matched star leaves a positive and a negative lobe side by side: a dipole).

Photometry is forced PSF photometry at each detection's windowed centroid:
``F = sum(P D) / sum(P^2)`` with ``P`` the difference image's PSF (unit sum, shifted to the
sub-pixel position) and ``var F = sum(P^2 V) / sum(P^2)^2`` from the propagated variance ``V``.
The estimator is unweighted by the data's own variance on purpose: weighting by a variance
that includes the candidate's shot noise would bias bright fluxes low. Two corrections make
the error honest: the noise of a convolved image is correlated, which ``V`` cannot say (the
error is scaled by the scatter of PSF fluxes at random blank positions, :func:`noise_scale`),
and the PSF-matching error is coherent over a source (a fraction of the template's PSF flux
beneath the candidate is added in quadrature). The PSF is the PSF-matched one -- that of the
image that was *not* convolved -- either stacked from its bright stars or, given the search
PSFEx model, that model (convolved with the kernel when the search image was convolved).

A positive detection becomes a candidate unless it is a dipole (a negative detection within two
FWHM carrying more than ``dipole_ratio`` of its flux), has a masked pixel within ``bad_radius``,
lies next to a saturated star, is far broader than the PSF (a bright star's residual halo), has
too little of its PSF on unmasked pixels, or its forced S/N is below ``snr_min``. Every
detection is kept in the table, with ``flags`` saying why it was rejected.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from skyops.config import config_dir
from skyops.errors import InputError
from skyops.imaging.astromatic import read_ldac, sextractor

log = logging.getLogger(__name__)

# Candidate flags (bitmask in the ``flags`` column). REJECT_FLAGS decide what is not a candidate.
DIPOLE = 1  # a negative detection nearby with a comparable flux
BADPIX = 2  # a masked difference-image pixel within bad_radius
LOW_SNR = 4  # forced-photometry S/N below snr_min
EDGE = 8  # too much of the PSF footprint is off the image or masked for a flux
NEG_PIXELS = 16  # informational: as many significant negative pixels as positive ones around it
TEMPLATE_PARTIAL = 32  # informational: fewer templates than elsewhere cover the position
EXTENDED = 64  # far broader than the PSF: a subtraction residual (a bright star's wings), not a point source
NEAR_SATURATED = 128  # next to a star saturated in the search or a template image
REJECT_FLAGS = DIPOLE | BADPIX | LOW_SNR | EDGE | EXTENDED | NEAR_SATURATED
FLAG_NAMES = {DIPOLE: "DIPOLE", BADPIX: "BADPIX", LOW_SNR: "LOW_SNR", EDGE: "EDGE",
              NEG_PIXELS: "NEG_PIXELS", TEMPLATE_PARTIAL: "TEMPLATE_PARTIAL", EXTENDED: "EXTENDED",
              NEAR_SATURATED: "NEAR_SATURATED"}
#: SExtractor's FWHM_IMAGE of faint point sources on a difference image runs 1.5-2.7 times the
#: PSF's (it measures the filtered, noisy profile); residual haloes of bright stars run 4+.
MAX_FWHM_RATIO = 3.5

CANDIDATE_DTYPE = np.dtype([
    ("id", "i4"), ("det_number", "i4"), ("ra", "f8"), ("dec", "f8"), ("x", "f8"), ("y", "f8"),
    ("flux", "f8"), ("flux_err", "f8"), ("snr", "f4"), ("mag", "f4"), ("mag_err", "f4"),
    ("flux_auto", "f8"), ("fluxerr_auto", "f8"), ("template_flux", "f8"), ("fwhm_image", "f4"), ("elongation", "f4"),
    ("dipole_ratio", "f4"), ("dipole_dist", "f4"), ("neg_frac", "f4"), ("n_bad_pix", "i4"),
    ("sex_flags", "i2"), ("flags", "i4"), ("is_candidate", "?"),
])


def read_sex_config(path: Path) -> dict[str, str]:
    """``KEY value`` lines of a SExtractor config file (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        out[key.strip().upper()] = value.strip()
    return out


def filter_noise_factor(fwhm: float) -> float:
    """Noise of a white-noise image after SExtractor's unit-sum Gaussian filter, per unit input noise.

    SExtractor applies DETECT_THRESH (in units of the unfiltered RMS map) to the *filtered*
    image, so a matched-filter S/N threshold ``nu`` is ``DETECT_THRESH = nu * sqrt(sum k^2)``.
    """
    size = max(3, int(2 * np.ceil(fwhm)) | 1)  # as skyops.imaging.astromatic.gauss_conv_file
    r = np.arange(size) - size // 2
    sig = fwhm / 2.3548
    k = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / sig**2)
    k /= k.sum()
    return float(np.sqrt((k * k).sum()))


def detect(image: Path, rms: Path, catalog: Path, *, workdir: Path, fwhm: float, detect_snr: float,
           ctx: Any | None = None) -> np.ndarray:
    """SExtractor on ``image`` (a FITS path, HDU suffix allowed) with an absolute RMS map.

    ``detect_snr`` is the matched-filter S/N of a detection (the peak of the PSF-filtered
    image over its own noise), converted to SExtractor's DETECT_THRESH.
    """
    fwhm = max(float(fwhm), 1.0)
    conf = read_sex_config(config_dir() / "astromatic" / "gw_diff.sex")
    conf["DETECT_THRESH"] = f"{detect_snr * filter_noise_factor(fwhm):.5g}"
    sextractor(image, catalog, params="gw_diff", workdir=workdir, weight=rms, config=conf,
               filter_fwhm=fwhm, ctx=ctx)
    return read_ldac(catalog)


# ----------------------------------------------------------------------------- PSF
@dataclass
class PSFStamp:
    """The difference image's PSF as a unit-sum stamp centred on its middle pixel."""

    image: np.ndarray
    fwhm: float
    source: str  # "empirical" | "psfex"

    @property
    def half(self) -> int:
        return self.image.shape[0] // 2

    def shifted(self, dx: float, dy: float) -> np.ndarray:
        """The PSF centred at (+dx, +dy) pixels from the stamp centre, unit sum."""
        if abs(dx) < 1e-3 and abs(dy) < 1e-3:
            return self.image
        p = subpixel_shift(self.image, dx, dy)
        return p / p.sum()


def subpixel_shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` moved by (dx, dy) pixels with a Fourier (band-limited) shift.

    A well-sampled PSF (FWHM >= 2 pixels) is nearly band-limited, so this keeps its shape where
    an interpolating spline would smooth it a little. The stamp's edges wrap around: callers
    shift by less than a pixel and crop (star cutouts) or have faint edges (PSF stamps).
    """
    f = np.fft.rfft2(image)
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.rfftfreq(image.shape[1])[None, :]
    f *= np.exp(-2j * np.pi * (ky * dy + kx * dx))
    return np.fft.irfft2(f, s=image.shape)


def _centred_cutouts(image: np.ndarray, x: np.ndarray, y: np.ndarray, half: int) -> np.ndarray:
    """Cutouts around 0-based float positions, shifted so the position is the stamp centre."""
    out = []
    for xi, yi in zip(x, y):
        ix, iy = int(round(xi)), int(round(yi))
        cut = image[iy - half - 2: iy + half + 3, ix - half - 2: ix + half + 3].astype(np.float64)
        cut = subpixel_shift(cut, ix - xi, iy - yi)
        out.append(cut[2:-2, 2:-2])
    return np.array(out)


def centroids(image: np.ndarray, x: np.ndarray, y: np.ndarray, fwhm: float, iterations: int = 5
              ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-weighted centroids (0-based) starting from ``x``, ``y``."""
    sig = fwhm / 2.3548  # the PSF's own width: little weight on neighbours
    half = int(np.ceil(2.5 * sig))
    g = np.arange(-half, half + 1)
    wg = np.exp(-(g[None, :, None] ** 2 + g[None, None, :] ** 2) / (2 * sig * sig))
    cx, cy = np.asarray(x, dtype=float).copy(), np.asarray(y, dtype=float).copy()
    for _ in range(iterations):
        cuts = _centred_cutouts(image, cx, cy, half)
        w = wg * cuts
        f = w.sum(axis=(1, 2))
        f = np.where(f > 0, f, np.nan)
        dx = np.nan_to_num((w * g[None, None, :]).sum(axis=(1, 2)) / f)
        dy = np.nan_to_num((w * g[None, :, None]).sum(axis=(1, 2)) / f)
        cx, cy = cx + np.clip(dx, -1, 1), cy + np.clip(dy, -1, 1)
    return cx, cy


def fwhm_halfmax(psf: np.ndarray, oversample: int = 8) -> float:
    """FWHM (pixels) from the area above half maximum of a PSF stamp (spline-oversampled).

    An elliptical PSF gets the FWHM of the round PSF of the same area.
    """
    fine = ndimage.zoom(np.asarray(psf, dtype=np.float64), oversample, order=3)
    area = (fine >= 0.5 * fine.max()).sum() / float(oversample * oversample)
    return float(2.0 * np.sqrt(area / np.pi))


def empirical_psf(image: np.ndarray, bad: np.ndarray, xy: np.ndarray, fwhm: float, half: int | None = None,
                  var: np.ndarray | None = None) -> tuple[PSFStamp, np.ndarray]:
    """The PSF of ``image``: the median of its bright stars' stamps, each recentred and normalised.

    ``xy`` are 0-based integer peaks of bright stars (stamps on the stellar locus). Each
    cutout is normalised by its core flux (within 1.5 FWHM, where a neighbour's light hardly
    reaches), the median of them all drops the neighbours further out, and the median profile
    is normalised to unit sum over the stamp (3.5 FWHM by default: >= 99.7% of a Moffat's
    light). Given the variance, a second pass keeps only the stars whose stamp, less the scaled
    first-pass PSF, is noise (|residual| < 4 sigma) outside the core. Returns the
    PSF (FWHM from its half-maximum area) and the stars' refined centroids (n, 2).
    """
    half = int(half or np.ceil(3.5 * fwhm))
    ny, nx = image.shape
    r = half + 3
    xy = np.asarray(xy, dtype=np.int64).reshape(-1, 2)
    ok = (xy[:, 0] >= r) & (xy[:, 0] < nx - r) & (xy[:, 1] >= r) & (xy[:, 1] < ny - r)
    if ok.any():
        ok[ok] = np.array([not bad[y - r:y + r + 1, x - r:x + r + 1].any() for x, y in xy[ok]])
    xy = xy[ok]
    if len(xy) < 3:
        raise ValueError(f"only {len(xy)} clean stars to build the PSF from")
    cx, cy = centroids(image, xy[:, 0], xy[:, 1], fwhm)
    cuts = _centred_cutouts(image, cx, cy, half)
    g = np.arange(-half, half + 1)
    core = (g[:, None] ** 2 + g[None, :] ** 2) <= (1.5 * fwhm) ** 2
    norm = cuts[:, core].sum(axis=1)  # the core: little of any neighbour's light
    good = norm > 0
    cuts, norm = cuts[good], norm[good]
    stack = np.median(cuts / norm[:, None, None], axis=0)  # the median drops most neighbours
    if var is not None:  # second pass: only stars whose stamp holds nothing but the star
        sig = np.sqrt(np.maximum(_centred_cutouts(var, cx[good], cy[good], half), 1e-30))
        resid = (cuts - norm[:, None, None] * stack) / sig
        clean = (np.abs(resid[:, ~core]) < 4.0).all(axis=1)
        if clean.sum() >= 5:
            stack = np.median(cuts[clean] / norm[clean, None, None], axis=0)
    stack /= stack.sum()
    return PSFStamp(stack, fwhm_halfmax(stack), "empirical"), np.column_stack([cx, cy])


@functools.lru_cache(maxsize=4)
def _load_psfex(path: str) -> Any:
    import galsim.des

    return galsim.des.DES_PSFEx(path)


def psfex_psf(path: str | Path, x: float, y: float, half: int, kernel: np.ndarray | None = None,
              norm: float = 1.0) -> PSFStamp:
    """A PSFEx model at FITS position (x, y), drawn on the pixel grid (optionally convolved).

    When the search image was the one convolved, the difference image's PSF is the search
    PSF convolved with the matching kernel (divided by the kernel sum). The model already
    includes the pixel, so it is drawn without one.
    """
    import galsim

    try:
        prof = _load_psfex(str(path)).getPSF(galsim.PositionD(float(x), float(y)))
        img = prof.drawImage(nx=2 * half + 1, ny=2 * half + 1, scale=1.0, method="no_pixel").array
    except (OSError, KeyError, ValueError, galsim.GalSimError) as exc:
        raise InputError(f"search PSF model {path} cannot be read or evaluated ({exc}); "
                         "pass the PSFEx .psf file of the search CCD") from None
    img = np.asarray(img, dtype=np.float64)
    if kernel is not None:
        from skyops.imaging.fftconv import fftconvolve

        img = fftconvolve(img, kernel / norm, mode="same")
    return PSFStamp(img / img.sum(), fwhm_halfmax(img), "psfex")


# ----------------------------------------------------------------------------- photometry
def forced_psf_flux(diff: np.ndarray, var: np.ndarray, bad: np.ndarray, x: np.ndarray, y: np.ndarray,
                    psf: PSFStamp | Callable[[float, float], PSFStamp], min_coverage: float = 0.7
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSF flux, its error and an edge flag at 0-based positions.

    Masked pixels and pixels off the image are left out of the sums; when they hold more than
    ``1 - min_coverage`` of the PSF's weight (sum P^2) the position is flagged and gets NaN.
    """
    ny, nx = diff.shape
    flux = np.full(len(x), np.nan)
    err = np.full(len(x), np.nan)
    edge = np.zeros(len(x), dtype=bool)
    for i, (xi, yi) in enumerate(zip(x, y)):
        p_model = psf(xi, yi) if callable(psf) else psf
        h = p_model.half
        ix, iy = int(round(xi)), int(round(yi))
        p = p_model.shifted(xi - ix, yi - iy)
        y0, y1, x0, x1 = iy - h, iy + h + 1, ix - h, ix + h + 1
        cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
        if cy0 >= cy1 or cx0 >= cx1:
            edge[i] = True
            continue
        p = p[cy0 - y0: cy1 - y0, cx0 - x0: cx1 - x0]
        sl = (slice(cy0, cy1), slice(cx0, cx1))
        good = ~bad[sl]
        pp = p * good
        s2 = (pp * pp).sum()
        if s2 < min_coverage * (p_model.image ** 2).sum():
            edge[i] = True
            continue
        flux[i] = (pp * diff[sl]).sum() / s2
        err[i] = np.sqrt((pp * pp * np.where(good, var[sl], 0.0)).sum()) / s2
    return flux, err, edge


def aperture_correction(image: np.ndarray, var: np.ndarray, bad: np.ndarray, xy: np.ndarray,
                        psf: PSFStamp | Callable[[float, float], PSFStamp], radius: float) -> float:
    """Median (aperture flux within ``radius``) / (PSF flux) over bright stars: the PSF's missing wings.

    ``xy`` are the stars' 0-based centroids. The aperture sum loses the median of an annulus
    (1.2-1.6 ``radius``) per pixel: faint neighbours' light. Used for PSFEx models, whose
    normalisation follows PSFEx's own flux convention.
    """
    if len(xy) == 0:
        return 1.0
    x, y = xy[:, 0].astype(float), xy[:, 1].astype(float)
    fpsf, _, edge = forced_psf_flux(image, var, bad, x, y, psf)
    r_out = 1.6 * radius
    r = int(np.ceil(r_out))
    ny, nx = image.shape
    ratios = []
    for xi, yi, fp, e in zip(x, y, fpsf, edge):
        ix, iy = int(round(xi)), int(round(yi))
        if e or not np.isfinite(fp) or fp <= 0 or ix - r < 0 or iy - r < 0 or ix + r >= nx or iy + r >= ny:
            continue
        sl = (slice(iy - r, iy + r + 1), slice(ix - r, ix + r + 1))
        gy, gx = np.mgrid[iy - r:iy + r + 1, ix - r:ix + r + 1]
        rr = np.hypot(gx - xi, gy - yi)
        disk, ring = rr <= radius, (rr >= 1.2 * radius) & (rr <= r_out)
        if bad[sl][disk].any():
            continue
        sky = float(np.median(image[sl][ring & ~bad[sl]])) if (ring & ~bad[sl]).any() else 0.0
        ratios.append((image[sl][disk].sum() - sky * disk.sum()) / fp)
    if len(ratios) < 3:
        return 1.0
    return float(np.median(ratios))


def noise_scale(diff: np.ndarray, var: np.ndarray, bad: np.ndarray, psf: PSFStamp, n: int = 1000,
                seed: int = 12345, blank: np.ndarray | None = None) -> float:
    """Robust std of (PSF flux / its error) at random unmasked blank positions: 1 if the variance is right.

    The convolved image's noise is correlated, which a per-pixel variance cannot say; this
    measures how much the forced-photometry errors must be scaled. ``blank`` marks positions
    free of sources (residuals of real sources would widen the distribution).
    """
    ny, nx = diff.shape
    h = psf.half
    g = np.random.default_rng(seed)
    x = g.integers(h + 1, nx - h - 1, 6 * n)
    y = g.integers(h + 1, ny - h - 1, 6 * n)
    ok = ~bad[y, x] if blank is None else ~bad[y, x] & blank[y, x]
    x, y = x[ok][:n].astype(float), y[ok][:n].astype(float)
    f, e, _ = forced_psf_flux(diff, var, bad, x, y, psf)
    z = f / e
    z = z[np.isfinite(z)]
    if len(z) < 30:
        return 1.0
    return float(1.4826 * np.median(np.abs(z - np.median(z))))


# ----------------------------------------------------------------------------- candidates
def _neg_frac(diff: np.ndarray, var: np.ndarray, bad: np.ndarray, x: float, y: float, radius: float) -> float:
    """(pixels below -2 sigma) / (pixels above +2 sigma) within ``radius``."""
    ny, nx = diff.shape
    r = int(np.ceil(radius))
    ix, iy = int(round(x)), int(round(y))
    y0, y1, x0, x1 = max(iy - r, 0), min(iy + r + 1, ny), max(ix - r, 0), min(ix + r + 1, nx)
    d = diff[y0:y1, x0:x1]
    s = np.sqrt(np.maximum(var[y0:y1, x0:x1], 1e-30))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = ((xx - x) ** 2 + (yy - y) ** 2 <= radius * radius) & ~bad[y0:y1, x0:x1]
    pos = ((d > 2 * s) & inside).sum()
    neg = ((d < -2 * s) & inside).sum()
    return float(neg / max(pos, 1))


def build_candidates(pos: np.ndarray, neg: np.ndarray, diff: np.ndarray, var: np.ndarray, bad: np.ndarray,
                     partial: np.ndarray, near_sat: np.ndarray, template: np.ndarray,
                     psf: PSFStamp | Callable[[float, float], PSFStamp], *, fwhm: float, snr_min: float,
                     dipole_ratio: float, bad_radius: float, zeropoint: float | None, flux_scale: float = 1.0,
                     err_scale: float = 1.0, systematic: tuple[float, float] = (0.0, 0.0),
                     pix2sky: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
                     ) -> np.ndarray:
    """The candidate table (CANDIDATE_DTYPE) of every positive detection, with flags.

    ``pos``/``neg`` are SExtractor catalogs of D and -D; positions in the table are FITS
    (1-based). ``var`` is the propagated (statistical) variance of ``diff``; ``flux_scale`` the
    aperture correction; ``err_scale`` the correction for correlated noise. ``template`` is the
    PSF-matched template: the PSF-matching error is coherent over a source, so it enters the
    flux error as ``systematic[k] * |template PSF flux|`` (k = 1 where ``partial``: fewer
    templates cover, 0 elsewhere), which keeps residuals of bright sources from being candidates.
    """
    n = len(pos)
    out = np.zeros(n, CANDIDATE_DTYPE)
    if n == 0:
        return out
    x1, y1 = pos["XWIN_IMAGE"].astype(float), pos["YWIN_IMAGE"].astype(float)
    x0, y0 = x1 - 1.0, y1 - 1.0
    ny, nx = diff.shape
    ixs = np.clip(np.round(x0).astype(int), 0, nx - 1)
    iys = np.clip(np.round(y0).astype(int), 0, ny - 1)
    flux, err, edge = forced_psf_flux(diff, var, bad, x0, y0, psf)
    flux, err = flux * flux_scale, err * flux_scale * err_scale
    t_flux = forced_psf_flux(template, var, bad, x0, y0, psf)[0] * flux_scale
    out["template_flux"] = t_flux
    eps = np.where(partial[iys, ixs], systematic[1], systematic[0])
    err = np.sqrt(err * err + (eps * np.nan_to_num(np.abs(t_flux))) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = flux / err
    out["det_number"] = pos["NUMBER"]
    out["x"], out["y"] = x1, y1
    if pix2sky is not None:
        out["ra"], out["dec"] = pix2sky(x1, y1)
    else:
        out["ra"], out["dec"] = pos["ALPHAWIN_J2000"], pos["DELTAWIN_J2000"]
    out["flux"], out["flux_err"], out["snr"] = flux, err, snr
    zp = np.nan if zeropoint is None else float(zeropoint)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mag"] = np.where(flux > 0, zp - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)
        out["mag_err"] = np.where(flux > 0, 2.5 / np.log(10.0) * err / np.abs(flux), np.nan)
    out["flux_auto"], out["fluxerr_auto"] = pos["FLUX_AUTO"], pos["FLUXERR_AUTO"]
    out["fwhm_image"], out["elongation"] = pos["FWHM_IMAGE"], pos["ELONGATION"]
    out["sex_flags"] = pos["FLAGS"]
    # dipoles: the strongest negative detection within 2 FWHM
    out["dipole_ratio"], out["dipole_dist"] = 0.0, np.nan
    if len(neg):
        tree = cKDTree(np.column_stack([neg["XWIN_IMAGE"], neg["YWIN_IMAGE"]]))
        for i, js in enumerate(tree.query_ball_point(np.column_stack([x1, y1]), r=2.0 * fwhm)):
            if not js:
                continue
            js = np.asarray(js)
            ratio = np.abs(neg["FLUX_AUTO"][js]) / max(abs(float(pos["FLUX_AUTO"][i])), 1e-30)
            k = int(np.argmax(ratio))
            out["dipole_ratio"][i] = ratio[k]
            out["dipole_dist"][i] = np.hypot(neg["XWIN_IMAGE"][js[k]] - x1[i], neg["YWIN_IMAGE"][js[k]] - y1[i])
    # masked pixels near the centre, negative pixels around it
    r = int(np.ceil(bad_radius))
    g = np.arange(-r, r + 1)
    disk = (g[:, None] ** 2 + g[None, :] ** 2) <= bad_radius * bad_radius
    padded = np.pad(bad, r, constant_values=True)
    for i in range(n):
        ix, iy = int(round(x0[i])), int(round(y0[i]))
        ix, iy = min(max(ix, 0), nx - 1), min(max(iy, 0), ny - 1)
        out["n_bad_pix"][i] = int(padded[iy:iy + 2 * r + 1, ix:ix + 2 * r + 1][disk].sum())
        out["neg_frac"][i] = _neg_frac(diff, var, bad, x0[i], y0[i], 1.5 * fwhm)
    flags = np.zeros(n, dtype=np.int32)
    flags[out["dipole_ratio"] > dipole_ratio] |= DIPOLE
    flags[out["n_bad_pix"] > 0] |= BADPIX
    flags[~(snr >= snr_min)] |= LOW_SNR
    flags[edge] |= EDGE
    flags[out["fwhm_image"] > MAX_FWHM_RATIO * fwhm] |= EXTENDED
    flags[out["neg_frac"] >= 1.0] |= NEG_PIXELS
    flags[partial[iys, ixs]] |= TEMPLATE_PARTIAL
    flags[near_sat[iys, ixs]] |= NEAR_SATURATED
    out["flags"] = flags
    out["is_candidate"] = (flags & REJECT_FLAGS) == 0
    order = np.lexsort((-np.nan_to_num(out["snr"], nan=-np.inf), ~out["is_candidate"]))
    out = out[order]
    out["id"] = np.arange(1, n + 1)
    return out


def describe_flags(flags: int) -> str:
    return "|".join(name for bit, name in FLAG_NAMES.items() if flags & bit) or "OK"
