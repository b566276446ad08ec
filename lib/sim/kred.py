"""kred's Magellanic Cloud fields: dithered narrow-band DECam exposures of diffuse emission.

kred (the ``magellanic_mosaic`` campaign) maps H-alpha and [SII] emission in the Magellanic
Clouds from DECam exposures reduced by NOIRLab's Community Pipeline (InstCal: bias, flat and
astrometry done, *sky not subtracted*). It summarises each exposure (the mode of every CCD),
rescales the images to a common zeropoint, subtracts one background per exposure, finds the
overlaps between CCDs of the same filter and exposure time, solves for the background offsets
that make the overlaps agree, and SWarps the tiles of a field. To test that, the simulation
puts in exactly what the background matching must undo:

- the **scene**: diffuse emission that is the same on the sky in every exposure (Gaussian
  blobs of H-alpha with a per-blob [SII]/H-alpha ratio, broad H-alpha haze, and a smooth
  stellar continuum that scales with the filter bandwidth) plus stars (generated per sky
  cell by :mod:`~skyops.sim.refcat`, drawn with GalSim and the exposure's PSF);
- the **sky**: per exposure, a level set by the filter, exposure time and conditions, with a
  gentle plane across the focal plane (so each CCD has its own level, recorded as truth);
- a **background offset** per exposure: an additive constant (in counts) on every CCD of the
  exposure, ``offset_sigma`` of the sky (1 sigma) -- the error kred's matching removes;
- noise: Poisson on scene + sky, Gaussian read noise; saturation at the full well.

Units: InstCal-like *counts*, gain-normalised so that 1 count = 1 photo-electron (``GAIN =
1``). The exposure's photometric zeropoint is ``MAGZERO`` in the primary header: a source of
magnitude m gives ``10**(-0.4 (m - MAGZERO))`` counts in the whole exposure, so kred's
rescaling to a common zeropoint ``ZP`` multiplies an image by ``10**(0.4 (ZP - MAGZERO))``.
Emission rates are in counts/s/pixel at airmass 1 and unit transparency.

Filters: ``N662`` (H-alpha), ``N673`` ([SII]) and a continuum band (``r``, which also passes
both lines). Field, tiles, exposure times, dithers, CCDs and sizes are :class:`KredPlan`
knobs; the files themselves are written by :mod:`skyops.sim.kredtree`.
"""
from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from functools import cached_property

import galsim
import numpy as np

from skyops.errors import SimulationError
from skyops.sim import draw as _draw
from skyops.sim.ccd import Detector
from skyops.sim.exposure_spec import mjd_to_datetime, nite_to_mjd
from skyops.sim.focalplane import CCDNUM, FocalPlane
from skyops.sim.psf import PSFModel
from skyops.sim.refcat import make_stars
from skyops.sim.seeding import rng
from skyops.sim.skycells import cells_near
from skyops.sim.wcs import CCDWcs, gnomonic, inverse_gnomonic


@dataclass(frozen=True)
class KredFilter:
    """A DECam filter as kred uses it: FITS FILTER string, photometry and which lines it passes."""

    name: str
    filter: str
    zp_1s: float  # AB mag giving 1 count/s at airmass 1
    sky_mag: float  # continuum sky, mag/arcsec^2
    extinction: float
    bandwidth: float  # Angstrom
    halpha: bool  # passes H-alpha 6563
    sii: bool  # passes [SII] 6717/6731
    color: tuple[float, float]  # star mag = G + c0 + c1 (BP-RP)


#: DECam N662, N673 and r; narrow-band zeropoints scale with the bandwidth relative to r.
KRED_FILTERS: dict[str, KredFilter] = {
    "N662": KredFilter("N662", "N662 DECam c0008 6620.0 160.0", 26.65 - 2.5 * np.log10(1480.0 / 160.0), 21.1,
                       0.09, 160.0, True, False, (-0.12, 0.16)),
    "N673": KredFilter("N673", "N673 DECam c0009 6730.0 100.0", 26.65 - 2.5 * np.log10(1480.0 / 100.0), 21.1,
                       0.09, 100.0, False, True, (-0.14, 0.17)),
    "r": KredFilter("r", "r DECam SDSS c0002 6415.0 1480.0", 26.65, 21.1, 0.09, 1480.0, True, True, (-0.08, 0.12)),
}


