"""Which files each CCD's task gets: the GW campaign's fan-out, as plain functions.

The DAG queries the archive (raw exposure, the night's calibrations, the reference
catalog, the templates) and stages everything into one folder, keeping the archive's
relative layout; these functions turn those manifests into one parameter set per CCD,
keyed ``c01`` ... ``c62``. A CCD that was not selected (``-c``) or has no input maps to
None, which the operator turns into a visible skip. No Airflow here: the same planning
serves a Condor DAGMan file.

Templates come two ways. Those DESDM processed (``templates`` query) are staged
``red_immask`` CCDs, paired with search CCDs by the archive. Those that exist only raw
(``raw_templates`` query) must be SE'd first: :func:`plan_raw_templates` reads the staged
raw headers of the search exposure and of each raw template, finds which template CCDs
overlap which selected search CCDs, and gives every such template CCD -- once, however many
search CCDs share it -- its ``gw.se_ccd`` parameters (its own night's calibrations).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from skyops.campaigns.gw.params import DEAD_CCDS, DEFAULT_CCDS, GWRunParams
from skyops.errors import InputError
from skyops.manifest import Manifest

log = logging.getLogger(__name__)

#: The CCDs that get a task in a DAG (2 and 61 are dead on DECam and never processed).
TASK_CCDS = DEFAULT_CCDS


def ccd_key(ccd: int) -> str:
    return f"c{int(ccd):02d}"


def staged(dest: str | Path, rec: dict[str, Any]) -> str:
    """Where staging put a manifest row: ``dest/<path>/<filename><compression>``."""
    return str(Path(dest) / Manifest.relpath(rec))


def se_inputs(dest: str | Path, raw: Manifest, calibrations: Manifest, refcat: Manifest,
              params: GWRunParams, expnum: int) -> dict[str, dict[str, Any] | None]:
    """Parameters of ``gw.se_ccd`` for every task CCD of exposure ``expnum`` (None = skip)."""
    raws = [r for r in raw.records() if int(r["expnum"]) == int(expnum)]
    if len(raws) != 1:
        raise InputError(f"exposure {expnum}: expected one raw file in the archive, found {len(raws)}; "
                         "check the expnum (-E) and that the exposure has been ingested")
    refs = list(refcat.records())
    if not refs:
        raise InputError("no reference catalog (CATALOG filetype cal_refcat) in the archive")
    cals: dict[int, dict[str, str]] = defaultdict(dict)
    for rec in calibrations.records():
        cals[int(rec["ccdnum"])][rec["filetype"]] = staged(dest, rec)
    raw_path, ref_path = staged(dest, raws[0]), staged(dest, refs[-1])
    out: dict[str, dict[str, Any] | None] = {}
    for ccd in TASK_CCDS:
        if ccd not in params.ccds or ccd in DEAD_CCDS:
            out[ccd_key(ccd)] = None
            continue
        cal = cals.get(ccd, {})
        if "cal_biascor" not in cal or "cal_norm_dflatcor" not in cal:
            log.warning("exposure %s CCD %d: no bias/flat for night %s; skipping it", expnum, ccd, params.night)
            out[ccd_key(ccd)] = None
            continue
        out[ccd_key(ccd)] = {
            "raw": raw_path, "ccd": ccd, "bias": cal["cal_biascor"], "flat": cal["cal_norm_dflatcor"],
            "bpm": cal.get("cal_bpm"), "refcat": ref_path, "band": params.band, "expnum": int(expnum),
            "template": params.template_mode, "run": f"r{params.rnum}p{params.pnum}",
        }
    return out


def read_zeropoints(path: str | Path | None) -> dict[int, float]:
    """CCD -> mag_zero from a ``gw.calibrate`` zeropoint table (good rows only)."""
    if not path:
        return {}
    import fitsio  # here, not at the top: DAG files import this module at parse time

    tab = fitsio.read(str(path), ext=1)
    names = tab.dtype.names
    good = tab["flag"] == 0 if "flag" in names else [True] * len(tab)
    return {int(r["ccdnum"]): float(r["mag_zero"]) for r, g in zip(tab, good) if g and r["ccdnum"] > 0}


def diff_inputs(dest: str | Path, se_outputs: dict[int, dict[str, str]], templates: Manifest,
                zeropoints: dict[int, float], params: GWRunParams,
                expnum: int, raw_templates: Mapping[int, Iterable[str]] | None = None,
                ) -> dict[str, dict[str, Any] | None]:
    """Parameters of ``gw.diffimg_ccd`` per task CCD: the SE'd search CCD and its templates.

    ``templates`` is the staged ``templates`` manifest (DESDM-processed template CCDs);
    ``raw_templates`` maps a search CCD to the red_immask files that ``gw.se_ccd`` made from
    raw-only template CCDs for it (:func:`plan_raw_templates`).
    """
    by_ccd: dict[int, list[str]] = defaultdict(list)
    for rec in templates.records():
        by_ccd[int(rec["search_ccdnum"])].append(staged(dest, rec))
    for ccd, paths in (raw_templates or {}).items():
        by_ccd[int(ccd)].extend(str(p) for p in paths)
    out: dict[str, dict[str, Any] | None] = {}
    for ccd in TASK_CCDS:
        se = se_outputs.get(ccd)
        if params.template_mode or not se or not by_ccd.get(ccd):
            if se and not by_ccd.get(ccd) and not params.template_mode:
                log.warning("exposure %s CCD %d: no template overlaps it; no difference image", expnum, ccd)
            out[ccd_key(ccd)] = None
            continue
        out[ccd_key(ccd)] = {
            "search": se["red_immask"], "search_psf": se.get("psfex_model"), "templates": sorted(by_ccd[ccd]),
            "band": params.band, "expnum": int(expnum), "ccd": ccd, "zeropoint": zeropoints.get(ccd),
            # -F fullcopy: keep every intermediate product (resampled template stack, matched
            # images) next to the difference image, not only the key outputs
            "keep_scratch": params.fullcopy,
        }
    return out


#: What gw.se_ccd produces, by filetype (the keys calibrate reads, for itself and for the diff plan).
SE_FILETYPES = ("red_immask", "cat_finalcut", "psfex_model")


def previous_se_outputs(provenance_engine, expnum: int, ccds: Iterable[int]) -> dict[int, dict[str, str]]:
    """The latest successful gw.se_ccd outputs of each CCD of ``expnum`` (for ``-j``, skip SE).

    Looked up in provenance: files generated by a successful ``gw.se_ccd`` task whose DESDM
    name starts with ``D<expnum:08d>_<band>_c<ccd:02d>``, newest task first, still on disk.
    """
    import sqlalchemy as sa

    q = sa.text(
        "SELECT f.path, f.filename, f.filetype FROM desfile f JOIN task t ON f.wgb_task_id = t.id "
        "WHERE t.name = 'gw.se_ccd' AND t.status = 'success' AND f.filename LIKE :pat ORDER BY t.id DESC")
    out: dict[int, dict[str, str]] = {}
    with provenance_engine.connect() as c:
        for ccd in ccds:
            found: dict[str, str] = {}
            for path, name, ft in c.execute(q, {"pat": f"D{int(expnum):08d}_%_c{int(ccd):02d}_%"}):
                full = str(Path(path) / name)
                if ft in SE_FILETYPES and ft not in found and Path(full).is_file():
                    found[ft] = full
            if set(SE_FILETYPES) <= set(found):
                out[int(ccd)] = found
    return out


# ---------------------------------------------------------------------------------------------
# Raw-only templates: which template CCDs need SE, once each
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Footprint:
    """A CCD's RA/Dec bounding box, as DESDM's racmin/racmax/deccmin/deccmax (RA 0 handled).

    ``ra`` is the middle of the RA range and ``half_ra`` its half-width, both in degrees of
    RA, so that two boxes on either side of RA 0 compare like any others.
    """

    ra: float
    half_ra: float
    decmin: float
    decmax: float

    @classmethod
    def from_corners(cls, ra: Iterable[float], dec: Iterable[float]) -> "Footprint":
        ra, dec = [float(v) for v in ra], [float(v) for v in dec]
        rel = [(r - ra[0] + 180.0) % 360.0 - 180.0 for r in ra]
        lo, hi = min(rel), max(rel)
        return cls((ra[0] + (lo + hi) / 2.0) % 360.0, (hi - lo) / 2.0, min(dec), max(dec))

    def overlaps(self, other: "Footprint") -> bool:
        """The boxes overlap (the ``templates`` query's test, so both kinds pair alike)."""
        dra = (self.ra - other.ra + 180.0) % 360.0 - 180.0
        return (abs(dra) <= self.half_ra + other.half_ra
                and self.decmin <= other.decmax and self.decmax >= other.decmin)


def raw_footprints(path: str | Path, ccds: Iterable[int] | None = None) -> dict[int, Footprint]:
    """CCD -> footprint of a raw DECam exposure: its header WCS at the corners of DATASEC.

    Only headers are read. ``ccds`` limits the CCDs (default: every CCD HDU in the file).
    """
    import fitsio  # here, not at the top: DAG files import this module at parse time
    from astropy.wcs import WCS

    from skyops.campaigns.gw.detrend import parse_section

    want = None if ccds is None else {int(c) for c in ccds}
    path = Path(path)
    if not path.is_file():
        raise InputError(f"raw exposure {path} does not exist; it should have been staged with the templates")
    out: dict[int, Footprint] = {}
    with fitsio.FITS(str(path)) as f:
        for hdu in f[1:]:
            h = hdu.read_header()
            if "CCDNUM" not in h or not h.get("NAXIS") or (want is not None and int(h["CCDNUM"]) not in want):
                continue
            ys, xs = parse_section(h.get("DATASEC") or f"[1:{h['NAXIS1']},1:{h['NAXIS2']}]",
                                   f"{path.name}[{hdu.get_extname()}] DATASEC")
            x = [xs.start + 0.5, xs.stop + 0.5, xs.stop + 0.5, xs.start + 0.5]  # pixel edges, FITS 1-based
            y = [ys.start + 0.5, ys.start + 0.5, ys.stop + 0.5, ys.stop + 0.5]
            cards = {r["name"]: r["value"] for r in h.records()
                     if r["name"] and r["name"] not in ("COMMENT", "HISTORY") and not r["name"].startswith("NAXIS")}
            ra, dec = WCS(cards, naxis=2).all_pix2world(x, y, 1)
            out[int(h["CCDNUM"])] = Footprint.from_corners(ra, dec)
    return out


def template_overlaps(search: Mapping[int, Footprint], templates: Mapping[int, Mapping[int, Footprint]]
                      ) -> dict[int, list[tuple[int, int]]]:
    """Search CCD -> the (template expnum, template CCD) pairs overlapping it (dead CCDs left out)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for ccd in sorted(search):
        out[ccd] = [(texp, tccd) for texp in sorted(templates) for tccd, fp in sorted(templates[texp].items())
                    if tccd not in DEAD_CCDS and fp.overlaps(search[ccd])]
    return out


@dataclass
class RawTemplatePlan:
    """What the raw-only templates of one search exposure need.

    ``needs``: search CCD -> the template CCDs (expnum, ccd) whose SE outputs are its templates.
    ``se``: (expnum, ccd) -> ``gw.se_ccd`` parameters, one entry per template CCD however many
    search CCDs share it. ``dropped``: template CCDs that overlap but cannot be SE'd (no
    calibrations for their night), with the reason.
    """

    needs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    se: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    dropped: dict[tuple[int, int], str] = field(default_factory=dict)

    def as_xcom(self) -> dict[str, Any]:
        """JSON-safe: ``{"needs": {"c05": [[expnum, ccd], ...]}, "se": {"<expnum>": {"c05": params}}}``."""
        se: dict[str, dict[str, Any]] = defaultdict(dict)
        for (texp, tccd), p in sorted(self.se.items()):
            se[str(texp)][ccd_key(tccd)] = p
        return {"needs": {ccd_key(c): [[e, t] for e, t in pairs] for c, pairs in sorted(self.needs.items()) if pairs},
                "se": dict(se)}


def raw_template_inputs(dest: str | Path, raw_templates: Manifest, refcat: Manifest, params: GWRunParams,
                        search: Mapping[int, Footprint],
                        templates: Mapping[int, Mapping[int, Footprint]]) -> RawTemplatePlan:
    """The plan from footprints: overlaps, then each needed template CCD's SE parameters."""
    refs = list(refcat.records())
    if not refs:
        raise InputError("no reference catalog (CATALOG filetype cal_refcat) in the archive")
    raws: dict[int, dict[str, Any]] = {}
    cals: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for rec in raw_templates.records():
        if rec["filetype"] == "raw":
            raws[int(rec["expnum"])] = rec
        elif rec.get("ccdnum") is not None:
            cals[(str(rec["nite"]), int(rec["ccdnum"]))][rec["filetype"]] = staged(dest, rec)
    plan = RawTemplatePlan()
    for ccd, pairs in template_overlaps(search, templates).items():
        for texp, tccd in pairs:
            key = (texp, tccd)
            if key in plan.se:
                plan.needs.setdefault(ccd, []).append(key)
                continue
            if key in plan.dropped:
                continue
            rec = raws.get(texp)
            cal = cals.get((str(rec["nite"]), tccd), {}) if rec else {}
            if rec is None or "cal_biascor" not in cal or "cal_norm_dflatcor" not in cal:
                why = "not in the raw_templates manifest" if rec is None else f"no bias/flat for night {rec['nite']}"
                log.warning("raw template %s CCD %d (for search CCD %d): %s; left out", texp, tccd, ccd, why)
                plan.dropped[key] = why
                continue
            plan.se[key] = {
                "raw": staged(dest, rec), "ccd": tccd, "bias": cal["cal_biascor"], "flat": cal["cal_norm_dflatcor"],
                "bpm": cal.get("cal_bpm"), "refcat": staged(dest, refs[-1]), "band": params.band,
                "expnum": texp, "template": True, "run": f"r{params.rnum}p{params.pnum}",
            }
            plan.needs.setdefault(ccd, []).append(key)
    return plan


