"""Named archive queries on a small DESDM-like archive, on SQLite and on PostgreSQL.

The archive is built here row by row (no pixels): three tiles (one crossing RA 0), a score of
DECam-like exposures of 62 CCDs with red_immask images and their bkg/seg/psf files,
zeropoints, proctags, a blacklist, and coadd products. Expected answers are computed in Python
from the same rows with an independent overlap test, and every query must return identical
manifests on both databases.
"""
from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from skyops.archive import ArchiveDB, coaddsrc_rows, run_query
from skyops.archive.queries import MAX_CCD_EXTENT_DEG
from skyops.errors import ArchiveError, InputError
from skyops.manifest import FILE_COLUMNS, Manifest

FINALCUT = "Y3A1_FINALCUT"
COADD_TAG = "Y3A1_COADD"
ROWS = [6, 7, 8, 9, 9, 9, 8, 6]  # 62 CCDs
CCD_W, CCD_H = 0.25, 0.15  # degrees on the sky
TILE_HALF = 0.3653


@dataclass(frozen=True)
class Exp:
    expnum: int
    band: str
    mjd: float
    t_eff: float
    ra: float
    dec: float
    nite: str
    program: str = "survey"
    tag: str | None = FINALCUT
    ccds: bool = True  # processed: has red_immask CCD images


EXPOSURES = [
    Exp(500100, "r", 58000.10, 0.90, 15.0, -45.0, "20170817", "gw"),       # search exposure
    Exp(500101, "i", 58000.12, 0.80, 15.0, -45.0, "20170817", "gw", ccds=False),
    Exp(500102, "g", 58000.14, 0.70, 16.0, -45.0, "20170817", "gw", ccds=False),
    Exp(500103, "r", 58000.16, 0.70, 30.0, -40.0, "20170817", "survey", ccds=False),
    Exp(500104, "z", 58001.10, 0.70, 15.0, -45.0, "20170818", "gw", ccds=False),
    Exp(500001, "r", 57900.0, 0.80, 15.2, -45.1, "20170510"),              # good template
    Exp(500002, "r", 57990.0, 0.90, 15.0, -45.0, "20170807"),              # too recent
    Exp(500003, "r", 57800.0, 0.10, 15.0, -45.0, "20170130"),              # low t_eff
    Exp(500004, "g", 57850.0, 0.90, 15.0, -45.0, "20170311"),              # other band
    Exp(500005, "r", 57700.0, 0.70, 40.0, -45.0, "20161022"),              # far away
    Exp(500006, "r", 57600.0, 0.90, 15.0, -45.0, "20160714"),              # good, blacklisted CCDs
    Exp(500007, "r", 58100.0, 0.90, 15.0, -45.0, "20171125"),              # later
    Exp(500008, "r", 57700.0, 0.90, 15.1, -44.9, "20161022", tag="SV_FINALCUT"),
    Exp(500009, "r", 57650.0, None, 15.0, -45.0, "20160902"),              # t_eff not assessed
    Exp(500200, "r", 57500.0, 0.90, 0.1, -45.0, "20160605"),               # straddles RA 0
    Exp(500201, "r", 57510.0, 0.90, 359.2, -45.2, "20160615"),
    Exp(500202, "g", 57520.0, 0.90, 1.0, -44.8, "20160625"),
]
TILES = {"DES0100-4500": (15.0, -45.0), "DES0000-4500": (0.0, -45.0), "DES0300-4500": (45.0, -45.0)}
BLACKLIST = [(e.expnum, c) for e in EXPOSURES if e.ccds for c in (2, 61)] + [
    (500006, 10), (500006, 11), (500001, 30)]
NO_ZP = {(500001, 5)}          # no zeropoint at all
BAD_ZP = {(500001, 6)}         # flag 1
OLD_ZP = {(500001, 7)}         # only version v0
NO_PSF = {(500006, 20)}        # psfex model missing


# ---------------------------------------------------------------------------------------------
# geometry (shared by the builder and the Python oracle)
# ---------------------------------------------------------------------------------------------