@dataclass(frozen=True)
class KredPlan:
    """One kred field: where, which filters and exposure times, dithers, CCDs, tiles, scene.

    Every (filter, exptime) is observed once per dither (offsets in degrees East, North of
    the field centre), so exposures of the same filter and exposure time overlap. Only the
    CCDs listed in ``ccds`` (DETPOS) are written, at ``ccd_shape``; the demo keeps a compact
    central block of 6 CCDs, ``bench`` all 62 at full size. Tiles T01.. form a ``tile_grid``
    (columns, rows) of squares of ``tile_size_deg`` centred on the field.
    """

    field: str = "LMC_c42"
    ra: float = 80.55
    dec: float = -69.45
    filters: tuple[str, ...] = ("N662", "N673", "r")
    exptimes: tuple[float, ...] = (30.0, 400.0)
    dithers_deg: tuple[tuple[float, float], ...] = ((-0.006, -0.008), (0.006, 0.008))
    ccds: tuple[str, ...] = ("S3", "S4", "S5", "N3", "N4", "N5")
    ccd_shape: tuple[int, int] = (256, 512)
    tile_grid: tuple[int, int] = (2, 2)
    tile_size_deg: float = 0.03
    nite: str = "20190109"
    propid: str = "2018B-0906"
    first_expnum: int = 812_000
    seeing_range: tuple[float, float] = (0.9, 1.3)
    airmass_range: tuple[float, float] = (1.25, 1.45)
    transparency_range: tuple[float, float] = (0.85, 1.0)
    sky_factor_range: tuple[float, float] = (1.0, 1.4)
    offset_sigma: float = 0.03  # per-exposure background offset, fraction of the sky (1 sigma)
    star_density: float = 60_000.0
    star_mag_range: tuple[float, float] = (14.0, 22.0)
    n_blobs: int = 40
    blob_sigma_arcsec: tuple[float, float] = (6.0, 60.0)
    halpha_peak: tuple[float, float] = (0.05, 2.0)  # counts/s/pixel, log-uniform
    sii_ratio: tuple[float, float] = (0.15, 0.5)
    haze_halpha: float = 0.2  # broad H-alpha haze, counts/s/pixel
    continuum: float = 0.8  # stellar continuum in r, counts/s/pixel (narrow bands: x bandwidth / 1480)

    @property
    def field_id(self) -> int:
        return zlib.crc32(self.field.encode())

    @property
    def tiles(self) -> list["KredTile"]:
        """T01, T02 ... in rows of increasing Dec, RA increasing within a row."""
        nc, nr = self.tile_grid
        out = []
        for j in range(nr):
            for i in range(nc):
                xi = (i - (nc - 1) / 2.0) * self.tile_size_deg
                eta = (j - (nr - 1) / 2.0) * self.tile_size_deg
                ra, dec = inverse_gnomonic(xi, eta, self.ra, self.dec)  # xi toward East: RA increases
                out.append(KredTile(f"T{len(out) + 1:02d}", float(ra), float(dec), self.tile_size_deg))
        return out


@dataclass(frozen=True)
class KredTile:
    name: str
    ra: float
    dec: float
    size_deg: float


