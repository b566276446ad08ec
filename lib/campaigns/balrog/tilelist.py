"""Which tiles a Balrog campaign (a tile-list backfill) runs, and how far each one got.

Tiles come inline, from a list file under ``configs/`` (one tile per line, ``#`` comments, as
the Balrog tile lists were kept), or from the archive by an RA/Dec box (``tiles_in_box``). A
tile whose latest ``balrog_tile`` attempt succeeded is complete according to provenance and is
skipped unless ``force``. The same functions serve the ``balrog_campaign`` DAG and the
``skyops campaign`` command line.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyops.campaigns.balrog.params import BalrogParamError, check_tile_name
from skyops.config import config_dir
from skyops.fileio import safe_join

#: The provenance campaign (DAG id) of one tile's runs.
TILE_CAMPAIGN = "balrog_tile"
#: A run id that names its tile: ``balrog__DES0239+0216__<stamp>``.
RUN_ID_PREFIX = "balrog__"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


@dataclass(frozen=True)
class Box:
    """An RA/Dec box in degrees; ``ra_min > ra_max`` wraps through RA 0."""

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float

    def __post_init__(self) -> None:
        for name in ("ra_min", "ra_max"):
            if not 0.0 <= getattr(self, name) <= 360.0:
                raise BalrogParamError(f"param '{name}': {getattr(self, name)} is outside 0-360 deg")
        for name in ("dec_min", "dec_max"):
            if not -90.0 <= getattr(self, name) <= 90.0:
                raise BalrogParamError(f"param '{name}': {getattr(self, name)} is outside -90..90 deg")
        if self.dec_min > self.dec_max:
            raise BalrogParamError(f"params 'dec_min' > 'dec_max' ({self.dec_min} > {self.dec_max}): "
                                   "give the southern bound first")

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "Box | None":
        """The box of ``ra_min/ra_max/dec_min/dec_max`` when all four are given; None when none are."""
        keys = ("ra_min", "ra_max", "dec_min", "dec_max")
        given = [k for k in keys if p.get(k) is not None]
        if not given:
            return None
        if len(given) != 4:
            missing = [k for k in keys if k not in given]
            raise BalrogParamError(f"an RA/Dec box needs all of {', '.join(keys)}; missing {', '.join(missing)}")
        return cls(*(float(p[k]) for k in keys))


def read_tile_file(name: str, root: Path | None = None) -> list[str]:
    """Tiles listed in ``configs/<name>`` (a path inside the configs folder; never outside it)."""
    base = root or config_dir()
    path = safe_join(base, name)
    if not path.is_file():
        raise BalrogParamError(f"param 'tiles_file': no file {name!r} under {base}; put the tile list (one tile "
                               "per line) in the configs folder and give its path relative to it")
    tiles = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        for word in re.split(r"[\s,]+", text):
            try:
                tiles.append(check_tile_name(word))
            except BalrogParamError as exc:
                raise BalrogParamError(f"{path}, line {n}: {exc}") from None
    return tiles


def resolve_tiles(tiles: Iterable[str] = (), tiles_file: str | None = None, box: Box | None = None,
                  query_box: Any = None) -> list[str]:
    """The union of inline tiles, a tile-list file and an archive box query; sorted, unique.

    ``query_box(box) -> [tilename, ...]`` runs the ``tiles_in_box`` query (the DAG passes the
    archive's). An empty selection is an error: a campaign of nothing is a mistake.
    """
    out = [check_tile_name(t) for t in tiles]
    if tiles_file:
        out += read_tile_file(tiles_file)
    if box is not None:
        if query_box is None:
            raise BalrogParamError("an RA/Dec box needs the archive to list its tiles")
        out += list(query_box(box))
    if not out:
        raise BalrogParamError("no tiles selected: give 'tiles', 'tiles_file' (under configs/) or an RA/Dec box "
                               "(ra_min, ra_max, dec_min, dec_max)")
    return sorted(set(out))


def archive_box_query(db: Any) -> Any:
    """``query_box`` for :func:`resolve_tiles` on an :class:`~skyops.archive.ArchiveDB`."""

    def query(box: Box) -> list[str]:
        rows = db.query("tiles_in_box", ra_min=box.ra_min, ra_max=box.ra_max, dec_min=box.dec_min,
                        dec_max=box.dec_max).records()
        return [r["tilename"] for r in rows]

    return query


def run_id_for(tile: str, stamp: str) -> str:
    """The balrog_tile run id of a campaign's tile: it names the tile (and is URL-safe)."""
    return f"{RUN_ID_PREFIX}{tile}__{_UNSAFE.sub('_', stamp)}"


def select_tiles(tiles: Sequence[str], status: Mapping[str, Mapping[str, Any]], force: bool = False
                 ) -> tuple[list[str], list[str]]:
    """(to run, skipped as complete): a tile whose latest attempt succeeded is complete."""
    done = [t for t in tiles if (status.get(t) or {}).get("status") == "success"]
    if force:
        return list(tiles), []
    return [t for t in tiles if t not in done], done


def report(tiles: Sequence[str], status: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Tiles by state: done, failed, running, not started (from their latest attempts)."""
    out: dict[str, list[str]] = {"done": [], "failed": [], "running": [], "not started": []}
    word = {"success": "done", "failed": "failed", "running": "running"}
    for t in tiles:
        st = (status.get(t) or {}).get("status")
        out[word.get(st or "", "not started") if st else "not started"].append(t)
    return out
