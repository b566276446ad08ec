"""``gw.diffimg_ccd``: difference imaging of one search CCD against its templates.

What RUN_DIFFIMG_PIPELINE.sh does for one CCD of a GW search exposure, in skyops:

1. **Resample** the template CCDs onto the search CCD's pixel grid with SWarp and co-add them
   (inverse-variance weights; pixels no template covers keep weight 0) -- :mod:`.resample`.
2. **PSF-match** by an Alard-Lupton kernel fit (:mod:`.psfmatch`): measure both images' FWHM on
   the stellar locus of bright isolated stamps, convolve whichever is *sharper* to match the
   other, with a spatially varying kernel and a differential background fitted on those
   stamps with iterative clipping. The kernel sum is the photometric scale between the images.
3. **Subtract**, in the search image's flux units (positive = brighter now), and propagate the
   variance: the search's and template's noise (sky + read noise from WGT, plus the sources'
   shot noise), the convolved one through the kernel squared.
4. **Detect** with SExtractor on the difference and on its negative; reject dipoles, detections
   next to masked pixels and low S/N ones (:mod:`.candidates`).
5. **Forced PSF photometry** at each detection, magnitudes from the search zeropoint.
6. **Write** the difference image (SCI difference, MSK bits below, WGT inverse variance), the
   candidate table and one search|template|difference PNG per candidate (:mod:`.stamps`).

Difference-image mask bits (MSK HDU)::

    1  SEARCH_BAD        the search pixel is masked (BADPIX bad bits or weight 0)
    2  TEMPLATE_NODATA   no template covers the pixel (outside, or masked in every template)
    4  CONVOLVED_BAD     within the kernel's reach of a bad pixel or edge of the convolved image
    8  TEMPLATE_PARTIAL  fewer templates than elsewhere cover it (information only)
   16  NEAR_SATURATED    within SATURATION_GROW pixels of a pixel saturated in the search or a
                         template (candidates there are rejected; information for the pixels)

Pixels with bits 1, 2 or 4 have weight 0 and difference 0.
"""
from __future__ import annotations

import contextlib
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import fitsio
import numpy as np
from astropy.wcs import WCS
from scipy import ndimage

from skyops.campaigns.gw import candidates as cand
from skyops.campaigns.gw import psfmatch
from skyops.campaigns.gw.resample import GRID_KEYS, RedImage, TemplateStack, read_red_image, resample_templates
from skyops.campaigns.gw.stamps import cutout, write_stamp_png
from skyops.errors import InputError, ProcessingError, StepParameterError
from skyops.steps.context import StepContext
from skyops.steps.registry import step

SEARCH_BAD, TEMPLATE_NODATA, CONVOLVED_BAD, TEMPLATE_PARTIAL, NEAR_SATURATED = 1, 2, 4, 8, 16
MASK_BAD = SEARCH_BAD | TEMPLATE_NODATA | CONVOLVED_BAD
#: Relative FWHM difference below which the template is convolved even if marginally broader.
SEEING_TIE = 0.03
#: Template pixels resampled beyond each edge of the search CCD, for convolving near the edges.
TEMPLATE_MARGIN = 24
ZEROPOINT_KEYS = ("MAGZERO", "MAG_ZERO", "MAGZPT", "ZEROPNT", "MAGZP")
FILETYPES = {"image": "gw_diff_image", "candidates": "gw_diff_candidates", "stamp": "gw_diff_stamp"}


