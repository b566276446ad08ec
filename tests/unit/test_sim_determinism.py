"""skyops.sim determinism: same seed -> same bytes, whatever the order, subset or process."""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pytest

from skyops.errors import SimulationError
from skyops.fileio import md5sum
from skyops.sim import Survey, make_exposure
from skyops.sim.seeding import rng

SEARCH = 668439


def _md5s(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): md5sum(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _build(root: Path, seed: int, ccds=(1, 2, 28, 62), **kw) -> dict[str, str]:
    s = Survey("demo", seed, **kw)
    s.make_calibrations("20170817", root, ccds=ccds)
    s.make_exposure(SEARCH, root, ccds=ccds)  # raw + red_immask + truth
    s.make_exposure(521360, root, ccds=ccds)
    s.write_catalogs(root)
    return _md5s(root)


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = _build(tmp_path / "a", 5)
    b = _build(tmp_path / "b", 5)
    assert a == b
    kinds = {k.split("/")[0] for k in a}
    assert {"DTS", "OPS", "SIM"} <= kinds
    assert any(k.endswith("_immasked.fits") for k in a) and any(k.endswith("DECam_00668439.fits") for k in a)


def test_different_seed_gives_different_files(tmp_path):
    a = _build(tmp_path / "a", 5, ccds=(28,))
    b = _build(tmp_path / "b", 6, ccds=(28,))
    assert a.keys() - {k for k in a if "refcat" in k} == b.keys() - {k for k in b if "refcat" in k}
    same = [k for k in a if k in b and a[k] == b[k]]
    assert not [k for k in same if k.endswith((".fits", ".csv"))], same


def test_a_ccd_built_alone_equals_the_same_ccd_in_a_larger_build(tmp_path):
    make_exposure(SEARCH, tmp_path / "alone", seed=3, ccds=[40], raw=False)
    make_exposure(SEARCH, tmp_path / "many", seed=3, ccds=[62, 40, 1], raw=False)  # order does not matter
    name = "OPS/finalcut/Y4N/20170817-r4/D00668439/p05/red/immask/D00668439_i_c40_r4p05_immasked.fits"
    assert md5sum(tmp_path / "alone" / name) == md5sum(tmp_path / "many" / name)


def test_parallel_workers_write_the_same_bytes(tmp_path):
    ccds = [1, 3, 28, 40]
    Survey("demo", 8).make_exposure(SEARCH, tmp_path / "serial", ccds=ccds)
    Survey("demo", 8).make_exposure(SEARCH, tmp_path / "parallel", ccds=ccds, workers=2)
    assert _md5s(tmp_path / "serial") == _md5s(tmp_path / "parallel")


def test_no_clock_in_headers(tmp_path):
    res = make_exposure(SEARCH, tmp_path, seed=1, ccds=[28])
    for wf in res.files:
        if wf.file.filetype in ("red_immask", "raw"):
            with fitsio.FITS(tmp_path / wf.file.relpath) as f:
                for hdu in f:
                    h = hdu.read_header()
                    assert "DATE" not in h and "CHECKSUM" not in h


def test_random_streams_are_keyed_not_ordered():
    a = rng(1, "noise", 668439, 28).random(3)
    rng(1, "noise", 668439, 27).random(1000)
    assert np.array_equal(a, rng(1, "noise", 668439, 28).random(3))
    assert not np.array_equal(a, rng(2, "noise", 668439, 28).random(3))
    with pytest.raises(SimulationError, match="seed"):
        rng(-1, "noise")


def test_bad_requests_raise_simulation_errors(tmp_path):
    with pytest.raises(SimulationError, match="unknown sim preset 'huge'"):
        Survey("huge")
    s = Survey("demo", 1)
    with pytest.raises(SimulationError, match="exposure 123"):
        s.make_exposure(123, tmp_path)
    with pytest.raises(SimulationError, match="CCDNUM 99"):
        s.make_exposure(SEARCH, tmp_path, ccds=[99])
    with pytest.raises(SimulationError, match="night '20990101'"):
        s.make_night("20990101", tmp_path)
    with pytest.raises(SimulationError, match="unknown preset setting"):
        Survey("demo", 1, nosie=False)
