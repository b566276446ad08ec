"""skyops.sim raw data: overscan + bias + flat recover the reduced image within its noise."""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pytest

from skyops.sim import BADPIX, Survey, layout
from skyops.sim.raw import overscan_correct_and_trim

NITE, SEARCH = "20170817", 668439
CCDS = [1, 28, 40, 61]


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sim_raw")
    s = Survey("demo", 21)
    cals = s.make_calibrations(NITE, root, ccds=CCDS)
    res = s.make_exposure(SEARCH, root, ccds=CCDS)
    return s, root, cals, res


def _reduce(root: Path, s: Survey, ccdnum: int) -> tuple[np.ndarray, dict]:
    """The reference reduction a pipeline does: overscan, trim, bias, gain, flat."""
    spec, cal = s.exposure(SEARCH), s.calib_run(NITE)
    raw, hdr = fitsio.read(root / layout.raw(spec).relpath, ext=s.fp.ccd(ccdnum).detpos, header=True)
    adu = overscan_correct_and_trim(raw, hdr)
    bias = fitsio.read(root / layout.biascor(cal, ccdnum).relpath)
    flat = fitsio.read(root / layout.flatcor(cal, spec.band, ccdnum).relpath)
    nx = adu.shape[1]
    gain = np.where(np.arange(nx) < nx // 2, hdr["GAINA"], hdr["GAINB"])
    return (adu - bias) * gain[None, :] / flat, hdr


@pytest.mark.parametrize("ccdnum", [1, 28, 40])
def test_overscan_bias_flat_recover_the_reduced_image(night, ccdnum):
    s, root, _, res = night
    rec, _ = _reduce(root, s, ccdnum)
    with fitsio.FITS(root / layout.red_immask(s.exposure(SEARCH), ccdnum).relpath) as f:
        sci, h, msk = f["SCI"].read(), f["SCI"].read_header(), f["MSK"].read()
    t = res.ccds[res.ccds["ccdnum"] == ccdnum][0]
    ny, nx = sci.shape
    xs = np.arange(1, nx + 1) - (nx + 1) / 2.0
    ys = np.arange(1, ny + 1) - (ny + 1) / 2.0
    sky = t["sky_e"] + t["sky_dedx"] * xs[None, :] + t["sky_dedy"] * ys[:, None]
    assert h["SKYBRITE"] == pytest.approx(t["sky_e"], rel=1e-6)
    good = msk == 0
    resid = (rec - sky - sci)[good]
    # quantisation (0.3 ADU), master-bias noise and the overscan estimate: a few e- against ~50 e- of sky noise
    assert abs(np.mean(resid)) < 0.05 * h["SKYSIGMA"]
    assert np.std(resid) < 0.1 * h["SKYSIGMA"]
    assert np.std(sci[good]) > 0.8 * h["SKYSIGMA"]  # and the reduced image does carry the noise


def test_raw_layout_and_headers(night):
    s, root, _, _ = night
    spec = s.exposure(SEARCH)
    with fitsio.FITS(root / layout.raw(spec).relpath) as f:
        assert [h.get_extname() for h in f[1:]] == [s.fp.ccd(c).detpos for c in CCDS]
        p = f[0].read_header()
        assert p["EXPNUM"] == SEARCH and p["OBSTYPE"] == "object" and f[0].get_exttype() == "IMAGE_HDU"
        raw, h = f["S4"].read(), f["S4"].read_header()
    assert raw.dtype == np.uint16 and raw.shape == (256, 128 + 2 * 8)
    assert h["DATASECA"] == "[9:72,1:256]" and h["BIASSECB"] == "[137:144,1:256]" and h["CCDNUM"] == 28
    over = raw[:, :8].astype(float)
    assert 1400 < over.mean() < 3600 and 0.5 < over.std() < 3.0  # level in ADU, read noise / gain


def test_calibration_files(night):
    s, root, cals, _ = night
    kinds = sorted({wf.file.filetype for wf in cals})
    assert kinds == ["cal_biascor", "cal_bpm", "cal_norm_dflatcor"]
    assert len(cals) == 3 * len(CCDS)
    cal = s.calib_run(NITE)
    flat = fitsio.read(root / layout.flatcor(cal, "i", 28).relpath)
    assert 0.9 < flat.mean() < 1.05 and 0.005 < flat.std() < 0.03
    bpm61 = fitsio.read(root / layout.bpm(cal, 61).relpath)
    assert np.all(bpm61 & BADPIX.BADAMP)


def test_dead_ccd_raw_has_no_signal(night):
    s, root, _, _ = night
    rec, _ = _reduce(root, s, 61)
    assert abs(np.median(rec)) < 10.0  # bias and read noise only: no sky, no stars