# ----------------------------------------------------------------------------- timing
@dataclass
class StageTimes:
    """Wall and CPU seconds per stage (CPU includes the tools run as child processes)."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def _cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), self._cpu()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t0
            self.cpu[name] = self.cpu.get(name, 0.0) + self._cpu() - c0

    def metrics(self) -> dict[str, float]:
        out = {f"time_{k}_wall_s": round(v, 3) for k, v in self.wall.items()}
        out.update({f"time_{k}_cpu_s": round(v, 3) for k, v in self.cpu.items()})
        return out


# ----------------------------------------------------------------------------- helpers
def _check_params(templates: list[str], snr_min: float, kernel_sigmas: list[float] | None,
                  kernel_degrees: list[int] | None, spatial_degree: int, bg_degree: int, stamp_size: int,
                  kernel_half_width: int | None, detect_snr: float, dipole_ratio: float, convolve: str) -> None:
    problems = []
    if not templates:
        problems.append("parameter 'templates' is empty; give at least one template red_immask CCD")
    if not snr_min > 0:
        problems.append(f"parameter 'snr_min' must be > 0 (got {snr_min})")
    if not detect_snr > 0:
        problems.append(f"parameter 'detect_snr' must be > 0 (got {detect_snr})")
    if not dipole_ratio > 0:
        problems.append(f"parameter 'dipole_ratio' must be > 0 (got {dipole_ratio})")
    sig = kernel_sigmas or [0.7, 1.5, 3.0]
    deg = kernel_degrees or [6, 4, 2]
    if len(sig) != len(deg) or any(s <= 0 for s in sig) or any(d < 0 for d in deg):
        problems.append(f"parameters 'kernel_sigmas' {sig} and 'kernel_degrees' {deg} must have the same length, "
                        "sigmas > 0 and degrees >= 0")
    if not 0 <= spatial_degree <= 3:
        problems.append(f"parameter 'spatial_degree' must be 0-3 (got {spatial_degree})")
    if not 0 <= bg_degree <= 3:
        problems.append(f"parameter 'bg_degree' must be 0-3 (got {bg_degree})")
    if stamp_size < 9 or stamp_size % 2 == 0:
        problems.append(f"parameter 'stamp_size' must be an odd number >= 9 (got {stamp_size})")
    if convolve not in ("auto", "template", "search"):
        problems.append(f"parameter 'convolve' must be 'auto', 'template' or 'search' (got {convolve!r})")
    if kernel_half_width is not None and not 3 <= kernel_half_width <= 40:
        problems.append(f"parameter 'kernel_half_width' must be 3-40 pixels (got {kernel_half_width})")
    if problems:
        raise StepParameterError("step 'gw.diffimg_ccd': " + "; ".join(problems))


def _check_files(search: str, templates: list[str], search_psf: str | None, workdir: Path) -> None:
    """Every input exists, and no path holds what the tools would parse (before any work)."""
    named = [("search", search)] + [(f"templates[{i}]", t) for i, t in enumerate(templates)]
    if search_psf is not None:
        named.append(("search_psf", search_psf))
    problems = [f"parameter '{k}': {v} does not exist" for k, v in named if not Path(v).is_file()]
    problems += [f"parameter '{k}': {v} contains '{c}', which FITS file names and the Astromatic tools' lists "
                 "cannot hold; rename or link the file" for k, v in named for c in ",[" if c in str(v)]
    if any(c in str(workdir) for c in ",["):
        problems.append(f"the workdir {workdir} contains ',' or '[', which SExtractor and CFITSIO would misread; "
                        "run the step in another folder")
    if problems:
        raise InputError("step 'gw.diffimg_ccd': " + "; ".join(problems))


def _identity(search: RedImage, band: str | None, expnum: int | None, ccd: int | None,
              templates: list[RedImage]) -> tuple[str, int, int]:
    hb = str(search.key("BAND", "") or "").strip()
    if band is not None and hb and band != hb:
        raise InputError(f"parameter 'band' is {band!r} but search image {search.path} has BAND = {hb!r}")
    band = band or hb or "x"
    for t in templates:
        tb = str(t.key("BAND", "") or "").strip()
        if tb and tb != band:
            raise InputError(f"template {t.path} is in band {tb!r}, the search image {search.path} in {band!r}; "
                             "templates must be taken in the search image's band")
    expnum = int(expnum if expnum is not None else search.key("EXPNUM", 0) or 0)
    ccd = int(ccd if ccd is not None else search.key("CCDNUM", 0) or 0)
    return band, expnum, ccd


def _variance(img: RedImage) -> np.ndarray:
    """Per-pixel variance of a red_immask SCI plane: 1/WGT (sky + read noise) plus shot noise."""
    gain = 1.0
    bunit = str(img.key("BUNIT", "electrons") or "").lower()
    if not bunit.startswith("electron"):
        gain = float(img.key("GAIN", 1.0) or 1.0)
    with np.errstate(divide="ignore"):
        v = np.where(img.wgt > 0, 1.0 / np.maximum(img.wgt, 1e-30), np.inf).astype(np.float32)
    v += np.maximum(img.sci, 0.0) / np.float32(gain)
    return v


def _template_variance(image: np.ndarray, weight: np.ndarray, stack: TemplateStack) -> np.ndarray:
    """Variance of the stacked template: 1/W plus shot noise averaged over the contributing images,
    times the resampling's variance factor.

    For a weighted mean of N images of equal sky noise v the shot noise is T/N = T (1/W) / v, so
    (1/W) / v counts how many templates cover each pixel without knowing which. Scaled by f to
    the search flux, an image's shot noise is f times its (scaled) value.
    """
    f = float(np.mean(stack.flux_scales)) if stack.flux_scales else 1.0
    with np.errstate(divide="ignore"):
        sky = np.where(weight > 0, 1.0 / np.maximum(weight, 1e-30), np.inf).astype(np.float32)
    var = sky + np.maximum(image, 0.0) * np.float32(f) * np.minimum(sky / np.float32(stack.sky_var), 1.0)
    var *= np.float32(stack.var_factor)  # resampling averaged neighbouring pixels
    return var


def _zeropoint(zeropoint: float | None, search: RedImage) -> float | None:
    if zeropoint is not None:
        return float(zeropoint)
    for k in ZEROPOINT_KEYS:
        v = search.key(k)
        if v is not None:
            try:
                return float(v)
            except (TypeError, ValueError):
                continue
    return None


def _grid_cards(search: RedImage) -> list[dict]:
    keys = GRID_KEYS + ("EXPNUM", "CCDNUM", "DETPOS", "BAND", "NITE", "MJD-OBS", "EXPTIME", "FILTER")
    return [{"name": k, "value": search.header[k]} for k in keys if k in search.header]


# ----------------------------------------------------------------------------- the step
@step("gw.diffimg_ccd", resources={"cpu": 1, "memory_mb": 4096, "scratch_mb": 1024},
      outputs=[FILETYPES["image"], FILETYPES["candidates"]])
def diffimg_ccd(ctx: StepContext, *, search: str, templates: list[str], search_psf: str | None = None,
                band: str | None = None, expnum: int | None = None, ccd: int | None = None,
                zeropoint: float | None = None, snr_min: float = 5.0, detect_snr: float = 3.5,
                dipole_ratio: float = 0.5, convolve: str = "auto", kernel_half_width: int | None = None,
                kernel_sigmas: list[float] | None = None, kernel_degrees: list[int] | None = None,
                spatial_degree: int = 2, bg_degree: int = 1, max_fit_stamps: int = 250,
                fit_stamp_snr: float = 10.0, regularization: float = 1e-5, partial_systematic: float = 0.01,
                stamp_size: int = 31, max_stamp_pngs: int = 200, keep_scratch: bool = False) -> dict:
    """Difference one search CCD against its templates (SWarp + Alard-Lupton), detect and measure candidates.

    ``search``/``templates``: red_immask files (SCI/MSK/WGT). ``search_psf``: the search CCD's
    PSFEx model (else the PSF is stacked from the image's stars). ``band``/``expnum``/``ccd``:
    checked against (else taken from) the search header. ``zeropoint``: the search CCD's (else
    a MAGZERO-like header keyword, else magnitudes are NaN). ``snr_min``: forced-photometry S/N
    of a candidate; ``detect_snr``: matched-filter S/N of a SExtractor detection;
    ``dipole_ratio``: a negative neighbour with more than this fraction of the flux makes a
    dipole. ``convolve``: auto (the sharper image) | template | search. Kernel: half-width
    (auto from the FWHMs), basis Gaussians' sigmas and degrees (0.7, 1.5, 3 px; 6, 4, 2),
    spatial and background polynomial degrees, ``max_fit_stamps`` stamps of peak pixel S/N >=
    ``fit_stamp_snr``, Laplacian ``regularization``; ``partial_systematic``: floor of the PSF
    mismatch where fewer templates cover. Outputs: the difference image (gw_diff_image), the
    candidate table (gw_diff_candidates), one PNG per candidate (gw_diff_stamp, at most
    ``max_stamp_pngs``, ``stamp_size`` pixels a side).
    """
    _check_params(templates, snr_min, kernel_sigmas, kernel_degrees, spatial_degree, bg_degree, stamp_size,
                  kernel_half_width, detect_snr, dipole_ratio, convolve)
    _check_files(search, templates, search_psf, ctx.workdir)
    clock = StageTimes()
    with clock("read"):
        s_img = read_red_image(ctx.use(search, "red_immask"), "search image")
        t_imgs = [read_red_image(ctx.use(t, "red_immask"), f"template {i + 1}") for i, t in enumerate(templates)]
        if search_psf is not None:
            ctx.use(search_psf, "psfex_model")
        band, expnum, ccd = _identity(s_img, band, expnum, ccd, t_imgs)
    stem = f"D{expnum:08d}_{band}_c{ccd:02d}"
    scratch = ctx.path(f".diffimg_{stem}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    ctx.log.info("gw.diffimg_ccd %s: search %s, %d template(s)", stem, s_img.path.name, len(t_imgs))
    try:
        metrics = _difference(ctx, clock, stem, scratch, s_img, t_imgs, templates, search_psf, zeropoint,
                              snr_min, detect_snr, dipole_ratio, convolve, kernel_half_width, kernel_sigmas,
                              kernel_degrees, spatial_degree, bg_degree, max_fit_stamps, fit_stamp_snr,
                              regularization, partial_systematic, stamp_size, max_stamp_pngs)
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    metrics.update(expnum=expnum, ccdnum=ccd, band=band)
    metrics.update(clock.metrics())
    return metrics


def _difference(ctx: StepContext, clock: StageTimes, stem: str, scratch: Path, s_img: RedImage,
                t_imgs: list[RedImage], templates: list[str], search_psf: str | None, zeropoint: float | None,
                snr_min: float, detect_snr: float, dipole_ratio: float, convolve: str,
                kernel_half_width: int | None, kernel_sigmas: list[float] | None, kernel_degrees: list[int] | None,
                spatial_degree: int, bg_degree: int, max_fit_stamps: int, fit_stamp_snr: float,
                regularization: float, partial_systematic: float, stamp_size: int, max_stamp_pngs: int) -> dict:
    """The stages of the step, timed by ``clock``; returns the metrics."""
    with clock("swarp"):
        stack = resample_templates(t_imgs, s_img, scratch / "swarp", margin=TEMPLATE_MARGIN, ctx=ctx)
    if not (stack.weight > 0).any():
        raise ProcessingError(f"{stem}: no template pixel lands on the search CCD; the templates {templates} do "
                              "not overlap it (check their WCS and that they are the same sky)")

    with clock("kernel_fit"):
        match = _match_psfs(ctx, s_img, stack, t_imgs, kernel_half_width, kernel_sigmas, kernel_degrees,
                            spatial_degree, bg_degree, max_fit_stamps, fit_stamp_snr, regularization, convolve)
    sol = match.solution

    with clock("convolution"):
        conv, var_conv, reach = _convolve(match, stack)

    with clock("subtraction"):
        diff, var, mask = _subtract(match, conv, var_conv, reach, stack)
        del var_conv, reach
        bad = (mask & MASK_BAD) != 0
        matched = conv if match.convolved == "template" else match.sci / np.float32(sol.norm)
        del conv
        # where fewer templates cover (and within the kernel's and the PSF's reach of it) the stack's
        # PSF is another mix of the templates' PSFs than the one the kernel was fitted to
        partial = _grow((mask & TEMPLATE_PARTIAL) != 0, sol.basis.half_width + int(np.ceil(2 * match.fwhm_diff)))
        partial = (partial & ~bad).astype(np.int8)
        eps = _matching_systematic(diff, var, matched, bad, partial, match.fwhm_diff)
        eps[1] = max(eps[1], eps[0], stack.psf_mismatch, partial_systematic)
        zp = _zeropoint(zeropoint, s_img)
        diff_path = ctx.path(f"{stem}_diff.fits")
        with ctx.output(diff_path.name, filetype=FILETYPES["image"]) as tmp:
            _write_diff(tmp, diff, mask, var, bad, _diff_header(s_img, match, stack, templates, eps, zp))

    with clock("photometry"):  # the PSF, its aperture correction and the noise's correlation first
        psf, psf_at = _diff_psf(match, search_psf)
        apcorr = 1.0  # the stacked PSF is normalised over 3.5+ FWHM: >= 99.7% of a Moffat's light
        if psf.source == "psfex":  # a model's normalisation is its own: put it on total flux
            apcorr = cand.aperture_correction(match.sci, match.var_sci, match.bad_sci,
                                              match.stars_xy, psf_at, radius=3.0 * match.fwhm_diff)
        # blank sky: the matched template's 5x5 mean below 2 sigma of such a mean (no source there)
        blank = ndimage.uniform_filter(matched, size=5) < 2.0 * np.sqrt(np.where(bad, np.inf, var)) / 5.0
        err_scale = max(cand.noise_scale(diff, var, bad, psf, blank=blank), 1.0)
        del blank

    with clock("detection"):  # the threshold is a true S/N: scaled for the correlated noise
        var_det = var + (eps.astype(np.float32)[partial] * matched) ** 2  # no detections on bright residuals
        pos, neg = _detect(ctx, diff, var_det, bad, diff_path, scratch, match.fwhm_diff, detect_snr * err_scale)
        del var_det

    with clock("photometry"):
        wcs = WCS({k: s_img.header[k] for k in GRID_KEYS if k in s_img.header} | {"NAXIS": 2})

        def pix2sky(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            ra, dec = wcs.all_pix2world(x, y, 1)
            return np.mod(ra, 360.0), dec

        table = cand.build_candidates(pos, neg, diff, var, bad, partial.astype(bool),
                                      (mask & NEAR_SATURATED) != 0, matched, psf_at,
                                      fwhm=match.fwhm_diff, snr_min=snr_min, dipole_ratio=dipole_ratio,
                                      bad_radius=max(2.0, 0.75 * match.fwhm_diff), zeropoint=zp,
                                      flux_scale=apcorr, err_scale=err_scale,
                                      systematic=(float(eps[0]), float(eps[1])), pix2sky=pix2sky)
        good, rejected = table[table["is_candidate"]], table[~table["is_candidate"]]
        meta = [{"name": k, "value": v} for k, v in (
            ("EXPNUM", s_img.key("EXPNUM", 0)), ("CCDNUM", s_img.key("CCDNUM", 0)), ("BAND", s_img.key("BAND", "")),
            ("SNRMIN", float(snr_min)), ("APCORR", float(apcorr)), ("ERRSCALE", float(err_scale)),
            ("PSFSRC", psf.source), ("FWHMDIFF", float(match.fwhm_diff)),
            ("MAGZERO", float(zp) if zp is not None else "none"))]
        with ctx.output(f"{stem}_diffcand.fits", filetype=FILETYPES["candidates"]) as tmp:
            with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
                f.write(good, header=meta, extname="CANDIDATES")
                f.write(rejected, header=meta, extname="REJECTED")

    with clock("stamps"):
        n_png = _write_stamps(ctx, stem, good[:max_stamp_pngs], s_img.sci, stack.image / _flux_scale(match),
                              diff, stamp_size)

    ctx.log.info("%s: %d candidates of %d detections (convolved %s; FWHM search %.2f, template %.2f px; "
                 "kernel chi2 %.3f on %d stamps)", stem, len(good), len(table), match.convolved,
                 match.fwhm_search, match.fwhm_template, sol.chi2, sol.n_used)
    rej = {name.lower(): int(((rejected["flags"] & bit) != 0).sum()) for bit, name in cand.FLAG_NAMES.items()
           if bit & cand.REJECT_FLAGS}
    return {
        "n_candidates": int(len(good)), "n_detections": int(len(table)), "n_negative": int(len(neg)),
        "n_rejected": int(len(rejected)), **{f"n_rejected_{k}": v for k, v in rej.items()},
        "n_stamp_pngs": n_png, "convolved": match.convolved,
        "fwhm_search_pix": round(float(match.fwhm_search), 3),
        "fwhm_template_pix": round(float(match.fwhm_template), 3),
        "kernel_chi2": round(float(sol.chi2), 4), "kernel_norm": round(float(sol.norm), 5),
        "kernel_half_width": int(sol.basis.half_width), "kernel_spatial_degree": int(sol.spatial_degree),
        "n_fit_stamps": int(len(sol.stamp_xy)), "n_fit_stamps_used": int(sol.n_used),
        "kernel_fit_iterations": int(sol.iterations), "aperture_correction": round(float(apcorr), 5),
        "flux_err_scale": round(float(err_scale), 4), "matching_systematic": round(float(eps[0]), 5),
        "matching_systematic_partial": round(float(eps[1]), 5), "psf_source": psf.source,
        "template_coverage": round(float((stack.weight > 0).mean()), 4),
        "template_flux_scales": [round(float(f), 5) for f in stack.flux_scales],
        "template_resampling_var_factor": round(float(stack.var_factor), 4),
        "template_psf_mismatch": round(float(stack.psf_mismatch), 4),
        "diff_good_fraction": round(float((~bad).mean()), 4), "zeropoint": zp,
    }


def _diff_header(s_img: RedImage, match: "Match", stack: TemplateStack, templates: list[str], eps: np.ndarray,
                 zp: float | None) -> list[dict]:
    sol = match.solution
    cards = _grid_cards(s_img) + [
        {"name": "DIFFCONV", "value": match.convolved, "comment": "image convolved to match the other"},
        {"name": "KERNNORM", "value": float(sol.norm), "comment": "kernel sum"},
        {"name": "KERNCHI2", "value": float(sol.chi2), "comment": "reduced chi2 of the kernel fit"},
        {"name": "KERNHALF", "value": int(sol.basis.half_width), "comment": "[pix] kernel half-width"},
        {"name": "KERNSPDG", "value": int(sol.spatial_degree), "comment": "kernel spatial degree"},
        {"name": "NSTAMPS", "value": int(sol.n_used), "comment": "stamps used in the kernel fit"},
        {"name": "KERNSYS", "value": float(eps[0]), "comment": "PSF-matching error / template"},
        {"name": "KERNSYSP", "value": float(eps[1]), "comment": "the same where fewer templates cover"},
        {"name": "FWHMSRCH", "value": float(match.fwhm_search), "comment": "[pix] search PSF FWHM"},
        {"name": "FWHMTMPL", "value": float(match.fwhm_template), "comment": "[pix] template PSF FWHM"},
        {"name": "NTEMPL", "value": len(templates), "comment": "number of template images"},
        {"name": "TMPLPSFD", "value": float(stack.psf_mismatch), "comment": "template PSF mismatch to stack"},
        {"name": "BUNIT", "value": "electrons", "comment": "search-image flux scale"},
    ] + [{"name": f"TEMPL{i + 1:03d}", "value": Path(t).name[:68]} for i, t in enumerate(templates[:99])]
    if zp is not None:
        cards.append({"name": "MAGZERO", "value": float(zp), "comment": "search zeropoint for magnitudes"})
    return cards


def _write_diff(path: Path, diff: np.ndarray, mask: np.ndarray, var: np.ndarray, bad: np.ndarray,
                header: list[dict]) -> None:
    """SCI (difference, e-), MSK (bits above), WGT (inverse variance, 0 where masked)."""
    wgt = np.where(bad, np.float32(0.0), 1.0 / np.maximum(var, np.float32(1e-30))).astype(np.float32, copy=False)
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(diff.astype(np.float32, copy=False), header=header, extname="SCI")
        f.write(mask.astype(np.int16, copy=False), header=[{"name": "BUNIT", "value": "gw.diffimg mask bits"}],
                extname="MSK")
        f.write(wgt, header=[{"name": "BUNIT", "value": "1/electrons**2"}], extname="WGT")


def _convolve(match: "Match", stack: TemplateStack) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K * ref + background, its variance and the kernel's reach of bad pixels, on the search grid."""
    sol = match.solution
    ref, var_ref, bad_ref, m = match.ref, match.var_ref, match.bad_ref, 0
    if match.convolved == "template":  # convolve the padded stack: the edges get their template pixels
        m = stack.margin
        ref, bad_ref = stack.image_full, ~(stack.weight_full > 0)
        var_ref = _template_variance(ref, stack.weight_full, stack)
    conv = sol.convolve(np.where(bad_ref, np.float32(0.0), ref), margin=m)
    var_conv = sol.convolve_variance(np.where(bad_ref, np.float32(0.0), var_ref), margin=m)
    reach = _reach(bad_ref, sol.basis.half_width)
    if m:
        conv, var_conv, reach = (a[m:a.shape[0] - m, m:a.shape[1] - m] for a in (conv, var_conv, reach))
    conv += sol.background_image()
    return conv, var_conv, reach


