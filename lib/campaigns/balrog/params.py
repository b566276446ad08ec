"""balrog_tile's run parameters: BalrogBase.py's flags, their meanings and the mode bitmask.

``BalrogBase.py`` took ``-c`` medsconf, ``-t`` tile, ``-g`` GalSim config, ``-n`` CPUs and ``-m`` mode,
a bitmask of the six blocks (1 prep, 2 coadd and catalog, 4 MEDS for the base tile, 8 injection,
16 coadd and catalog per realization, 32 MEDS per realization; 63 runs all). Operators know these,
so every param keeps its flag's meaning and letter; skyops adds the number of realizations and
what to measure (SOF, MOF, metacal). Validation is plain Python shared by the DAG (before any task
runs), the CLI and the steps; every error names the param and its flag.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Callable

from skyops.campaigns.balrog.config import DES_BANDS, load_injection, load_medsconf
from skyops.errors import InputError

_TILE = re.compile(r"^DES\d{4}[+-]\d{4}$")
MEASURE_CHOICES = ("sof", "mof", "metacal")


class BalrogParamError(InputError):
    """A Balrog run parameter is invalid; the message names the param and its original flag."""


#: param -> (flag, help), as the DAG's Param descriptions show them.
FLAGS: dict[str, tuple[str, str]] = {
    "tile": ("-t", "DES tile name, e.g. DES0239+0216 (must be in COADDTILE_GEOM)"),
    "medsconf": ("-c", "desmeds-style config under configs/balrog/, e.g. y3a1-v02"),
    "galsim_config": ("-g", "injection (GalSim) config under configs/balrog/, e.g. galsim_y3a1"),
    "ncpu": ("-n", "CPUs per task (GalSim drawing, per-band pools)"),
    "mode": ("-m", "block bitmask: 1 prep, 2 coadd+catalog, 4 base MEDS, 8 injection, "
                   "16 coadd+catalog per realization, 32 MEDS per realization; 63 all"),
    "realizations": ("", "number of injection realizations (0 .. n-1), or a list of realization numbers"),
    "measure": ("", "what to measure per realization: any of sof, mof, metacal"),
    "bands": ("", "bands to process (default: the medsconf's)"),
}


@dataclass(frozen=True)
class Block:
    """One of BalrogBase.py's blocks: its mode bit, what it does, the steps that run it."""

    bit: int
    name: str
    title: str
    steps: tuple[str, ...]
    per_realization: bool


#: The six blocks in pipeline order (BalrogBase.py's numbering is by bit, 1..32).
BLOCKS: tuple[Block, ...] = (
    Block(1, "prep", "prep: tile geometry, coadd and se_sources manifests, staging", ("balrog.prep",), False),
    Block(2, "coadd", "coadd and catalog", ("balrog.coadd_band", "balrog.detect"), False),
    Block(4, "meds", "MEDS for the base tile", ("balrog.meds",), False),
    Block(8, "inject", "injection of the realizations", ("balrog.inject",), True),
    Block(16, "coadd_realization", "coadd and catalog per realization", ("balrog.coadd_band", "balrog.detect"),
          True),
    Block(32, "meds_realization", "MEDS per realization", ("balrog.meds",), True),
)
ALL_MODE = 63


def parse_mode(value: Any) -> int:
    """The mode bitmask (1..63) from an int or a string like ``63`` or ``0x3f``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        mode = int(value, 0) if isinstance(value, str) else int(value)
        if isinstance(value, float) and value != mode:
            raise ValueError
    except (TypeError, ValueError):
        raise BalrogParamError(f"param 'mode' (-m): {value!r} is not an integer bitmask; expected 1..63, "
                               "a sum of 1, 2, 4, 8, 16, 32 (63 = all blocks)") from None
    if not 1 <= mode <= ALL_MODE:
        raise BalrogParamError(f"param 'mode' (-m): {mode} is outside 1..63; add the bits of the blocks to run: "
                               + ", ".join(f"{b.bit} {b.title}" for b in BLOCKS))
    return mode


def blocks_run(mode: int) -> list[Block]:
    """The blocks ``mode`` selects, in pipeline order."""
    return [b for b in BLOCKS if mode & b.bit]


def blocks_skipped(mode: int) -> list[Block]:
    """The blocks ``mode`` leaves out (shown as skipped, never silently absent)."""
    return [b for b in BLOCKS if not mode & b.bit]


def runs(mode: int, block: str) -> bool:
    """Whether ``mode`` runs the block named ``block`` (``prep``, ``coadd``, ... ``meds_realization``)."""
    for b in BLOCKS:
        if b.name == block:
            return bool(mode & b.bit)
    raise BalrogParamError(f"unknown Balrog block {block!r}; blocks are {', '.join(b.name for b in BLOCKS)}")


def describe_mode(mode: int) -> str:
    """``mode 10: runs 2 coadd and catalog, 8 injection...; skips 1 prep, ...`` for logs and the UI."""
    run = ", ".join(f"{b.bit} {b.title}" for b in blocks_run(mode)) or "nothing"
    skip = ", ".join(f"{b.bit} {b.name}" for b in blocks_skipped(mode)) or "nothing"
    return f"mode {mode}: runs {run}; skips {skip}"


def parse_realizations(value: Any) -> tuple[int, ...]:
    """Realization numbers from a count (``3`` -> 0, 1, 2) or an explicit list (``[0, 4]``)."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        value = "bad"
    if isinstance(value, int):
        if value < 0:
            raise BalrogParamError(f"param 'realizations': {value} is negative; give a count >= 0 or a list")
        return tuple(range(value))
    items = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    try:
        out = tuple(sorted({int(v) for v in items if str(v) != ""}))
    except (TypeError, ValueError):
        raise BalrogParamError(f"param 'realizations': {value!r} is neither a count nor a list of realization "
                               "numbers (e.g. 2 or [0, 1])") from None
    if any(r < 0 for r in out):
        raise BalrogParamError(f"param 'realizations': realization numbers are >= 0, got {list(out)}")
    return out


