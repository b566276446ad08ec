"""The DES-tile survey: single-epoch exposures over coadd tiles, with finalcut's products.

For the Balrog campaign (and the archive's ``se_sources`` / ``tile_geometry`` queries) a
preset's :class:`~skyops.sim.tiles.TilePlan` becomes a survey of its own: for every epoch,
tile and band one DECam exposure pointed near the tile centre (kind ``template``: no
transients), built with the core renderer (:class:`~skyops.sim.survey.Survey`, same seed:
the same stars and galaxies wherever the sky is shared). Only the good CCDs whose header
footprint overlaps the tile are built -- exactly the images ``se_sources`` will return --
and each gets, as finalcut leaves them:

- ``red_immask`` (SCI/MSK/WGT, :mod:`~skyops.sim.products`), whose SCI keeps a small smooth
  *residual background* (the plane sky model of finalcut is not perfect: ``bkg_residual``
  of the sky, per exposure, across the focal plane; SKYBRITE is what was really subtracted);
- ``red_bkg``, ``red_segmap`` and ``psfex_model`` from the real SExtractor and PSFEx
  (:mod:`~skyops.sim.tileproducts`);
- archive rows (:func:`skyops.sim.register_parts.register_tiles`): EXPOSURE, IMAGE,
  MISCFILE, ZEROPOINT (FGCM v1: truth + 3 mmag), PROCTAG (``Y3A1_FINALCUT``), DESFILE /
  FILE_ARCHIVE_INFO, and COADDTILE_GEOM for the tiles.

Truth (under ``SIM/truth/``)
----------------------------
``tiles/tiles_geometry``   one row per tile: every COADDTILE_GEOM column (FITS + CSV)
``tiles/tiles_exposures``  every exposure's spec and conditions (as the core's exposures table)
                           plus ``tilename`` and the residual-background coefficients
                           ``bkg_resid_a0/au/av`` (fractions of the sky; see below)
``tiles/tiles_ccds``       one row per CCD built (:data:`TILE_CCD_DTYPE`): truth zeropoint, sky,
                           the residual background left in SCI (``bkg_resid_e`` at the CCD
                           centre, ``bkg_resid_dedx/dedy`` per pixel), the truth PSF FWHM and
                           what SExtractor/PSFEx found (``n_detected``, ``psfex_accepted``,
                           ``psfex_fwhm_pix``)
``tiles/<tile>/<tile>_objects``  every star and galaxy whose true position falls on the tile
                           (:data:`TILE_OBJECT_DTYPE`): id, position, tile pixel position,
                           magnitudes in every band, galaxy shape -- Balrog's "real objects"
``D<expnum>/...``          per exposure, as for every core exposure: ``_ccds`` (CCD_DTYPE) and
                           ``_objects`` (every source drawn on every CCD, OBJECT_DTYPE)

The residual background of exposure E at focal-plane position (u, v) is
``sky_e(E) * (a0 + au u/R + av v/R)`` electrons (R = focal-plane radius in pixels); on a CCD
it is the plane ``bkg_resid_e + dedx (x - xc) + dedy (y - yc)``, so ``SCI - red_bkg`` should
have no background left.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import recfunctions as rfn

from skyops.errors import SimulationError
from skyops.sim import layout, products
from skyops.sim.exposure import CCDProduct
from skyops.sim.exposure_spec import TEMPLATE
from skyops.sim.fitswrite import write_table
from skyops.sim.focalplane import GOOD_CCDS, FocalPlane
from skyops.sim.photometry import BANDS
from skyops.sim.presets import Field, NightPlan, Preset, get_preset
from skyops.sim.seeding import rng
from skyops.sim.survey import BuildResult, ExposureResult, NightResult, Progress, Survey
from skyops.sim.tileproducts import AuxBatch, AuxStats
from skyops.sim.tiles import Tile, TilePlan, footprints_overlap, make_tiles
from skyops.sim.truth import CCD_DTYPE, OBJECT_DTYPE, TRANSIENT_TRUTH_DTYPE, concat
from skyops.sim.wcs import ccd_wcs, footprint

log = logging.getLogger(__name__)

TILE_TRUTH_DIR = "tiles"
#: Margin (arcsec) by which a tile is grown when picking candidate CCDs from their *true*
#: footprints; the final choice uses the header footprint, as the archive query does.
CANDIDATE_MARGIN_ARCSEC = 3.0

TILE_CCD_DTYPE = np.dtype([
    ("tilename", "S12"), ("expnum", "i4"), ("ccdnum", "i2"), ("detpos", "S3"), ("band", "S1"),
    ("mag_zero", "f8"), ("sky_e", "f8"), ("skybrite_e", "f8"), ("sky_sigma", "f4"),
    ("bkg_resid_e", "f8"), ("bkg_resid_dedx", "f8"), ("bkg_resid_dedy", "f8"),
    ("psf_fwhm", "f4"), ("psf_fwhm_pix", "f4"),
    ("n_detected", "i4"), ("psfex_loaded", "i4"), ("psfex_accepted", "i4"), ("psfex_fwhm_pix", "f4"),
    ("n_stars", "i4"), ("n_galaxies", "i4"),
])

TILE_OBJECT_DTYPE = np.dtype(
    [("tilename", "S12"), ("kind", "S6"), ("obj_id", "i8"), ("ra", "f8"), ("dec", "f8"),
     ("x_tile", "f8"), ("y_tile", "f8"), ("in_unique", "?")]
    + [(f"mag_{b}", "f4") for b in BANDS]
    + [("morphology", "i2"), ("bulge_frac", "f4"), ("hlr_disk", "f4"), ("hlr_bulge", "f4"),
       ("g1", "f4"), ("g2", "f4")]
)


@dataclass
class TileExposureResult:
    """One tile exposure: the core's ExposureResult (files include the aux products) and truth."""

    result: ExposureResult
    tilename: str
    ccds: np.ndarray  # TILE_CCD_DTYPE
    resid: tuple[float, float, float]  # a0, au, av


