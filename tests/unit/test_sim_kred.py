"""skyops.sim kred fields: the DECam_MEF tree, its field config, and its truth vs the pixels.

The demo field (12 exposures x 6 CCDs) is built once for the module; the per-exposure
background offsets, the overlaps and the scene are checked against the files.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import fitsio
import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from astropy.wcs import WCS

from skyops.archive import ArchiveDB
from skyops.config import ArchiveConfig, DatabasesConfig, PlatformConfig
from skyops.errors import SimulationError
from skyops.fileio import md5sum
from skyops.sim import create_archive
from skyops.sim.kred import KRED_FILTERS, KredField
from skyops.sim.kredtree import build_field, config_file, mef_file, truth_file
from skyops.sim.presets import PRESETS

SEED = 5
PLAN = PRESETS["demo"].kred
SMALL = dataclasses.replace(PLAN, filters=("N662", "r"), exptimes=(60.0,), ccds=("S4", "N4"), ccd_shape=(64, 128),
                            n_blobs=8)


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sim_kred")
    kf = KredField(PLAN, SEED)
    return kf, root, build_field(kf, root)


def _mef(root: Path, kf: KredField, expnum: int) -> Path:
    return root / mef_file(kf.plan.field, kf.exposure(expnum).filename).relpath


def _truth(root: Path, field: str, name: str) -> np.ndarray:
    return fitsio.read(str(root / truth_file(field, name).relpath), ext=1)


def test_mef_structure_and_headers(field):
    kf, root, res = field
    mefs = sorted((root / "DECam_MEF" / "LMC_c42").glob("*.fits"))
    assert len(mefs) == len(kf.exposures) == 12 and len(kf.ccdnums) == 6
    assert {(e.filter, e.exptime) for e in kf.exposures.values()} == {(f, t) for f in ("N662", "N673", "r")
                                                                      for t in (30.0, 400.0)}
    for e in kf.exposures.values():
        path = _mef(root, kf, e.expnum)
        assert path.name.startswith("c4d_") and path.name.endswith(f"_ooi_{e.filter}_v1.fits")
        with fitsio.FITS(str(path)) as f:
            assert len(f) == 1 + 6
            h0 = f[0].read_header()
            assert h0["EXPNUM"] == e.expnum and h0["EXPTIME"] == e.exptime and h0["FILTER"].startswith(e.filter)
            assert h0["MJD-OBS"] == e.mjd_obs and h0["NEXTEND"] == 6 and h0["PROCTYPE"] == "InstCal"
            assert h0["MAGZERO"] == pytest.approx(kf.zeropoint(e.expnum), abs=1e-4)
            assert "DATE" not in h0
            for hdu in list(f)[1:]:
                h = hdu.read_header()
                assert hdu.get_extname() == h["DETPOS"] and h["CCDNUM"] in kf.ccdnums
                assert h["FILTER"] == h0["FILTER"] and h["EXPTIME"] == e.exptime
                assert hdu.read().dtype == np.float32 and hdu.read().shape == (512, 256)
                w = WCS({k: h[k] for k in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1",
                                           "CD1_2", "CD2_1", "CD2_2")})
                ra, dec = w.all_pix2world([[128.5, 256.5]], 1)[0]
                assert ra == pytest.approx(h["CENRA1"], abs=1e-6) and dec == pytest.approx(h["CENDEC1"], abs=1e-6)
                assert all(f"COR{i}RA1" in h and f"COR{i}DEC1" in h for i in range(1, 5))


def test_background_offsets_in_the_truth_are_in_the_pixels(field):
    kf, root, res = field
    exps = {int(r["expnum"]): r for r in _truth(root, "LMC_c42", "exposures.fits")}
    assert np.ptp([r["offset_counts"] for r in exps.values()]) > 0
    for expnum, e in kf.exposures.items():
        resid, var = [], []
        with fitsio.FITS(str(_mef(root, kf, expnum))) as f:
            for num in kf.ccdnums:
                c = kf.render_ccd(expnum, num)
                img = f[c.detpos].read().astype(np.float64)
                ok = img < f[c.detpos].read_header()["SATURATE"] - 1.0
                resid.append((img - c.scene - c.sky)[ok])
                var.append((c.scene + c.sky)[ok] + c.read_noise**2)
        r, v = np.concatenate(resid), np.concatenate(var)
        err = np.sqrt(v.sum()) / len(r)
        assert exps[expnum]["offset_counts"] == pytest.approx(e.offset)
        assert abs(r.mean() - e.offset) < 5 * err, (expnum, r.mean(), e.offset, err)
        # the median carries Poisson's (< 1/2 count) asymmetry on top of the same noise
        assert abs(np.median(r) - e.offset) < 0.5 + 5 * err


def test_sky_truth_matches_the_pixels_away_from_emission_and_stars(field):
    kf, root, res = field
    ccds = _truth(root, "LMC_c42", "ccds.fits")
    for row in ccds[::7]:
        c = kf.render_ccd(int(row["expnum"]), int(row["ccdnum"]))
        assert row["sky_counts"] == pytest.approx(c.sky_c) and row["sky_sigma"] == pytest.approx(c.sky_sigma, rel=1e-6)
        ny, nx = c.sky.shape
        assert c.sky[ny // 2, nx // 2] == pytest.approx(c.sky_c + row["sky_dcdx"] * 0.5 + row["sky_dcdy"] * 0.5,
                                                        rel=1e-5)


def test_exposures_of_the_same_filter_and_exptime_overlap(field):
    kf, root, res = field
    boxes = defaultdict(list)  # (filter, exptime) -> [(expnum, ccdnum, ra0, ra1, dec0, dec1)]
    for e in kf.exposures.values():
        with fitsio.FITS(str(_mef(root, kf, e.expnum))) as f:
            for hdu in list(f)[1:]:
                h = hdu.read_header()
                ra = [h[f"COR{i}RA1"] for i in range(1, 5)]
                dec = [h[f"COR{i}DEC1"] for i in range(1, 5)]
                boxes[(e.filter, e.exptime)].append((e.expnum, h["CCDNUM"], min(ra), max(ra), min(dec), max(dec)))
    assert len(boxes) == 6
    for key, bs in boxes.items():
        pairs = [(a, b) for i, a in enumerate(bs) for b in bs[i + 1:]
                 if a[0] != b[0] and a[2] < b[3] and b[2] < a[3] and a[4] < b[5] and b[4] < a[5]]
        assert pairs, key
    ovl = _truth(root, "LMC_c42", "overlaps.fits")
    assert len(ovl) >= 6 and np.all(ovl["expnum_a"] != ovl["expnum_b"]) and np.all(ovl["area_deg2"] > 0)
    filt = {e.expnum: (e.filter, e.exptime) for e in kf.exposures.values()}
    assert all(filt[int(a)] == filt[int(b)] for a, b in zip(ovl["expnum_a"], ovl["expnum_b"]))
    for row in ovl[:: max(1, len(ovl) // 8)]:  # the true background (sky plane + offset) at the overlap
        for side in ("a", "b"):
            expnum, num = int(row[f"expnum_{side}"]), int(row[f"ccdnum_{side}"])
            c = kf.render_ccd(expnum, num)
            x, y = c.wcs.sky_to_pixel(row["ra"], row["dec"])
            sky = c.sky[int(round(float(y))) - 1, int(round(float(x))) - 1]
            tol = float(abs(c.sky_dcdx) + abs(c.sky_dcdy) + 1e-6 * sky)  # the nearest pixel, float32
            assert row[f"bkg_{side}"] == pytest.approx(sky + kf.exposure(expnum).offset, abs=tol)
        assert row["bkg_diff"] == pytest.approx(row["bkg_a"] - row["bkg_b"])


def test_field_config_describes_the_tiles(field):
    kf, root, res = field
    doc = yaml.safe_load((root / config_file("LMC_c42").relpath).read_text())
    assert doc["format"] == "skyops-kred-field/1" and doc["field"] == "LMC_c42"
    assert doc["mef_dir"] == "DECam_MEF/LMC_c42"
    assert [t["name"] for t in doc["tiles"]] == ["T01", "T02", "T03", "T04"]
    assert doc["filters"] == ["N662", "N673", "r"] and doc["exptimes"] == [30.0, 400.0]
    for t in doc["tiles"]:
        assert abs(t["dec"] - doc["center"]["dec"]) < t["size_deg"] and t["naxis"] == round(0.03 * 3600 / 0.263)
    assert sorted(doc["mef_files"]) == sorted(p.name for p in (root / doc["mef_dir"]).glob("*.fits"))
    t1, t2, t3 = doc["tiles"][:3]
    assert t1["ra"] < t2["ra"] and t1["dec"] == t2["dec"] < t3["dec"]  # rows of increasing Dec, RA increasing


def test_halpha_is_brighter_than_sii(field):
    kf, root, res = field
    p = kf.plan
    ra = p.ra + np.linspace(-0.03, 0.03, 41)[:, None] / np.cos(np.radians(p.dec))
    dec = p.dec + np.linspace(-0.03, 0.03, 41)[None, :]
    ra, dec = np.broadcast_arrays(ra, dec)
    ha, sii = kf.emission_rate("N662", ra, dec), kf.emission_rate("N673", ra, dec)
    assert ha.mean() > 1.5 * sii.mean() and np.all(ha > sii)
    r = kf.emission_rate("r", ra, dec)
    assert np.all(r > ha)  # r passes both lines and much more continuum
    assert set(KRED_FILTERS) == {"N662", "N673", "r"}


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path):
    a = build_field(KredField(SMALL, 3), tmp_path / "a")
    b = build_field(KredField(SMALL, 3), tmp_path / "b")
    c = build_field(KredField(SMALL, 4), tmp_path / "c")
    ma = {wf.file.relpath: wf.md5sum for wf in a.files}
    assert ma == {wf.file.relpath: wf.md5sum for wf in b.files}
    mc = {wf.file.relpath: wf.md5sum for wf in c.files}
    mefs = [k for k in ma if k.startswith("DECam_MEF")]
    assert len(mefs) == 4 and all(ma[k] != mc.get(k) for k in mefs)
    for k in ma:
        assert md5sum(tmp_path / "a" / k) == ma[k]


def test_registered_in_the_archive(tmp_path):
    url = f"sqlite:///{tmp_path / 'desdm.sqlite'}"
    cfg = PlatformConfig(databases=DatabasesConfig(archive=url), archive=ArchiveConfig(root=(tmp_path / "r").as_uri()))
    s = create_archive("demo", 2, cfg, parts="kred", kred=SMALL)
    assert s.parts == ["kred"] and s.kred_fields == ["LMC_c42"] and s.files_by_filetype["kred_mef"] == 4
    assert s.files_by_filetype["kred_config"] == 1 and s.rows["desfile"] == s.n_files
    db = ArchiveDB(url)
    try:
        m = db.query("files_by_name", names=[wf for wf in _names(tmp_path / "r")])
        assert len(m) == 4 and set(m.column("filetype")) == {"kred_mef"}
        for rec in m.records():
            assert md5sum(tmp_path / "r" / m.relpath(rec)) == rec["md5sum"]
        create_archive("demo", 2, cfg, parts="kred", kred=SMALL)  # again: replaced, not duplicated
        with db.connect() as c:
            assert c.execute(sa.select(sa.func.count()).select_from(db.tables.desfile)).scalar_one() == s.n_files
    finally:
        db.dispose()


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "DECam_MEF" / "LMC_c42").glob("*.fits"))


def test_bad_plans_raise():
    with pytest.raises(SimulationError, match="kred filter 'Ha'"):
        KredField(dataclasses.replace(PLAN, filters=("Ha",)))
    with pytest.raises(SimulationError, match="DETPOS"):
        KredField(dataclasses.replace(PLAN, ccds=("X9",)))
    with pytest.raises(SimulationError, match="not written"):
        KredField(SMALL).render_ccd(SMALL.first_expnum, 1)
