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
        add(f"match.r{r}", "coadd_realization", 16, "balrog.match", {"realization": r},
            [f"detect.r{r}", "detect"], realization=r)
    for r in p.realizations:
        for b in bands:
            add(f"meds.r{r}.{b}", "meds_realization", 32, "balrog.meds", {"bands": [b], "realization": r},
                [f"detect.r{r}"], band=b, realization=r)
    return plan