@dataclass
class TileBuildResult:
    """Everything :meth:`TileSurvey.build` wrote, in the shape :func:`register_build` takes."""

    tiles: list[Tile]
    build: BuildResult
    ccds: np.ndarray  # TILE_CCD_DTYPE, every CCD built

    @property
    def files(self) -> list[products.WrittenFile]:
        return self.build.files

    @property
    def expnums(self) -> list[int]:
        return [e.spec.expnum for e in self.build.exposures]


def tile_preset(base: Preset, tiles: list[Tile], seed: int) -> Preset:
    """The core-survey preset of the tile exposures: one NightPlan per (epoch, tile, band)."""
    plan = base.tiles
    assert plan is not None
    nights = []
    step_h = (plan.exptime + 30.0) / 3600.0
    for ei, nite in enumerate(plan.epochs):
        for ti, tile in enumerate(tiles):
            for bi, band in enumerate(plan.bands):
                expnum = plan.expnum(ei, ti, bi)
                offset = rng(seed, "tile-dither", expnum).normal(0.0, 3600.0 * plan.dither_deg, 2)
                dx, dy = (round(float(v), 3) for v in offset)
                nights.append(NightPlan(
                    nite=nite, kind=TEMPLATE, band=band, expnums=(expnum,), field=tile.name, program="survey",
                    propid=plan.propid, campaign=plan.campaign, reqnum=plan.first_reqnum + ei, attnum=1,
                    exptime=plan.exptime, dithers_arcsec=((dx, dy),),
                    start_hour_ut=1.0 + (ti * len(plan.bands) + bi) * step_h, tags=(plan.tag,)))
    return dataclasses.replace(
        base, name=f"{base.name}-tiles", description=f"DES tiles {', '.join(plan.tilenames)} of preset {base.name}",
        fields=tuple(Field(t.name, t.ra, t.dec) for t in tiles), nights=tuple(nights),
        ccd_shape=plan.ccd_shape or base.ccd_shape,
        star_density=plan.star_density, galaxy_density=plan.galaxy_density, star_mag_range=plan.star_mag_range,
        galaxy_mag_range=plan.galaxy_mag_range, transients_per_ccd=0.0, tiles=None, kred=None, parts=("gw",))