# ----------------------------------------------------------------------------- stages
@dataclass
class Match:
    """The PSF-matching set-up: which image is convolved (ref) to match which (sci)."""

    convolved: str  # "template" or "search"
    ref: np.ndarray
    var_ref: np.ndarray
    bad_ref: np.ndarray
    sci: np.ndarray
    var_sci: np.ndarray
    bad_sci: np.ndarray
    var_search: np.ndarray
    var_template: np.ndarray
    bad_search: np.ndarray
    bad_template: np.ndarray
    solution: psfmatch.KernelSolution
    fwhm_search: float
    fwhm_template: float
    psf: cand.PSFStamp  # empirical PSF of the image not convolved: the difference image's PSF
    stars_xy: np.ndarray  # 0-based centroids of the stars it was stacked from
    near_sat_search: np.ndarray
    near_sat_template: np.ndarray

    @property
    def fwhm_diff(self) -> float:
        """FWHM of the difference image's PSF: that of the image not convolved (the broader)."""
        return max(self.fwhm_search, self.fwhm_template)


def _match_psfs(ctx: StepContext, s_img: RedImage, stack, t_imgs: list[RedImage], kernel_half_width: int | None,
                kernel_sigmas: list[float] | None, kernel_degrees: list[int] | None, spatial_degree: int,
                bg_degree: int, max_fit_stamps: int, fit_stamp_snr: float, regularization: float,
                convolve: str = "auto") -> Match:
    s, t = s_img.sci, stack.image
    var_s = _variance(s_img)
    var_t = _template_variance(t, stack.weight, stack)
    bad_s, bad_t = s_img.bad, stack.nodata
    bad_any = bad_s | bad_t
    sat = s_img.key("SATURATE")
    sat = float(sat) if sat is not None else None
    h_guess = int(kernel_half_width or 10)
    # sizes of bright isolated sources in both images -> which one is sharper
    xy0 = psfmatch.select_stamps(t, s, bad_any, var_t, var_s, half=12, pad=h_guess, max_stamps=max_fit_stamps,
                                 snr_min=fit_stamp_snr, saturation=sat)
    if len(xy0) < 5:
        raise ProcessingError(
            f"search {s_img.path.name}: only {len(xy0)} bright isolated sources (S/N >= {fit_stamp_snr:g} in both "
            "images, unmasked) to measure the PSFs and fit the matching kernel; need >= 5. Lower fit_stamp_snr or "
            "check the template overlap")
    sz_t = psfmatch.adaptive_sigma(psfmatch.cutouts(t, xy0, 12))
    sz_s = psfmatch.adaptive_sigma(psfmatch.cutouts(s, xy0, 12))
    guess_t, star_t = psfmatch.stellar_fwhm(sz_t)
    guess_s, star_s = psfmatch.stellar_fwhm(sz_s)
    stars = xy0[star_s & star_t]
    try:
        psf_t, cen_t = cand.empirical_psf(t, bad_any, stars, guess_t, var=var_t)
        psf_s, cen_s = cand.empirical_psf(s, bad_any, stars, guess_s, var=var_s)
    except ValueError as exc:
        raise ProcessingError(f"search {s_img.path.name}: the PSFs of the search and template images could not "
                              f"be measured on their bright stars ({exc}); are the images mostly masked?") from None
    fwhm_t, fwhm_s = psf_t.fwhm, psf_s.fwhm
    if convolve == "auto":  # the sharper one; the template (deeper, already resampled) on a near tie
        conv_template = fwhm_t <= fwhm_s * (1.0 + SEEING_TIE)
    else:
        conv_template = convolve == "template"
    big, small = max(fwhm_s, fwhm_t), min(fwhm_s, fwhm_t)
    sig_k = np.sqrt(max(big ** 2 - small ** 2, 0.0)) / psfmatch.FWHM_PER_SIGMA
    h = int(kernel_half_width or max(10, int(np.ceil(4.0 * sig_k + 3))))
    half = int(max(np.ceil(2.5 * big), 8))
    basis = psfmatch.alard_lupton_basis(h, tuple(kernel_sigmas or (0.7, 1.5, 3.0)),
                                        tuple(kernel_degrees or (6, 4, 2)))
    if conv_template:
        ref, var_ref, bad_ref, sci, var_sci, bad_sci = t, var_t, bad_t, s, var_s, bad_s
    else:
        ref, var_ref, bad_ref, sci, var_sci, bad_sci = s, var_s, bad_s, t, var_t, bad_t
    if half <= 12 and h <= h_guess:  # the first selection already met this geometry
        xy = xy0
    else:
        xy = psfmatch.select_stamps(ref, sci, bad_any, var_ref, var_sci, half=half, pad=h,
                                    max_stamps=max_fit_stamps, snr_min=fit_stamp_snr, saturation=sat)
    if len(xy) < 5:
        raise ProcessingError(f"search {s_img.path.name}: only {len(xy)} usable stamps for the kernel fit "
                              f"(stamp half-size {half}, kernel half-width {h}); need >= 5")
    var_ref_fit = np.where(bad_ref, 0.0, var_ref)
    var_sci_fit = np.where(bad_sci, 0.0, var_sci)
    sol = psfmatch.fit_kernel(ref, sci, var_ref_fit, var_sci_fit, bad_any, xy, basis=basis, half=half,
                              spatial_degree=spatial_degree, bg_degree=bg_degree, regularization=regularization,
                              min_stamps=5)
    ctx.log.info("PSF matching: FWHM search %.2f px, template %.2f px -> convolving the %s; kernel half-width %d, "
                 "%d stamps (%d kept), chi2 %.3f", fwhm_s, fwhm_t, "template" if conv_template else "search", h,
                 len(xy), sol.n_used, sol.chi2)
    psf_i, cen_i = (psf_s, cen_s) if conv_template else (psf_t, cen_t)
    near_t = np.zeros(s.shape, dtype=bool)
    for t_img in t_imgs:  # template saturation, brought onto the search grid through the WCS
        near_t |= _to_search_grid(t_img.near_saturated(), t_img, s_img)
    return Match("template" if conv_template else "search", ref, var_ref, bad_ref, sci, var_sci, bad_sci, var_s,
                 var_t, bad_s, bad_t, sol, fwhm_s, fwhm_t, psf_i, cen_i, s_img.near_saturated(), near_t)