@dataclass(frozen=True)
class KredExposure:
    """One InstCal exposure of the field."""

    expnum: int
    filter: str
    exptime: float
    dither: int
    mjd_obs: float
    telra: float
    teldec: float
    airmass: float
    seeing: float
    transparency: float
    sky_factor: float
    sky_gradient: tuple[float, float]
    offset: float  # counts, added to every pixel of every CCD

    @property
    def date_obs(self) -> str:
        return mjd_to_datetime(self.mjd_obs).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]

    @property
    def filename(self) -> str:
        """NOIRLab CP InstCal name: ``c4d_<yymmdd>_<hhmmss>_ooi_<filter>_v1.fits``."""
        t = mjd_to_datetime(self.mjd_obs)
        return f"c4d_{t:%y%m%d}_{t:%H%M%S}_ooi_{self.filter}_v1.fits"


@dataclass
class KredCCD:
    """One CCD of one exposure: the image and the components it was made of (counts)."""

    ccdnum: int
    detpos: str
    wcs: CCDWcs
    image: np.ndarray  # float32 counts, what the file holds
    scene: np.ndarray  # float32: emission + stars, noiseless
    sky: np.ndarray  # float32: sky plane
    sky_c: float  # sky at the CCD centre
    sky_dcdx: float
    sky_dcdy: float
    sky_sigma: float  # counts: sqrt(sky + read noise^2)
    read_noise: float
    saturate: float
    psf_fwhm: float  # arcsec at the CCD centre
    n_stars: int


def emission_dtype() -> np.dtype:
    return np.dtype([("component", "S9"), ("ra", "f8"), ("dec", "f8"), ("sigma_arcsec", "f8"),
                     ("halpha", "f8"), ("sii", "f8"), ("continuum", "f8")])