def residual_coefficients(seed: int, expnum: int, frac: float) -> tuple[float, float, float]:
    """(a0, au, av) of an exposure's residual background, in fractions of its sky."""
    if frac <= 0:
        return 0.0, 0.0, 0.0
    g = rng(seed, "bkg-residual", expnum)
    a0 = float(g.normal(0.0, frac))
    au, av = (float(v) for v in g.normal(0.0, 0.5 * frac, 2))
    return a0, au, av


def add_residual(prod: CCDProduct, sky: float, fp: FocalPlane, coeffs: tuple[float, float, float]
                 ) -> tuple[CCDProduct, tuple[float, float, float]]:
    """``prod`` with the residual background plane added to SCI (and SKYBRITE lowered by it).

    Returns the new product and (value at the CCD centre, d/dx, d/dy) in electrons.
    """
    a0, au, av = coeffs
    ccd = prod.wcs.ccd
    uc, vc = ccd.center_uv
    r = fp.radius_pix
    rc, dx, dy = sky * (a0 + au * uc / r + av * vc / r), sky * au / r, sky * av / r
    if ccd.bad or (rc == 0.0 and dx == 0.0 and dy == 0.0):
        return prod, (rc, dx, dy)
    xs = np.arange(1, ccd.nx + 1) - (ccd.nx + 1) / 2.0
    ys = np.arange(1, ccd.ny + 1) - (ccd.ny + 1) / 2.0
    plane = (rc + dy * ys[:, None] + dx * xs[None, :]).astype(np.float32)
    return dataclasses.replace(prod, sci=prod.sci + plane, skybrite=prod.skybrite - rc), (rc, dx, dy)


