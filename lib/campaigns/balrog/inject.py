"""``balrog.inject`` (block 4): draw a realization's injection catalog into every single-epoch image.

Per realization ``r``:

1. **Positions**: a hex grid over the tile (``grid.spacing`` arcsec, default 30; ``edge_buffer``
   kept free at the edges), its origin offset (and optionally rotated) by a random draw seeded
   from (injection seed, r), so each realization samples different sky and different real
   neighbours.
2. **Objects**: one per grid point, drawn from the synthetic deep field (:mod:`.deepfield`:
   bulge + disk galaxies) with a ``stars.fraction`` of stars, seeded from (seed, r).
3. **Drawing**: for every band and every single-epoch image of the base srclist, each object
   whose stamp touches the image is drawn with GalSim through *that image's* header WCS
   (:class:`galsim.GSFitsWCS`, local Jacobian at the object) and *its* PSFEx model
   (:class:`galsim.des.DES_PSFEx`; the model includes the pixel, so ``method='no_pixel'``), with
   flux ``10**(-0.4 (mag_band - magzp))`` electrons (the image's zeropoint; SCI is in electrons,
   GAIN 1). With ``noise: poisson`` the injected light's own photon noise is added. The image,
   with SCI changed and MSK/WGT untouched, is written to the realization's
   ``sources-<band>/<archive path>``, and the realization's srclist points at it (background,
   segmentation and PSF files stay the base ones).
4. **Truth**: ``truth/<tile>_balrog_truth.fits`` with ``OBJECTS`` (id, ra, dec, tile x/y, every
   band's magnitude, model parameters) and ``EPOCHS`` (one row per object and image it was drawn
   into: image, FITS x/y of the object's centre through the image's WCS, zeropoint, the expected
   flux, the stamp's flux and the flux that landed on the image, in ADU = electrons).

``ncpu`` > 1 draws images in a process pool; the result does not depend on it.
"""
from __future__ import annotations

import logging
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fitsio
import galsim
import galsim.des
import numpy as np
from astropy.wcs import WCS

from skyops.campaigns.balrog import deepfield
from skyops.campaigns.balrog.coadd import read_geometry, tile_wcs_cards
from skyops.campaigns.balrog.config import InjectionConfig, MedsConf, load_injection, load_medsconf
from skyops.campaigns.balrog.layout import TileLayout
from skyops.campaigns.balrog.params import parse_bands
from skyops.campaigns.balrog.prep import SourceImage, read_srclist, realization_images, write_srclist
from skyops.errors import InputError
from skyops.steps.context import StepContext
from skyops.steps.registry import step

log = logging.getLogger(__name__)

#: Injected ids: realization * ID_STRIDE + 1 .. n (unique across a tile's realizations).
ID_STRIDE = 1_000_000
#: Radius (pixels) that holds a PSFEx model (25 samples of ~0.9 pixel) and its Lanczos-3 kernel.
PSF_RADIUS_PIX = 15.0
MAX_STAMP = 511

OBJECT_DTYPE = np.dtype(
    [("id", "i8"), ("realization", "i4"), ("df_id", "i8"), ("morphology", "i2"), ("kind", "S6"),
     ("ra", "f8"), ("dec", "f8"), ("x_tile", "f8"), ("y_tile", "f8")]
    + [(f"mag_{b}", "f4") for b in deepfield.BANDS]
    + [("bulge_frac", "f4"), ("hlr_disk", "f4"), ("hlr_bulge", "f4"), ("g1", "f4"), ("g2", "f4"),
       ("g1_bulge", "f4"), ("g2_bulge", "f4"), ("n_epochs", "i4")]
)
EPOCH_DTYPE = np.dtype([
    ("id", "i8"), ("band", "S1"), ("image_id", "i4"), ("filename", "S80"), ("expnum", "i4"), ("ccdnum", "i2"),
    ("x", "f8"), ("y", "f8"), ("magzp", "f8"), ("flux_expected", "f8"), ("flux_stamp", "f8"), ("flux_drawn", "f8"),
    ("stamp_xmin", "i4"), ("stamp_xmax", "i4"), ("stamp_ymin", "i4"), ("stamp_ymax", "i4"), ("complete", "?"),
])