def _bounds(ra0: float, corners_xy: list[tuple[float, float]], dec0: float) -> dict[str, Any]:
    """Corners (tangent-plane offsets, deg) around (ra0, dec0) -> DESDM corner columns."""
    ras_u, decs = [], []
    for x, y in corners_xy:
        dec = dec0 + y
        ras_u.append(ra0 + x / math.cos(math.radians(dec)))
        decs.append(dec)
    lo, hi = min(ras_u), max(ras_u)
    cross = math.floor(lo / 360.0) != math.floor(hi / 360.0)
    row = {f"rac{i + 1}": ras_u[i] % 360.0 for i in range(4)}
    row.update({f"decc{i + 1}": decs[i] for i in range(4)})
    row.update(racmin=lo % 360.0, racmax=hi % 360.0, deccmin=min(decs), deccmax=max(decs),
               crossra0="Y" if cross else "N", ra_cent=(ra0 + sum(x for x, _ in corners_xy) / 4) % 360.0,
               dec_cent=dec0 + sum(y for _, y in corners_xy) / 4)
    return row


def ccd_layout() -> list[tuple[int, float, float, float, float]]:
    out, ccd = [], 1
    for r, n in enumerate(ROWS):
        y0 = (r - len(ROWS) / 2) * CCD_H
        for k in range(n):
            x0 = (k - n / 2) * CCD_W
            out.append((ccd, x0, x0 + CCD_W, y0, y0 + CCD_H))
            ccd += 1
    assert ccd == 63
    return out


def ccd_bounds(e: Exp, ccd: tuple[int, float, float, float, float]) -> dict[str, Any]:
    _, x0, x1, y0, y1 = ccd
    return _bounds(e.ra, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], e.dec)


def tile_bounds(ra: float, dec: float) -> dict[str, Any]:
    h = TILE_HALF
    return _bounds(ra, [(-h, -h), (h, -h), (h, h), (-h, h)], dec)


def overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Independent overlap test: unwrap RA intervals and try shifts of +-360."""
    def iv(r: dict[str, Any]) -> tuple[float, float]:
        return (r["racmin"], r["racmax"] + 360.0) if r["crossra0"] == "Y" else (r["racmin"], r["racmax"])

    (a0, a1), (b0, b1) = iv(a), iv(b)
    ra_ok = any(a0 <= b1 + k and b0 + k <= a1 for k in (-360.0, 0.0, 360.0))
    return ra_ok and a["deccmin"] <= b["deccmax"] and a["deccmax"] >= b["deccmin"]


# ---------------------------------------------------------------------------------------------
# the archive
# ---------------------------------------------------------------------------------------------

def _file(name: str, path: str, filetype: str, compression: str | None, attempt: int) -> dict[str, Any]:
    digest = hashlib.md5(name.encode()).hexdigest()
    return {"filename": name, "path": path, "filetype": filetype, "compression": compression,
            "filesize": 1000 + int(digest[:6], 16), "md5sum": digest, "pfw_attempt_id": attempt}


def build_archive(db: ArchiveDB) -> dict[str, Any]:
    """Fill ``db``; returns the rows the Python oracle needs."""
    db.create_schema()
    db.register_archive("desar2home", root="/archive/desar2home")
    db.register_archive("other", root="/archive/other")
    attempts, tags, exposures, images, misc, zps, files = [], [], [], [], [], [], []
    layout = ccd_layout()
    for i, e in enumerate(EXPOSURES):
        aid = 1000 + i
        attempts.append({"id": aid, "reqnum": 3000, "unitname": f"D{e.expnum:08d}", "attnum": 1,
                         "operator": "skyops", "data_state": "ACTIVE"})
        if e.tag:
            tags.append({"tag": e.tag, "pfw_attempt_id": aid, "created_by": "skyops"})
        raw = f"DECam_{e.expnum:08d}.fits"
        exposures.append({"expnum": e.expnum, "filename": raw, "nite": e.nite, "mjd_obs": e.mjd,
                          "date_obs": f"{e.nite[:4]}-{e.nite[4:6]}-{e.nite[6:]}T03:00:00.000000",
                          "band": e.band, "exptime": 90.0, "telra": e.ra, "teldec": e.dec,
                          "ra_cent": e.ra, "dec_cent": e.dec, "program": e.program,
                          "field": "F1", "object": f"obj {e.expnum}", "obstype": "object", "t_eff": e.t_eff})
        files.append(_file(raw, f"DTS/src/{e.nite}/src", "raw", ".fz", aid))
        if not e.ccds:
            continue
        base = f"OPS/finalcut/Y3A1/r3000/{e.nite}/D{e.expnum:08d}/p01"
        for ccd in layout:
            c = ccd[0]
            stem = f"D{e.expnum:08d}_{e.band}_c{c:02d}_r3000p01"
            img = {"filename": f"{stem}_immasked.fits", "compression": ".fz", "filetype": "red_immask",
                   "pfw_attempt_id": aid, "expnum": e.expnum, "ccdnum": c, "band": e.band,
                   "nite": e.nite, "naxis1": 2048, "naxis2": 4096, "fwhm": 1.0, **ccd_bounds(e, ccd)}
            images.append(img)
            files.append(_file(img["filename"], f"{base}/red/immask", "red_immask", ".fz", aid))
            for suffix, ftype, comp, sub in (("bkg.fits", "red_bkg", ".fz", "bkg"),
                                             ("segmap.fits", "red_segmap", ".fz", "seg"),
                                             ("psfexcat.psf", "psfex_model", None, "psf")):
                if ftype == "psfex_model" and (e.expnum, c) in NO_PSF:
                    continue
                name = f"{stem}_{suffix}"
                misc.append({"filename": name, "compression": comp, "filetype": ftype, "pfw_attempt_id": aid,
                             "expnum": e.expnum, "ccdnum": c, "band": e.band, "nite": e.nite})
                files.append(_file(name, f"{base}/red/{sub}", ftype, comp, aid))
            key = (e.expnum, c)
            zp = {"imagename": img["filename"], "expnum": e.expnum, "ccdnum": c, "band": e.band,
                  "mag_zero": 30.0 + (e.expnum % 97) / 100 + c / 1000, "sigma_mag_zero": 0.01,
                  "source": "FGCM", "version": "v1", "flag": 0}
            if key in NO_ZP:
                continue
            if key in BAD_ZP:
                zp["flag"] = 1
            if key in OLD_ZP:
                zp["version"] = "v0"
            zps.append(zp)
            zps.append(dict(zp, source="BLISS", mag_zero=zp["mag_zero"] + 0.05, flag=0))
    # coadd products of DES0100-4500: the tagged attempt and an untagged rerun
    coadds, catalogs = [], []
    for aid, attnum, tagged in ((2000, 1, True), (2001, 2, False)):
        attempts.append({"id": aid, "reqnum": 4000, "unitname": "DES0100-4500", "attnum": attnum})
        if tagged:
            tags.append({"tag": COADD_TAG, "pfw_attempt_id": aid})
        path = f"OPS/multiepoch/Y3A1/r4000/DES0100-4500/p{attnum:02d}"
        for band in ("g", "r", "det"):
            name = f"DES0100-4500_r4000p{attnum:02d}_{band}.fits"
            coadds.append({"filename": name, "compression": ".fz", "filetype": "coadd_det" if band == "det" else "coadd",
                           "pfw_attempt_id": aid, "tilename": "DES0100-4500", "band": band,
                           "ra_cent": 15.0, "dec_cent": -45.0, "naxis1": 10000, "naxis2": 10000})
            files.append(_file(name, f"{path}/coadd", coadds[-1]["filetype"], ".fz", aid))
            if band != "det":
                cat = f"DES0100-4500_r4000p{attnum:02d}_{band}_cat.fits"
                catalogs.append({"filename": cat, "filetype": "coadd_cat", "pfw_attempt_id": aid,
                                 "tilename": "DES0100-4500", "band": band, "objects": 12345})
                files.append(_file(cat, f"{path}/cat", "coadd_cat", None, aid))
    tiles = [{"tilename": name, "id": i + 1, "pixelscale": 0.263, "naxis1": 10000, "naxis2": 10000,
              "crossra0": "N", **tile_bounds(ra, dec)} for i, (name, (ra, dec)) in enumerate(TILES.items())]
    for t in tiles:
        t["crval1"], t["crval2"] = TILES[t["tilename"]]
    db.insert_rows("pfw_attempt", attempts)
    db.insert_rows("proctag", tags)
    db.insert_rows("exposure", exposures)
    db.insert_rows("coaddtile_geom", tiles)
    db.insert_rows("image", images)
    db.insert_rows("miscfile", misc)
    db.insert_rows("zeropoint", zps)
    db.insert_rows("coadd", coadds)
    db.insert_rows("catalog", catalogs)
    db.insert_rows("blacklist", [{"expnum": e, "ccdnum": c, "reason": "test"} for e, c in BLACKLIST])
    ids = db.register_files(files)
    assert db.register_files([]) == []
    # a second archive holds every 7th file under another path: never mixed in
    with db.begin() as conn:
        fai = db.tables.file_archive_info
        conn.execute(fai.insert(), [{"desfile_id": i, "archive_name": "other", "filename": f["filename"],
                                     "compression": f["compression"], "path": "elsewhere"}
                                    for i, f in list(zip(ids, files))[::7]])
    db.analyze()
    return {"tiles": {t["tilename"]: t for t in tiles}, "images": images, "files": files,
            "misc": misc, "zps": zps, "desfile_ids": ids}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory, pg_url: str):
    """The same archive in SQLite and in a schema of its own in the session's PostgreSQL DB."""
    sqlite_db = ArchiveDB(f"sqlite:///{tmp_path_factory.mktemp('arch') / 'desdm.sqlite'}")
    pg_schema = f"archq_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url)
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {pg_schema}"))
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={pg_schema}"})
    pg_db = ArchiveDB(url)
    truth = build_archive(sqlite_db)
    build_archive(pg_db)
    yield {"sqlite": sqlite_db, "postgresql": pg_db, "truth": truth}
    sqlite_db.dispose()
    pg_db.dispose()
    with admin.begin() as c:
        c.execute(sa.text(f"DROP SCHEMA {pg_schema} CASCADE"))
    admin.dispose()