def parse_measure(value: Any) -> tuple[str, ...]:
    """Measurements from a list or ``sof,metacal``; each one of sof, mof, metacal."""
    if value is None or value == "":
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    bad = [m for m in items if m not in MEASURE_CHOICES]
    if bad:
        raise BalrogParamError(f"param 'measure': {bad[0]!r} is not a measurement; expected any of "
                               f"{', '.join(MEASURE_CHOICES)}")
    return tuple(m for m in MEASURE_CHOICES if m in items)


def parse_bands(value: Any, allowed: tuple[str, ...] | list[str] = DES_BANDS) -> tuple[str, ...]:
    """Bands from a list or ``g,r,i``; each must be one of ``allowed``."""
    items = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    bad = [b for b in items if b not in allowed]
    if bad or not items:
        raise BalrogParamError(f"param 'bands': {bad[0] if bad else value!r} is not a band of this medsconf; "
                               f"expected any of {', '.join(allowed)}")
    return tuple(b for b in allowed if b in items)


def check_tile_name(tile: Any) -> str:
    """A syntactically valid DES tile name, or BalrogParamError naming 'tile' (-t)."""
    if not isinstance(tile, str) or not _TILE.match(tile):
        raise BalrogParamError(f"param 'tile' (-t): {tile!r} is not a DES tile name; expected DEShhmm+ddmm, "
                               "e.g. DES0239+0216")
    return tile


def check_tile(tile: Any, geometry: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """The tile's COADDTILE_GEOM row through ``geometry`` (e.g. ``ArchiveDB.tile_geometry``).

    BalrogParamError naming 'tile' (-t) when the name is malformed or the archive does not know it.
    """
    check_tile_name(tile)
    try:
        return geometry(tile)
    except InputError as exc:
        raise BalrogParamError(f"param 'tile' (-t): {tile!r} is not in COADDTILE_GEOM ({exc}); check the tile "
                               "name or the archive the run points at") from None


@dataclass(frozen=True)
class BalrogRunParams:
    """One balrog_tile run's parameters, validated (JSON-friendly through :meth:`as_dict`)."""

    tile: str
    medsconf: str = "y3a1-v02"
    galsim_config: str = "galsim_y3a1"
    ncpu: int = 1
    mode: int = ALL_MODE
    realizations: tuple[int, ...] = (0,)
    measure: tuple[str, ...] = ("sof",)
    bands: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["realizations"], d["measure"], d["bands"] = list(self.realizations), list(self.measure), list(self.bands)
        return d

    @property
    def blocks(self) -> list[Block]:
        return blocks_run(self.mode)

    @property
    def skipped(self) -> list[Block]:
        return blocks_skipped(self.mode)

    def runs(self, block: str) -> bool:
        return runs(self.mode, block)


def validate(raw: dict[str, Any], geometry: Callable[[str], dict[str, Any]] | None = None) -> BalrogRunParams:
    """Check every param; the first bad one raises BalrogParamError naming it and its flag.

    ``geometry(tilename)`` (e.g. ``ArchiveDB(url).tile_geometry``) checks the tile against
    COADDTILE_GEOM; without it only the name's form is checked. The medsconf (-c) and injection
    config (-g) are loaded, so their own errors (file, key) surface here too.
    """
    known = set(BalrogRunParams.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BalrogParamError(f"unknown param {unknown[0]!r}; Balrog params are: {', '.join(sorted(known))}")
    tile = raw.get("tile")
    if geometry is not None:
        check_tile(tile, geometry)
    else:
        check_tile_name(tile)
    defaults = BalrogRunParams.__dataclass_fields__
    medsconf = str(raw.get("medsconf") or defaults["medsconf"].default)
    mc = load_medsconf(medsconf)
    galsim_config = str(raw.get("galsim_config") or defaults["galsim_config"].default)
    load_injection(galsim_config)
    ncpu = raw.get("ncpu", 1)
    if isinstance(ncpu, bool) or not isinstance(ncpu, (int, str)) or not str(ncpu).strip().isdigit() \
            or int(ncpu) < 1:
        raise BalrogParamError(f"param 'ncpu' (-n): {ncpu!r} is not a positive integer")
    bands = parse_bands(raw["bands"], mc.bands) if raw.get("bands") else tuple(mc.bands)
    measure = parse_measure(raw["measure"]) if "measure" in raw else defaults["measure"].default
    return BalrogRunParams(tile=str(tile), medsconf=medsconf, galsim_config=galsim_config, ncpu=int(ncpu),
                           mode=parse_mode(raw.get("mode", ALL_MODE)),
                           realizations=parse_realizations(raw.get("realizations", 1)),
                           measure=measure, bands=bands)