def tile_wcs(geom: dict[str, Any]) -> WCS:
    """The tile's TAN WCS (astropy) from its COADDTILE_GEOM row."""
    return WCS({c["name"]: c["value"] for c in tile_wcs_cards(geom)} | {"NAXIS": 2, "NAXIS1": geom["naxis1"],
                                                                        "NAXIS2": geom["naxis2"]})


def hex_grid(geom: dict[str, Any], spacing_arcsec: float, edge_buffer_arcsec: float, seed: int,
             realization: int, rotate: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ra, dec, x_tile, y_tile) of a hex grid over the tile, offset (and rotated) per realization."""
    scale = float(geom["pixelscale"])
    s = spacing_arcsec / scale
    n1, n2 = int(geom["naxis1"]), int(geom["naxis2"])
    g = np.random.default_rng(np.random.SeedSequence([int(seed), int(realization), 17]))
    dx, dy = g.uniform(0.0, s), g.uniform(0.0, s * np.sqrt(3.0))
    theta = g.uniform(0.0, np.pi / 3.0) if rotate else 0.0
    half = 0.75 * np.hypot(n1, n2)  # lattice big enough to cover the tile after rotation
    rows = np.arange(-np.ceil(half / (s * np.sqrt(3) / 2)), np.ceil(half / (s * np.sqrt(3) / 2)) + 1)
    cols = np.arange(-np.ceil(half / s) - 1, np.ceil(half / s) + 2)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    u = (cc + 0.5 * (rr % 2)) * s + dx
    v = rr * s * np.sqrt(3.0) / 2.0 + dy
    cx, cy = (n1 + 1) / 2.0, (n2 + 1) / 2.0
    x = cx + np.cos(theta) * u - np.sin(theta) * v
    y = cy + np.sin(theta) * u + np.cos(theta) * v
    buf = edge_buffer_arcsec / scale
    keep = (x >= 0.5 + buf) & (x <= n1 + 0.5 - buf) & (y >= 0.5 + buf) & (y <= n2 + 0.5 - buf)
    x, y = x[keep].ravel(), y[keep].ravel()
    order = np.lexsort((x, y))
    x, y = x[order], y[order]
    ra, dec = tile_wcs(geom).all_pix2world(x, y, 1)
    return np.asarray(ra) % 360.0, np.asarray(dec), x, y


def injection_catalog(geom: dict[str, Any], cfg: InjectionConfig, realization: int) -> np.ndarray:
    """The realization's objects on the hex grid (OBJECT_DTYPE)."""
    ra, dec, x, y = hex_grid(geom, cfg.grid.spacing, cfg.grid.edge_buffer, cfg.seed, realization, cfg.grid.rotate)
    df = deepfield.make_deepfield(cfg.deepfield)
    g = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), int(realization), 29]))
    objs = deepfield.sample(df, cfg.stars, len(ra), g)
    out = np.zeros(len(ra), OBJECT_DTYPE)
    for name in deepfield.DEEPFIELD_DTYPE.names:
        out[name] = objs[name]
    out["id"] = realization * ID_STRIDE + np.arange(1, len(ra) + 1)
    out["realization"] = realization
    out["kind"] = np.where(objs["morphology"] == deepfield.STAR, b"star", b"galaxy")
    out["ra"], out["dec"], out["x_tile"], out["y_tile"] = ra, dec, x, y
    return out


def stamp_size(obj: np.void, pixel_scale: float) -> int:
    """Odd stamp side (pixels) holding the object's light convolved with the PSF."""
    r = float(deepfield.extent_arcsec(np.atleast_1d(obj))[0]) / pixel_scale + PSF_RADIUS_PIX
    return int(min(MAX_STAMP, 2 * np.ceil(r) + 1))


@dataclass
class DrawJob:
    """One image to inject into (picklable, for the process pool)."""

    image: SourceImage
    band: str
    objects: np.ndarray
    noise: str
    folding_threshold: float
    seed: int
    realization: int


