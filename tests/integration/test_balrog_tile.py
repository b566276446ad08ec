"""The Balrog data path on a demo tile: prep, coadd, MEDS, injection, realization coadd, matching.

One demo tile (DES0239+0216, g r i z, two epochs: ~15 single-epoch 256x512 CCDs per band, with
the real SExtractor/PSFEx products) is built into a SQLite archive once for the module; the steps
run through :func:`run_step` (validation, atomic outputs, result.json) with the real SWarp,
SExtractor and PSFEx. Realization 0 injects noiseless objects (``noise: none``) on a 20 arcsec grid
with magnitudes flat in 19-24, so the injected light can be measured exactly in the images and
enough objects are brighter than the depth for a completeness figure (~45 at depth - 1).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import fitsio
import galsim
import galsim.des
import numpy as np
import pytest
from astropy.wcs import WCS

from skyops.campaigns.balrog.layout import TileLayout
from skyops.campaigns.balrog.prep import read_srclist
from skyops.config import ArchiveConfig, DatabasesConfig, PlatformConfig
from skyops.imaging.astromatic import read_ldac
from skyops.sim import create_archive
from skyops.sim.presets import PRESETS
from skyops.steps.runner import StepResult, run_step

TILE, MEDSCONF, SEED = "DES0239+0216", "y3a1-v02", 42
PLAN = dataclasses.replace(PRESETS["demo"].tiles, tilenames=(TILE,))
INJECTION = """
description: test injection (flat magnitudes, noiseless)
seed: 7
grid: {spacing: 20.0, edge_buffer: 8.0}
deepfield: {seed: 5, n_objects: 2000, mag_range: [19.0, 24.0], count_slope: 0.0}
stars: {fraction: 0.1, mag_range: [19.0, 24.0]}
noise: none
"""


@dataclasses.dataclass
class Tile:
    root: Path
    meds_dir: Path
    results: dict[str, StepResult]

    @property
    def base(self) -> TileLayout:
        return TileLayout(self.meds_dir, MEDSCONF, TILE)

    @property
    def real(self) -> TileLayout:
        return self.base.for_realization(0)


@pytest.fixture(scope="module")
def tile(tmp_path_factory: pytest.TempPathFactory) -> Tile:
    root = tmp_path_factory.mktemp("balrog")
    archive, db = root / "archive", f"sqlite:///{root / 'desdm.sqlite'}"
    cfg = PlatformConfig(databases=DatabasesConfig(archive=db), archive=ArchiveConfig(root=archive.as_uri()))
    create_archive("demo", SEED, cfg, parts=("tiles",), tiles=PLAN)
    gs = root / "injection.yaml"
    gs.write_text(INJECTION)
    meds_dir = root / "meds"
    common = {"tile": TILE, "medsconf": MEDSCONF, "meds_dir": str(meds_dir)}
    runs = [
        ("prep", "balrog.prep", {"archive_url": db, "archive_root": archive.as_uri(), "cache": False}),
        ("coadd", "balrog.coadd", {}),
        ("meds", "balrog.meds", {}),
        ("inject", "balrog.inject", {"realization": 0, "galsim_config": str(gs)}),
        ("coadd_r0", "balrog.coadd", {"realization": 0}),
        ("match", "balrog.match", {"realization": 0}),
    ]
    results: dict[str, StepResult] = {}
    for key, name, extra in runs:
        results[key] = run_step(name, {**common, **extra}, root / "work" / key)
        if not results[key].ok:
            break
    return Tile(root, meds_dir, results)


def test_every_step_succeeds_and_records_its_outputs(tile: Tile):
    for key, r in tile.results.items():
        assert r.ok, f"{key}: {r.error}"
    assert len(tile.results) == 6
    prep = tile.results["prep"]
    assert all(prep.metrics[f"n_images_{b}"] >= 10 for b in "griz")
    assert {Path(p) for p in tile.results["meds"].output_paths("meds")} == {tile.base.meds(b) for b in "griz"}
    # the original directory layout: $MEDS_DIR/<medsconf>/<tile>/ and balrog_images/<r>/<medsconf>/<tile>/
    assert tile.base.tile_dir == tile.meds_dir / MEDSCONF / TILE
    assert tile.real.tile_dir == tile.meds_dir / MEDSCONF / "balrog_images" / "0" / MEDSCONF / TILE
    injected = tile.results["inject"].output_paths("balrog_image")
    assert injected and all(Path(p).is_relative_to(tile.real.tile_dir / "sources-g") or
                            Path(p).is_relative_to(tile.real.tile_dir) for p in injected)
    assert len(injected) == sum(prep.metrics[f"n_images_{b}"] for b in "griz")


# ------------------------------------------------------------------------------------------- MEDS
def _expected_planes(info: np.void) -> dict[str, np.ndarray]:
    img = fitsio.read(info["image_path"], ext=int(info["image_ext"])).astype(np.float32)
    if info["bkg_path"]:
        img = img - fitsio.read(info["bkg_path"], ext=0).astype(np.float32)
    img = img * np.float32(info["scale"])
    wgt = fitsio.read(info["weight_path"], ext=int(info["weight_ext"])).astype(np.float32) / np.float32(
        info["scale"] ** 2)
    return {"image": img, "weight": wgt, "seg": fitsio.read(info["seg_path"], ext=int(info["seg_ext"])),
            "bmask": fitsio.read(info["bmask_path"], ext=int(info["bmask_ext"]))}


def test_meds_cutouts_are_the_source_pixels_at_the_recorded_positions(tile: Tile):
    path = tile.base.meds("i")
    with fitsio.FITS(str(path)) as f:
        od, info = f["object_data"].read(), f["image_info"].read()
        assert {"object_data", "image_info", "metadata", "image_cutouts", "weight_cutouts", "seg_cutouts",
                "bmask_cutouts", "psf_cutouts"} <= {h.get_extname() for h in f}
        inside = (od["orig_start_row"] >= 0) & (od["orig_start_col"] >= 0)
        picks = [i for i in np.flatnonzero((od["ncutout"] >= 3) & inside.all(axis=1))[:12]]
        assert len(picks) >= 8
        planes = {}
        for i in picks:
            box = int(od["box_size"][i])
            for j in range(od["ncutout"][i]):
                fid = int(od["file_id"][i, j])
                planes.setdefault(fid, _expected_planes(info[fid]))
                r0, c0 = int(od["orig_start_row"][i, j]), int(od["orig_start_col"][i, j])
                s = int(od["start_row"][i, j])
                for kind, plane in planes[fid].items():
                    want = plane[r0:r0 + box, c0:c0 + box]
                    if want.shape != (box, box):
                        continue  # partly off the image: checked separately below
                    got = f[f"{kind}_cutouts"][s:s + box * box].reshape(box, box)
                    np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=f"{kind} obj {i} cut {j}")
                # the recorded position is the object's (ra, dec) through that image's WCS
                w = WCS(fitsio.read_header(info["image_path"][fid], ext=int(info["image_ext"][fid])))
                x, y = w.all_world2pix(od["ra"][i], od["dec"][i], 1)
                assert od["orig_row"][i, j] == pytest.approx(float(y) - 1, abs=1e-6)
                assert od["orig_col"][i, j] == pytest.approx(float(x) - 1, abs=1e-6)
                assert od["cutout_row"][i, j] == pytest.approx(od["orig_row"][i, j] - r0, abs=1e-9)
                assert abs(od["cutout_row"][i, j] - box / 2) <= 0.5
                # Jacobian: |det| is the pixel area (0.263"^2); the coadd has East to the left
                det = od["dudrow"][i, j] * od["dvdcol"][i, j] - od["dudcol"][i, j] * od["dvdrow"][i, j]
                assert abs(det) == pytest.approx(0.263 ** 2, rel=1e-3)
            assert od["file_id"][i, 0] == 0 and od["dudcol"][i, 0] == pytest.approx(-0.263, rel=1e-3)


def test_meds_object_data_round_trips(tile: Tile):
    cat = np.sort(read_ldac(tile.base.catalog("r")), order="NUMBER")
    with fitsio.FITS(str(tile.base.meds("r"))) as f:
        od, info, meta = f["object_data"].read(), f["image_info"].read(), f["metadata"].read()
        npix, npsf = f["image_cutouts"].get_dims()[0], f["psf_cutouts"].get_dims()[0]
        psf0 = f["psf_cutouts"][0:int(od["psf_box_size"][0, 0]) ** 2]
    np.testing.assert_array_equal(od["number"], cat["NUMBER"])
    np.testing.assert_array_equal(od["id"], cat["NUMBER"])
    np.testing.assert_array_equal(od["ra"], cat["ALPHAWIN_J2000"])
    assert set(np.unique(od["box_size"])) <= {32, 48, 64, 96, 128, 192, 256}
    used = od["file_id"] >= 0
    np.testing.assert_array_equal(used.sum(axis=1), od["ncutout"])
    assert (od["file_id"][:, 0] == 0).all() and (od["ncutout"] >= 1).all()
    # cutouts tile the extensions exactly, in object order, without gaps or overlaps
    sizes = np.where(used, od["box_size"][:, None].astype(np.int64) ** 2, 0)
    starts = od["start_row"][used]
    assert starts[0] == 0 and (np.diff(starts) == sizes[used][:-1]).all() and starts[-1] + sizes[used][-1] == npix
    assert od["psf_start_row"][used][-1] + od["psf_box_size"][used][-1] ** 2 == npsf
    assert info["image_path"][0] == str(tile.base.coadd("r")) and info["scale"][0] == 1.0
    se = read_srclist(tile.base.srclist("r"))
    np.testing.assert_allclose(info["magzp"][1:], [s.magzp for s in se], rtol=1e-6)
    np.testing.assert_allclose(info["scale"][1:], [10 ** (0.4 * (30 - s.magzp)) for s in se], rtol=1e-12)
    assert meta["magzp_ref"][0] == 30.0 and meta["medsconf"][0] == MEDSCONF and meta["band"][0] == "r"
    assert psf0.sum() == pytest.approx(1.0, rel=1e-5)
    assert ((0.7 < info["psf_fwhm"]) & (info["psf_fwhm"] < 2.0)).all()  # arcsec
    np.testing.assert_array_equal(od["psf_cutout_row"], od["psf_row"])  # the names medsreader reads


# -------------------------------------------------------------------------------------- injection
def _draws(tile: Tile) -> tuple[np.ndarray, np.ndarray, dict]:
    objs = fitsio.read(str(tile.real.truth()), ext="OBJECTS")
    ep = fitsio.read(str(tile.real.truth()), ext="EPOCHS")
    images = {(i.band, i.image_id): i for b in "griz" for i in read_srclist(tile.base.srclist(b))}
    return objs, ep, images


def _alone(ep: np.ndarray) -> np.ndarray:
    """Draws whose stamp lies wholly on the image and overlaps no other object's stamp there.

    Only for those is the image difference (injected - original) over the stamp one object's light.
    """
    out = ep["complete"].copy()
    for k, r in enumerate(ep):
        o = ep[(ep["band"] == r["band"]) & (ep["image_id"] == r["image_id"]) & (ep["id"] != r["id"])]
        out[k] &= not ((o["stamp_xmin"] <= r["stamp_xmax"]) & (o["stamp_xmax"] >= r["stamp_xmin"])
                       & (o["stamp_ymin"] <= r["stamp_ymax"]) & (o["stamp_ymax"] >= r["stamp_ymin"])).any()
    return out


def test_injected_flux_matches_truth_magnitude_through_each_zeropoint(tile: Tile):
    objs, ep, images = _draws(tile)
    mag = {(int(o["id"]), b): float(o[f"mag_{b}"]) for o in objs for b in "griz"}
    np.testing.assert_allclose(ep["flux_drawn"][ep["complete"]], ep["flux_stamp"][ep["complete"]], rtol=1e-12)
    full = ep[_alone(ep)]
    assert len(full) >= 40 and len({(r["band"], r["image_id"]) for r in full}) >= 20
    assert set(full["band"]) == set("griz")
    rel = []
    for r in full:
        img = images[(r["band"], int(r["image_id"]))]
        expect = 10 ** (-0.4 * (mag[(int(r["id"]), r["band"])] - img.magzp))
        before = fitsio.read(img.image_path, ext=0).astype(np.float64)
        after = fitsio.read(str(tile.real.source_file(img.band, img.relpath)), ext=0).astype(np.float64)
        sl = np.s_[r["stamp_ymin"] - 1:r["stamp_ymax"], r["stamp_xmin"] - 1:r["stamp_xmax"]]
        rel.append((after - before)[sl].sum() / expect - 1.0)
        assert r["flux_expected"] == pytest.approx(expect, rel=1e-9)
    assert np.max(np.abs(rel)) < 0.005, f"flux errors up to {np.max(np.abs(rel)):.4f}"


def test_injected_objects_land_at_their_positions_through_each_wcs(tile: Tile):
    objs, ep, images = _draws(tile)
    where = {int(o["id"]): (o["ra"], o["dec"]) for o in objs}
    full = ep[_alone(ep)]
    worst_wcs = worst_centroid = 0.0
    for r in full:
        img = images[(r["band"], int(r["image_id"]))]
        w = WCS(fitsio.read_header(img.image_path, ext=0))
        x, y = w.all_world2pix(*where[int(r["id"])], 1)
        worst_wcs = max(worst_wcs, abs(float(x) - r["x"]), abs(float(y) - r["y"]))
        # the injected light's centroid is the object position plus the PSFEx model's own centroid
        before = fitsio.read(img.image_path, ext=0).astype(np.float64)
        after = fitsio.read(str(tile.real.source_file(img.band, img.relpath)), ext=0).astype(np.float64)
        sl = np.s_[r["stamp_ymin"] - 1:r["stamp_ymax"], r["stamp_xmin"] - 1:r["stamp_xmax"]]
        d = (after - before)[sl]
        yy, xx = np.mgrid[r["stamp_ymin"]:r["stamp_ymax"] + 1, r["stamp_xmin"]:r["stamp_xmax"] + 1]
        cx, cy = (d * xx).sum() / d.sum(), (d * yy).sum() / d.sum()
        psf = galsim.des.DES_PSFEx(img.psf_path).getPSF(galsim.PositionD(float(x), float(y)))
        p = psf.drawImage(nx=61, ny=61, scale=1.0, method="no_pixel").array
        py, px = np.mgrid[-30:31, -30:31]
        pcx, pcy = (p * px).sum() / p.sum(), (p * py).sum() / p.sum()
        worst_centroid = max(worst_centroid, abs(cx - float(x) - pcx), abs(cy - float(y) - pcy))
    assert worst_wcs < 0.02
    assert worst_centroid < 0.02


# ------------------------------------------------------------------------------------------ match
def test_recovery_completeness_one_magnitude_above_the_depth(tile: Tile):
    summary = json.loads(tile.real.match_summary().read_text())
    depth = summary["depth_5sigma"]["i"]
    assert 21.5 < depth < 24.5  # two 90 s epochs of demo CCDs
    # The requirement: >= 95% of the injections 1 mag brighter than the depth are detected -- all of them,
    # blends with real objects included (a blend whose detection is the real object, or whose position
    # is pulled more than 0.5" off the injection, counts as missed, as in Balrog).
    assert summary["n_bright"] >= 40
    assert summary["completeness_bright"] >= 0.95, summary
    assert summary["n_bright_isolated"] >= 30
    assert summary["completeness_bright_isolated"] >= 0.95, summary
    tab = fitsio.read(str(tile.real.match()))
    bright = tab[tab["covered"] & (tab["mag_i"] <= depth - 1.0)]
    assert len(bright) == summary["n_bright"] and bright["matched"].mean() == summary["completeness_bright"]
    # every miss is accounted for: merged into a real object's detection, blended off, or not detected
    assert sum(summary["bright_misses"].values()) == (~bright["matched"]).sum()
    faint = [c for e, c in zip(summary["completeness_bins"]["edges"], summary["completeness_bins"]["completeness"])
             if e >= depth + 0.5 and c is not None]
    assert faint and max(faint) < 0.5  # and it can fail: objects past the depth are mostly lost
    dens = summary["density"]
    assert dens["excess"] > 0 and 0.6 <= dens["excess_over_matched"] <= 1.2
    for col in ("g-r", "r-i", "i-z"):
        assert abs(summary["colors"][col]["median_offset"]) < 0.1, summary["colors"]
    for name in ("completeness", "flux_bias", "colors", "positions"):
        assert tile.real.plot(name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tab["sep_arcsec"][tab["matched"]] <= 0.5).all()


def test_a_tile_not_in_the_archive_is_refused_naming_the_param(tile: Tile):
    db = f"sqlite:///{tile.root / 'desdm.sqlite'}"
    r = run_step("balrog.prep", {"tile": "DES0101-0101", "meds_dir": str(tile.meds_dir), "archive_url": db,
                                 "archive_root": (tile.root / "archive").as_uri()}, tile.root / "work" / "bad")
    assert r.exit_code == 2 and "param 'tile' (-t)" in r.error["message"]
    assert "COADDTILE_GEOM" in r.error["message"]


def test_the_meds_reader_of_the_measurement_reads_these_files(tile: Tile):
    """skyops' MEDS reader (balrog.measure's input) sees the same pixels, PSFs and geometry."""
    from skyops.campaigns.balrog.medsreader import MEDSReader

    with fitsio.FITS(str(tile.base.meds("z"))) as f:
        od = f["object_data"].read()
        i = int(np.flatnonzero(od["ncutout"] >= 3)[0])
        box, s = int(od["box_size"][i]), int(od["start_row"][i, 1])
        raw = f["image_cutouts"][s:s + box * box].reshape(box, box)
    with MEDSReader(tile.base.meds("z")) as m:
        assert m.size == len(od) and m.magzp_ref == 30.0 and m.has_psf_images
        c = m.cutout(i, 1)
        np.testing.assert_array_equal(c.image, raw)
        assert c.orig_row == od["orig_row"][i, 1] and c.file_id == od["file_id"][i, 1]
        psf, _ = m.psf_image(i, 1)
        assert psf.shape == (33, 33) and psf.sum() == pytest.approx(1.0, rel=1e-5)
