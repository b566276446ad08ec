"""skyops.sim DES tiles: geometry, and the finalcut products (real SExtractor and PSFEx) vs truth.

One small tile survey (two tiles, one of them across RA 0; g and i; one epoch; 0.03 deg
tiles) is built once for the module; every test reads the files it wrote and compares them
with the truth tables written beside them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import fitsio
import galsim
import galsim.des
import numpy as np
import pytest

from skyops.archive.schema import coaddtile_geom
from skyops.fileio import md5sum
from skyops.sim import layout
from skyops.sim.presets import PRESETS
from skyops.sim.tileproducts import psfex_model, red_bkg, red_segmap
from skyops.sim.tiles import (
    DES_TILE_NAXIS,
    DES_TILE_SIZE_DEG,
    Tile,
    footprints_overlap,
    tile_center,
    tile_name,
)
from skyops.sim.tilesurvey import TileSurvey

SEED = 17
PLAN = dataclasses.replace(PRESETS["demo"].tiles, bands=("g", "i"), epochs=("20131020",), tile_size_deg=0.03,
                           bkg_residual=0.03)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sim_tiles")
    ts = TileSurvey("demo", SEED, tiles=PLAN)
    return ts, root, ts.build(root)


def _read(root: Path, af: layout.ArchiveFile, ext: int | str = 0) -> np.ndarray:
    return fitsio.read(str(root / af.relpath), ext=ext)


def _ccd_rows(root: Path) -> np.ndarray:
    return fitsio.read(str(root / layout.TRUTH_DIR / "tiles" / "tiles_ccds.fits"), ext=1)


# ------------------------------------------------------------------------------ geometry
def test_tile_names_encode_their_centres():
    assert tile_center("DES0239+0216") == pytest.approx((39.75, 2.0 + 16 / 60.0))
    assert tile_center("DES2359-6331") == pytest.approx((359.75, -(63 + 31 / 60.0)))
    assert tile_name(*tile_center("DES0239+0216")) == "DES0239+0216"
    assert tile_name(*tile_center("DES2359-6331")) == "DES2359-6331"
    assert round(DES_TILE_SIZE_DEG * 3600 / 0.263) == DES_TILE_NAXIS == 10000
    assert Tile.from_name("DES0239+0216", 1, DES_TILE_SIZE_DEG).naxis == 10000
    with pytest.raises(Exception, match="not a DES tile name"):
        tile_center("DES239+0216")


def test_tile_geometry_rows_follow_desdm_conventions():
    t = Tile.from_name("DES0239+0216", 7, 0.05)
    row = t.geom_row()
    assert set(row) == {c.name for c in coaddtile_geom.columns}
    assert row["naxis1"] == row["naxis2"] == 684 and row["crossra0"] == "N" and row["racmin"] < row["racmax"]
    assert row["cd1_1"] < 0 < row["cd2_2"] and row["crpix1"] == 342.5
    x, y = t.sky_to_pixel(np.array([t.ra]), np.array([t.dec]))
    assert x[0] == pytest.approx(342.5) and y[0] == pytest.approx(342.5)
    ra, dec = t.pixel_to_sky(np.array([1.0]), np.array([1.0]))  # pixel (1, 1) is South-East of the centre
    assert ra[0] > t.ra and dec[0] < t.dec
    assert row["racmin"] < row["uramin"] < row["uramax"] < row["racmax"]
    wrap = Tile.from_name("DES0000+0209", 8, 0.05).geom_row()
    assert wrap["crossra0"] == "Y" and wrap["racmin"] > 359.9 and wrap["racmax"] < 0.1
    assert wrap["uramin"] > wrap["uramax"]


def test_footprint_overlap_handles_ra_zero():
    def box(r0, r1, d0=0.0, d1=1.0):
        return {"racmin": r0, "racmax": r1, "deccmin": d0, "deccmax": d1, "crossra0": "Y" if r0 > r1 else "N"}

    assert footprints_overlap(box(10, 11), box(10.5, 12))
    assert not footprints_overlap(box(10, 11), box(11.5, 12))
    assert not footprints_overlap(box(10, 11), box(10, 11, 2, 3))
    assert footprints_overlap(box(359.9, 0.1), box(0.05, 0.2))
    assert footprints_overlap(box(359.8, 359.95), box(359.9, 0.1))
    assert not footprints_overlap(box(359.9, 0.1), box(0.2, 0.3))
    assert footprints_overlap(box(359.9, 0.1), box(359.95, 0.05))


# ------------------------------------------------------------------------------ the build
def test_every_image_has_its_three_auxiliary_files_in_desdm_layout(built):
    ts, root, res = built
    images = [wf for wf in res.files if wf.file.filetype == "red_immask"]
    assert len(images) == len(res.ccds) > 8  # 2 exposures of ~6 demo-tile CCDs (256x512) over a 0.03 deg tile
    assert {wf.meta["expnum"] for wf in images} == set(ts.survey.exposures)
    for wf in images:
        spec = ts.survey.exposure(wf.meta["expnum"])
        run = f"OPS/finalcut/Y3A1/{spec.nite}-r{spec.reqnum}/D{spec.expnum:08d}/p01"
        assert wf.file.path == f"{run}/red/immask"
        for af in (red_bkg(spec, wf.meta["ccdnum"]), red_segmap(spec, wf.meta["ccdnum"]),
                   psfex_model(spec, wf.meta["ccdnum"])):
            assert (root / af.relpath).is_file(), af.relpath
    rec = {wf.file.relpath: wf for wf in res.files}
    for rel, wf in list(rec.items())[:50]:
        assert md5sum(root / rel) == wf.md5sum and (root / rel).stat().st_size == wf.filesize
    # both tiles, both bands; the RA-0 tile gets CCDs on both sides of RA 0
    assert set(res.ccds["tilename"]) == {b"DES0239+0216", b"DES0000+0209"} and set(res.ccds["band"]) == {b"g", b"i"}
    ras = []
    for wf in images:
        if ts.tile_of[wf.meta["expnum"]].name == "DES0000+0209":
            ras.append(wf.meta["ra_cent"])
    assert min(ras) < 0.05 and max(ras) > 359.95


def test_same_seed_gives_the_same_bytes(built, tmp_path):
    ts, root, res = built
    expnum = min(ts.survey.exposures)
    again = TileSurvey("demo", SEED, tiles=PLAN).make_exposure(expnum, tmp_path)
    first = {wf.file.relpath: wf.md5sum for wf in res.files if wf.meta.get("expnum") == expnum}
    second = {wf.file.relpath: wf.md5sum for wf in again.result.files}
    assert first and first == {k: v for k, v in second.items() if k in first}
    assert {wf.file.filetype for wf in again.result.files} >= {"red_immask", "red_bkg", "red_segmap", "psfex_model"}
    for wf in again.result.files:
        if wf.file.relpath.endswith((".fits", ".psf")) and "SIM/" not in wf.file.relpath:
            with fitsio.FITS(str(tmp_path / wf.file.relpath)) as f:
                assert all("DATE" not in h.read_header() for h in f)


def test_psfex_models_are_valid_and_match_the_truth_psf(built):
    ts, root, res = built
    rows = _ccd_rows(root)
    good = rows[rows["psfex_accepted"] >= 5]
    assert len(good) >= 0.8 * len(rows)
    ratios, model_ratios = [], []
    for r in good:
        spec = ts.survey.exposure(int(r["expnum"]))
        path = root / psfex_model(spec, int(r["ccdnum"])).relpath
        with fitsio.FITS(str(path)) as f:
            h = f["PSF_DATA"].read_header()
            mask = f["PSF_DATA"].read()["PSF_MASK"][0]
        assert h["POLNAXIS"] == 2 and h["POLNAME1"] == "X_IMAGE" and h["PSFAXIS3"] == 3 and mask.shape == (3, 25, 25)
        # PSFEx's PSF_FWHM is 2 x the median FLUX_RADIUS of its stars: 2 x the half-light radius
        # of the truth profile (Moffat beta 3.5 convolved with the pixel), 1.21 x its FWHM
        truth = galsim.Convolve(galsim.Moffat(beta=3.5, fwhm=float(r["psf_fwhm_pix"])), galsim.Pixel(1.0))
        truth_img = truth.drawImage(nx=201, ny=201, scale=0.2, method="no_pixel")
        ratios.append(h["PSF_FWHM"] / (2.0 * truth_img.calculateHLR()))
        if len(model_ratios) < 6:  # the model itself, read by GalSim as Balrog-GalSim reads it
            psf = galsim.des.DES_PSFEx(str(path))
            img = psf.getPSF(galsim.PositionD(64.0, 64.0)).drawImage(nx=41, ny=41, scale=1.0, method="no_pixel")
            model_ratios.append(img.calculateFWHM() / truth_img.calculateFWHM())
    ratios = np.array(ratios)
    assert abs(np.median(ratios) - 1.0) < 0.05
    assert np.mean(np.abs(ratios - 1.0) < 0.10) >= 0.9, np.sort(ratios)
    assert np.all(np.abs(np.array(model_ratios) - 1.0) < 0.10), model_ratios


def test_background_maps_recover_the_residual_background(built):
    ts, root, res = built
    rows = _ccd_rows(root)
    assert np.max(np.abs(rows["bkg_resid_e"]) / rows["sky_sigma"]) > 0.5  # large enough for the test to tell
    offsets = []
    for r in rows:
        spec = ts.survey.exposure(int(r["expnum"]))
        c = int(r["ccdnum"])
        bkg = _read(root, red_bkg(spec, c))
        sci = _read(root, layout.red_immask(spec, c), "SCI")
        seg = _read(root, red_segmap(spec, c))
        ny, nx = bkg.shape
        yy, xx = np.mgrid[1:ny + 1, 1:nx + 1]
        plane = r["bkg_resid_e"] + r["bkg_resid_dedx"] * (xx - (nx + 1) / 2) + r["bkg_resid_dedy"] * (yy - (ny + 1) / 2)
        sig = float(r["sky_sigma"])
        # the map follows the truth plane; it sits a little above it (~0.05 sigma) because the
        # wings of sources and undetected faint ones add light to the "sky" pixels too
        offsets.append(np.median(bkg - plane) / sig)
        assert abs(offsets[-1]) < 0.15, (spec.expnum, c)
        sky = (seg == 0) & (_read(root, layout.red_immask(spec, c), "WGT") > 0)
        assert abs(np.median((sci - bkg)[sky])) < 0.05 * sig  # nothing left once red_bkg is subtracted
    assert abs(np.median(offsets)) < 0.1


def test_segmentation_maps_cover_the_bright_objects(built):
    ts, root, res = built
    hit, total = 0, 0
    for expnum in ts.survey.exposures:
        spec = ts.survey.exposure(expnum)
        objs = fitsio.read(str(root / layout.TRUTH_DIR / spec.unitname / f"{spec.unitname}_objects.fits"), ext=1)
        for c in np.unique(objs["ccdnum"]):
            seg = _read(root, red_segmap(spec, int(c)))
            ny, nx = seg.shape
            o = objs[(objs["ccdnum"] == c) & (objs["mag"] < 21.0) & (objs["x_image"] > 3) & (objs["x_image"] < nx - 3)
                     & (objs["y_image"] > 3) & (objs["y_image"] < ny - 3) & ~objs["saturated"]]
            v = seg[np.round(o["y_image"]).astype(int) - 1, np.round(o["x_image"]).astype(int) - 1]
            hit += int((v > 0).sum())
            total += len(o)
    assert total > 50 and hit >= 0.98 * total


def test_tile_truth_lists_the_objects_on_each_tile(built):
    ts, root, res = built
    for t in ts.tiles:
        objs = fitsio.read(str(root / layout.TRUTH_DIR / "tiles" / t.name / f"{t.name}_objects.fits"), ext=1)
        assert len(objs) > 50 and set(objs["kind"]) == {"star", "galaxy"}
        assert np.all((objs["x_tile"] >= 0.5) & (objs["x_tile"] < t.naxis + 0.5))
        assert np.all((objs["y_tile"] >= 0.5) & (objs["y_tile"] < t.naxis + 0.5))
        assert 0.5 < objs["in_unique"].mean() < 1.0
        stars = objs[objs["kind"] == "star"]
        assert np.all(stars["morphology"] == -1) and np.all(np.isfinite(stars["mag_g"]))
    geo = fitsio.read(str(root / layout.TRUTH_DIR / "tiles" / "tiles_geometry.fits"), ext=1)
    assert list(geo["tilename"]) == [t.name for t in ts.tiles]


def test_a_single_ccd_batch_gets_its_three_files(built, tmp_path):
    from skyops.sim.tileproducts import AuxBatch

    ts, root, res = built
    expnum = max(ts.survey.exposures)
    spec = ts.survey.exposure(expnum)
    prod = ts.survey.render_ccd(expnum, ts.candidate_ccds(expnum)[0])
    batch = AuxBatch(spec)
    batch.add(prod, "x_immasked.fits")
    files, stats = batch.run(tmp_path)
    assert sorted(wf.file.filetype for wf in files) == ["psfex_model", "red_bkg", "red_segmap"]
    assert stats[prod.ccdnum].n_detected > 0
    seg = fitsio.read(str(tmp_path / files[1].file.relpath))
    assert seg.shape == prod.sci.shape and seg.max() == stats[prod.ccdnum].n_detected
