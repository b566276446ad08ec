"""Balrog run params: BalrogBase.py's flags and mode bitmask, validation errors naming the param, the plan."""
from __future__ import annotations

from pathlib import Path

import pytest

from skyops.archive import ArchiveDB
from skyops.campaigns.balrog.config import BalrogConfigError, load_medsconf
from skyops.campaigns.balrog.params import (
    ALL_MODE, BalrogParamError, blocks_run, blocks_skipped, describe_mode, parse_measure, parse_mode,
    parse_realizations, runs, validate,
)
from skyops.campaigns.balrog.plan import plan_tile
from skyops.errors import ConfigError, InputError
from skyops.sim.tiles import Tile


@pytest.fixture(scope="module")
def geometry(tmp_path_factory: pytest.TempPathFactory):
    """A real (SQLite) archive with one tile in COADDTILE_GEOM; its tile_geometry lookup."""
    db = ArchiveDB(f"sqlite:///{tmp_path_factory.mktemp('arch') / 'a.sqlite'}")
    db.create_schema()
    db.insert_rows("coaddtile_geom", [Tile.from_name("DES0239+0216", 1, 0.05).geom_row()])
    yield db.tile_geometry
    db.dispose()


def test_mode_bits_select_blocks_in_pipeline_order():
    assert [b.bit for b in blocks_run(ALL_MODE)] == [1, 2, 4, 8, 16, 32]
    assert [b.name for b in blocks_run(10)] == ["coadd", "inject"]
    assert [b.bit for b in blocks_skipped(10)] == [1, 4, 16, 32]
    assert runs(63, "meds_realization") and not runs(31, "meds_realization") and runs(1, "prep")
    assert parse_mode("63") == 63 and parse_mode("0x3f") == 63 and parse_mode(8) == 8
    assert describe_mode(10).startswith("mode 10: runs 2 coadd and catalog, 8 injection of the realizations; "
                                        "skips 1 prep, 4 meds,")


@pytest.mark.parametrize("bad", [0, 64, -1, "all", 2.5, True, None])
def test_bad_mode_names_the_param_and_flag(bad):
    with pytest.raises(BalrogParamError) as e:
        parse_mode(bad)
    assert str(e.value).startswith("param 'mode' (-m):")


def test_realizations_and_measure():
    assert parse_realizations(3) == (0, 1, 2) and parse_realizations([4, 1, 4]) == (1, 4)
    assert parse_realizations("0,2") == (0, 2) and parse_realizations(0) == ()
    assert parse_measure(["metacal", "sof"]) == ("sof", "metacal")
    with pytest.raises(BalrogParamError, match="param 'measure': 'ngmix' is not a measurement"):
        parse_measure("sof,ngmix")
    with pytest.raises(BalrogParamError, match="param 'realizations'"):
        parse_realizations(-2)


def test_validate_checks_the_tile_against_coaddtile_geom(geometry):
    p = validate({"tile": "DES0239+0216", "mode": 12, "realizations": 2, "ncpu": 4}, geometry)
    assert (p.mode, p.realizations, p.ncpu, p.bands) == (12, (0, 1), 4, ("g", "r", "i", "z"))
    assert [b.name for b in p.blocks] == ["meds", "inject"] and p.runs("inject") and not p.runs("prep")
    assert p.as_dict()["realizations"] == [0, 1]
    with pytest.raises(BalrogParamError) as e:
        validate({"tile": "DES0101-0101"}, geometry)
    assert str(e.value).startswith("param 'tile' (-t): 'DES0101-0101' is not in COADDTILE_GEOM")
    with pytest.raises(BalrogParamError, match=r"param 'tile' \(-t\): 'DES239\+0216' is not a DES tile name"):
        validate({"tile": "DES239+0216"}, geometry)
    with pytest.raises(BalrogParamError, match=r"param 'mode' \(-m\): 99 is outside 1..63"):
        validate({"tile": "DES0239+0216", "mode": 99}, geometry)
    with pytest.raises(BalrogParamError, match=r"param 'ncpu' \(-n\)"):
        validate({"tile": "DES0239+0216", "ncpu": 0}, geometry)
    with pytest.raises(BalrogParamError, match="unknown param 'tilename'"):
        validate({"tilename": "DES0239+0216"}, geometry)
    with pytest.raises(BalrogParamError, match="param 'bands': 'Y' is not a band of this medsconf"):
        validate({"tile": "DES0239+0216", "bands": ["r", "Y"]}, geometry)


def test_config_files_are_found_by_name_or_refused_naming_the_param(tmp_path: Path):
    assert load_medsconf("y3a1-v02").magzp_ref == 30.0
    with pytest.raises(BalrogConfigError, match=r"param 'medsconf' \(-c\): no config 'y9'"):
        validate({"tile": "DES0239+0216", "medsconf": "y9"})
    with pytest.raises(BalrogConfigError, match=r"param 'galsim_config' \(-g\)"):
        validate({"tile": "DES0239+0216", "galsim_config": "nope"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("medsconf: x\nbands: [g, q]\n")
    with pytest.raises(ConfigError, match="key 'bands'"):
        load_medsconf(str(bad))
    assert issubclass(BalrogConfigError, InputError)


def test_plan_lists_per_band_and_per_realization_units(geometry):
    p = validate({"tile": "DES0239+0216", "realizations": 2, "bands": ["r", "i", "z"]}, geometry)
    plan = plan_tile(p, meds_dir="/m")
    keys = plan.keys()
    assert keys[:5] == ["prep", "coadd_band.r", "coadd_band.i", "coadd_band.z", "detect"]
    assert plan.keys("inject") == ["inject.r0", "inject.r1"]
    assert plan.keys("meds_realization") == [f"meds.r{r}.{b}" for r in (0, 1) for b in "riz"]
    u = plan.by_key()
    assert u["coadd_band.r1.i"].params == {"tile": "DES0239+0216", "medsconf": "y3a1-v02", "meds_dir": "/m",
                                           "band": "i", "realization": 1, "ncpu": 1}
    assert u["detect.r1"].after == ("coadd_band.r1.r", "coadd_band.r1.i", "coadd_band.r1.z")
    assert u["match.r0"].after == ("detect.r0", "detect") and u["inject.r0"].after == ("prep",)
    assert plan.skipped == []
    # mode 8 + 16: injection and realization coadds only; the skipped blocks' units are not waited for
    p2 = validate({"tile": "DES0239+0216", "mode": 24}, geometry)
    plan2 = plan_tile(p2)
    assert {x.block for x in plan2.units} == {"inject", "coadd_realization"}
    assert plan2.by_key()["inject.r0"].after == () and plan2.by_key()["match.r0"].after == ("detect.r0",)
    assert [b.bit for b in plan2.skipped] == [1, 2, 4, 32]
