"""The optional survey parts (DES tiles, kred field) registered on SQLite and PostgreSQL.

Small plans keep it quick: one epoch of two bands over two 0.025 deg tiles, and a kred field of
two filters and two CCDs. The named queries must see the same archive on both backends, and
building twice must replace rows, not add them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import sqlalchemy as sa

from skyops.archive import ArchiveDB, coaddsrc_rows
from skyops.config import ArchiveConfig, DatabasesConfig, PlatformConfig
from skyops.fileio import md5sum
from skyops.sim import create_archive
from skyops.sim.presets import PRESETS

TILES = dataclasses.replace(PRESETS["demo"].tiles, bands=("g", "i"), epochs=("20141112",), tile_size_deg=0.025)
KRED = dataclasses.replace(PRESETS["demo"].kred, filters=("N662", "N673"), exptimes=(400.0,), ccds=("S4", "N4"),
                           ccd_shape=(64, 128), n_blobs=8)


def _count(db: ArchiveDB, table: str) -> int:
    with db.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(getattr(db.tables, table))).scalar_one()


def test_tiles_and_kred_parts_on_both_backends(db_url: str, tmp_path: Path):
    root = tmp_path / "archive"
    cfg = PlatformConfig(databases=DatabasesConfig(archive=db_url), archive=ArchiveConfig(root=root.as_uri()))
    summary = create_archive("demo", 31, cfg, parts=("tiles", "kred"), tiles=TILES, kred=KRED)
    assert summary.parts == ["tiles", "kred"] and summary.files_by_filetype["kred_mef"] == 4
    db = ArchiveDB(db_url)
    try:
        for tilename in ("DES0239+0216", "DES0000+0209"):
            m = db.query("se_sources", tilename=tilename, band="i", tag="Y3A1_FINALCUT")
            groups = coaddsrc_rows(m)
            assert groups and len(m) == 4 * len(groups)
            assert all(g["bkg_filename"] and g["seg_filename"] and g["psf_filename"] for g in groups)
            for rec in m.records():
                assert md5sum(root / m.relpath(rec)) == rec["md5sum"]
        assert db.tile_geometry("DES0000+0209")["crossra0"] == "Y"
        counts = {t: _count(db, t) for t in ("desfile", "image", "miscfile", "zeropoint", "coaddtile_geom",
                                             "pfw_attempt", "proctag")}
        assert counts["desfile"] == summary.n_files and counts["miscfile"] == 3 * counts["image"]
        again = create_archive("demo", 31, cfg, parts=("tiles", "kred"), tiles=TILES, kred=KRED)
        assert again.n_bytes == summary.n_bytes
        assert {t: _count(db, t) for t in counts} == counts
    finally:
        db.dispose()
