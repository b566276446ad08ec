"""The DES-tile part registered in a real (SQLite) archive: what the se_sources query finds.

``create_archive(parts=("tiles",))`` builds two small tiles (one straddles RA 0) in two bands
and registers them; ``se_sources`` must return, for every tile and band, exactly the
red_immask images whose footprint overlaps the tile, each with its bkg, seg and psf files and
its zeropoint -- checked against an independent overlap test over every IMAGE row.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import sqlalchemy as sa

from skyops.archive import ArchiveDB, coaddsrc_rows
from skyops.config import ArchiveConfig, DatabasesConfig, PlatformConfig
from skyops.errors import SimulationError
from skyops.fileio import md5sum
from skyops.sim import create_archive
from skyops.sim.presets import PRESETS
from skyops.sim.tiles import footprints_overlap

SEED = 23
# small CCDs (and the star density PSFEx needs on them), so that several images straddle RA 0 on a 0.025 deg tile
PLAN = dataclasses.replace(PRESETS["demo"].tiles, bands=("r", "z"), epochs=("20131020",), tile_size_deg=0.025,
                           ccd_shape=(128, 256), star_density=150_000.0, star_mag_range=(16.0, 22.5))
TAG = "Y3A1_FINALCUT"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("sim_tiles_archive")
    url = f"sqlite:///{base / 'desdm.sqlite'}"
    cfg = PlatformConfig(databases=DatabasesConfig(archive=url), archive=ArchiveConfig(root=(base / "root").as_uri()))
    summary = create_archive("demo", SEED, cfg, parts=("tiles",), tiles=PLAN)
    db = ArchiveDB(url)
    yield summary, db, base / "root", cfg
    db.dispose()


def _rows(db: ArchiveDB, table: str, *where) -> list[dict]:
    t = getattr(db.tables, table)
    with db.connect() as c:
        return [dict(r) for r in c.execute(sa.select(t).where(*where)).mappings()]


def test_summary_and_tables(archive):
    summary, db, root, _ = archive
    assert summary.parts == ["tiles"] and summary.tiles == ["DES0239+0216", "DES0000+0209"]
    n_img = summary.files_by_filetype["red_immask"]
    assert n_img > 10 and all(summary.files_by_filetype[k] == n_img for k in ("red_bkg", "red_segmap", "psfex_model"))
    assert summary.rows["image"] == summary.rows["zeropoint"] == n_img and summary.rows["miscfile"] == 3 * n_img
    assert summary.rows["coaddtile_geom"] == 2 and summary.rows["exposure"] == 4
    geo = db.tile_geometry("DES0000+0209")
    assert geo["crossra0"] == "Y" and geo["naxis1"] == 342 and geo["pixelscale"] == 0.263
    tags = {r["tag"] for r in _rows(db, "proctag")}
    assert tags == {TAG}


@pytest.mark.parametrize("tilename", ["DES0239+0216", "DES0000+0209"])
@pytest.mark.parametrize("band", ["r", "z"])
def test_se_sources_returns_exactly_the_overlapping_images(archive, tilename, band):
    summary, db, root, _ = archive
    m = db.query("se_sources", tilename=tilename, band=band, tag=TAG)
    groups = coaddsrc_rows(m)
    tile = db.tile_geometry(tilename)
    images = _rows(db, "image", db.tables.image.c.filetype == "red_immask")
    expected = {r["filename"] for r in images if r["band"] == band and footprints_overlap(r, tile)}
    assert expected and {g["image_filename"] for g in groups} == expected
    assert len(m) == 4 * len(expected)  # image, bkg, seg, psf for every image
    zps = {r["imagename"]: r["mag_zero"] for r in _rows(db, "zeropoint")}
    for g in groups:
        assert g["band"] == band and g["mag_zero"] == pytest.approx(zps[g["image_filename"]])
        assert 28.0 < g["mag_zero"] < 33.0
        for role in ("bkg", "seg", "psf"):
            assert g[f"{role}_filename"] and g[f"{role}_path"]
        assert g["psf_filename"].endswith("_psfexcat.psf") and "/psf" in g["psf_path"]
        assert g["bkg_path"].endswith("/red/bkg") and g["seg_path"].endswith("/red/segmap")
    for rec in m.records():
        assert md5sum(root / m.relpath(rec)) == rec["md5sum"]
    if tilename == "DES0000+0209":  # images on both sides of RA 0
        crossing = {r["filename"]: r for r in images}
        ras = [crossing[f]["ra_cent"] for f in expected]
        assert min(ras) < 0.1 and max(ras) > 359.9


def test_zeropoints_are_the_truth_within_the_scatter(archive):
    summary, db, root, _ = archive
    import fitsio

    truth = fitsio.read(str(root / "SIM/truth/tiles/tiles_ccds.fits"), ext=1)
    by_ccd = {(int(r["expnum"]), int(r["ccdnum"])): float(r["mag_zero"]) for r in truth}
    zps = _rows(db, "zeropoint")
    assert len(zps) == len(truth)
    for z in zps:
        assert z["source"] == "FGCM" and z["version"] == "v1" and z["flag"] == 0
        assert abs(z["mag_zero"] - by_ccd[(z["expnum"], z["ccdnum"])]) < 0.015


def test_rebuilding_replaces_the_rows(archive):
    summary, db, root, cfg = archive
    before = {r["filename"]: r["md5sum"] for r in _rows(db, "desfile")}
    again = create_archive("demo", SEED, cfg, parts=("tiles",), tiles=PLAN)
    assert again.n_files == summary.n_files and again.n_bytes == summary.n_bytes
    assert {r["filename"]: r["md5sum"] for r in _rows(db, "desfile")} == before  # same seed, same bytes
    with db.connect() as c:
        for table, n in (("miscfile", summary.rows["miscfile"]), ("image", summary.rows["image"]),
                         ("coaddtile_geom", 2), ("desfile", summary.n_files)):
            assert c.execute(sa.select(sa.func.count()).select_from(getattr(db.tables, table))).scalar_one() == n


def test_parts_are_checked(tmp_path: Path):
    cfg = PlatformConfig(databases=DatabasesConfig(archive=f"sqlite:///{tmp_path / 'x.sqlite'}"))
    with pytest.raises(SimulationError, match="unknown survey part"):
        create_archive("demo", 1, cfg, root=tmp_path / "r", parts=("coadds",), register=False)
    with pytest.raises(SimulationError, match="defines no tiles part"):
        create_archive("demo", 1, cfg, root=tmp_path / "r", parts="tiles", register=False, tiles=None)
