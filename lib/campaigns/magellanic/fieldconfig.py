"""kred's field config: the tiles of a field (centres and sizes), its filters and exposure times.

The format is ``skyops-kred-field/1`` (written by :mod:`skyops.sim.kredtree` for the
synthetic survey, kept in the archive as ``KRED/config/<field>.yaml``)::

    format: skyops-kred-field/1
    field: LMC_c42
    mef_dir: DECam_MEF/LMC_c42
    center: {ra: 80.55, dec: -69.45}
    pixel_scale: 0.263
    filters: [N662, N673, r]
    exptimes: [30.0, 400.0]
    tile_size_deg: 0.03
    tiles: [{name: T01, ra: 80.5072, dec: -69.465, size_deg: 0.03, naxis: 411}, ...]
    mef_files: [c4d_190110_010000_ooi_N662_v1.fits, ...]

``UnknownFieldError`` and ``UnknownTileError`` live in :mod:`.layout` (importable without pydantic).
As in kred, each field has its own config; pointing SetupTile at another file makes other tiles.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skyops.campaigns.magellanic.layout import (KredTree, UnknownFieldError, UnknownTileError, check_field_name,
                                               tile_dir_name)
from skyops.config import format_validation_error
from skyops.errors import ConfigError

FORMAT = "skyops-kred-field/1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SkyPoint(_Model):
    ra: float = Field(ge=0.0, lt=360.0)
    dec: float = Field(ge=-90.0, le=90.0)


class TileSpec(_Model):
    """One square tile: its name (T01 ..), centre and side."""

    name: str
    ra: float = Field(ge=0.0, lt=360.0)
    dec: float = Field(ge=-90.0, le=90.0)
    size_deg: float = Field(gt=0.0)
    naxis: int | None = Field(None, gt=0)


class FieldConfig(_Model):
    """A kred field config (see the module docstring)."""

    format: Literal["skyops-kred-field/1"] = FORMAT
    field: str
    mef_dir: str
    center: SkyPoint
    pixel_scale: float = Field(gt=0.0)
    filters: list[str]
    exptimes: list[float]
    tile_size_deg: float = Field(gt=0.0)
    tiles: list[TileSpec] = Field(min_length=1)
    mef_files: list[str] = []

    @property
    def tile_names(self) -> list[str]:
        return [t.name for t in self.tiles]

    def tile(self, name: str) -> TileSpec:
        """The tile called ``name``; UnknownTileError naming it and the field's tiles otherwise."""
        for t in self.tiles:
            if t.name == name:
                return t
        raise UnknownTileError(f"tile {name!r} is not a tile of field {self.field}; its tiles are "
                               f"{', '.join(self.tile_names)} (see the field config)")

    def select_tiles(self, names: list[str] | None) -> list[TileSpec]:
        """The tiles named in ``names`` (in config order), or every tile for None / ``["all"]``."""
        if not names or list(names) == ["all"]:
            return list(self.tiles)
        wanted = [str(n).strip() for n in names]
        for n in wanted:
            self.tile(n)
        return [t for t in self.tiles if t.name in wanted]


def load_field_config(tree: KredTree, path: str | Path | None = None) -> FieldConfig:
    """The field config of ``tree`` (``<root>/KRED/config/<field>.yaml``, or ``path``), validated."""
    check_field_name(tree.field)
    p = Path(path) if path else tree.config_path
    if not p.is_file():
        configs = sorted(q.stem for q in p.parent.glob("*.yaml")) if p.parent.is_dir() else []
        known = f"; fields with a config there: {', '.join(configs)}" if configs else ""
        raise UnknownFieldError(f"field {tree.field!r}: no field config at {p}{known}. Stage the field "
                                "(its KRED/config/<field>.yaml) or give the config's path")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    try:
        cfg = FieldConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(p))) from None
    if cfg.field != tree.field:
        raise ConfigError(f"{p}: describes field {cfg.field!r}, not {tree.field!r}; check the file")
    for t in cfg.tiles:
        tile_dir_name(t.name)
    return cfg
