"""``magellanic.swarp_setup`` and ``magellanic.swarp`` (kred's SwarpSetup.py and Swarp.py).

One mosaic per tile x filter x exposure time, from the CCD images SetupTile linked into
``DECam_PREP/<field>/TileNN`` (or, with ``bsub``, BackSub's images in ``TileNN_b``), by the real
SWarp: LANCZOS3 resampling, MEDIAN combination, 0.27 arcsec pixels, a TAN projection *centred on
the config's tile centre* and as large as the config's tile (``round(size_deg * 3600 / 0.27)``
pixels square). kred's SwarpSetup centred each mosaic on its images and noted that as a flaw:
here the tiles of a field share the config's grid, so their mosaics abut where the config says.
SWarp's own background subtraction is off: the background is kred's business (MefPrep, BackSub).
Fluxes are conserved (SWarp's default ``FSCALASTRO_TYPE FIXED``), so a mosaic's pixel values are
the input's times (0.27 / input pixel scale)^2.

SwarpSetup writes, in ``DECam_SWARP/<field>/TileNN[_b]/``, the image list ``<mosaic>.lst`` and the
complete SWarp configuration ``<mosaic>.default`` (the ``.run`` and ``.default`` of kred), so an
operator can rerun or inspect SWarp by hand; Swarp runs exactly those into ``<mosaic>.fits`` and
``<mosaic>.wt.fits``.
"""
from __future__ import annotations

from pathlib import Path

import fitsio

from skyops.campaigns.magellanic.fieldconfig import load_field_config
from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.layout import KredTree, mosaic_name
from skyops.campaigns.magellanic.tables import MissingStageOutputError
from skyops.campaigns.magellanic.tiles import group_key, read_index
from skyops.errors import StepParameterError
from skyops.imaging.astromatic import read_config, swarp as run_swarp
from skyops.steps.context import StepContext
from skyops.steps.registry import step

PIXEL_SCALE = 0.27
RESAMPLING = "LANCZOS3"
COMBINE = "MEDIAN"


def swarp_config(ra: float, dec: float, naxis: int, *, pixel_scale: float = PIXEL_SCALE,
                 resampling: str = RESAMPLING, combine: str = COMBINE) -> dict[str, str]:
    """The SWarp keys of one kred mosaic (everything that differs from SWarp's ``-dd`` defaults)."""
    return {
        "COMBINE": "Y", "COMBINE_TYPE": combine, "RESAMPLE": "Y", "RESAMPLING_TYPE": resampling,
        "CELESTIAL_TYPE": "EQUATORIAL", "PROJECTION_TYPE": "TAN", "CENTER_TYPE": "MANUAL",
        "CENTER": f"{ra:.8f},{dec:.8f}", "PIXELSCALE_TYPE": "MANUAL", "PIXEL_SCALE": f"{pixel_scale:g}",
        "IMAGE_SIZE": f"{naxis},{naxis}", "SUBTRACT_BACK": "N", "FSCALASTRO_TYPE": "FIXED",
        "FSCALE_DEFAULT": "1.0", "WEIGHT_TYPE": "NONE", "COPY_KEYWORDS": "FILTER,EXPTIME,MAGZERO",
        "BLANK_BADPIXELS": "N",
    }


def tile_naxis(size_deg: float, pixel_scale: float) -> int:
    """The mosaic's side in pixels: the config's tile size at ``pixel_scale``."""
    return int(round(size_deg * 3600.0 / pixel_scale))


def _paths(tree: KredTree, tile: str, filt: str, exptime: float, bsub: bool) -> tuple[Path, Path, Path]:
    d = tree.swarp_dir(tile, bsub)
    stem = mosaic_name(tile, filt, exptime)
    return d / f"{stem}.lst", d / f"{stem}.default", d / f"{stem}.fits"


@step("magellanic.swarp_setup", resources={"cpu": 0.2, "memory_mb": 256},
      outputs=["kred_swarp_list", "kred_swarp_config"])