def plan_raw_templates(dest: str | Path, raw: Manifest, raw_templates: Manifest, refcat: Manifest,
                       params: GWRunParams, expnum: int) -> RawTemplatePlan:
    """Which raw-only template CCDs the selected CCDs of search exposure ``expnum`` need.

    Reads the staged raw headers (search exposure and templates): the archive knows no CCD
    footprints of exposures it never processed. Empty when there is no raw-only template, or
    in template mode (``-t``: no difference imaging).
    """
    tmpl_raws = [r for r in raw_templates.records() if r["filetype"] == "raw"]
    if params.template_mode or not tmpl_raws:
        return RawTemplatePlan()
    raws = [r for r in raw.records() if int(r["expnum"]) == int(expnum)]
    if len(raws) != 1:
        raise InputError(f"exposure {expnum}: expected one raw file in the archive, found {len(raws)}")
    search = raw_footprints(staged(dest, raws[0]), params.live_ccds)
    templates = {int(r["expnum"]): raw_footprints(staged(dest, r)) for r in tmpl_raws}
    plan = raw_template_inputs(dest, raw_templates, refcat, params, search, templates)
    log.info("exposure %s: %d raw-only template exposure(s); %d template CCD(s) to SE for %d search CCD(s)",
             expnum, len(templates), len(plan.se), len(plan.needs))
    return plan
