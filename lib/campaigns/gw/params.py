"""The GW campaign's run parameters, with the original scripts' flags and meanings.

``SE_job_mod.sh`` and ``RUN_DIFFIMG_PIPELINE.sh`` took single-letter flags; operators know
them, so every DAG param keeps the flag's meaning and its letter is in the param's
description (``-n`` night, ``-E`` expnums, ``-b`` band, ``-c`` ccds, ...). Validation here is
plain Python, shared by the DAG (before any task runs) and the CLI; each error names the
param and its flag.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from skyops.errors import InputError

BANDS = ("u", "g", "r", "i", "z", "Y")
#: DECam's science CCDs; 2 and 61 are dead, so nightly processing runs 60.
ALL_CCDS = tuple(range(1, 63))
DEAD_CCDS = (2, 61)
DEFAULT_CCDS = tuple(c for c in ALL_CCDS if c not in DEAD_CCDS)
_NIGHT = re.compile(r"^(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])$")
_SEASON = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


class GWParamError(InputError):
    """A GW run parameter is invalid; the message names the param and its original flag."""


#: param -> (flag, help) as the DAG's Param descriptions show them.
FLAGS: dict[str, tuple[str, str]] = {
    "night": ("-n", "observing night YYYYMMDD (default: the night that just ended)"),
    "expnums": ("-E", "exposure numbers; empty = every search exposure of the night"),
    "band": ("-b", "band: u, g, r, i, z or Y"),
    "ccds": ("-c", "CCDs, e.g. [1, 3, 5] or '1,3-60,62' (default 1, 3-60, 62)"),
    "rnum": ("-r", "RNUM (request number) of this processing"),
    "pnum": ("-p", "PNUM (attempt number) of this processing"),
    "season": ("-S", "season label, e.g. dp60 (diffimg's -p): candidates are kept per season"),
    "destination": ("-d", "destination cache: scratch or persistent"),
    "schema": ("-m", "schema: gw or wsdiff (candidate table prefix)"),
    "calibrate": ("-C", "run BLISS photometric calibration (images outside the DES footprint)"),
    "skip_se": ("-j", "skip SE processing and go straight to calibration"),
    "overwrite": ("-O", "fetch and process again, overwriting existing outputs"),
    "template_mode": ("-t", "process the exposures as templates (no SE verify, no diffimg)"),
    "diffimg_version": ("-v", "diffimg version tag"),
    "fullcopy": ("-F", "keep every diffimg intermediate product, not only the key outputs (fullcopy)"),
    "program": ("", "EXPOSURE.PROGRAM of search exposures (default gw)"),
}


def parse_ccds(value: Any) -> tuple[int, ...]:
    """CCDs from a list or a ``1,3-60,62`` string; each must be 1..62."""
    if value is None or value == "" or value == []:
        return DEFAULT_CCDS
    items: list[int] = []
    parts = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    for part in parts:
        if isinstance(part, str) and "-" in part.strip("-"):
            lo, _, hi = part.partition("-")
            if not (lo.isdigit() and hi.isdigit()):
                raise GWParamError(f"param 'ccds' (-c): {part!r} is not a CCD range like 3-60")
            items += range(int(lo), int(hi) + 1)
        else:
            try:
                items.append(int(part))
            except (TypeError, ValueError):
                raise GWParamError(f"param 'ccds' (-c): {part!r} is not a CCD number") from None
    bad = sorted({c for c in items if c not in ALL_CCDS})
    if bad:
        raise GWParamError(f"param 'ccds' (-c): CCD {bad[0]} is outside 1-62 (DECam has 62 science CCDs)")
    return tuple(sorted(set(items)))


@dataclass(frozen=True)
class GWRunParams:
    """One gw_nightly / gw_exposure run's parameters, validated."""

    night: str
    band: str = "i"
    expnums: tuple[int, ...] = ()
    ccds: tuple[int, ...] = DEFAULT_CCDS
    rnum: int = 4
    pnum: int = 5
    season: str = "dp60"
    destination: str = "persistent"
    schema: str = "gw"
    calibrate: bool = True
    skip_se: bool = False
    overwrite: bool = False
    template_mode: bool = False
    diffimg_version: str = "v1"
    fullcopy: bool = False
    program: str = "gw"
    processed_ccds: tuple[int, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["expnums"], d["ccds"] = list(self.expnums), list(self.ccds)
        d.pop("processed_ccds")
        return d

    @property
    def live_ccds(self) -> tuple[int, ...]:
        """The requested CCDs that are not dead (2 and 61 are skipped, as the original did)."""
        return tuple(c for c in self.ccds if c not in DEAD_CCDS)


def validate(raw: dict[str, Any]) -> GWRunParams:
    """Check every param; the first bad one raises GWParamError naming it and its flag."""
    known = set(GWRunParams.__dataclass_fields__) - {"processed_ccds"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise GWParamError(f"unknown param {unknown[0]!r}; GW params are: {', '.join(sorted(known))}")
    night = str(raw.get("night") or "")
    if not _NIGHT.match(night):
        raise GWParamError(f"param 'night' (-n): {night!r} is not a night in YYYYMMDD form (e.g. 20170817)")
    band = str(raw.get("band", "i"))
    if band not in BANDS:
        raise GWParamError(f"param 'band' (-b): unknown band {band!r}; expected one of {', '.join(BANDS)}")
    for name, choices in (("destination", ("scratch", "persistent")), ("schema", ("gw", "wsdiff"))):
        v = raw.get(name, GWRunParams.__dataclass_fields__[name].default)
        if v not in choices:
            raise GWParamError(f"param '{name}' ({FLAGS[name][0]}): {v!r} is not one of {', '.join(choices)}")
    expnums = raw.get("expnums") or ()
    if isinstance(expnums, (int, str)):
        expnums = [e for e in str(expnums).replace(" ", "").split(",") if e]
    try:
        expnums = tuple(int(e) for e in expnums)
    except (TypeError, ValueError):
        raise GWParamError(f"param 'expnums' (-E): {raw.get('expnums')!r} is not a list of exposure numbers") from None
    if any(e <= 0 for e in expnums):
        raise GWParamError(f"param 'expnums' (-E): exposure numbers are positive, got {list(expnums)}")
    values = {k: v for k, v in raw.items() if k in known}
    values.update(night=night, band=band, expnums=expnums, ccds=parse_ccds(raw.get("ccds")))
    season = str(raw.get("season", GWRunParams.season))
    if not _SEASON.match(season):
        raise GWParamError(f"param 'season' (-S): {season!r} is not a season label (1-16 letters, digits, "
                           "'_' or '-', e.g. dp60)")
    values["season"] = season
    for name in ("rnum", "pnum"):
        if name in values:
            try:
                values[name] = int(values[name])
            except (TypeError, ValueError):
                raise GWParamError(f"param '{name}' ({FLAGS[name][0]}): {values[name]!r} is not an integer") from None
    for name in ("calibrate", "skip_se", "overwrite", "template_mode", "fullcopy"):
        if name in values and not isinstance(values[name], bool):
            raise GWParamError(f"param '{name}' ({FLAGS[name][0]}): expected true or false, got {values[name]!r}")
    return GWRunParams(**values)
