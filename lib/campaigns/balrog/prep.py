"""``balrog.prep`` (block 1): the tile's geometry and single-epoch inputs from the archive, staged.

BalrogBase.py queried DESDM for the tile and ran ``meds_prep`` to copy every file desmeds needs
into ``$MEDS_DATA``. Here: the tile's COADDTILE_GEOM row (``tile_geometry``), then per band the
``se_sources`` manifest (red_immask images overlapping the tile, from the medsconf's finalcut
tag, with a good zeropoint, plus each image's red_bkg, red_segmap and psfex_model), staged with
:func:`skyops.staging.stage` into ``sources-<band>/`` (archive layout kept, md5 verified), and
the band's *srclist*: desmeds' coaddsrc list, one entry per image with local paths and the
zeropoint, which every later block reads. Images lacking a PSF model or background are left
out of the srclist (with a warning): MEDS and injection cannot use them.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from skyops.archive import ArchiveDB, coaddsrc_rows
from skyops.campaigns.balrog.config import MedsConf, load_medsconf
from skyops.campaigns.balrog.layout import TileLayout
from skyops.campaigns.balrog.params import check_tile, parse_bands
from skyops.errors import InputError
from skyops.manifest import Manifest
from skyops.steps.context import StepContext
from skyops.steps.registry import step

log = logging.getLogger(__name__)
SRCLIST_FORMAT = "skyops-balrog-srclist/1"


@dataclass(frozen=True)
class SourceImage:
    """One single-epoch image of a tile and band, with its auxiliary files (local paths)."""

    image_id: int  # 1.. within the band (0 is the coadd in MEDS files)
    filename: str
    image_path: str  # red_immask: SCI (HDU 0), MSK (1), WGT (2)
    bkg_path: str
    seg_path: str
    psf_path: str
    expnum: int
    ccdnum: int
    band: str
    magzp: float
    relpath: str  # archive-relative path of the image (realizations keep it under sources-<band>/)

    def fscale(self, magzp_ref: float) -> float:
        """Factor taking this image's electrons to the common zeropoint ``magzp_ref``."""
        return 10.0 ** (0.4 * (magzp_ref - self.magzp))


def write_srclist(ctx: StepContext, path: Path, tile: str, band: str, images: list[SourceImage],
                  realization: int | None = None) -> None:
    """Write a band's srclist atomically (recorded as a ``balrog_srclist`` output)."""
    doc = {"format": SRCLIST_FORMAT, "tilename": tile, "band": band, "realization": realization,
           "images": [asdict(i) for i in images]}
    with ctx.output(path, filetype="balrog_srclist") as tmp:
        tmp.write_text(json.dumps(doc, indent=1))


def read_srclist(path: Path) -> list[SourceImage]:
    """The images of a srclist; InputError saying which block makes it when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no srclist; run block 1 (balrog.prep) for the tile first, or block 8 "
                         "(balrog.inject) for a realization")
    doc = json.loads(path.read_text())
    if doc.get("format") != SRCLIST_FORMAT:
        raise InputError(f"{path}: not a Balrog srclist (format {doc.get('format')!r})")
    return [SourceImage(**i) for i in doc["images"]]


def srclist_images(manifest: Manifest, dest: Path) -> list[SourceImage]:
    """The manifest's images (desmeds' coaddsrc rows) with paths under the staging folder ``dest``."""
    out: list[SourceImage] = []
    for row in coaddsrc_rows(manifest):
        if not (row["bkg_filename"] and row["psf_filename"] and row["seg_filename"]):
            log.warning("%s has no %s; left out of the srclist", row["image_filename"],
                        ", ".join(r for r in ("bkg", "seg", "psf") if not row[f"{r}_filename"]))
            continue

        def local(role: str) -> str:
            comp = row["image_compression"] or "" if role == "image" else ""
            return str(dest / row[f"{role}_path"] / (row[f"{role}_filename"] + comp))

        out.append(SourceImage(len(out) + 1, row["image_filename"], local("image"), local("bkg"), local("seg"),
                               local("psf"), int(row["expnum"]), int(row["ccdnum"]), str(row["band"]),
                               float(row["mag_zero"]), f"{row['image_path']}/{row['image_filename']}"))
    return out


def realization_images(images: list[SourceImage], layout: TileLayout) -> list[SourceImage]:
    """The base images with each image path moved to the realization's ``sources-<band>/`` copy."""
    return [replace(i, image_path=str(layout.source_file(i.band, i.relpath))) for i in images]


def archive_db(url: str | None, ctx: StepContext) -> ArchiveDB:
    return ArchiveDB(url) if url else ArchiveDB.from_config(ctx.config)


@step("balrog.prep", resources={"cpu": 1, "memory_mb": 1024, "scratch_mb": 4096},
      outputs=["balrog_manifest", "balrog_srclist"])
def prep(ctx: StepContext, *, tile: str, medsconf: str = "y3a1-v02", meds_dir: str | None = None,
         bands: list[str] | None = None, archive_url: str | None = None, archive_root: str | None = None,
         workers: int = 4, cache: bool = True) -> dict[str, Any]:
    """Block 1: query the tile's geometry and single-epoch files, stage them, write the srclists.

    ``archive_url``/``archive_root`` default to the platform config's archive database and root.
    """
    from skyops.staging import stage

    mc: MedsConf = load_medsconf(medsconf)
    use_bands = parse_bands(bands, mc.bands) if bands else tuple(mc.bands)
    layout = TileLayout.of(meds_dir, mc.medsconf, tile)
    db = archive_db(archive_url, ctx)
    metrics: dict[str, Any] = {"tile": tile, "medsconf": mc.medsconf, "bands": list(use_bands)}
    try:
        geom = check_tile(tile, db.tile_geometry)
        with ctx.output(layout.geometry(), filetype="balrog_manifest") as tmp:
            with open(tmp, "w") as f:
                json.dump(geom, f, indent=1)
        for band in use_bands:
            m = db.query("se_sources", tilename=tile, band=band, tag=mc.finalcut_campaign,
                         zp_source=mc.zp_source, zp_version=mc.zp_version)
            if not m.rows:
                raise InputError(f"tile {tile} band {band}: se_sources found no single-epoch images tagged "
                                 f"{mc.finalcut_campaign!r} with a {mc.zp_source} {mc.zp_version} zeropoint; "
                                 f"check the medsconf's finalcut_campaign or leave the band out (param 'bands')")
            with ctx.output(layout.se_manifest(band), filetype="balrog_manifest") as tmp:
                m.write(tmp)
            dest = layout.sources(band)
            report = stage(m, dest, root=archive_root or None, cache=None if cache else False, workers=workers)
            rows = list(m.records())
            for f in report.files:  # verified against the manifest's md5 while staging: no second read
                ctx.use(f.path, f.filetype, md5=rows[f.index]["md5sum"])
            images = srclist_images(m, dest)
            write_srclist(ctx, layout.srclist(band), tile, band, images)
            metrics[f"n_images_{band}"] = len(images)
            metrics[f"staged_bytes_{band}"] = sum(f.size for f in report.files)
            ctx.log.info("tile %s band %s: %d images (%d files staged: %s)", tile, band, len(images),
                         len(report.files), report.summary())
    finally:
        db.dispose()
    return metrics