class TileSurvey:
    """The tile part of a preset (``preset.tiles``) with ``seed``; overrides as for :class:`Survey`.

    ``ts.tiles``, ``ts.survey`` (the core Survey of the tile exposures), ``ts.tile_of[expnum]``;
    ``ts.make_exposure(expnum, root)``, ``ts.build(root)``.
    """

    def __init__(self, preset: str | Preset = "demo", seed: int = 42, **overrides: object) -> None:
        base = get_preset(preset)
        if overrides:
            base = base.replace(**overrides)
        if base.tiles is None:
            raise SimulationError(f"preset {base.name!r} has no DES tiles (its 'tiles' setting is None)")
        self.plan: TilePlan = base.tiles
        for b in self.plan.bands:
            if b not in BANDS:
                raise SimulationError(f"tile plan band {b!r} is not a DECam band; expected one of {', '.join(BANDS)}")
        self.seed = int(seed)
        self.tiles = make_tiles(self.plan)
        self.survey = Survey(tile_preset(base, self.tiles, self.seed), self.seed)
        by_name = {t.name: t for t in self.tiles}
        self.tile_of: dict[int, Tile] = {e: by_name[s.field] for e, s in self.survey.exposures.items()}

    def __repr__(self) -> str:
        return f"TileSurvey({', '.join(t.name for t in self.tiles)}, seed={self.seed}, {len(self.tile_of)} exposures)"

    @property
    def fp(self) -> FocalPlane:
        return self.survey.fp

    def candidate_ccds(self, expnum: int) -> list[int]:
        """Good CCDs whose true footprint overlaps the exposure's tile grown by a few arcsec."""
        spec = self.survey.exposure(expnum)
        grown = _grow(self.tile_of[expnum].footprint(), CANDIDATE_MARGIN_ARCSEC / 3600.0)
        out = []
        for c in GOOD_CCDS:
            ra, dec = ccd_wcs(self.fp, c, spec.telra, spec.teldec).corners(true=True)
            if footprints_overlap(footprint(ra, dec), grown):
                out.append(c)
        return out

    def make_exposure(self, expnum: int, root: str | Path) -> TileExposureResult:
        """Write the exposure's overlapping CCDs (red_immask + bkg/seg/psf) and its truth."""
        root = Path(root)
        spec = self.survey.exposure(expnum)
        tile = self.tile_of[expnum]
        tile_fp = tile.footprint()
        scene = self.survey.scene(expnum)
        coeffs = residual_coefficients(self.seed, expnum, self.plan.bkg_residual)
        batch = AuxBatch(spec, self.plan.psfvar_degrees)
        files: list[products.WrittenFile] = []
        kept: list[tuple[CCDProduct, tuple[float, float, float]]] = []
        try:
            for c in self.candidate_ccds(expnum):
                prod, resid = add_residual(self.survey.render_ccd(expnum, c), scene.sky, self.fp, coeffs)
                if not footprints_overlap(products.image_meta(spec, prod), tile_fp):
                    continue  # the header footprint misses the tile: se_sources would not list it
                wf = products.write_red_immask(root, spec, prod)
                files.append(wf)
                batch.add(prod, wf.filename)
                kept.append((_light(prod), resid))
        except BaseException:
            batch.abort()
            raise
        aux, stats = batch.run(root)
        files += aux
        result = ExposureResult(spec, files, np.array([p.truth for p, _ in kept], dtype=CCD_DTYPE),
                                concat([p.objects for p, _ in kept], OBJECT_DTYPE), np.zeros(0, TRANSIENT_TRUTH_DTYPE))
        result.files += self.survey.write_exposure_truth(root, result)
        ccds = np.zeros(len(kept), TILE_CCD_DTYPE)
        for i, (p, resid) in enumerate(kept):
            _fill_ccd_row(ccds[i], tile.name, p, resid, stats[p.ccdnum], self.fp.pixel_scale)
        log.info("tile %s exposure %s (%s): %d CCDs", tile.name, spec.unitname, spec.band, len(kept))
        return TileExposureResult(result, tile.name, ccds, coeffs)

    def tile_objects(self, tile: Tile) -> np.ndarray:
        """Every star and galaxy whose true position falls on ``tile`` (TILE_OBJECT_DTYPE)."""
        stars, gals = self.survey.stars, self.survey.galaxies
        s = stars[tile.contains(stars["ra"], stars["dec"])]
        g = gals[tile.contains(gals["ra"], gals["dec"])]
        out = np.zeros(len(s) + len(g), TILE_OBJECT_DTYPE)
        out["tilename"] = tile.name
        out["kind"][: len(s)], out["kind"][len(s):] = b"star", b"galaxy"
        out["obj_id"] = np.concatenate([s["star_id"], g["galaxy_id"]])
        out["ra"], out["dec"] = np.concatenate([s["ra"], g["ra"]]), np.concatenate([s["dec"], g["dec"]])
        out["x_tile"], out["y_tile"] = tile.sky_to_pixel(out["ra"], out["dec"])
        out["in_unique"] = tile.in_unique(out["ra"], out["dec"])
        for b in BANDS:
            out[f"mag_{b}"] = np.concatenate([s[f"mag_{b}"], g[f"mag_{b}"]])
        out["morphology"][: len(s)] = -1  # galaxies: 0 disk, 1 dev, 2 bulge+disk
        for col in ("morphology", "bulge_frac", "hlr_disk", "hlr_bulge", "g1", "g2"):
            out[col][len(s):] = g[col]
        return out

    def write_refcat(self, root: Path) -> products.WrittenFile:
        """The GAIA-like reference catalog of the tile fields (archived as cal_refcat)."""
        ref = layout.refcat(self.survey.refcat_name)
        write_table(root / ref.relpath, self.survey.refcat, "REFCAT", self.survey._truth_cards() + [
            ("REFCAT", "GAIA-DR2-like (simulated)", "Reference catalog"),
            ("EPOCH", 2015.5, "Reference epoch of positions")])
        return products.record(root, ref, n_rows=len(self.survey.refcat))

    def build(self, root: str | Path, progress: Progress | None = None) -> TileBuildResult:
        """Every tile exposure, the tile refcat and the tile truth tables."""
        root = Path(root)
        cats = [self.write_refcat(root)]
        specs = list(self.survey.exposures.values())
        done: list[TileExposureResult] = []
        for i, spec in enumerate(specs):
            done.append(self.make_exposure(spec.expnum, root))
            if progress:
                progress("tiles", i + 1, len(specs))
        nights = [NightResult(n, [], [d.result for d in done if d.result.spec.nite == n]) for n in self.survey.nites]
        ccds = concat([d.ccds for d in done], TILE_CCD_DTYPE)
        truth = self._write_truth(root, done, ccds)
        return TileBuildResult(self.tiles, BuildResult(cats, nights, truth), ccds)

    def _write_truth(self, root: Path, done: list[TileExposureResult], ccds: np.ndarray
                     ) -> list[products.WrittenFile]:
        w = self.survey.write_truth_table
        out = w(root, layout.truth("tiles_geometry.fits", TILE_TRUTH_DIR), _table([t.geom_row() for t in self.tiles]))
        exp = self.survey.exposure_table()
        order = {d.result.spec.expnum: d for d in done}
        extra = [order[int(e)] for e in exp["expnum"]]
        exp = rfn.append_fields(exp, ["tilename", "bkg_resid_a0", "bkg_resid_au", "bkg_resid_av"],
                                [np.array([d.tilename for d in extra], dtype="S12"),
                                 *(np.array([d.resid[k] for d in extra]) for k in range(3))], usemask=False)
        out += w(root, layout.truth("tiles_exposures.fits", TILE_TRUTH_DIR), exp)
        out += w(root, layout.truth("tiles_ccds.fits", TILE_TRUTH_DIR), ccds)
        for t in self.tiles:
            out += w(root, layout.truth(f"{t.name}_objects.fits", f"{TILE_TRUTH_DIR}/{t.name}"), self.tile_objects(t))
        return out