def _to_search_grid(mask: np.ndarray, src: RedImage, search: RedImage) -> np.ndarray:
    """A template pixel mask on the search grid (nearest pixel, through both header WCSs)."""
    out = np.zeros(search.sci.shape, dtype=bool)
    yy, xx = np.nonzero(mask)
    if not len(xx):
        return out
    w_src = WCS({k: src.header[k] for k in GRID_KEYS if k in src.header} | {"NAXIS": 2})
    w_dst = WCS({k: search.header[k] for k in GRID_KEYS if k in search.header} | {"NAXIS": 2})
    ra, dec = w_src.all_pix2world(xx, yy, 0)
    x, y = w_dst.all_world2pix(ra, dec, 0)
    x, y = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    ok = (x >= 0) & (y >= 0) & (x < out.shape[1]) & (y < out.shape[0])
    out[y[ok], x[ok]] = True
    return ndimage.binary_closing(out, iterations=1) | out


def _flux_scale(match: Match) -> float:
    """Template flux / search flux (the kernel sum, or its inverse when the search was convolved)."""
    n = match.solution.norm
    return n if match.convolved == "search" else 1.0 / n


def _matching_systematic(diff: np.ndarray, var: np.ndarray, matched: np.ndarray, bad: np.ndarray,
                         regions: np.ndarray, fwhm: float, n_regions: int = 2) -> np.ndarray:
    """The PSF-matching error as a fraction of the matched template, per coverage region.

    Around the brightest compact sources of the matched template (local maxima at S/N >= 20,
    unmasked within 2 FWHM) the residual variance beyond the propagated noise, summed over the
    sources of a region, over their summed squared template, is ``eps^2``: what the kernel
    could not match (it shows on bright stars, whose shot noise is small next to their flux).
    Regions are template-coverage classes (all templates / fewer templates: there the stack's
    PSF differs from the one the kernel was fitted to). ``eps^2 M^2`` is added to the noise for
    detection and candidate S/N; the written WGT plane stays the pure propagated noise.
    """
    eps = np.zeros(n_regions)
    sig = np.sqrt(np.maximum(var, 1e-30))
    peaks = (matched == ndimage.maximum_filter(matched, size=3)) & (matched > 20.0 * sig) & ~bad
    yy, xx = np.nonzero(peaks)
    if not len(xx):
        return eps
    r = int(np.ceil(2.0 * fwhm))
    ny, nx = diff.shape
    ok = (xx >= r) & (yy >= r) & (xx < nx - r) & (yy < ny - r)
    g = np.arange(-r, r + 1)
    disk = (g[:, None] ** 2 + g[None, :] ** 2) <= r * r
    num, den = np.zeros(n_regions), np.zeros(n_regions)
    count = np.zeros(n_regions, dtype=int)
    for x, y in zip(xx[ok], yy[ok]):
        sl = (slice(y - r, y + r + 1), slice(x - r, x + r + 1))
        if bad[sl][disk].any():
            continue
        k = int(regions[y, x])
        d, v, m = (a[sl][disk].astype(np.float64) for a in (diff, var, matched))
        num[k] += (d * d - v).sum()
        den[k] += (m * m).sum()
        count[k] += 1
    for k in range(n_regions):
        if count[k] >= 3 and den[k] > 0:
            eps[k] = np.sqrt(max(num[k] / den[k], 0.0))
    return eps


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels (a square; cheap on a whole CCD)."""
    if not mask.any():
        return mask
    return ndimage.maximum_filter(mask.astype(np.uint8), size=2 * radius + 1) > 0


def _reach(bad: np.ndarray, h: int) -> np.ndarray:
    """Pixels within the kernel's reach of a bad pixel or of the image edge."""
    return ndimage.maximum_filter(bad.astype(np.uint8), size=2 * h + 1, mode="constant", cval=1) > 0