def draw_image(job: DrawJob) -> tuple[np.ndarray | None, np.ndarray]:
    """The image's SCI with the objects drawn in (None if none lands on it) and their EPOCH rows."""
    img = job.image
    with fitsio.FITS(img.image_path) as f:
        ny, nx = f[0].get_dims()
    wcs = galsim.GSFitsWCS(img.image_path)
    x, y = wcs.radecToxy(job.objects["ra"], job.objects["dec"], units="deg")
    scale = float(wcs.local(galsim.PositionD(nx / 2.0, ny / 2.0)).pixelArea()) ** 0.5  # arcsec / pixel
    sizes = np.array([stamp_size(o, scale) for o in job.objects])
    half = sizes // 2
    near = (x + half >= 1) & (x - half <= nx) & (y + half >= 1) & (y - half <= ny)
    rows = np.zeros(int(near.sum()), EPOCH_DTYPE)
    if not near.any():
        return None, rows
    sci = galsim.Image(fitsio.read(img.image_path, ext=0).astype(np.float32), xmin=1, ymin=1)
    psfex = galsim.des.DES_PSFEx(img.psf_path, wcs=wcs)
    gsp = galsim.GSParams(folding_threshold=job.folding_threshold, maximum_fft_size=16384)
    noise_rng = np.random.default_rng(np.random.SeedSequence([job.seed, job.realization, img.image_id,
                                                              ord(job.band), 41]))
    for k, i in enumerate(np.flatnonzero(near)):
        obj = job.objects[i]
        pos = galsim.PositionD(float(x[i]), float(y[i]))
        flux = 10.0 ** (-0.4 * (float(obj[f"mag_{job.band}"]) - img.magzp))
        gal = deepfield.profile(obj, gsp).withFlux(flux)
        conv = galsim.Convolve([gal, psfex.getPSF(pos, gsparams=gsp)], gsparams=gsp)
        n = int(sizes[i])
        stamp = conv.drawImage(nx=n, ny=n, center=pos, wcs=wcs.local(pos), method="no_pixel", dtype=np.float64)
        b = stamp.bounds & sci.bounds
        add = stamp[b].array
        if job.noise == "poisson":
            lam = np.clip(add, 0.0, None)
            add = add + (noise_rng.poisson(lam) - lam)
        sci[b] += add.astype(np.float32)
        r = rows[k]
        r["id"], r["band"], r["image_id"], r["filename"] = obj["id"], job.band, img.image_id, img.filename
        r["expnum"], r["ccdnum"], r["x"], r["y"], r["magzp"] = img.expnum, img.ccdnum, x[i], y[i], img.magzp
        r["flux_expected"], r["flux_stamp"], r["flux_drawn"] = flux, stamp.array.sum(), stamp[b].array.sum()
        sb = stamp.bounds
        r["stamp_xmin"], r["stamp_xmax"], r["stamp_ymin"], r["stamp_ymax"] = sb.xmin, sb.xmax, sb.ymin, sb.ymax
        r["complete"] = b == sb
    return sci.array, rows


def write_injected(ctx: StepContext, src: SourceImage, dest: Path, sci: np.ndarray | None) -> None:
    """The image with SCI replaced (MSK, WGT and every header as they were), written atomically."""
    with ctx.output(dest, filetype="balrog_image") as tmp:
        shutil.copyfile(src.image_path, tmp)
        if sci is not None:
            with fitsio.FITS(str(tmp), "rw") as f:
                f[0].write(sci.astype(np.float32))


def write_truth(ctx: StepContext, path: Path, objects: np.ndarray, epochs: np.ndarray, cards: list[dict]) -> None:
    with ctx.output(path, filetype="balrog_truth") as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
            f.write(objects, extname="OBJECTS", header=cards)
            f.write(epochs, extname="EPOCHS", header=cards)


