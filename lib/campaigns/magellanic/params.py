"""A ``magellanic_mosaic`` run's parameters: kred's command-line choices, validated.

kred was run as a command file, one program per line, with ``-all``/tile arguments, ``-np`` and
``-bsub``, and operators commented out the lines already done to redo the rest. A run here takes
the same choices:

``field``   the field (``LMC_c42``): its MEFs are ``DECam_MEF/<field>/``
``tiles``   ``all`` or tile names (``T02``, ``["T01", "T03"]``, ``"T01,T03"``)
``np``      parallelism: the number of batches BackStats' pairs are split into (kred's ``-np``)
``bsub``    background-match (FindOverlaps .. BackSub, then SWarp again on ``TileNN_b``)
``stages``  which stages to run: ``all``; names (``["backcalc", "backsub"]`` or kred's program
            names, ``"BackCalc,BackSub"``); ``"backstats-"`` (from BackStats to the end),
            ``"mefprep-swarp"`` (a range) or ``"-setuptile"`` (up to SetupTile). Stages not run
            leave the field's directories as they are, and the stages that run read them.

Validation is plain Python, shared by the DAG (when the run starts) and the local runner; each
error names the param.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from skyops.campaigns.magellanic.layout import FieldNameError, check_field_name
from skyops.errors import InputError

#: kred's stages in order (SwarpSetup + Swarp are one stage, ``swarp``; ``swarp_b`` is the same on
#: the background-subtracted images).
STAGES: tuple[str, ...] = ("mefcheck", "mefsum", "mefprep", "setuptile", "swarp", "findoverlaps", "backstats",
                           "backcalc", "backsub", "swarp_b", "swarpeval")
#: The stages of background matching (run only with ``bsub``).
BSUB_STAGES: tuple[str, ...] = ("findoverlaps", "backstats", "backcalc", "backsub", "swarp_b")
#: kred's program names (lower case) and other spellings -> stage.
ALIASES: dict[str, str] = {"swarpsetup": "swarp", "backprep": "backstats", "swarpb": "swarp_b",
                           "swarpbsub": "swarp_b"}
MAX_NP = 256
_TILE = re.compile(r"^T\d{1,3}$")


class MagellanicParamError(InputError):
    """A magellanic_mosaic run parameter is invalid; the message names it."""


def _stage(name: str) -> str:
    key = str(name).strip().lower().removesuffix(".py")
    key = ALIASES.get(key, key)
    if key not in STAGES:
        raise MagellanicParamError(f"param 'stages': unknown stage {name!r}; stages are {', '.join(STAGES)} "
                                   "(kred's program names work too)")
    return key


def parse_stages(value: Any) -> tuple[str, ...]:
    """The stages to run, in pipeline order (see the module docstring for the forms)."""
    if value is None or value == "" or value == [] or (isinstance(value, str) and value.strip().lower() == "all"):
        return STAGES
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    chosen: set[str] = set()
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        if "-" in item:  # a range: "a-b", "a-" (to the end), "-b" (from the start)
            lo, _, hi = item.partition("-")
            a = STAGES.index(_stage(lo)) if lo else 0
            b = STAGES.index(_stage(hi)) if hi else len(STAGES) - 1
            if a > b:
                raise MagellanicParamError(f"param 'stages': range {item!r} runs backwards; kred's order is "
                                           f"{' > '.join(STAGES)}")
            chosen.update(STAGES[a:b + 1])
        else:
            chosen.add(_stage(item))
    if not chosen:
        raise MagellanicParamError(f"param 'stages': {value!r} names no stage; give 'all' or stage names")
    return tuple(s for s in STAGES if s in chosen)


def parse_tiles(value: Any) -> tuple[str, ...]:
    """Tile names, or () for all tiles (``all``, empty). Whether they exist is the field config's call."""
    if value is None or value == "" or value == [] or value == ["all"] or (
            isinstance(value, str) and value.strip().lower() == "all"):
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    tiles = []
    for t in items:
        t = str(t).strip()
        if not _TILE.match(t):
            raise MagellanicParamError(f"param 'tiles': {t!r} is not a tile name like T02; give 'all' or tile names")
        tiles.append(t)
    return tuple(dict.fromkeys(tiles))


@dataclass(frozen=True)
class MagellanicRunParams:
    """One magellanic_mosaic run's parameters, validated."""

    field: str
    tiles: tuple[str, ...] = ()  # () = all
    np: int = 4
    bsub: bool = True
    stages: tuple[str, ...] = STAGES

    def runs(self, stage: str) -> bool:
        """Whether ``stage`` runs: chosen, and a background-matching stage only with ``bsub``."""
        return stage in self.stages and (self.bsub or stage not in BSUB_STAGES)

    @property
    def tile_list(self) -> list[str] | None:
        """The tiles as a step parameter: None for all."""
        return list(self.tiles) or None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tiles"], d["stages"] = list(self.tiles), list(self.stages)
        return d


def validate(raw: dict[str, Any]) -> MagellanicRunParams:
    """Check every param; the first bad one raises MagellanicParamError naming it."""
    known = set(MagellanicRunParams.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MagellanicParamError(f"unknown param {unknown[0]!r}; magellanic_mosaic params are "
                                   f"{', '.join(sorted(known))}")
    try:
        field = check_field_name(str(raw.get("field") or ""))
    except FieldNameError as exc:
        raise MagellanicParamError(f"param 'field': {exc}") from None
    np_ = raw.get("np", 4)
    if isinstance(np_, bool) or not isinstance(np_, (int, str)) or not str(np_).strip().isdigit() \
            or not 1 <= int(np_) <= MAX_NP:
        raise MagellanicParamError(f"param 'np': {np_!r} is not a number of parallel batches in 1..{MAX_NP}")
    bsub = raw.get("bsub", True)
    if not isinstance(bsub, bool):
        raise MagellanicParamError(f"param 'bsub': expected true or false, got {bsub!r}")
    return MagellanicRunParams(field=field, tiles=parse_tiles(raw.get("tiles")), np=int(np_), bsub=bsub,
                               stages=parse_stages(raw.get("stages")))