def _subtract(match: Match, conv: np.ndarray, var_conv: np.ndarray, reach: np.ndarray,
              stack) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Difference (search units), its variance and the mask bits."""
    sol = match.solution
    if match.convolved == "template":
        diff = match.sci - conv
        var = match.var_sci + var_conv
    else:
        n = np.float32(sol.norm)
        diff = (conv - match.sci) / n
        var = (var_conv + match.var_sci) / (n * n)
    ny, nx = diff.shape
    mask = np.zeros((ny, nx), dtype=np.int16)
    mask[match.bad_search] |= SEARCH_BAD
    mask[match.bad_template] |= TEMPLATE_NODATA
    mask[reach & ~match.bad_ref] |= CONVOLVED_BAD
    near_sat = match.near_sat_search | match.near_sat_template
    mask[near_sat] |= NEAR_SATURATED
    w = stack.weight
    if (w > 0).any():
        typical = float(np.median(w[w > 0]))
        mask[(w > 0) & (w < 0.6 * typical)] |= TEMPLATE_PARTIAL
    bad = (mask & MASK_BAD) != 0
    diff = np.where(bad, np.float32(0.0), diff).astype(np.float32, copy=False)
    var = np.where(bad, np.float32(np.inf), var).astype(np.float32, copy=False)
    return diff, var, mask


def _detect(ctx: StepContext, diff: np.ndarray, var: np.ndarray, bad: np.ndarray, diff_path: Path, scratch: Path,
            fwhm: float, detect_snr: float) -> tuple[np.ndarray, np.ndarray]:
    rms = np.where(bad, 1e10, np.sqrt(var)).astype(np.float32)
    rms_path, neg_path = scratch / "diff_rms.fits", scratch / "diff_neg.fits"
    fitsio.write(str(rms_path), rms, clobber=True)
    fitsio.write(str(neg_path), -diff, clobber=True)
    pos = cand.detect(Path(f"{diff_path}[0]"), rms_path, scratch / "pos.ldac", workdir=scratch, fwhm=fwhm,
                      detect_snr=detect_snr, ctx=ctx)
    neg = cand.detect(neg_path, rms_path, scratch / "neg.ldac", workdir=scratch, fwhm=fwhm,
                      detect_snr=detect_snr, ctx=ctx)
    ctx.log.info("detection: %d positive, %d negative sources on the difference image", len(pos), len(neg))
    return pos, neg


def _diff_psf(match: Match, search_psf: str | None
              ) -> tuple[cand.PSFStamp, Callable[[float, float], cand.PSFStamp]]:
    """The difference image's PSF: one at the centre, and PSF(x0, y0) at 0-based positions.

    The stacked PSF of the image that was not convolved, or the search PSFEx model (convolved
    with the kernel when the search was the image convolved).
    """
    fwhm = match.fwhm_diff
    half = int(np.ceil(3.5 * fwhm))
    if search_psf is not None:
        sol = match.solution

        def at(x0: float, y0: float) -> cand.PSFStamp:
            if match.convolved == "template":
                return cand.psfex_psf(search_psf, x0 + 1.0, y0 + 1.0, half)
            return cand.psfex_psf(search_psf, x0 + 1.0, y0 + 1.0, half, kernel=sol.kernel_at(x0, y0),
                                  norm=sol.norm)

        ny, nx = match.sci.shape
        return at((nx - 1) / 2.0, (ny - 1) / 2.0), at
    return match.psf, lambda x0, y0: match.psf


def _write_stamps(ctx: StepContext, stem: str, table: np.ndarray, search: np.ndarray, template: np.ndarray,
                  diff: np.ndarray, size: int) -> int:
    n = 0
    for row in table:
        x0, y0 = float(row["x"]) - 1.0, float(row["y"]) - 1.0
        info = {"Title": f"{stem} candidate {int(row['id'])}",
                "Comment": (f"x={row['x']:.2f} y={row['y']:.2f} ra={row['ra']:.6f} dec={row['dec']:.6f} "
                            f"flux={row['flux']:.1f}+-{row['flux_err']:.1f} snr={row['snr']:.1f} mag={row['mag']:.3f}")}
        with ctx.output(f"stamps/{stem}_cand{int(row['id']):04d}.png", filetype=FILETYPES["stamp"]) as tmp:
            write_stamp_png(tmp, cutout(search, x0, y0, size), cutout(template, x0, y0, size),
                            cutout(diff, x0, y0, size), info)
        n += 1
    return n


__all__ = ["diffimg_ccd", "StageTimes", "SEARCH_BAD", "TEMPLATE_NODATA", "CONVOLVED_BAD", "TEMPLATE_PARTIAL"]
