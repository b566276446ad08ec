"""Rendering one exposure, CCD by CCD: the scene, the detector, the noise, the products.

:class:`ExposureScene` gathers what is on the sky for an exposure (stars, galaxies and -- for
search exposures -- transients near the pointing, in focal-plane coordinates, with the PSF
at each source) and the exposure's photometric scale (zeropoint, sky). :func:`render_ccd`
turns the scene into one CCD's products, independently of every other CCD:

1. draw the sources with GalSim into a noiseless electron image (:mod:`skyops.sim.draw`),
2. add the sky (a plane across the focal plane), multiply by the true flat response, add
   dark current of hot pixels and kill dead columns (:mod:`skyops.sim.ccd`),
3. Poisson noise + read noise (unless noiseless), clip at the amplifier full well,
4. the reduced image: divide by the night's master flat and subtract the sky model, so SCI
   is sky-subtracted electrons (``SKYBRITE``/``SKYSIGMA`` in the header say what was
   removed); MSK carries DESDM BADPIX bits; WGT is inverse variance (sky + read noise) and 0
   on masked pixels,
5. optionally the raw CCD: the same electrons digitised with bias and overscan
   (:mod:`skyops.sim.raw`).

Every random number comes from streams keyed by (seed, expnum, ccdnum), so any subset of
CCDs, in any order or process, gives the same bytes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import galsim
import numpy as np
from scipy.spatial import cKDTree

from skyops.sim import draw as _draw
from skyops.sim.ccd import BAD_BITS, BADPIX, Detector, bias_pattern, defects, flat_response, master_flat
from skyops.sim.exposure_spec import SEARCH, ExposureSpec
from skyops.sim.focalplane import CCD, FocalPlane
from skyops.sim.galaxies import extent_arcsec
from skyops.sim.photometry import exposure_zeropoint, mag_to_flux, point_source_snr, sky_electrons
from skyops.sim.psf import PSFModel
from skyops.sim.raw import digitize
from skyops.sim.seeding import rng
from skyops.sim.transients import magnitude_at
from skyops.sim.truth import CCD_DTYPE, OBJECT_DTYPE, TRANSIENT_TRUTH_DTYPE
from skyops.sim.wcs import CCDWcs, sky_to_uv

#: Upper bound of |CCD zeropoint offset| used to size stamps before the CCD is known.
_ZP_MARGIN = 0.15
#: A source is "isolated" when neighbours add less than this fraction of its flux to its aperture.
ISOLATION_LIMIT = 1e-3


@dataclass(frozen=True)
class SimOptions:
    """Realism switches shared by every exposure of a survey."""

    noise: bool = True  # Poisson + read noise (False: the expectation, for truth tests)
    defects: bool = True  # hot pixels and bad columns
    astrometric_offset_sigma: float = 0.15  # arcsec per axis of header-WCS error; 0 = exact headers
    zp_scatter: float = 0.02  # mag, CCD-to-CCD zeropoint scatter
    psf_beta: float = 3.5
    gsparams: tuple[tuple[str, float], ...] = ()  # GalSim GSParams overrides

    def galsim_params(self) -> galsim.GSParams | None:
        return galsim.GSParams(**dict(self.gsparams)) if self.gsparams else None


@dataclass
class ExposureScene:
    """Everything the sky contributes to one exposure, in focal-plane coordinates."""

    spec: ExposureSpec
    seed: int
    fp: FocalPlane
    options: SimOptions
    psf: PSFModel
    zp: float  # focal-plane zeropoint (before CCD offsets)
    sky: float  # e- / pixel at the boresight
    galaxies: np.ndarray  # galaxy catalog rows referenced by ``galaxy_row``
    kind: np.ndarray
    obj_id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    u: np.ndarray
    v: np.ndarray
    mag: np.ndarray
    galaxy_row: np.ndarray
    fwhm: np.ndarray
    g1: np.ndarray
    g2: np.ndarray
    extent_pix: np.ndarray  # galaxy light radius (pixels), 0 for point sources
    margin: np.ndarray  # stamp radius upper bound (pixels) for CCD selection
    transients: np.ndarray = field(default_factory=lambda: np.zeros(0))  # catalog rows in the scene

    @classmethod
    def build(cls, spec: ExposureSpec, seed: int, fp: FocalPlane, options: SimOptions,
              stars: np.ndarray, galaxies: np.ndarray, transients: np.ndarray | None = None) -> "ExposureScene":
        """The scene of ``spec`` from static catalogs (and the night's transients for a search)."""
        psf = PSFModel.random(seed, spec.expnum, spec.seeing, options.psf_beta)
        zp = exposure_zeropoint(spec.band, spec.exptime, spec.airmass, spec.transparency)
        sky = sky_electrons(spec.band, spec.exptime, fp.pixel_scale, spec.sky_factor)
        reach = fp.radius_pix * 1.05 + 500.0
        parts = []
        s_u, s_v = sky_to_uv(stars["ra"], stars["dec"], spec.telra, spec.teldec, fp.pixel_scale)
        s_in = np.hypot(s_u, s_v) < reach
        parts.append((_draw.STAR, stars["star_id"][s_in], stars["ra"][s_in], stars["dec"][s_in], s_u[s_in], s_v[s_in],
                      stars[f"mag_{spec.band}"][s_in], np.full(s_in.sum(), -1), np.zeros(s_in.sum())))
        g_u, g_v = sky_to_uv(galaxies["ra"], galaxies["dec"], spec.telra, spec.teldec, fp.pixel_scale)
        g_in = np.flatnonzero(np.hypot(g_u, g_v) < reach)
        gal = galaxies[g_in]
        parts.append((_draw.GALAXY, gal["galaxy_id"], gal["ra"], gal["dec"], g_u[g_in], g_v[g_in],
                      gal[f"mag_{spec.band}"], np.arange(len(gal)), extent_arcsec(gal) / fp.pixel_scale))
        tr = np.zeros(0)
        if spec.kind == SEARCH and transients is not None and len(transients):
            t_u, t_v = sky_to_uv(transients["ra"], transients["dec"], spec.telra, spec.teldec, fp.pixel_scale)
            t_in = np.hypot(t_u, t_v) < reach
            tr = transients[t_in]
            parts.append((_draw.TRANSIENT, tr["transient_id"], tr["ra"], tr["dec"], t_u[t_in], t_v[t_in],
                          magnitude_at(tr, spec.mjd_obs), np.full(len(tr), -1), np.zeros(len(tr))))
        kind = np.concatenate([np.full(len(p[1]), p[0], dtype=np.int8) for p in parts])
        obj_id, ra, dec, u, v, mag, grow, ext = (np.concatenate([np.asarray(p[i]) for p in parts])
                                                  for i in range(1, 9))
        fwhm, g1, g2 = psf.params(*fp.normalized(u, v))
        flux_hi = mag_to_flux(mag, zp + _ZP_MARGIN)
        margin = psf.stamp_radius(flux_hi, fwhm / fp.pixel_scale) + ext + 2.0
        return cls(spec, seed, fp, options, psf, zp, sky, gal, kind, obj_id.astype(np.int64), ra, dec, u, v,
                   mag.astype(float), grow.astype(np.int64), fwhm, g1, g2, ext.astype(float), margin, tr)


@dataclass
class CCDProduct:
    """One CCD of one exposure: pixels, headers' ingredients and truth."""

    ccdnum: int
    sci: np.ndarray  # float32 (ny, nx), e-, sky-subtracted
    msk: np.ndarray  # int16 BADPIX bits
    wgt: np.ndarray  # float32 inverse variance (e-^-2)
    raw: np.ndarray | None  # uint16 (ny, nx + 2 overscan) or None
    wcs: CCDWcs
    det: Detector
    overscan_levels: tuple[float, float]
    saturate: tuple[float, float]  # e-, lowest SCI value a saturated pixel can have, per amplifier
    skybrite: float
    skysigma: float
    truth: np.void  # CCD_DTYPE row
    objects: np.ndarray  # OBJECT_DTYPE rows
    transients: np.ndarray  # TRANSIENT_TRUTH_DTYPE rows
    timings: dict[str, float] = field(default_factory=dict)  # CPU seconds per step: setup, draw, noise, reduce


def render_ccd(scene: ExposureScene, ccdnum: int, raw: bool = False) -> CCDProduct:
    """Render one CCD of ``scene`` (see the module docstring for the steps)."""
    t0 = time.process_time()
    spec, fp, opt, seed = scene.spec, scene.fp, scene.options, scene.seed
    ccd = fp.ccd(ccdnum)
    det = Detector.for_ccd(seed, ccd, opt.zp_scatter)
    shift = _astrometric_shift(seed, spec.expnum, ccdnum, opt.astrometric_offset_sigma / fp.pixel_scale)
    w = CCDWcs(ccd, spec.telra, spec.teldec, fp.pixel_scale, shift)
    zp = scene.zp + det.zp_offset
    nx, ny = ccd.nx, ccd.ny

    # the sky: a plane across the focal plane, S (1 + gu u/R + gv v/R)
    gu, gv = spec.sky_gradient
    uc, vc = ccd.center_uv
    dsdx, dsdy = scene.sky * gu / fp.radius_pix, scene.sky * gv / fp.radius_pix
    sky_c = scene.sky * (1.0 + gu * uc / fp.radius_pix + gv * vc / fp.radius_pix)
    xs = np.arange(1, nx + 1) - (nx + 1) / 2.0
    ys = np.arange(1, ny + 1) - (ny + 1) / 2.0
    sky_map = sky_c + dsdy * ys[:, None] + dsdx * xs[None, :]

    # the sources
    image = galsim.ImageD(nx, ny, xmin=1, ymin=1)
    src, objects, trans = _sources_on_ccd(scene, ccd, det, zp)
    timings = {"setup": time.process_time() - t0}
    t1 = time.process_time()
    if len(src) and not ccd.bad:
        jac = w.galsim(true=True).local(galsim.PositionD((nx + 1) / 2.0, (ny + 1) / 2.0))
        ap = objects["aperture_pix"].astype(float)
        peak, own = _draw.draw_sources(image, jac, scene.psf, src, scene.galaxies, opt.galsim_params(), ap, timings)
        others = _draw.aperture_sums(image, src.x, src.y, ap) - own
        objects["peak_e"] = peak
        objects["saturated"] = peak + sky_c >= det.saturate
        objects["blend_frac"] = np.maximum(others, 0.0) / src.flux
        objects["isolated"] = objects["blend_frac"] < ISOLATION_LIMIT
    timings["draw"] = time.process_time() - t1
    t2 = time.process_time()

    # detector response and noise (float64 until Poisson, float32 after: < 1e-4 e- of rounding)
    dfx = defects(seed, det, ccd.bad, opt.defects)
    flat_true = flat_response(seed, fp, ccd, spec.band)
    expect = image.array  # becomes the expected detected electrons, in place
    expect += sky_map
    expect *= flat_true
    hot = np.nonzero(dfx.hot_rate)
    expect[hot] += dfx.hot_rate[hot] * spec.exptime
    expect[dfx.dead] *= 0.02
    rn_col = det.per_column(det.read_noise).astype(np.float32)[None, :]
    g = rng(seed, "noise", spec.expnum, ccdnum)
    if ccd.bad:  # a dead CCD reads out bias and read noise only
        electrons = np.zeros((ny, nx), dtype=np.float32)
        if opt.noise:
            electrons += g.standard_normal((ny, nx), dtype=np.float32) * rn_col
    elif opt.noise:
        electrons = g.poisson(expect).astype(np.float32)
        read = g.standard_normal((ny, nx), dtype=np.float32)
        read *= rn_col
        electrons += read
        del read
    else:
        electrons = expect.astype(np.float32)
    del expect, image
    fw_col = det.per_column(det.full_well).astype(np.float32)[None, :]
    sat = electrons >= fw_col
    np.minimum(electrons, fw_col, out=electrons)
    timings["noise"] = time.process_time() - t2
    t3 = time.process_time()

    # the reduced image: SCI = electrons / master flat - sky; WGT = 1 / (sky + read noise^2) in SCI units
    mflat = master_flat(seed, fp, ccd, spec.band, spec.nite, opt.noise, flat=flat_true)
    sky32 = sky_map.astype(np.float32)
    msk = dfx.bpm.copy()
    msk[sat] |= int(BADPIX.SATURATE)
    if ccd.bad:
        sci = np.zeros((ny, nx), dtype=np.float32)
        wgt = np.zeros((ny, nx), dtype=np.float32)
    else:
        sci = electrons / mflat
        sci -= sky32
        den = sky32 * mflat
        den += rn_col**2
        wgt = mflat * mflat
        wgt /= den
        del den
        wgt[(msk & int(BAD_BITS)) != 0] = 0.0
    skysigma = float(np.sqrt(sky_c + det.mean_read_noise**2))
    saturate = tuple(float(det.full_well[i] / mflat[:, cols].max() - sky_map.max())
                     for i, cols in enumerate(det.amp_slices()))

    levels = _overscan_levels(seed, spec.expnum, det)
    raw_arr = None
    if raw:
        g_ov = rng(seed, "overscan-noise", spec.expnum, ccdnum) if opt.noise else None
        raw_arr = digitize(electrons, det, bias_pattern(seed, det), levels, g_ov)
    timings["reduce"] = time.process_time() - t3

    truth = _ccd_truth(scene, ccd, det, w, zp, sky_c, dsdx, dsdy, skysigma, levels, objects)
    return CCDProduct(ccdnum, sci, msk, wgt, raw_arr, w, det, levels, saturate, sky_c, skysigma, truth, objects, trans,
                      timings)


def _astrometric_shift(seed: int, expnum: int, ccdnum: int, sigma_pix: float) -> tuple[float, float]:
    if sigma_pix <= 0:
        return 0.0, 0.0
    d = rng(seed, "astrometry", expnum, ccdnum).normal(0.0, sigma_pix, 2)
    return float(d[0]), float(d[1])


def _overscan_levels(seed: int, expnum: int, det: Detector) -> tuple[float, float]:
    """The exposure's overscan level per amplifier: the static level plus a few ADU of drift."""
    j = rng(seed, "overscan", expnum, det.ccdnum).normal(0.0, 3.0, 2)
    return det.overscan_level[0] + float(j[0]), det.overscan_level[1] + float(j[1])


def _sources_on_ccd(scene: ExposureScene, ccd: CCD, det: Detector, zp: float
                    ) -> tuple[_draw.Sources, np.ndarray, np.ndarray]:
    """The scene's sources whose stamps touch ``ccd``, with fluxes at its zeropoint, and truth rows."""
    spec, fp = scene.spec, scene.fp
    if ccd.bad:
        sel = np.zeros(len(scene.kind), dtype=bool)
    else:
        sel = scene.fp.ccds_near(scene.u, scene.v, ccd.ccdnum, scene.margin)
    idx = np.flatnonzero(sel)
    x, y = ccd.to_xy(scene.u[idx], scene.v[idx])
    flux = mag_to_flux(scene.mag[idx], zp)
    fwhm_pix = scene.fwhm[idx] / fp.pixel_scale
    radius = scene.psf.stamp_radius(flux, fwhm_pix) + scene.extent_pix[idx] + 1.0
    src = _draw.Sources(kind=scene.kind[idx], obj_id=scene.obj_id[idx], x=x, y=y, flux=flux,
                        fwhm=scene.fwhm[idx], g1=scene.g1[idx], g2=scene.g2[idx], radius=radius,
                        galaxy_row=scene.galaxy_row[idx])
    n = len(idx)
    obj = np.zeros(n, OBJECT_DTYPE)
    obj["expnum"], obj["ccdnum"] = spec.expnum, ccd.ccdnum
    obj["kind"] = np.array([_draw.KIND_NAMES[int(k)] for k in src.kind], dtype="S9") if n else np.zeros(0, "S9")
    obj["obj_id"] = src.obj_id
    obj["ra"], obj["dec"] = scene.ra[idx], scene.dec[idx]
    obj["x_image"], obj["y_image"] = x, y
    obj["mag"], obj["flux"] = scene.mag[idx], flux
    obj["in_bounds"] = (x >= 0.5) & (x < ccd.nx + 0.5) & (y >= 0.5) & (y < ccd.ny + 0.5)
    obj["stamp_radius_pix"] = radius
    obj["psf_fwhm"], obj["psf_g1"], obj["psf_g2"] = src.fwhm, src.g1, src.g2
    obj["aperture_pix"] = _draw.measure_aperture(fwhm_pix, scene.extent_pix[idx])
    obj["nn_dist_pix"] = _nearest(x, y)
    is_t = src.kind == _draw.TRANSIENT
    trans = np.zeros(int(is_t.sum()), TRANSIENT_TRUTH_DTYPE)
    if len(trans):
        ti = np.searchsorted(scene.transients["transient_id"], src.obj_id[is_t])
        cat = scene.transients[ti]
        trans["transient_id"] = cat["transient_id"]
        trans["expnum"], trans["ccdnum"], trans["nite"], trans["band"] = spec.expnum, ccd.ccdnum, spec.nite, spec.band
        trans["mjd"] = spec.mjd_obs
        trans["ra"], trans["dec"] = cat["ra"], cat["dec"]
        trans["x_image"], trans["y_image"] = x[is_t], y[is_t]
        trans["mag"], trans["flux"] = scene.mag[idx][is_t], flux[is_t]
        trans["snr_expected"] = point_source_snr(flux[is_t], scene.psf.n_eff(fwhm_pix[is_t]), scene.sky,
                                                 det.mean_read_noise)
        trans["in_bounds"] = obj["in_bounds"][is_t]
        trans["host_id"], trans["host_sep_arcsec"] = cat["host_id"], cat["host_sep_arcsec"]
    return src, obj, trans


def _nearest(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance (pixels) from each source to the nearest other source drawn on the CCD."""
    if len(x) < 2:
        return np.full(len(x), np.inf, dtype=np.float32)
    pts = np.column_stack([x, y])
    d, _ = cKDTree(pts).query(pts, k=2)
    return d[:, 1].astype(np.float32)


def _ccd_truth(scene: ExposureScene, ccd: CCD, det: Detector, w: CCDWcs, zp: float, sky_c: float, dsdx: float,
               dsdy: float, skysigma: float, levels: tuple[float, float], objects: np.ndarray) -> np.void:
    t = np.zeros(1, CCD_DTYPE)[0]
    fp = scene.fp
    uc, vc = ccd.center_uv
    fwhm, g1, g2 = scene.psf.params(*fp.normalized(uc, vc))
    dra, ddec = w.offset_arcsec()
    ra_c, dec_c = w.pixel_to_sky((ccd.nx + 1) / 2.0, (ccd.ny + 1) / 2.0)
    inb = objects["in_bounds"]
    kinds = objects["kind"]
    t["expnum"], t["ccdnum"], t["detpos"], t["bad"], t["band"] = (scene.spec.expnum, ccd.ccdnum, ccd.detpos,
                                                                  ccd.bad, scene.spec.band)
    t["mag_zero"], t["zp_ccd_offset"] = zp, det.zp_offset
    t["sky_e"], t["sky_dedx"], t["sky_dedy"], t["sky_sigma"] = sky_c, dsdx, dsdy, skysigma
    t["psf_fwhm"], t["psf_g1"], t["psf_g2"] = fwhm, g1, g2
    t["astrom_dx_pix"], t["astrom_dy_pix"] = w.shift
    t["astrom_dra_arcsec"], t["astrom_ddec_arcsec"] = dra, ddec
    t["gain_a"], t["gain_b"] = det.gain
    t["rdnoise_a"], t["rdnoise_b"] = det.read_noise
    t["fullwell_a"], t["fullwell_b"] = det.full_well
    t["overscan_a"], t["overscan_b"] = levels
    t["n_stars"] = int(((kinds == b"star") & inb).sum())
    t["n_galaxies"] = int(((kinds == b"galaxy") & inb).sum())
    t["n_transients"] = int(((kinds == b"transient") & inb).sum())
    t["ra_cent"], t["dec_cent"] = float(ra_c), float(dec_c)
    return t