def _file_index(truth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["filename"]: f for f in truth["files"]}


# ---------------------------------------------------------------------------------------------
# identical on both databases
# ---------------------------------------------------------------------------------------------

CASES = [
    ("tile_geometry", {"tilename": "DES0100-4500"}),
    ("tile_geometry", {"tilename": "DES0000-4500"}),
    ("coadd_files", {"tilename": "DES0100-4500", "band": "r", "tag": COADD_TAG}),
    ("coadd_files", {"tilename": "DES0100-4500", "band": "det", "tag": COADD_TAG}),
    ("se_sources", {"tilename": "DES0100-4500", "band": "r", "tag": FINALCUT}),
    ("se_sources", {"tilename": "DES0000-4500", "band": "r", "tag": FINALCUT}),
    ("se_sources", {"tilename": "DES0000-4500", "band": "g", "tag": FINALCUT, "zp_source": "BLISS"}),
    ("se_sources", {"tilename": "DES0300-4500", "band": "r", "tag": FINALCUT}),
    ("night_exposures", {"nite": "20170817", "program": "gw", "bands": ["g", "r", "i"]}),
    ("night_exposures", {"nite": "20170817", "program": "survey", "bands": "r"}),
    ("templates", {"expnum": 500100}),
    ("templates", {"expnum": 500100, "ccdnum": 28, "min_t_eff": 0.5, "tag": FINALCUT}),
    ("templates", {"expnum": 500200, "min_days_separation": 1.0, "archive_name": "other"}),
    ("files_by_name", {"names": ["DECam_00500100.fits", "DES0100-4500_r4000p01_g.fits", "nope.fits"]}),
]


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_identical_on_sqlite_and_postgresql(archives: dict[str, Any], name: str, params: dict[str, Any]) -> None:
    lite = run_query(archives["sqlite"], name, **params)
    pg = run_query(archives["postgresql"], name, **params)
    assert lite.columns == pg.columns
    assert lite.rows == pg.rows
    assert lite.params == pg.params
    if name != "tile_geometry":
        assert tuple(lite.columns[:6]) == FILE_COLUMNS


