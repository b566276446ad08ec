"""create_archive on real databases (SQLite and PostgreSQL): files in DESDM's layout, rows the
named queries find, md5s that match the files, and a rebuild that replaces rather than duplicates."""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from skyops.archive import ArchiveDB
from skyops.config import ArchiveConfig, DatabasesConfig, PlatformConfig
from skyops.fileio import md5sum
from skyops.sim import create_archive

SMALL = dict(ccd_shape=(32, 64))  # 62 tiny CCDs per exposure: the whole demo survey in seconds


def _config(db_url: str, root: Path) -> PlatformConfig:
    return PlatformConfig(databases=DatabasesConfig(archive=db_url), archive=ArchiveConfig(root=root.as_uri()))


def _count(db: ArchiveDB, table: str) -> int:
    with db.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(getattr(db.tables, table))).scalar_one()


def test_create_archive_registers_what_it_wrote(db_url, tmp_path):
    root = tmp_path / "archive"
    seen: list[tuple[str, int, int]] = []
    summary = create_archive("demo", 4, _config(db_url, root), progress=lambda *a: seen.append(a), **SMALL)
    assert summary.root == root and summary.exposures == [521360, 521361, 668439, 668440, 668441]
    assert summary.files_by_filetype["red_immask"] == 5 * 62
    assert summary.files_by_filetype["raw"] == 3
    assert summary.files_by_filetype["cal_biascor"] == summary.files_by_filetype["cal_bpm"] == 62
    assert summary.rows["image"] == 310 and summary.rows["exposure"] == 5 and summary.rows["blacklist"] == 10
    assert summary.rows["zeropoint"] == 2 * 60  # templates only, good CCDs only
    assert (summary.truth_dir / "transients.csv").is_file() and (root / summary.refcat).is_file()
    assert seen and seen[-1][0] == "register"

    db = ArchiveDB(db_url)
    try:
        raws = db.query("night_exposures", nite="20170817", program="gw", bands=["i"])
        assert raws.column("expnum") == [668439, 668440, 668441]
        for rec in raws.records():
            assert md5sum(root / raws.relpath(rec)) == rec["md5sum"]
            assert rec["t_eff"] > 0
        tmpl = db.query("templates", expnum=668439, ccdnum=28)
        assert len(tmpl) >= 1 and set(tmpl.column("expnum")) <= {521360, 521361}
        for rec in tmpl.records():
            assert (root / tmpl.relpath(rec)).is_file()
            assert rec["ccdnum"] not in (2, 61)
        with db.connect() as c:
            t = db.tables
            tags = {r[0] for r in c.execute(sa.select(t.proctag.c.tag))}
            assert tags == {"Y4N_FINALCUT", "Y3A1_FINALCUT"}
            bad = {tuple(r) for r in c.execute(sa.select(t.blacklist.c.expnum, t.blacklist.c.ccdnum))}
            assert (668439, 2) in bad and (521360, 61) in bad
            q = sa.select(t.image).where(t.image.c.expnum == 668439, t.image.c.ccdnum == 28)
            img = c.execute(q).mappings().one()
            assert img["filetype"] == "red_immask" and img["naxis1"] == 32 and img["crossra0"] == "N"
            assert img["racmin"] < 197.6 < img["racmax"] + 1 and img["deccmin"] < img["deccmax"]
            zp_exps = {r[0] for r in c.execute(sa.select(t.zeropoint.c.expnum))}
            assert zp_exps == {521360, 521361}
        n_desfile = _count(db, "desfile")
        assert n_desfile == summary.n_files
    finally:
        db.dispose()

    # building again (same seed) replaces rows and rewrites identical files
    again = create_archive("demo", 4, _config(db_url, root), **SMALL)
    assert again.n_files == summary.n_files and again.n_bytes == summary.n_bytes
    db = ArchiveDB(db_url)
    try:
        assert _count(db, "desfile") == n_desfile and _count(db, "image") == 310 and _count(db, "pfw_attempt") == 6
    finally:
        db.dispose()


def test_create_archive_files_only(tmp_path):
    cfg = PlatformConfig(databases=DatabasesConfig(archive=f"sqlite:///{tmp_path / 'unused.sqlite'}"))
    summary = create_archive("demo", 2, cfg, root=tmp_path / "files", register=False, **SMALL)
    assert summary.rows == {} and summary.n_files > 500
    assert not (tmp_path / "unused.sqlite").exists()


def test_command_line_builds_and_lists_presets(tmp_path, capsys):
    from skyops.sim.cli import main

    assert main(["presets"]) == 0
    assert "bench" in capsys.readouterr().out
    rc = main(["--preset", "demo", "--seed", "3", "--root", str(tmp_path / "a"), "--no-register",
               "--ccd-shape", "32x64", "--json"])
    assert rc == 0
    out = capsys.readouterr().out
    assert '"red_immask": 310' in out
    assert (tmp_path / "a" / "DTS/raw/20170817/DECam_00668439.fits").is_file()
    assert main(["--preset", "nope", "--root", str(tmp_path / "b"), "--no-register"]) == 2
    assert "unknown sim preset 'nope'" in capsys.readouterr().err