def swarp_setup(ctx: StepContext, *, root: str, field: str, tile: str, filter: str, exptime: float,
                bsub: bool = False, pixel_scale: float = PIXEL_SCALE, resampling: str = RESAMPLING,
                combine: str = COMBINE, config: str | None = None) -> dict:
    """Write the image list and SWarp config of one tile x filter x exptime mosaic."""
    tree = KredTree(Path(root), field)
    spec = load_field_config(tree, config).tile(tile)
    entry = read_index(tree).get(tile)
    if entry is None:
        raise MissingStageOutputError(f"tile {tile} is not in {tree.tiles_index}: run SetupTile for it first")
    group = entry["groups"].get(group_key(filter, exptime))
    if not group:
        raise StepParameterError(f"tile {tile} has no {filter} {exptime:g}s images (its groups: "
                                 f"{', '.join(entry['groups']) or 'none'}); check 'filter' and 'exptime'")
    src = tree.tile_links(tile, bsub)
    images = [src / im for im in group["images"]]
    missing = [p.name for p in images if not p.exists()]
    if missing:
        stage = "BackSub (magellanic.back_sub)" if bsub else "SetupTile (magellanic.setup_tile)"
        raise MissingStageOutputError(f"{src}: {len(missing)} of {len(images)} images missing (e.g. {missing[0]}); "
                                      f"run {stage} for tile {tile} first")
    lst, default, _ = _paths(tree, tile, filter, exptime, bsub)
    naxis = tile_naxis(spec.size_deg, pixel_scale)
    conf = swarp_config(spec.ra, spec.dec, naxis, pixel_scale=pixel_scale, resampling=resampling, combine=combine)
    with ctx.output(lst, filetype="kred_swarp_list") as tmp:
        tmp.write_text("".join(f"{p.absolute()}\n" for p in images))
    with ctx.output(default, filetype="kred_swarp_config") as tmp:
        tmp.write_text(f"# SWarp configuration of {lst.stem} (field {field}), written by magellanic.swarp_setup\n"
                       + "".join(f"{k:<16s} {v}\n" for k, v in conf.items()))
    FieldLog(tree).write("SwarpSetup", f"{lst.parent.name}/{lst.stem}: {len(images)} images, centre "
                                       f"{spec.ra:.5f} {spec.dec:.5f}, {naxis}x{naxis} at {pixel_scale:g}\"/pix")
    return {"images": len(images), "naxis": naxis}


@step("magellanic.swarp", resources={"cpu": 1, "memory_mb": 2048}, outputs=["kred_mosaic", "kred_mosaic_weight"])
def swarp(ctx: StepContext, *, root: str, field: str, tile: str, filter: str, exptime: float,
          bsub: bool = False, keep_resampled: bool = False) -> dict:
    """Run SWarp on one mosaic as SwarpSetup configured it (``<mosaic>.lst`` + ``<mosaic>.default``)."""
    tree = KredTree(Path(root), field)
    lst, default, out = _paths(tree, tile, filter, exptime, bsub)
    for p in (lst, default):
        if not p.is_file():
            raise MissingStageOutputError(f"{p} does not exist: run SwarpSetup (magellanic.swarp_setup) for "
                                          f"{tile} {filter} {exptime:g}s{' (bsub)' if bsub else ''} first")
    images = [Path(s) for s in lst.read_text().split()]
    for p in images:
        ctx.use(p, filetype="kred_bsub_image" if bsub else "kred_prep_image")
    conf = read_config(ctx.use(default, filetype="kred_swarp_config"))
    workdir = ctx.workdir
    if keep_resampled:  # keep SWarp's per-image resampled layers next to the mosaic, for inspection
        workdir = out.parent / f"{out.stem}_resamp"
        conf["DELETE_TMPFILES"] = "N"
    weight = out.with_name(f"{out.stem}.wt.fits")
    run_swarp(images, out, weight, workdir=workdir, config=conf, ctx=ctx)
    ctx.declare_output(out, "kred_mosaic")
    ctx.declare_output(weight, "kred_mosaic_weight")
    h = fitsio.read_header(str(out))
    FieldLog(tree).write("Swarp", f"{out.parent.name}/{out.name}: {len(images)} images -> {h['NAXIS1']}x{h['NAXIS2']}")
    return {"images": len(images), "naxis1": int(h["NAXIS1"]), "naxis2": int(h["NAXIS2"]),
            "crval1": float(h["CRVAL1"]), "crval2": float(h["CRVAL2"])}