# ---------------------------------------------------------------------------------------------
# right rows
# ---------------------------------------------------------------------------------------------

def _expected_se(truth: dict[str, Any], tilename: str, band: str, zp_source: str = "FGCM") -> dict[str, Any]:
    tile = truth["tiles"][tilename]
    tag_of = {e.expnum: e.tag for e in EXPOSURES}
    good_zp = {z["imagename"]: z["mag_zero"] for z in truth["zps"]
               if z["source"] == zp_source and z["version"] == "v1" and z["flag"] == 0}
    return {img["filename"]: good_zp[img["filename"]] for img in truth["images"]
            if img["band"] == band and tag_of[img["expnum"]] == FINALCUT
            and img["filename"] in good_zp and overlaps(img, tile)}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_se_sources_overlapping_tagged_with_zeropoints(archives: dict[str, Any], backend: str) -> None:
    truth = archives["truth"]
    m = run_query(archives[backend], "se_sources", tilename="DES0100-4500", band="r", tag=FINALCUT)
    expected = _expected_se(truth, "DES0100-4500", "r")
    groups = coaddsrc_rows(m)
    assert {g["image_filename"]: g["mag_zero"] for g in groups} == expected
    # the oracle is not vacuous: several exposures, not all their CCDs, none of the excluded ones
    expnums = {g["expnum"] for g in groups}
    assert {500100, 500001, 500002, 500006}.issubset(expnums)
    assert not expnums & {500004, 500005, 500008, 500200}
    assert len(groups) < 62 * len(expnums)
    zp_rejects = {(500001, 5), (500001, 6), (500001, 7)}
    assert not {(g["expnum"], g["ccdnum"]) for g in groups} & zp_rejects
    # every image brings its bkg, seg and psf (except the one psf that is missing)
    for g in groups:
        assert g["image_path"].endswith("/red/immask") and g["image_compression"] == ".fz"
        assert g["bkg_filename"] == g["image_filename"].replace("immasked.fits", "bkg.fits")
        assert g["seg_path"].endswith("/red/seg")
        if (g["expnum"], g["ccdnum"]) in NO_PSF:
            assert g["psf_filename"] is None
        else:
            assert g["psf_filename"].endswith("_psfexcat.psf")
    roles = m.column("role")
    assert roles.count("image") == len(groups) == roles.count("bkg") == roles.count("seg")
    assert roles.count("psf") == len(groups) - len({(g["expnum"], g["ccdnum"]) for g in groups} & NO_PSF)
    # file columns come from DESFILE / FILE_ARCHIVE_INFO
    files = _file_index(truth)
    for rec in m.records():
        f = files[rec["filename"]]
        assert (rec["md5sum"], rec["filesize"], rec["filetype"], rec["path"]) == (
            f["md5sum"], f["filesize"], f["filetype"], f["path"])
        assert rec["compression"] == (f["compression"] or "")
        assert Manifest.relpath(rec).startswith("OPS/finalcut/")
    # deterministic order: by image, then role, then file name
    keys = [(r["image_filename"], r["role"], r["filename"]) for r in m.records()]
    assert keys == sorted(keys)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_se_sources_tile_crossing_ra0(archives: dict[str, Any], backend: str) -> None:
    truth = archives["truth"]
    tile = truth["tiles"]["DES0000-4500"]
    assert tile["crossra0"] == "Y" and tile["racmin"] > 359 and tile["racmax"] < 1
    m = run_query(archives[backend], "se_sources", tilename="DES0000-4500", band="r", tag=FINALCUT)
    groups = coaddsrc_rows(m)
    assert {g["image_filename"] for g in groups} == set(_expected_se(truth, "DES0000-4500", "r"))
    images = {i["filename"]: i for i in truth["images"]}
    found = [images[g["image_filename"]] for g in groups]
    # images on both sides of RA 0, and images that themselves cross it
    assert any(i["racmax"] > 300 and i["crossra0"] == "N" for i in found)
    assert any(i["racmin"] < 60 and i["crossra0"] == "N" for i in found)
    assert any(i["crossra0"] == "Y" for i in found)
    assert {g["expnum"] for g in groups} == {500200, 500201}
    # the g-band exposure there is found with its own band and another zeropoint source
    g_band = coaddsrc_rows(run_query(archives[backend], "se_sources", tilename="DES0000-4500",
                                     band="g", tag=FINALCUT, zp_source="BLISS"))
    assert {g["expnum"] for g in g_band} == {500202}
    assert set(g["image_filename"] for g in g_band) == set(_expected_se(truth, "DES0000-4500", "g", "BLISS"))