class KredField:
    """The sky and the exposures of one kred field (``plan``) for a survey ``seed``.

    ``noise=False`` renders expectations (no Poisson/read noise): the truth scene + sky +
    offset. Everything is keyed by (seed, purpose, expnum, ccdnum): any CCD renders alone.
    """

    def __init__(self, plan: KredPlan, seed: int = 42, noise: bool = True, psf_beta: float = 3.5) -> None:
        for f in plan.filters:
            if f not in KRED_FILTERS:
                raise SimulationError(f"kred filter {f!r} is not one of {', '.join(KRED_FILTERS)}")
        for d in plan.ccds:
            if d not in CCDNUM:
                raise SimulationError(f"kred CCD {d!r} is not a DECam DETPOS (S1..S31, N1..N31)")
        if not plan.dithers_deg or not plan.exptimes:
            raise SimulationError(f"kred field {plan.field}: needs at least one dither and one exposure time")
        self.plan, self.seed, self.noise, self.psf_beta = plan, int(seed), noise, psf_beta
        self.fp = FocalPlane(plan.ccd_shape)
        self.ccdnums = sorted(CCDNUM[d] for d in plan.ccds)
        self.exposures: dict[int, KredExposure] = self._plan()

    def __repr__(self) -> str:
        return f"KredField({self.plan.field!r}, seed={self.seed}, {len(self.exposures)} exposures)"

    def _plan(self) -> dict[int, KredExposure]:
        p = self.plan
        out: dict[int, KredExposure] = {}
        t = nite_to_mjd(p.nite) + 1.0 / 24.0
        n = 0
        for f in p.filters:
            for exptime in p.exptimes:
                for d, (de, dn) in enumerate(p.dithers_deg):
                    expnum = p.first_expnum + n
                    g = rng(self.seed, "kred-conditions", expnum)
                    ra, dec = inverse_gnomonic(de, dn, p.ra, p.dec)
                    sky_factor = float(g.uniform(*p.sky_factor_range))
                    sky = sky_counts(f, exptime, self.fp.pixel_scale, sky_factor)
                    out[expnum] = KredExposure(
                        expnum=expnum, filter=f, exptime=float(exptime), dither=d, mjd_obs=round(t, 8),
                        telra=round(float(ra), 7), teldec=round(float(dec), 7),
                        airmass=round(float(g.uniform(*p.airmass_range)), 3),
                        seeing=round(float(g.uniform(*p.seeing_range)), 3),
                        transparency=round(float(g.uniform(*p.transparency_range)), 4),
                        sky_factor=round(sky_factor, 4),
                        sky_gradient=(round(float(g.normal(0, 0.01)), 5), round(float(g.normal(0, 0.01)), 5)),
                        offset=round(float(g.normal(0.0, p.offset_sigma)) * sky, 3))
                    t += (exptime + 30.0) / 86400.0
                    n += 1
        return out

    def exposure(self, expnum: int) -> KredExposure:
        try:
            return self.exposures[int(expnum)]
        except (KeyError, ValueError, TypeError):
            raise SimulationError(f"exposure {expnum!r} is not in kred field {self.plan.field}; "
                                  f"it has {sorted(self.exposures)}") from None

    # ------------------------------------------------------------------ the sky
    @cached_property
    def stars(self) -> np.ndarray:
        """True stars over the field (STAR_DTYPE) with ``mag_<filter>`` for every kred filter."""
        p = self.plan
        reach = max(np.hypot(*d) for d in p.dithers_deg) + self.fp.radius_deg * 1.05 + 0.01
        stars, _ = make_stars(self.seed, cells_near([(p.ra, p.dec)], reach), p.star_density, p.star_mag_range)
        extra = [(f"mag_{f}", "f4") for f in KRED_FILTERS if f"mag_{f}" not in stars.dtype.names]
        out = np.zeros(len(stars), stars.dtype.descr + extra)
        for name in stars.dtype.names:
            out[name] = stars[name]
        for f, kf in KRED_FILTERS.items():
            out[f"mag_{f}"] = stars["g_mag"] + kf.color[0] + kf.color[1] * stars["bp_rp"]
        return out

    @cached_property
    def emission(self) -> np.ndarray:
        """The diffuse emission components (``emission_dtype``): blobs, haze and continuum."""
        p = self.plan
        g = rng(self.seed, "kred-emission", p.field_id)
        half = 0.5 * max(p.tile_grid) * p.tile_size_deg + max(np.hypot(*d) for d in p.dithers_deg) + 0.03
        n = p.n_blobs
        xi, eta = g.uniform(-half, half, n), g.uniform(-half, half, n)
        ra, dec = inverse_gnomonic(xi, eta, p.ra, p.dec)
        lo, hi = np.log(p.blob_sigma_arcsec[0]), np.log(p.blob_sigma_arcsec[1])
        blobs = np.zeros(n + 3, emission_dtype())
        blobs["component"][:n] = b"blob"
        blobs["ra"][:n], blobs["dec"][:n] = ra, dec
        blobs["sigma_arcsec"][:n] = np.exp(g.uniform(lo, hi, n))
        blobs["halpha"][:n] = np.exp(g.uniform(np.log(p.halpha_peak[0]), np.log(p.halpha_peak[1]), n))
        blobs["sii"][:n] = blobs["halpha"][:n] * g.uniform(*p.sii_ratio, n)
        # two broad components: an H-alpha haze and the unresolved stellar continuum, plus a
        # third, offset continuum blob so the continuum has a gradient across the field
        big = 3600.0 * half
        c_xi, c_eta = g.uniform(-half, half, 3), g.uniform(-half, half, 3)
        c_ra, c_dec = inverse_gnomonic(c_xi, c_eta, p.ra, p.dec)
        blobs["component"][n:] = [b"haze", b"continuum", b"continuum"]
        blobs["ra"][n:], blobs["dec"][n:] = c_ra, c_dec
        blobs["sigma_arcsec"][n:] = big * g.uniform(1.5, 3.0, 3)
        blobs["halpha"][n] = p.haze_halpha
        blobs["sii"][n] = p.haze_halpha * float(np.mean(p.sii_ratio))
        blobs["continuum"][n + 1:] = p.continuum * g.uniform(0.4, 0.8, 2)
        return blobs

    def emission_rate(self, filt: str, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Diffuse emission (counts/s/pixel at airmass 1) in ``filt`` at (ra, dec): the truth function."""
        kf = KRED_FILTERS[filt]
        amp = self._amplitudes(kf)
        em = self.emission
        out = np.zeros(np.shape(ra))
        for k in np.flatnonzero(amp):
            xi, eta = gnomonic(ra, dec, em["ra"][k], em["dec"][k])
            r2 = (xi * xi + eta * eta) * 3600.0**2
            out += amp[k] * np.exp(-0.5 * r2 / em["sigma_arcsec"][k] ** 2)
        return out

    def _amplitudes(self, kf: KredFilter) -> np.ndarray:
        em = self.emission
        return (em["halpha"] * kf.halpha + em["sii"] * kf.sii + em["continuum"] * kf.bandwidth / 1480.0)

    # ------------------------------------------------------------------ rendering
    def ccd_wcs(self, expnum: int, ccdnum: int) -> CCDWcs:
        e = self.exposure(expnum)
        return CCDWcs(self.fp.ccd(ccdnum), e.telra, e.teldec, self.fp.pixel_scale)

    def zeropoint(self, expnum: int) -> float:
        """MAGZERO: mag of a source giving 1 count in the whole exposure."""
        e = self.exposure(expnum)
        kf = KRED_FILTERS[e.filter]
        return float(kf.zp_1s + 2.5 * np.log10(e.exptime) - kf.extinction * (e.airmass - 1.0)
                     + 2.5 * np.log10(e.transparency))

    def sky_level(self, expnum: int) -> float:
        """Sky counts/pixel at the boresight."""
        e = self.exposure(expnum)
        return sky_counts(e.filter, e.exptime, self.fp.pixel_scale, e.sky_factor)

    def render_ccd(self, expnum: int, ccdnum: int) -> KredCCD:
        """One CCD's image and its components (see the module docstring)."""
        e = self.exposure(expnum)
        if ccdnum not in self.ccdnums:
            raise SimulationError(f"CCD {ccdnum} is not written for kred field {self.plan.field}; "
                                  f"CCDs are {self.ccdnums}")
        w = self.ccd_wcs(expnum, ccdnum)
        ccd = w.ccd
        nx, ny = ccd.nx, ccd.ny
        kf = KRED_FILTERS[e.filter]
        throughput = e.transparency * 10.0 ** (-0.4 * kf.extinction * (e.airmass - 1.0))
        scene = self._emission_image(w, kf) * (e.exptime * throughput)
        psf = PSFModel.random(self.seed, expnum, e.seeing, self.psf_beta)
        n_stars = self._draw_stars(scene, w, e, psf)
        # sky: a plane across the focal plane
        sky0 = self.sky_level(expnum)
        gu, gv = e.sky_gradient
        uc, vc = ccd.center_uv
        r = self.fp.radius_pix
        sky_c = sky0 * (1.0 + gu * uc / r + gv * vc / r)
        dcdx, dcdy = sky0 * gu / r, sky0 * gv / r
        xs = np.arange(1, nx + 1) - (nx + 1) / 2.0
        ys = np.arange(1, ny + 1) - (ny + 1) / 2.0
        sky = sky_c + dcdy * ys[:, None] + dcdx * xs[None, :]
        det = Detector.for_ccd(self.seed, ccd)
        rn = det.mean_read_noise
        full = det.saturate
        expect = scene + sky
        if self.noise:
            g = rng(self.seed, "kred-noise", expnum, ccdnum)
            image = g.poisson(np.maximum(expect, 0.0)).astype(np.float32)
            image += (g.standard_normal((ny, nx), dtype=np.float32) * np.float32(rn))
        else:
            image = expect.astype(np.float32)
        np.minimum(image, np.float32(full), out=image)
        image += np.float32(e.offset)
        fwhm = float(psf.params(*self.fp.normalized(uc, vc))[0])
        return KredCCD(ccdnum, ccd.detpos, w, image, scene.astype(np.float32), sky.astype(np.float32),
                       float(sky_c), float(dcdx), float(dcdy), float(np.sqrt(sky_c + rn * rn)), float(rn),
                       float(full + e.offset), fwhm, n_stars)

    def _emission_image(self, w: CCDWcs, kf: KredFilter) -> np.ndarray:
        """Emission (counts/s/pixel) on the CCD grid: each Gaussian is separable in x and y.

        Blob centres are projected into the CCD's pixels; a TAN projection changes scales by
        < 1e-6 across a CCD, so a Gaussian in pixel distance is the sky Gaussian.
        """
        ccd = w.ccd
        em = self.emission
        amp = self._amplitudes(kf)
        x = np.arange(1, ccd.nx + 1, dtype=float)
        y = np.arange(1, ccd.ny + 1, dtype=float)
        out = np.zeros((ccd.ny, ccd.nx))
        bx, by = w.sky_to_pixel(em["ra"], em["dec"], true=True)
        sig = em["sigma_arcsec"] / w.pixel_scale
        for k in np.flatnonzero(amp):
            if (bx[k] < 1 - 6 * sig[k] or bx[k] > ccd.nx + 6 * sig[k] or by[k] < 1 - 6 * sig[k]
                    or by[k] > ccd.ny + 6 * sig[k]):
                continue
            gx = np.exp(-0.5 * ((x - bx[k]) / sig[k]) ** 2)
            gy = np.exp(-0.5 * ((y - by[k]) / sig[k]) ** 2)
            out += amp[k] * gy[:, None] * gx[None, :]
        return out

    def _draw_stars(self, image: np.ndarray, w: CCDWcs, e: KredExposure, psf: PSFModel) -> int:
        """Add the stars whose stamps touch the CCD to ``image`` (counts); returns how many fall on it."""
        st = self.stars
        x, y = w.sky_to_pixel(st["ra"], st["dec"], true=True)
        ccd = w.ccd
        flux = 10.0 ** (-0.4 * (st[f"mag_{e.filter}"].astype(float) - self.zeropoint(e.expnum)))
        u, v = ccd.to_uv(x, y)
        fwhm, g1, g2 = psf.params(*self.fp.normalized(u, v))
        radius = psf.stamp_radius(flux, fwhm / w.pixel_scale) + 1.0
        near = (x > 0.5 - radius) & (x < ccd.nx + 0.5 + radius) & (y > 0.5 - radius) & (y < ccd.ny + 0.5 + radius)
        idx = np.flatnonzero(near)
        if len(idx) == 0:
            return 0
        src = _draw.Sources(kind=np.full(len(idx), _draw.STAR, dtype=np.int8), obj_id=st["star_id"][idx],
                            x=x[idx], y=y[idx], flux=flux[idx], fwhm=fwhm[idx], g1=g1[idx], g2=g2[idx],
                            radius=radius[idx], galaxy_row=np.full(len(idx), -1))
        gim = galsim.ImageD(np.zeros_like(image), xmin=1, ymin=1)
        jac = w.galsim(true=True).local(galsim.PositionD((ccd.nx + 1) / 2.0, (ccd.ny + 1) / 2.0))
        _draw.draw_sources(gim, jac, psf, src, np.zeros(0))
        image += gim.array
        inside = (x[idx] >= 0.5) & (x[idx] < ccd.nx + 0.5) & (y[idx] >= 0.5) & (y[idx] < ccd.ny + 0.5)
        return int(inside.sum())

    def replace(self, **changes: object) -> "KredField":
        """The same field with plan settings changed (e.g. ``ccds=("S4",)``)."""
        return KredField(dataclasses.replace(self.plan, **changes), self.seed, self.noise, self.psf_beta)


def sky_counts(filt: str, exptime: float, pixel_scale: float, sky_factor: float = 1.0) -> float:
    """Sky counts per pixel in ``exptime`` seconds (continuum sky times ``sky_factor``)."""
    kf = KRED_FILTERS[filt]
    return float(10.0 ** (-0.4 * (kf.sky_mag - kf.zp_1s)) * sky_factor * pixel_scale**2 * exptime)
