"""GW planning of raw-only templates: which template CCDs need SE before differencing, once each.

Geometry first (footprints, RA 0, a template CCD that several search CCDs share), then the
``raw_templates`` archive query and :func:`plan_raw_templates` on a small synthetic archive
in which one of the demo's two templates was never processed (raw + calibrations only). The
oracle of the CCD pairing is the archive's own ``templates`` query on the default survey,
where the same template is processed: footprints from its IMAGE rows, overlaps in SQL.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyops.archive import ArchiveDB
from skyops.campaigns.gw.params import validate
from skyops.campaigns.gw.plan import (Footprint, RawTemplatePlan, diff_inputs, plan_raw_templates,
                                      raw_template_inputs, template_overlaps)
from skyops.manifest import FILE_COLUMNS, Manifest

SEARCH, PROCESSED, RAW_ONLY = 668439, 521360, 521361
CCDS = (28, 29)


def box(ra0: float, ra1: float, dec0: float, dec1: float) -> Footprint:
    return Footprint.from_corners([ra0, ra1, ra1, ra0], [dec0, dec0, dec1, dec1])


def manifest(rows: list[dict], extra: tuple[str, ...]) -> Manifest:
    cols = list(FILE_COLUMNS) + list(extra)
    return Manifest(cols, [tuple(r.get(c) for c in cols) for r in rows])


def file(name: str, path: str, ft: str, **kw) -> dict:
    return {"filename": name, "path": path, "compression": "", "md5sum": "0" * 32, "filesize": 1, "filetype": ft, **kw}


def test_footprints_overlap_as_the_archive_pairs_ccds():
    a = box(10.0, 10.2, -5.0, -4.8)
    assert a.overlaps(box(10.15, 10.4, -4.9, -4.7)) and not a.overlaps(box(10.25, 10.4, -4.9, -4.7))
    assert not a.overlaps(box(10.0, 10.2, -4.7, -4.6))  # same RA, other Dec
    across = box(359.9, 0.1, 1.0, 1.2)  # straddles RA 0
    assert across.ra == pytest.approx(0.0, abs=1e-9) and across.half_ra == pytest.approx(0.1)
    assert across.overlaps(box(0.05, 0.3, 1.1, 1.3)) and across.overlaps(box(359.7, 359.95, 1.1, 1.3))
    assert not across.overlaps(box(0.15, 0.3, 1.1, 1.3))


def test_a_shared_template_ccd_is_se_once_and_unusable_ones_are_left_out():
    # search CCDs 5 and 6 side by side; template A's CCD 10 straddles both, its CCD 11 covers 6;
    # template B (another night, no flat for CCD 12) covers 6; dead CCD 61 of A overlaps 5.
    search = {5: box(10.0, 10.2, 0.0, 0.1), 6: box(10.21, 10.4, 0.0, 0.1), 7: box(20.0, 20.2, 0.0, 0.1)}
    templates = {
        700: {10: box(10.1, 10.3, 0.0, 0.1), 11: box(10.32, 10.5, 0.0, 0.1), 61: box(9.9, 10.05, 0.0, 0.1)},
        800: {12: box(10.3, 10.45, 0.02, 0.12)},
    }
    assert template_overlaps(search, templates) == {5: [(700, 10)], 6: [(700, 10), (700, 11), (800, 12)], 7: []}

    raws = [file(f"DECam_00000{e}.fits", f"DTS/raw/{n}", "raw", expnum=e, nite=n) for e, n in ((700, "20160301"),
                                                                                                (800, "20160302"))]
    cals = [file(f"{ft}_{n}_c{c}.fits", f"OPS/precal/{n}", ft, nite=n, ccdnum=c)
            for n, c in (("20160301", 10), ("20160301", 11), ("20160302", 12))
            for ft in ("cal_biascor", "cal_norm_dflatcor", "cal_bpm")
            if not (c == 12 and ft == "cal_norm_dflatcor")]
    ref = manifest([file("gaia.fits", "OPS/cal/refcat", "cal_refcat")], ())
    p = validate({"night": "20170817", "rnum": 4, "pnum": 5, "band": "i"})
    plan = raw_template_inputs("/stage", manifest(raws + cals, ("expnum", "nite", "ccdnum")), ref, p, search,
                               templates)
    assert plan.needs == {5: [(700, 10)], 6: [(700, 10), (700, 11)]}
    assert sorted(plan.se) == [(700, 10), (700, 11)]  # CCD 10 of 700 serves two search CCDs: one SE
    assert plan.dropped == {(800, 12): "no bias/flat for night 20160302"}
    se = plan.se[(700, 10)]
    assert se == {"raw": "/stage/DTS/raw/20160301/DECam_00000700.fits", "ccd": 10,
                  "bias": "/stage/OPS/precal/20160301/cal_biascor_20160301_c10.fits",
                  "flat": "/stage/OPS/precal/20160301/cal_norm_dflatcor_20160301_c10.fits",
                  "bpm": "/stage/OPS/precal/20160301/cal_bpm_20160301_c10.fits",
                  "refcat": "/stage/OPS/cal/refcat/gaia.fits", "band": "i", "expnum": 700, "template": True,
                  "run": "r4p5"}
    xcom = json.loads(json.dumps(plan.as_xcom()))  # what the prepare task pushes must survive JSON
    assert xcom["needs"] == {"c05": [[700, 10]], "c06": [[700, 10], [700, 11]]}
    assert set(xcom["se"]) == {"700"} and set(xcom["se"]["700"]) == {"c10", "c11"}


def test_diff_inputs_take_se_d_raw_templates_beside_processed_ones():
    tmpl = manifest([file("t1_c05.fits", "OPS/t", "red_immask", search_ccdnum=5)], ("search_ccdnum",))
    se = {5: {"red_immask": "/w/s5.fits"}, 6: {"red_immask": "/w/s6.fits"}, 7: {"red_immask": "/w/s7.fits"}}
    p = validate({"night": "20170817"})
    plan = diff_inputs("/stage", se, tmpl, {}, p, 668439,
                       raw_templates={5: ["/w/tse/D00000700_i_c10_immasked.fits"],
                                      6: ["/w/tse/D00000700_i_c10_immasked.fits", "/w/tse/D00000700_i_c11.fits"]})
    assert plan["c05"]["templates"] == ["/stage/OPS/t/t1_c05.fits", "/w/tse/D00000700_i_c10_immasked.fits"]
    assert plan["c06"]["templates"] == ["/w/tse/D00000700_i_c10_immasked.fits", "/w/tse/D00000700_i_c11.fits"]
    assert plan["c07"] is None  # neither kind of template


# ---------------------------------------------------------------------------------------------
# the archive query and the plan, on a synthetic archive with one raw-only template
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def half_raw(tmp_path_factory):
    """The demo survey (CCDs 28, 29) with template 521361 raw-only, files under one root."""
    from skyops.sim.survey import Survey

    root = tmp_path_factory.mktemp("archive")
    survey = Survey("demo", 42, raw_only_templates=[RAW_ONLY])
    return survey, survey.build(root, ccds=CCDS), root


def register(built, url: str) -> ArchiveDB:
    from skyops.sim.register import register_build

    survey, build, root = built
    db = ArchiveDB(url)
    register_build(db, survey, build, "desar2home", root.as_uri())
    return db


@pytest.fixture(scope="module")
def processed_pairs(tmp_path_factory) -> list[tuple[int, int]]:
    """(search CCD, CCD of template RAW_ONLY) as ``templates`` pairs them when DESDM processed it."""
    from skyops.sim.survey import Survey

    root = tmp_path_factory.mktemp("default")
    survey = Survey("demo", 42)
    db = register((survey, survey.build(root, ccds=CCDS), root), f"sqlite:///{root / 'desdm.sqlite'}")
    try:
        m = db.query("templates", expnum=SEARCH)
    finally:
        db.dispose()
    return sorted((r["search_ccdnum"], r["ccdnum"]) for r in m.records() if r["expnum"] == RAW_ONLY)


def test_raw_only_template_is_built_without_finalcut(half_raw):
    survey, build, _ = half_raw
    kinds = {(wf.file.filetype, wf.meta.get("expnum")) for wf in build.files}
    assert ("raw", RAW_ONLY) in kinds and ("red_immask", RAW_ONLY) not in kinds
    assert ("red_immask", PROCESSED) in kinds and ("raw", PROCESSED) not in kinds
    cal_nites = {wf.meta["nite"] for wf in build.files if wf.file.filetype == "cal_biascor"}
    assert cal_nites == {"20160301", "20170817"}  # the raw template's night got its calibrations
    assert not survey.has_finalcut(RAW_ONLY) and survey.has_finalcut(PROCESSED)


def test_raw_templates_query_and_plan(half_raw, processed_pairs, tmp_path):
    db = register(half_raw, f"sqlite:///{tmp_path / 'desdm.sqlite'}")
    try:
        raw_t = db.query("raw_templates", expnum=SEARCH)
        processed = db.query("templates", expnum=SEARCH)
        raw = db.query("raw_exposure", expnum=SEARCH)
        ref = db.query("reference_catalog")
        assert db.query("raw_templates", expnum=SEARCH, min_t_eff=50.0).rows == []
        assert db.query("raw_templates", expnum=SEARCH, min_days_separation=1000.0).rows == []
        assert db.query("raw_templates", expnum=SEARCH, max_separation_deg=1e-4).rows == []  # dithered 4"
        assert db.query("raw_templates", expnum=RAW_ONLY).rows == []  # nothing earlier than a template
    finally:
        db.dispose()
    recs = list(raw_t.records())
    assert [(r["filetype"], r["expnum"]) for r in recs if r["filetype"] == "raw"] == [("raw", RAW_ONLY)]
    cals = sorted((r["filetype"], r["ccdnum"]) for r in recs if r["filetype"] != "raw")
    assert cals == sorted((ft, c) for c in CCDS for ft in ("cal_biascor", "cal_bpm", "cal_norm_dflatcor"))
    assert {r["nite"] for r in recs} == {"20160301"} and {r["band"] for r in recs} == {"i", None}  # bias, bpm: any band
    assert set(processed.column("expnum")) == {PROCESSED}  # the processed one stays with `templates`

    _, _, root = half_raw
    p = validate({"night": "20170817", "ccds": "28,29"})
    plan = plan_raw_templates(root, raw, raw_t, ref, p, SEARCH)
    # from the raw headers, the pairs the archive gives when the template is processed; its
    # dither (-3.5", +2.5") puts its CCD 28 over search CCD 29 as well: shared, SE'd once
    assert sorted((s, t) for s, pairs in plan.needs.items() for _, t in pairs) == processed_pairs
    assert processed_pairs == [(28, 28), (29, 28), (29, 29)]
    assert sorted(plan.se) == [(RAW_ONLY, 28), (RAW_ONLY, 29)] and not plan.dropped
    se = plan.se[(RAW_ONLY, 28)]
    for k in ("raw", "bias", "flat", "bpm", "refcat"):
        assert Path(se[k]).is_file(), k
    assert "20160301" in se["bias"] and se["template"] is True and se["expnum"] == RAW_ONLY

    only28 = plan_raw_templates(root, raw, raw_t, ref, validate({"night": "20170817", "ccds": "28"}), SEARCH)
    assert sorted(only28.se) == [(RAW_ONLY, 28)]  # only what the selected CCDs (-c) need
    assert plan_raw_templates(root, raw, raw_t, ref, validate({"night": "20170817", "template_mode": True}),
                              SEARCH) == RawTemplatePlan()  # -t: no differencing, no templates


def test_raw_templates_identical_on_postgresql(half_raw, tmp_path, pg_url):
    lite = register(half_raw, f"sqlite:///{tmp_path / 'desdm.sqlite'}")
    pg = register(half_raw, pg_url)
    try:
        for params in ({"expnum": SEARCH}, {"expnum": SEARCH, "min_t_eff": 0.5, "max_separation_deg": 0.5}):
            a, b = lite.query("raw_templates", **params), pg.query("raw_templates", **params)
            assert a.columns == b.columns and a.rows == b.rows and len(a.rows) == 1 + 3 * len(CCDS)
    finally:
        lite.dispose()
        pg.dispose()