def test_se_sources_empty_for_uncovered_tile(archives: dict[str, Any]) -> None:
    m = run_query(archives["sqlite"], "se_sources", tilename="DES0300-4500", band="r", tag=FINALCUT)
    assert len(m) == 0 and m.columns[:6] == list(FILE_COLUMNS)


def _expected_templates(truth: dict[str, Any], expnum: int, ccdnum: int | None = None, min_days: float = 15.0,
                        min_t_eff: float = 0.3, tag: str | None = None) -> list[tuple[int, str]]:
    exps = {e.expnum: e for e in EXPOSURES}
    search = exps[expnum]
    bl = set(BLACKLIST)
    s_imgs = [i for i in truth["images"] if i["expnum"] == expnum and (ccdnum is None or i["ccdnum"] == ccdnum)]
    out = []
    for s in s_imgs:
        for t in truth["images"]:
            te = exps[t["expnum"]]
            if (te.band == search.band and te.mjd <= search.mjd - min_days and te.t_eff is not None
                    and te.t_eff >= min_t_eff and (t["expnum"], t["ccdnum"]) not in bl
                    and (tag is None or te.tag == tag) and overlaps(t, s)):
                out.append((s["ccdnum"], t["filename"]))
    return sorted(out)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_templates_rules(archives: dict[str, Any], backend: str) -> None:
    truth = archives["truth"]
    db = archives[backend]
    m = run_query(db, "templates", expnum=500100)
    got = [(r["search_ccdnum"], r["filename"]) for r in m.records()]
    assert got == _expected_templates(truth, 500100)
    expnums = set(m.column("expnum"))
    assert expnums == {500001, 500006, 500008}  # good ones; 500008 has another tag
    excluded = {500002: "too recent", 500003: "low t_eff", 500004: "other band", 500005: "no overlap",
                500007: "later", 500009: "t_eff NULL", 500100: "itself"}
    assert not expnums & set(excluded)
    pairs = set(zip(m.column("expnum"), m.column("ccdnum")))
    assert not pairs & set(BLACKLIST)
    assert (500006, 12) in pairs  # neighbours of blacklisted CCDs are kept
    assert all(b == "r" for b in m.column("band"))
    assert all(t >= 0.3 for t in m.column("t_eff"))
    # a template CCD overlaps only a few search CCDs; each pair is one row
    assert len(m) > len(pairs)
    keys = [(r["search_ccdnum"], r["expnum"], r["ccdnum"]) for r in m.records()]
    assert keys == sorted(keys)

    one = run_query(db, "templates", expnum=500100, ccdnum=28, min_t_eff=0.85, tag=FINALCUT)
    assert [(r["search_ccdnum"], r["filename"]) for r in one.records()] == _expected_templates(
        truth, 500100, ccdnum=28, min_t_eff=0.85, tag=FINALCUT)
    assert set(one.column("expnum")) == {500006} and set(one.column("search_ccdnum")) == {28}

    looser = run_query(db, "templates", expnum=500100, min_days_separation=5.0)
    assert 500002 in set(looser.column("expnum"))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_templates_across_ra0_and_other_archive(archives: dict[str, Any], backend: str) -> None:
    truth = archives["truth"]
    m = run_query(archives[backend], "templates", expnum=500201, min_days_separation=5.0)
    assert [(r["search_ccdnum"], r["filename"]) for r in m.records()] == _expected_templates(
        truth, 500201, min_days=5.0)
    assert set(m.column("expnum")) == {500200}
    other = run_query(archives[backend], "templates", expnum=500201, min_days_separation=5.0, archive_name="other")
    assert 0 < len(other) < len(m) and set(other.column("path")) == {"elsewhere"}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_night_exposures(archives: dict[str, Any], backend: str) -> None:
    m = run_query(archives[backend], "night_exposures", nite="20170817", program="gw", bands=["g", "r", "i"])
    assert m.column("expnum") == [500100, 500101, 500102]
    assert m.column("filename") == ["DECam_00500100.fits", "DECam_00500101.fits", "DECam_00500102.fits"]
    assert set(m.column("filetype")) == {"raw"} and set(m.column("compression")) == {".fz"}
    assert run_query(archives[backend], "night_exposures", nite="20170817", program="gw",
                     bands="i").column("expnum") == [500101]
    assert run_query(archives[backend], "night_exposures", nite="20170817", program="survey",
                     bands=["r"]).column("expnum") == [500103]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_coadd_files_and_tile_geometry(archives: dict[str, Any], backend: str) -> None:
    db = archives[backend]
    m = run_query(db, "coadd_files", tilename="DES0100-4500", band="r", tag=COADD_TAG)
    assert m.column("filename") == ["DES0100-4500_r4000p01_r.fits", "DES0100-4500_r4000p01_r_cat.fits"]
    assert m.column("filetype") == ["coadd", "coadd_cat"]
    assert m.column("compression") == [".fz", ""]
    assert set(m.column("pfw_attempt_id")) == {2000}
    assert len(run_query(db, "coadd_files", tilename="DES0100-4500", band="r", tag="NO_SUCH_TAG")) == 0

    geom = db.tile_geometry("DES0000-4500")
    truth = archives["truth"]["tiles"]["DES0000-4500"]
    assert geom["tilename"] == "DES0000-4500" and geom["crossra0"] == "Y"
    assert geom["racmin"] == truth["racmin"] and geom["deccmax"] == truth["deccmax"]
    with pytest.raises(InputError, match=r"tile 'DES9999-9999' is not in COADDTILE_GEOM"):
        db.tile_geometry("DES9999-9999")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_files_by_name_2500_names(archives: dict[str, Any], backend: str) -> None:
    truth = archives["truth"]
    names = sorted(f["filename"] for f in truth["files"])[:2490] + [f"missing_{i}.fits" for i in range(10)]
    assert len(names) == 2500
    m = run_query(archives[backend], "files_by_name", names=names)
    assert m.column("filename") == sorted(names[:2490])
    files = _file_index(truth)
    for rec in m.records():
        assert rec["md5sum"] == files[rec["filename"]]["md5sum"]


