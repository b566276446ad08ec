"""Where a Balrog tile's files live: the original pipeline's directory layout.

The base tile (blocks 1-3) lives under ``$MEDS_DIR/<medsconf>/<tilename>/``; every injection
realization (blocks 4-6) under ``<meds_data>/<medsconf>/balrog_images/<realization>/<medsconf>/<tilename>/``
(``meds_data`` is ``$MEDS_DIR``, as in BalrogBase.py). Inside either tile folder:

=============================================  =========================================================
``lists/<tile>_<band>_se_sources.json``        the archive's se_sources manifest (base only)
``lists/<tile>_tile_geometry.json``            the COADDTILE_GEOM row (base only)
``lists/<tile>_<band>_srclist.json``           desmeds' coaddsrc list with local paths and zeropoints
``sources-<band>/<archive path>/<file>``       staged single-epoch files (base); injected SE images
                                               (realization: only the images, in the same relative paths)
``coadd/<tile>_<band>.fits``                   coadd SCI / MSK / WGT at magzp_ref
``coadd/<tile>_det.fits``                      CHI-MEAN detection image SCI / WGT
``cat/<tile>_<band>_cat.fits``                 SExtractor dual-mode catalog (FITS_LDAC)
``seg/<tile>_<band>_segmap.fits``              its segmentation map
``psf/<tile>_<band>_psfcat.psf``               PSFEx model of the coadd
``meds/<tile>_<band>_meds-<medsconf>.fits``    the MEDS file
``truth/<tile>_balrog_truth.fits``             injected objects and their per-image draws (realization)
``match/<tile>_match.fits``, ``match/*.png``   truth vs detections (realization)
=============================================  =========================================================

Every path goes through :func:`skyops.fileio.safe_join`, so a tile or medsconf name can never
point outside the tree.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from skyops.errors import InputError
from skyops.fileio import safe_join

BALROG_IMAGES = "balrog_images"


def default_meds_dir() -> Path:
    """``$MEDS_DIR`` if set, else ``<workspace persistent>/balrog``."""
    env = os.environ.get("MEDS_DIR")
    if env:
        return Path(env)
    from skyops.config import platform_config

    return Path(platform_config().workspace.persistent) / "balrog"


@dataclass(frozen=True)
class TileLayout:
    """The files of one tile (base, or one realization) for one medsconf."""

    meds_dir: Path
    medsconf: str
    tilename: str
    realization: int | None = None

    def __post_init__(self) -> None:
        for what, value in (("medsconf", self.medsconf), ("tile", self.tilename)):
            if not value or "/" in value or value in (".", ".."):
                raise InputError(f"param '{what}': {value!r} cannot name a folder; expected a plain name")
        if self.realization is not None and self.realization < 0:
            raise InputError(f"param 'realization': {self.realization} is negative; realizations are 0, 1, ...")
        object.__setattr__(self, "meds_dir", Path(self.meds_dir))

    @classmethod
    def of(cls, meds_dir: str | os.PathLike[str] | None, medsconf: str, tilename: str,
           realization: int | None = None) -> "TileLayout":
        return cls(Path(meds_dir) if meds_dir else default_meds_dir(), medsconf, tilename, realization)

    @property
    def root(self) -> Path:
        """The folder that holds ``<medsconf>/<tilename>``: $MEDS_DIR, or the realization's folder."""
        if self.realization is None:
            return self.meds_dir
        return safe_join(self.meds_dir, f"{self.medsconf}/{BALROG_IMAGES}/{int(self.realization)}")

    @property
    def tile_dir(self) -> Path:
        return safe_join(self.root, f"{self.medsconf}/{self.tilename}")

    def base(self) -> "TileLayout":
        """The base tile's layout (the one realizations inject into)."""
        return TileLayout(self.meds_dir, self.medsconf, self.tilename, None)

    def for_realization(self, realization: int) -> "TileLayout":
        return TileLayout(self.meds_dir, self.medsconf, self.tilename, int(realization))

    def path(self, relative: str) -> Path:
        """A path inside the tile folder (refuses escapes)."""
        return safe_join(self.tile_dir, relative)

    # -- lists ---------------------------------------------------------------------------
    def se_manifest(self, band: str) -> Path:
        return self.path(f"lists/{self.tilename}_{band}_se_sources.json")

    def geometry(self) -> Path:
        return self.path(f"lists/{self.tilename}_tile_geometry.json")

    def srclist(self, band: str) -> Path:
        return self.path(f"lists/{self.tilename}_{band}_srclist.json")

    def sources(self, band: str) -> Path:
        """Folder of the band's single-epoch files (archive-relative paths below it)."""
        return self.path(f"sources-{band}")

    def source_file(self, band: str, relpath: str) -> Path:
        return safe_join(self.sources(band), relpath)

    # -- coadd and catalogs --------------------------------------------------------------
    def coadd(self, band: str) -> Path:
        return self.path(f"coadd/{self.tilename}_{band}.fits")

    def det(self) -> Path:
        return self.path(f"coadd/{self.tilename}_det.fits")

    def catalog(self, band: str) -> Path:
        return self.path(f"cat/{self.tilename}_{band}_cat.fits")

    def segmap(self, band: str) -> Path:
        return self.path(f"seg/{self.tilename}_{band}_segmap.fits")

    def coadd_psf(self, band: str) -> Path:
        return self.path(f"psf/{self.tilename}_{band}_psfcat.psf")

    def meds(self, band: str) -> Path:
        return self.path(f"meds/{self.tilename}_{band}_meds-{self.medsconf}.fits")

    # -- realizations --------------------------------------------------------------------
    def truth(self) -> Path:
        return self.path(f"truth/{self.tilename}_balrog_truth.fits")

    def match(self) -> Path:
        return self.path(f"match/{self.tilename}_match.fits")

    def match_summary(self) -> Path:
        return self.path(f"match/{self.tilename}_match_summary.json")

    def plot(self, name: str) -> Path:
        return self.path(f"match/{self.tilename}_{name}.png")
