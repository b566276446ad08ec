"""kred's directory structure, in one place: where every stage reads and writes.

kred runs every program from one top-level directory, and the directories *are* the state
between stages (an operator redoes a stage by running it again; the next one finds its inputs
where the previous one left them). skyops keeps that contract, so that a stage can be redone
from any point, by Airflow or by hand::

    <root>/DECam_MEF/<field>/c4d_*_ooi_*.fits         the InstCal MEFs (staged from the archive)
    <root>/KRED/config/<field>.yaml                   the field config (tile centres and sizes)
    <root>/Summary/<field>.log                        the field's log, appended to by every stage
    <root>/Summary/<field>/<mef>.det.tab|.qual.tab    MefSum / MefCheck of one MEF
    <root>/Summary/<field>_mef.tab, _det.tab           MefSum per exposure and per CCD
    <root>/Summary/<field>_mef_qual.tab                MefCheck: header problems per MEF
    <root>/Summary/<field>_<tile>.tab, _tiles.json     SetupTile: the CCD images of each tile
    <root>/Summary/<field>_overlaps.tab                FindOverlaps: overlapping pairs
    <root>/Summary/<field>_backstats_KKKofNNN.tab      BackStats: one batch of pairs
    <root>/Summary/<field>_backcalc.tab                BackCalc: the offset of every image
    <root>/DECam_PREP/<field>/data/<mef>_<DETPOS>.fits MefPrep: rescaled, background-subtracted CCDs
    <root>/DECam_PREP/<field>/TileNN/                  links to the CCDs that tile TileNN needs
    <root>/DECam_PREP/<field>/TileNN_b/                those CCDs with BackCalc's offsets removed
    <root>/DECam_SWARP/<field>/TileNN[_b]/             SWarp inputs (.default, .lst) and mosaics
    <root>/DECam_SWARP/<field>/eval/                   SwarpEval's PNG previews

Tile directories are named ``Tile01`` .. for the config's tiles ``T01`` ..; a mosaic is named
``<TileNN>_<filter>_<exptime>s``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from skyops.errors import InputError

_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]{0,63}$")
_TILE = re.compile(r"^T(\d{1,3})$")


class FieldNameError(InputError):
    """A field or tile name is malformed (not a config lookup: see :mod:`.fieldconfig`)."""


class UnknownFieldError(InputError):
    """No config (or no MEF directory) for the requested field."""


class UnknownTileError(InputError):
    """A requested tile is not one of the field config's tiles."""


def check_field_name(field: str) -> str:
    """``field`` if it can name a kred field (``LMC_c42``); FieldNameError otherwise."""
    if not isinstance(field, str) or not _FIELD.match(field):
        raise FieldNameError(f"field {field!r} is not a kred field name (letters, digits, '_', e.g. LMC_c42); "
                             "give the name of a field under DECam_MEF/")
    return field


def tile_dir_name(tile: str) -> str:
    """The kred directory of config tile ``T02``: ``Tile02``."""
    m = _TILE.match(tile)
    if not m:
        raise FieldNameError(f"tile {tile!r} is not a kred tile name (T01, T02, ...); "
                             "tiles are named in the field config")
    return f"Tile{int(m.group(1)):02d}"


def exptime_tag(exptime: float) -> str:
    """``400.0`` -> ``400s`` (``0.5`` -> ``0.5s``): exposure times in file names."""
    return f"{exptime:g}s"


def mosaic_name(tile: str, filt: str, exptime: float) -> str:
    """``Tile02_N662_400s``: the stem of one tile x filter x exposure time mosaic."""
    return f"{tile_dir_name(tile)}_{filt}_{exptime_tag(exptime)}"


@dataclass(frozen=True)
class KredTree:
    """The kred directories of one field under one top-level directory."""

    root: Path
    field: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        check_field_name(self.field)

    # -- inputs
    @property
    def mef_dir(self) -> Path:
        return self.root / "DECam_MEF" / self.field

    @property
    def config_path(self) -> Path:
        return self.root / "KRED" / "config" / f"{self.field}.yaml"

    def mef_files(self) -> list[Path]:
        """The field's MEFs, sorted by name (kred globs the directory)."""
        return sorted(p for p in self.mef_dir.glob("*.fits*") if not p.name.startswith("."))

    # -- Summary
    @property
    def summary(self) -> Path:
        return self.root / "Summary"

    @property
    def log_path(self) -> Path:
        return self.summary / f"{self.field}.log"

    def mef_part(self, mef: str | Path, kind: str) -> Path:
        """One MEF's MefSum (``det``) or MefCheck (``qual``) table."""
        return self.summary / self.field / f"{mef_stem(mef)}.{kind}.tab"

    @property
    def mef_table(self) -> Path:
        return self.summary / f"{self.field}_mef.tab"

    @property
    def det_table(self) -> Path:
        return self.summary / f"{self.field}_det.tab"

    @property
    def qual_table(self) -> Path:
        return self.summary / f"{self.field}_mef_qual.tab"

    def tile_table(self, tile: str) -> Path:
        return self.summary / f"{self.field}_{tile_dir_name(tile)}.tab"

    @property
    def tiles_index(self) -> Path:
        return self.summary / f"{self.field}_tiles.json"

    @property
    def overlaps_table(self) -> Path:
        return self.summary / f"{self.field}_overlaps.tab"

    def backstats_table(self, batch: int, nbatch: int) -> Path:
        return self.summary / f"{self.field}_backstats_{batch:03d}of{nbatch:03d}.tab"

    @property
    def backcalc_table(self) -> Path:
        return self.summary / f"{self.field}_backcalc.tab"

    # -- DECam_PREP
    @property
    def prep(self) -> Path:
        return self.root / "DECam_PREP" / self.field

    @property
    def data_dir(self) -> Path:
        return self.prep / "data"

    def prep_image(self, mef: str | Path, detpos: str) -> Path:
        return self.data_dir / f"{mef_stem(mef)}_{detpos}.fits"

    def tile_links(self, tile: str, bsub: bool = False) -> Path:
        return self.prep / (tile_dir_name(tile) + ("_b" if bsub else ""))

    # -- DECam_SWARP
    @property
    def swarp(self) -> Path:
        return self.root / "DECam_SWARP" / self.field

    def swarp_dir(self, tile: str, bsub: bool = False) -> Path:
        return self.swarp / (tile_dir_name(tile) + ("_b" if bsub else ""))

    def mosaic(self, tile: str, filt: str, exptime: float, bsub: bool = False) -> Path:
        return self.swarp_dir(tile, bsub) / f"{mosaic_name(tile, filt, exptime)}.fits"

    @property
    def eval_dir(self) -> Path:
        return self.swarp / "eval"


def mef_stem(mef: str | Path) -> str:
    """``c4d_190110_010000_ooi_N662_v1`` from a MEF path or name (``.fits``/``.fits.fz`` dropped)."""
    name = Path(mef).name
    for suffix in (".fits.fz", ".fits.gz", ".fits"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
