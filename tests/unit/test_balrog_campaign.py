"""Balrog tile lists, the per-task plan of balrog_tile and campaign selection/reporting."""
from __future__ import annotations

from pathlib import Path

import pytest

from skyops.campaigns.balrog.params import BalrogParamError, validate
from skyops.campaigns.balrog.plan import block_params
from skyops.campaigns.balrog.tilelist import Box, read_tile_file, report, resolve_tiles, run_id_for, select_tiles
from skyops.errors import InputError


def test_tile_file_comments_and_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "y6.txt").write_text("# Y6 test tiles\nDES0239+0216\n\nDES0000+0209, DES0239+0216  # dup\n")
    assert read_tile_file("lists/y6.txt", root=tmp_path) == ["DES0239+0216", "DES0000+0209", "DES0239+0216"]
    (tmp_path / "bad.txt").write_text("DES0239+0216\nDES02390216\n")
    with pytest.raises(BalrogParamError, match=r"bad.txt, line 2: param 'tile' \(-t\): 'DES02390216'"):
        read_tile_file("bad.txt", root=tmp_path)
    with pytest.raises(InputError):  # a list outside the configs folder is refused
        read_tile_file("../../etc/passwd", root=tmp_path)


def test_resolve_unions_sources_and_refuses_nothing() -> None:
    def query(box: Box) -> list[str]:
        assert (box.ra_min, box.ra_max) == (350.0, 10.0)  # wraps through RA 0
        return ["DES0000+0209"]

    got = resolve_tiles(["DES0239+0216"], box=Box(350, 10, -5, 5), query_box=query)
    assert got == ["DES0000+0209", "DES0239+0216"]
    with pytest.raises(BalrogParamError, match="no tiles selected"):
        resolve_tiles([])
    with pytest.raises(BalrogParamError, match="missing dec_max"):
        Box.from_params({"ra_min": 1, "ra_max": 2, "dec_min": 0})
    with pytest.raises(BalrogParamError, match="'dec_min' > 'dec_max'"):
        Box(0, 10, 5, -5)


def test_selection_skips_complete_tiles_unless_forced() -> None:
    tiles = ["DES0000+0209", "DES0239+0216", "DES0100+0000"]
    status = {"DES0000+0209": {"status": "success"}, "DES0239+0216": {"status": "failed"}}
    assert select_tiles(tiles, status) == (["DES0239+0216", "DES0100+0000"], ["DES0000+0209"])
    assert select_tiles(tiles, status, force=True) == (tiles, [])
    assert report(tiles, status) == {"done": ["DES0000+0209"], "failed": ["DES0239+0216"], "running": [],
                                     "not started": ["DES0100+0000"]}
    assert run_id_for("DES0239+0216", "manual__2026-11-21T02:00:00+00:00").startswith("balrog__DES0239+0216__")
    assert ":" not in run_id_for("DES0239+0216", "2026-11-21T02:00:00+00:00")


def test_block_params_follow_the_mode_bits() -> None:
    p = validate({"tile": "DES0239+0216", "mode": 63, "realizations": 2, "bands": ["r", "i"], "measure": ["sof"]})
    b = block_params(p, "/meds")
    assert b["prep"]["tile"] == "DES0239+0216" and b["detect"] is not None
    assert [u["band"] for u in b["coadd_band"]] == ["r", "i"]
    assert [u["realization"] for u in b["inject"]] == [0, 1]
    assert sorted((u["realization"], u["band"]) for u in b["coadd_band_r"]) == [(0, "i"), (0, "r"), (1, "i"), (1, "r")]
    assert [u["realization"] for u in b["match_r"]] == [0, 1]
    assert len(b["meds_r"]) == 4
    labels = [u["output"].split("_")[1] for u in b["measure"]]
    assert labels == ["r0", "r1"]
    assert b["measure"][0]["meds"][0].startswith("/meds/y3a1-v02/balrog_images/0/y3a1-v02/DES0239+0216/")
    only_inject = block_params(validate({"tile": "DES0239+0216", "mode": 8, "realizations": 1}), "/meds")
    assert only_inject["prep"] is None and only_inject["detect"] is None and only_inject["coadd_band"] == []
    assert len(only_inject["inject"]) == 1 and only_inject["measure"] == []
