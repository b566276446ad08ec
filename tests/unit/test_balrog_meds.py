"""MEDS helpers: box sizes, cutout placement with padding, and PSFEx stamps against GalSim's DES_PSFEx."""
from __future__ import annotations

from pathlib import Path

import fitsio
import galsim
import galsim.des
import numpy as np
import pytest

from skyops.campaigns.balrog.config import load_medsconf
from skyops.campaigns.balrog.meds import OFF_IMAGE, _flag_off_image, box_sizes, cut, object_dtype, start_pixel
from skyops.imaging.psfex import PSFExModel


def test_box_sizes_follow_desmeds_and_round_up_to_allowed_sizes():
    mc = load_medsconf("y3a1-v02")
    cat = np.zeros(4, [("FLUX_RADIUS", "f4"), ("ELLIPTICITY", "f4"), ("ISOAREA_IMAGE", "i4")])
    cat["FLUX_RADIUS"] = [1.0, 3.0, 3.0, 40.0]
    cat["ELLIPTICITY"] = [0.0, 0.0, 0.5, 0.0]
    cat["ISOAREA_IMAGE"] = [10, 10, 10, 10]
    # 2 * 5 * (2 r / 2.3548) * (1 + e): 8.5 -> 32, 25.5 -> 32, 38.2 -> 48, 340 -> 256 (max)
    assert box_sizes(cat, mc).tolist() == [32, 32, 48, 256]
    cat["ISOAREA_IMAGE"][0] = 3000  # isophotal diameter 61.8 pixels
    assert box_sizes(cat, mc)[0] == 64


def test_cutout_start_and_padding():
    assert start_pixel(np.array([10.0, 10.49, 10.51]), np.array([32, 32, 32])).tolist() == [-6, -6, -5]
    plane = np.arange(100, dtype=np.float32).reshape(10, 10)
    c = cut(plane, -2, 7, 4, 0.0)
    assert c[2:, :3].tolist() == plane[0:2, 7:10].tolist() and (c[:2] == 0).all() and (c[:, 3] == 0).all()
    m = _flag_off_image(cut(np.zeros((10, 10), np.int32) + 4, -2, 7, 4, OFF_IMAGE), (10, 10), -2, 7)
    assert (m[2:, :3] == 4).all() and (m[:2] == OFF_IMAGE).all() and (m[:, 3] == OFF_IMAGE).all()
    assert object_dtype(3)["file_id"].shape == (3,)


def _write_psfex(path: Path, samp: float = 0.9) -> None:
    """A PSFEx file with a degree-1 basis: an elliptical Gaussian that widens and shifts across the CCD."""
    n = 25
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    g0 = np.exp(-0.5 * ((xx * samp / 1.8) ** 2 + (yy * samp / 1.6) ** 2))
    g0 /= g0.sum()
    basis = np.stack([g0, 0.02 * g0 * (xx ** 2 - 4) / 10, 0.03 * np.roll(g0, 1, axis=1) - 0.03 * g0])
    tab = np.zeros(1, [("PSF_MASK", "f4", (3, n, n))])
    tab["PSF_MASK"][0] = basis
    hdr = [{"name": k, "value": v} for k, v in [
        ("LOADED", 20), ("ACCEPTED", 18), ("POLNAXIS", 2), ("POLGRP1", 1), ("POLNAME1", "X_IMAGE"),
        ("POLZERO1", 64.0), ("POLSCAL1", 128.0), ("POLGRP2", 1), ("POLNAME2", "Y_IMAGE"), ("POLZERO2", 128.0),
        ("POLSCAL2", 256.0), ("POLNGRP", 1), ("POLDEG1", 1), ("PSF_FWHM", 3.9), ("PSF_SAMP", samp),
        ("PSFNAXIS", 3), ("PSFAXIS1", n), ("PSFAXIS2", n), ("PSFAXIS3", 3)]]
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(None)
        f.write(tab, extname="PSF_DATA", header=hdr)


def test_psfex_stamps_match_galsim_des_psfex(tmp_path: Path):
    path = tmp_path / "m.psf"
    _write_psfex(path)
    model = PSFExModel.read(path)
    gs = galsim.des.DES_PSFEx(str(path))
    xs, ys = np.array([10.3, 64.0, 120.7]), np.array([5.5, 128.2, 250.9])
    drow, dcol = np.array([0.3, -0.45, 0.0]), np.array([-0.2, 0.1, 0.49])
    stamps = model.render(xs, ys, 33, drow, dcol)
    assert stamps.shape == (3, 33, 33)
    for k in range(3):
        g = gs.getPSF(galsim.PositionD(xs[k], ys[k])).drawImage(
            nx=33, ny=33, scale=1.0, method="no_pixel", offset=(dcol[k], drow[k])).array
        g /= g.sum()
        assert np.abs(stamps[k] - g).max() < 5e-3 * g.max()  # GalSim adds a DC-conserving Lanczos tweak
        assert stamps[k].sum() == pytest.approx(1.0, rel=1e-5)
    # the position dependence is really evaluated: corner and centre differ
    assert np.abs(stamps[0] - stamps[1]).max() > 1e-3 * stamps[1].max()
    with pytest.raises(Exception, match="odd"):
        model.render(xs, ys, 32)
