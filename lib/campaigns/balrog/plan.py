"""What one balrog_tile run executes: its units of work (per band, per realization), as plain data.

:func:`plan_tile` turns validated run params into :class:`Unit` s -- one step invocation each,
with JSON-ready params, a unique key and the keys it waits for -- plus the blocks the mode skips
(a DAG shows those as skipped tasks, never leaves them out silently). BalrogBase.py looped over
bands with a Pool and over realizations one after another; here each of those is its own unit:

=====  ======================  ========================================  =================================
bit    block                   units                                     waits for
=====  ======================  ========================================  =================================
1      prep                    ``prep``                                  --
2      coadd                   ``coadd_band.<b>`` per band; ``detect``   prep; every coadd_band
4      meds                    ``meds.<b>`` per band                     detect
8      inject                  ``inject.r<n>`` per realization           prep
16     coadd_realization       ``coadd_band.r<n>.<b>``, ``detect.r<n>``,  inject.r<n>; ...; detect.r<n> and
                               ``match.r<n>``                            the base detect
32     meds_realization        ``meds.r<n>.<b>``                         detect.r<n>
=====  ======================  ========================================  =================================

A dependency on a unit of a skipped block is dropped: that block's outputs must exist from an
earlier run (the steps say so clearly if they do not). No Airflow here; the same plan can feed a
Condor DAGMan file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skyops.campaigns.balrog.layout import TileLayout
from skyops.campaigns.balrog.params import Block, BalrogRunParams, blocks_skipped, describe_mode


@dataclass(frozen=True)
class Unit:
    """One step invocation of the plan."""

    key: str
    block: str
    bit: int
    step: str
    params: dict[str, Any]
    after: tuple[str, ...] = ()
    band: str | None = None
    realization: int | None = None


@dataclass
class TilePlan:
    """The units of a run, in an order that respects their dependencies, and the skipped blocks."""

    tile: str
    mode: int
    units: list[Unit] = field(default_factory=list)
    skipped: list[Block] = field(default_factory=list)

    @property
    def description(self) -> str:
        return describe_mode(self.mode)

    def by_key(self) -> dict[str, Unit]:
        return {u.key: u for u in self.units}

    def keys(self, block: str | None = None) -> list[str]:
        return [u.key for u in self.units if block is None or u.block == block]


def plan_tile(p: BalrogRunParams, meds_dir: str | None = None, extra: dict[str, dict[str, Any]] | None = None
              ) -> TilePlan:
    """The units of run ``p`` (see the module docstring).

    ``meds_dir`` goes into every unit's params (None: each step's default, $MEDS_DIR); ``extra``
    maps a step name to additional params for it (e.g. ``{"balrog.prep": {"archive_url": ...}}``).
    """
    extra = extra or {}
    plan = TilePlan(p.tile, p.mode, skipped=blocks_skipped(p.mode))
    common: dict[str, Any] = {"tile": p.tile, "medsconf": p.medsconf}
    if meds_dir is not None:
        common["meds_dir"] = str(meds_dir)
    planned: set[str] = set()

    def add(key: str, block: str, bit: int, step: str, params: dict[str, Any], after: list[str],
            band: str | None = None, realization: int | None = None) -> None:
        if not p.mode & bit:
            return
        full = {**common, **params, **extra.get(step, {})}
        plan.units.append(Unit(key, block, bit, step, full, tuple(a for a in after if a in planned), band,
                               realization))
        planned.add(key)

    bands = list(p.bands)
    add("prep", "prep", 1, "balrog.prep", {"bands": bands}, [])
    for b in bands:
        add(f"coadd_band.{b}", "coadd", 2, "balrog.coadd_band", {"band": b, "ncpu": p.ncpu}, ["prep"], band=b)
    add("detect", "coadd", 2, "balrog.detect", {"bands": bands, "ncpu": p.ncpu},
        [f"coadd_band.{b}" for b in bands])
    for b in bands:
        add(f"meds.{b}", "meds", 4, "balrog.meds", {"bands": [b]}, ["detect"], band=b)
    for r in p.realizations:
        add(f"inject.r{r}", "inject", 8, "balrog.inject",
            {"realization": r, "galsim_config": p.galsim_config, "bands": bands, "ncpu": p.ncpu}, ["prep"],
            realization=r)
    for r in p.realizations:
        for b in bands:
            add(f"coadd_band.r{r}.{b}", "coadd_realization", 16, "balrog.coadd_band",
                {"band": b, "realization": r, "ncpu": p.ncpu}, [f"inject.r{r}"], band=b, realization=r)
        add(f"detect.r{r}", "coadd_realization", 16, "balrog.detect", {"bands": bands, "realization": r,
                                                                        "ncpu": p.ncpu},
            [f"coadd_band.r{r}.{b}" for b in bands], realization=r)
        add(f"match.r{r}", "coadd_realization", 16, "balrog.match", {"realization": r, "bands": bands},
            [f"detect.r{r}", "detect"], realization=r)
    for r in p.realizations:
        for b in bands:
            add(f"meds.r{r}.{b}", "meds_realization", 32, "balrog.meds", {"bands": [b], "realization": r},
                [f"detect.r{r}"], band=b, realization=r)
    return plan


#: The balrog_tile DAG's block tasks, by the (block, per-realization) of the units they run.
TASK_OF_UNIT: dict[tuple[str, bool], str] = {
    ("prep", False): "prep", ("coadd", False): "coadd_band", ("meds", False): "meds",
    ("inject", True): "inject", ("coadd_realization", True): "coadd_band_r", ("meds_realization", True): "meds_r",
}


def measure_units(p: BalrogRunParams, meds_dir: str | None) -> list[dict[str, Any]]:
    """``balrog.measure`` params per realization MEDS set the run writes (block 32).

    Balrog measures its realizations: the injected objects with the real ones around them,
    as the megamixers did. The base tile's own catalog is the survey's production, not Balrog's.
    """
    if not p.measure or not p.mode & 32:
        return []
    sets: list[tuple[str, int | None]] = [(f"r{r}", r) for r in p.realizations]
    out = []
    for label, r in sets:
        lay = TileLayout.of(meds_dir, p.medsconf, p.tile, r)
        out.append({"meds": [str(lay.meds(b)) for b in p.bands], "bands": list(p.bands), "measure": list(p.measure),
                    "seed": 0 if r is None else 1000 + r, "ncpu": p.ncpu,
                    "output": f"{p.tile}_{label}_balrog_measure.fits"})
    return out


def block_params(p: BalrogRunParams, meds_dir: str | None = None) -> dict[str, Any]:
    """The step params of each task of the balrog_tile DAG (see :mod:`skyops.operators.balrog`).

    Mapped tasks get a list (empty when the mode skips the block: the task shows as skipped);
    ``prep`` and ``detect`` get their params or None. Units of the realization blocks go to
    the ``*_r`` tasks; ``detect.r<n>`` and ``match.r<n>`` to ``detect_r`` / ``match_r``.
    """
    tp = plan_tile(p, meds_dir)
    out: dict[str, Any] = {"prep": None, "detect": None, "coadd_band": [], "meds": [], "inject": [],
                           "coadd_band_r": [], "detect_r": [], "match_r": [], "meds_r": []}
    for u in tp.units:
        if u.step == "balrog.detect":
            if u.realization is None:
                out["detect"] = u.params
            else:
                out["detect_r"].append(u.params)
        elif u.step == "balrog.match":
            out["match_r"].append(u.params)
        else:
            task = TASK_OF_UNIT[(u.block, u.realization is not None)]
            if task in ("prep",):
                out[task] = u.params
            else:
                out[task].append(u.params)
    out["measure"] = measure_units(p, meds_dir)
    return out