def test_files_by_name_many_statements(archives: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond NAMES_PER_STATEMENT names the list is split into statements and merged in order."""
    from skyops.archive import queries

    monkeypatch.setattr(queries, "NAMES_PER_STATEMENT", 700)
    names = sorted(f["filename"] for f in archives["truth"]["files"])[:2500]
    for backend in ("sqlite", "postgresql"):
        m = run_query(archives[backend], "files_by_name", names=list(reversed(names)))
        assert m.column("filename") == names


def test_run_query_accepts_engine_and_connection(archives: dict[str, Any]) -> None:
    db = archives["sqlite"]
    ref = run_query(db, "coadd_files", tilename="DES0100-4500", band="g", tag=COADD_TAG)
    assert run_query(db.engine, "coadd_files", tilename="DES0100-4500", band="g", tag=COADD_TAG).rows == ref.rows
    with db.engine.connect() as conn:
        assert run_query(conn, "coadd_files", tilename="DES0100-4500", band="g", tag=COADD_TAG).rows == ref.rows


def test_manifest_round_trip(archives: dict[str, Any], tmp_path: Path) -> None:
    m = run_query(archives["postgresql"], "se_sources", tilename="DES0100-4500", band="r", tag=FINALCUT)
    back = Manifest.read(m.write(tmp_path / "se.json"))
    assert back.rows == m.rows and back.query == "se_sources" and back.params["tag"] == FINALCUT


def test_max_ccd_extent_covers_the_images(archives: dict[str, Any]) -> None:
    """The index bound on deccmin never drops an image: CCDs are smaller than the bound."""
    assert max(i["deccmax"] - i["deccmin"] for i in archives["truth"]["images"]) < MAX_CCD_EXTENT_DEG


# ---------------------------------------------------------------------------------------------
# loading helpers
# ---------------------------------------------------------------------------------------------

def test_loading_helpers(db_url: str) -> None:
    db = ArchiveDB(db_url)
    db.create_schema()
    db.register_archive("desar2home", root="/a")
    db.register_archive("desar2home", root="/ignored")  # idempotent
    # explicit ids move the identity sequence past them
    db.insert_rows("pfw_attempt", [{"id": 41, "reqnum": 1, "unitname": "D1", "attnum": 1}])
    with db.begin() as conn:
        new_id = conn.execute(db.tables.pfw_attempt.insert().values(reqnum=1, unitname="D2", attnum=1)
                              .returning(db.tables.pfw_attempt.c.id)).scalar_one()
    assert new_id == 42
    db.insert_rows("desfile", [{"id": 7, "filename": "x.fits", "filetype": "raw"}])
    ids = db.register_files([
        {"filename": "a.fits", "path": "/p/a/", "filetype": "red_immask", "compression": ".fz"},
        {"filename": "b.fits", "path": "p/b", "filetype": "red_bkg", "compression": ""},
    ])
    assert ids == [8, 9]
    assert db.register_file("c.fits", "p/c", "psfex_model", md5sum="0" * 32, filesize=3) == 10
    m = db.query("files_by_name", names=["a.fits", "b.fits", "c.fits"])
    assert [(r["filename"], r["path"], r["compression"]) for r in m.records()] == [
        ("a.fits", "p/a", ".fz"), ("b.fits", "p/b", ""), ("c.fits", "p/c", "")]
    with pytest.raises(InputError, match=r"insert into exposure: unknown column\(s\) colour; exposure has: expnum"):
        db.insert_rows("exposure", [{"expnum": 1, "colour": "red"}])
    # rows may leave columns out: they get their defaults (zeropoint.flag: 0)
    db.insert_rows("zeropoint", [{"imagename": "a.fits", "source": "FGCM", "version": "v1", "flag": 4},
                                 {"imagename": "b.fits", "source": "FGCM", "version": "v1"}])
    with db.connect() as conn:
        zp = db.tables.zeropoint
        assert conn.execute(sa.select(zp.c.flag).order_by(zp.c.imagename)).scalars().all() == [4, 0]
    with pytest.raises(InputError, match=r"archive table 'exposures' does not exist; expected one of: blacklist"):
        db.insert_rows("exposures", [{"expnum": 1}])
    with pytest.raises(InputError, match=r"register_files: file 0 \('d.fits'\) lacks path"):
        db.register_files([{"filename": "d.fits", "filetype": "raw"}])
    with pytest.raises(ArchiveError, match=r"archive database .*(UNIQUE|unique|duplicate)"):
        db.insert_rows("blacklist", [{"expnum": 1, "ccdnum": 2}, {"expnum": 1, "ccdnum": 2}])
    db.dispose()


def test_missing_tables_say_what_to_do(tmp_path: Path) -> None:
    db = ArchiveDB(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with pytest.raises(ArchiveError, match=r"no such table: .*run skyops archive init"):
        db.query("tile_geometry", tilename="DES0100-4500")