def _grow(fp: dict[str, Any], margin_deg: float) -> dict[str, Any]:
    """A footprint's RA/Dec box grown by ``margin_deg`` on every side (RA wrap kept consistent)."""
    dra = margin_deg / max(np.cos(np.radians(max(abs(fp["deccmin"]), abs(fp["deccmax"])))), 1e-3)
    lo, hi = (fp["racmin"] - dra) % 360.0, (fp["racmax"] + dra) % 360.0
    return {"racmin": lo, "racmax": hi, "deccmin": fp["deccmin"] - margin_deg, "deccmax": fp["deccmax"] + margin_deg,
            "crossra0": "Y" if lo > hi else "N"}


def _light(prod: CCDProduct) -> CCDProduct:
    """The product without its pixel arrays (kept for truth once the files are written)."""
    empty = np.zeros((0, 0), dtype=np.float32)
    return dataclasses.replace(prod, sci=empty, msk=empty.astype(np.int16), wgt=empty, raw=None)


def _fill_ccd_row(row: np.void, tilename: str, p: CCDProduct, resid: tuple[float, float, float], st: AuxStats,
                  pixel_scale: float) -> None:
    t = p.truth
    row["tilename"], row["expnum"], row["ccdnum"], row["detpos"], row["band"] = (
        tilename, t["expnum"], t["ccdnum"], t["detpos"], t["band"])
    row["mag_zero"], row["sky_e"], row["skybrite_e"], row["sky_sigma"] = (
        t["mag_zero"], t["sky_e"], p.skybrite, t["sky_sigma"])
    row["bkg_resid_e"], row["bkg_resid_dedx"], row["bkg_resid_dedy"] = resid
    row["psf_fwhm"], row["psf_fwhm_pix"] = t["psf_fwhm"], float(t["psf_fwhm"]) / pixel_scale
    row["n_detected"], row["psfex_loaded"], row["psfex_accepted"], row["psfex_fwhm_pix"] = (
        st.n_detected, st.psf_loaded, st.psf_accepted, st.psf_fwhm_pix)
    row["n_stars"], row["n_galaxies"] = t["n_stars"], t["n_galaxies"]


def _table(rows: list[dict[str, Any]]) -> np.ndarray:
    """A structured array from dicts with the same keys (floats f8, ints i8, text S<n>)."""
    names = list(rows[0])
    dtype = []
    for n in names:
        vals = [r[n] for r in rows]
        if all(isinstance(v, (bool, np.bool_)) for v in vals):
            dtype.append((n, "?"))
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
            dtype.append((n, "i8"))
        elif all(isinstance(v, (int, float, np.integer, np.floating)) for v in vals):
            dtype.append((n, "f8"))
        else:
            dtype.append((n, f"S{max(1, max(len(str(v)) for v in vals))}"))
    return np.array([tuple(r[n] for n in names) for r in rows], dtype=dtype)