def inject(ctx: StepContext, base: TileLayout, mc: MedsConf, cfg: InjectionConfig, realization: int,
           bands: tuple[str, ...], ncpu: int = 1) -> dict[str, Any]:
    """Block 4 for one realization (see the module docstring)."""
    real = base.for_realization(realization)
    geom = read_geometry(base)
    objects = injection_catalog(geom, cfg, realization)
    all_rows: list[np.ndarray] = []
    metrics: dict[str, Any] = {"realization": realization, "n_injected": len(objects)}
    pool = ProcessPoolExecutor(max_workers=ncpu) if ncpu > 1 else None
    try:
        for band in bands:
            images = read_srclist(base.srclist(band))
            jobs = [DrawJob(img, band, objects, cfg.noise, cfg.folding_threshold, cfg.seed, realization)
                    for img in images]
            for img in images:
                for p, ft in ((img.image_path, "red_immask"), (img.psf_path, "psfex_model")):
                    if not Path(p).is_file():
                        raise InputError(f"{p}: listed in {base.srclist(band)} but missing; rerun block 1 "
                                         "(balrog.prep)")
                    ctx.use(p, ft)
            results = pool.map(draw_image, jobs) if pool else map(draw_image, jobs)
            n_draws = 0
            for img, (sci, rows) in zip(images, results):
                write_injected(ctx, img, real.source_file(band, img.relpath), sci)
                all_rows.append(rows)
                n_draws += len(rows)
            write_srclist(ctx, real.srclist(band), base.tilename, band, realization_images(images, real),
                          realization)
            metrics[f"n_draws_{band}"] = n_draws
            ctx.log.info("realization %d band %s: %d objects drawn %d times into %d images", realization, band,
                         len(objects), n_draws, len(images))
    finally:
        if pool:
            pool.shutdown()
    epochs = np.concatenate(all_rows) if all_rows else np.zeros(0, EPOCH_DTYPE)
    counts = dict(zip(*np.unique(epochs["id"], return_counts=True)))
    objects["n_epochs"] = [counts.get(i, 0) for i in objects["id"]]
    cards = [{"name": "TILENAME", "value": base.tilename}, {"name": "REALIZ", "value": realization},
             {"name": "MEDSCONF", "value": mc.medsconf}, {"name": "NOISE", "value": cfg.noise},
             {"name": "SPACING", "value": cfg.grid.spacing, "comment": "[arcsec] hex grid"},
             {"name": "SEED", "value": cfg.seed}]
    write_truth(ctx, real.truth(), objects, epochs, cards)
    metrics["n_draws"] = int(len(epochs))
    metrics["n_on_images"] = int((objects["n_epochs"] > 0).sum())
    return metrics


@step("balrog.inject", resources={"cpu": 1, "memory_mb": 4096, "scratch_mb": 16384},
      outputs=["balrog_image", "balrog_truth", "balrog_srclist"])
def inject_step(ctx: StepContext, *, tile: str, realization: int, medsconf: str = "y3a1-v02",
                galsim_config: str = "galsim_y3a1", meds_dir: str | None = None, bands: list[str] | None = None,
                ncpu: int = 1, spacing: float | None = None, noise: str | None = None) -> dict[str, Any]:
    """Block 4: draw realization ``realization``'s injection catalog into every single-epoch image.

    ``spacing`` (arcsec) and ``noise`` (poisson|none) override the injection config's values.
    """
    mc = load_medsconf(medsconf)
    cfg = load_injection(galsim_config)
    if spacing is not None:
        if spacing <= 0:
            raise InputError(f"param 'spacing': {spacing} arcsec; expected a positive grid spacing")
        cfg = cfg.model_copy(update={"grid": cfg.grid.model_copy(update={"spacing": float(spacing)})})
    if noise is not None:
        if noise not in ("poisson", "none"):
            raise InputError(f"param 'noise': {noise!r}; expected poisson or none")
        cfg = cfg.model_copy(update={"noise": noise})
    if realization < 0:
        raise InputError(f"param 'realization': {realization} is negative; realizations are 0, 1, ...")
    if ncpu < 1:
        raise InputError(f"param 'ncpu' (-n): {ncpu}; expected at least 1")
    use = parse_bands(bands, mc.bands) if bands else tuple(mc.bands)
    base = TileLayout.of(meds_dir, mc.medsconf, tile)
    return inject(ctx, base, mc, cfg, realization, use, ncpu)
