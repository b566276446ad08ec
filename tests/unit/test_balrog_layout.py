"""Balrog directory layout: $MEDS_DIR/<medsconf>/<tile>/ and balrog_images/<r>/<medsconf>/<tile>/."""
from __future__ import annotations

from pathlib import Path

import pytest

from skyops.campaigns.balrog.layout import TileLayout
from skyops.errors import InputError


def test_base_and_realization_paths(tmp_path: Path):
    base = TileLayout(tmp_path, "y3a1-v02", "DES0239+0216")
    root = tmp_path.resolve()
    assert base.tile_dir == root / "y3a1-v02" / "DES0239+0216"
    assert base.meds("i") == base.tile_dir / "meds" / "DES0239+0216_i_meds-y3a1-v02.fits"
    assert base.coadd("r") == base.tile_dir / "coadd" / "DES0239+0216_r.fits"
    assert base.catalog("z") == base.tile_dir / "cat" / "DES0239+0216_z_cat.fits"
    assert base.srclist("g") == base.tile_dir / "lists" / "DES0239+0216_g_srclist.json"
    real = base.for_realization(3)
    assert real.tile_dir == root / "y3a1-v02" / "balrog_images" / "3" / "y3a1-v02" / "DES0239+0216"
    assert real.truth() == real.tile_dir / "truth" / "DES0239+0216_balrog_truth.fits"
    assert real.base() == base
    rel = "OPS/finalcut/Y3A1/20131020-r2390/D00229001/p01/red/immask/D00229001_r_c09_r2390p01_immasked.fits"
    assert real.source_file("r", rel) == real.tile_dir / "sources-r" / rel


def test_layout_refuses_names_and_paths_that_escape(tmp_path: Path):
    base = TileLayout(tmp_path, "y3a1-v02", "DES0239+0216")
    with pytest.raises(InputError, match="escapes"):
        base.source_file("r", "../../../etc/passwd")
    with pytest.raises(InputError, match="param 'tile'"):
        TileLayout(tmp_path, "y3a1-v02", "../x")
    with pytest.raises(InputError, match="param 'medsconf'"):
        TileLayout(tmp_path, "..", "DES0239+0216")
    with pytest.raises(InputError, match="param 'realization'"):
        base.for_realization(-1)


def test_meds_dir_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MEDS_DIR", str(tmp_path / "meds"))
    assert TileLayout.of(None, "c", "DES0239+0216").tile_dir == (tmp_path / "meds" / "c" / "DES0239+0216").resolve()
