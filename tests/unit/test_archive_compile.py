"""Every named query compiles for Oracle (python-oracledb) with bind variables only.

No Oracle server runs here, so the boundary is the SQL text: placeholders for every
parameter, no value (string, number, list item) in the text, table names under a schema owner
or with a release prefix, and no IN list longer than Oracle's 1,000 items.
"""
from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa

from skyops.archive import QUERIES, compile_query, parse_archive_schema, run_query, tables_for
from skyops.archive.queries import IN_LIST_MAX, get_query
from skyops.errors import InputError, QueryParameterError, UnknownQueryError

#: One call per query with distinctive values that must never show up in the SQL text.
PARAMS: dict[str, dict[str, Any]] = {
    "tile_geometry": {"tilename": "DES0239+0216"},
    "coadd_files": {"tilename": "DES0239+0216", "band": "zz", "tag": "Y3A1_COADD"},
    "se_sources": {"tilename": "DES0239+0216", "band": "zz", "tag": "Y3A1_FINALCUT",
                   "zp_source": "FGCMX", "zp_version": "v9.9"},
    "night_exposures": {"nite": "20170817", "program": "gwprog", "bands": ["gg", "rr", "ii"]},
    "templates": {"expnum": 668439, "ccdnum": 37, "min_days_separation": 17.25, "min_t_eff": 0.4375,
                  "tag": "Y6A1_FINALCUT", "archive_name": "desar2home_x"},
    "raw_templates": {"expnum": 668439, "min_days_separation": 17.25, "min_t_eff": 0.4375,
                      "max_separation_deg": 1.875, "archive_name": "desar2home_x"},
    "files_by_name": {"names": [f"D00{i:06d}_r_c01_immasked.fits" for i in range(30)]},
    "raw_exposure": {"expnum": 668439},
    "night_calibrations": {"nite": "20170817", "band": "zz"},
    "reference_catalog": {"filetype": "cal_refcat_x"},
    "tiles_in_box": {"ra_min": 350.25, "ra_max": 10.5, "dec_min": -5.125, "dec_max": 5.0625},
}
#: Placeholders each query's SQL must contain.
PLACEHOLDERS: dict[str, list[str]] = {
    "tile_geometry": [":tilename"],
    "coadd_files": [":tilename", ":band", ":tag", ":archive_name"],
    "se_sources": [":tilename", ":band", ":tag", ":zp_source", ":zp_version", ":archive_name"],
    "night_exposures": [":nite", ":program", ":bands_1", ":bands_2", ":bands_3", ":archive_name"],
    "templates": [":expnum", ":ccdnum", ":min_days_separation", ":min_t_eff", ":tag", ":archive_name"],
    "raw_templates": [":expnum", ":min_days_separation", ":min_t_eff", ":max_separation_deg", ":half_rad2",
                      ":image_filetype", ":filetypes_1", ":filetypes_3", ":archive_name"],
    "files_by_name": [":names_0_1", ":names_0_30", ":archive_name"],
    "raw_exposure": [":expnum", ":archive_name"],
    "night_calibrations": [":nite", ":band", ":filetypes_1", ":filetypes_3", ":archive_name"],
    "reference_catalog": [":filetype", ":archive_name"],
    "tiles_in_box": [":ra_min", ":ra_max", ":dec_min", ":dec_max"],
}
CTES_AND_ALIASES = {"search", "anchor", "sbox", "cand"}
CONSTANTS = ["red_immask", "red_bkg", "red_segmap", "psfex_model", "FGCM", "desar2home", "cal_biascor"]


def _values(params: dict[str, Any]) -> list[str]:
    out = []
    for v in params.values():
        out += [str(x) for x in v] if isinstance(v, list) else [str(v)]
    return out


def test_every_query_has_a_compile_case() -> None:
    assert set(PARAMS) == set(QUERIES) == set(PLACEHOLDERS)


@pytest.mark.parametrize("name", sorted(PARAMS))
@pytest.mark.parametrize("schema,prefix", [(None, None), ("PROD", None), (None, "Y3A2_"), ("PROD", "Y3A2_")])
def test_oracle_bind_variables_only(name: str, schema: str | None, prefix: str | None) -> None:
    sql = compile_query(name, dialect="oracle", schema=schema, prefix=prefix, **PARAMS[name])
    for value in _values(PARAMS[name]) + CONSTANTS:
        assert value not in sql, f"{value!r} was formatted into the SQL of {name}"
    assert "'" not in sql, "no string literal at all"
    assert not re.search(r"(?<![\w:.$#])\d", sql), "no numeric literal"
    for ph in PLACEHOLDERS[name]:
        assert re.search(re.escape(ph) + r"\b", sql), f"{ph} missing from {name}"
    targets = re.findall(r"\b(?:FROM|JOIN)\s+([\w.$#]+)", sql)
    assert targets
    for target in targets:
        if target in CTES_AND_ALIASES:
            continue
        owner, _, table = target.rpartition(".")
        assert owner == (schema.lower() if schema else ""), target
        assert table.startswith(prefix.lower() if prefix else ""), target
        assert table.removeprefix(prefix.lower() if prefix else "") in tables_for().__dict__["_tables"]
    # names render unquoted, so Oracle folds them to upper case: PROD.Y3A2_IMAGE
    assert '"' not in sql


def test_schema_and_prefix_spellings() -> None:
    sql = compile_query("se_sources", schema="PROD", **PARAMS["se_sources"])
    assert "prod.image" in sql and "prod.zeropoint" in sql and "prod.file_archive_info" in sql
    sql = compile_query("templates", prefix="Y3A2_", **PARAMS["templates"])
    assert "y3a2_image ti" in sql and "y3a2_blacklist" in sql and " image " not in sql
    sql = compile_query("coadd_files", schema="prod", prefix="y3a2_", **PARAMS["coadd_files"])
    assert "prod.y3a2_coadd" in sql and "prod.y3a2_catalog" in sql and "prod.y3a2_proctag" in sql
    with pytest.raises(InputError, match=r"archive schema 'PROD; drop' is not a plain SQL identifier"):
        compile_query("tile_geometry", schema="PROD; drop", tilename="x")
    assert parse_archive_schema("PROD") == ("PROD", None)
    assert parse_archive_schema("Y3A2_") == (None, "Y3A2_")
    assert parse_archive_schema("PROD.Y3A2_") == ("PROD", "Y3A2_")
    assert parse_archive_schema(None) == (None, None)


def test_files_by_name_2500_names_in_lists_of_at_most_1000() -> None:
    names = [f"D{i:08d}_g_c01_r1p01_immasked.fits" for i in range(2500)]
    sql = compile_query("files_by_name", dialect="oracle", names=names)
    lists = re.findall(r"\bIN \(([^()]*)\)", sql)
    assert [len(lst.split(",")) for lst in lists] == [1000, 1000, 500]
    assert all(len(lst.split(",")) <= IN_LIST_MAX for lst in lists)
    assert all(p.strip().startswith(":names_") for lst in lists for p in lst.split(","))
    assert "D00000001" not in sql and "'" not in sql


def test_optional_parameters_leave_their_condition_out() -> None:
    sql = compile_query("templates", expnum=1)
    assert ":ccdnum" not in sql and ":tag" not in sql and "proctag" not in sql
    assert ":min_days_separation" in sql and ":min_t_eff" in sql


def test_postgresql_orders_strings_bytewise() -> None:
    sql = compile_query("se_sources", dialect="postgresql", **PARAMS["se_sources"])
    assert 'ORDER BY se_files.image_filename COLLATE "C"' in sql
    assert "%(tilename)s" in sql
    assert "COLLATE" not in compile_query("se_sources", dialect="sqlite", **PARAMS["se_sources"])
    with pytest.raises(InputError, match=r"cannot compile for dialect 'mssql'; expected one of: oracle, postgresql, sqlite"):
        compile_query("tile_geometry", dialect="mssql", tilename="x")


# ---------------------------------------------------------------------------------------------
# parameter errors: exact text, raised before the database is touched
# ---------------------------------------------------------------------------------------------

@pytest.fixture()
def unreachable() -> sa.Engine:
    """An engine whose database cannot be opened: validation must fail before connecting."""
    return sa.create_engine("sqlite:////nonexistent-dir/never.sqlite")


def test_unknown_query(unreachable: sa.Engine) -> None:
    with pytest.raises(UnknownQueryError) as info:
        run_query(unreachable, "coaddsrc", tilename="x")
    assert str(info.value) == (
        "unknown archive query 'coaddsrc'; known queries: coadd_files, files_by_name, "
        "night_calibrations, night_exposures, raw_exposure, raw_templates, reference_catalog, se_sources, templates, "
        "tile_geometry, tiles_in_box (list them with: skyops archive queries)"
    )
    assert info.value.exit_code == 2


def test_missing_parameter(unreachable: sa.Engine) -> None:
    with pytest.raises(QueryParameterError) as info:
        run_query(unreachable, "se_sources", tilename="DES0239+0216", band="r")
    assert str(info.value) == (
        "archive query 'se_sources': missing parameter 'tag' "
        "(str: PROCTAG tag of the single-epoch campaign, e.g. Y3A1_FINALCUT)"
    )


def test_ill_typed_parameters(unreachable: sa.Engine) -> None:
    with pytest.raises(QueryParameterError) as info:
        run_query(unreachable, "templates", expnum="abc")
    assert str(info.value) == (
        "archive query 'templates': parameter 'expnum' expects int "
        "(search exposure number, e.g. 668439), got 'abc' (str)"
    )
    with pytest.raises(QueryParameterError) as info:
        run_query(unreachable, "night_exposures", nite="20170817", program="gw", bands=5)
    assert str(info.value) == (
        "archive query 'night_exposures': parameter 'bands' expects list[str] (bands, e.g. g,r,i), got 5 (int)"
    )
    with pytest.raises(QueryParameterError) as info:
        run_query(unreachable, "templates", expnum=True)
    assert "parameter 'expnum' expects int" in str(info.value) and "got True (bool)" in str(info.value)
    with pytest.raises(QueryParameterError) as info:
        run_query(unreachable, "templates", expnum=1, min_t_eff="high")
    assert str(info.value) == (
        "archive query 'templates': parameter 'min_t_eff' expects float "
        "(minimum EXPOSURE.T_EFF of a template), got 'high' (str)"
    )
    with pytest.raises(QueryParameterError) as info:
        run_query(unreachable, "files_by_name", names=[])
    assert str(info.value) == (
        "archive query 'files_by_name': parameter 'names' expects a non-empty list[str] "
        "(file names without compression suffix), got an empty list"
    )
    with pytest.raises(QueryParameterError) as info:
        run_query(unreachable, "tile_geometry", tilename=239)
    assert "parameter 'tilename' expects str" in str(info.value)


def test_unknown_parameter(unreachable: sa.Engine) -> None:
    with pytest.raises(QueryParameterError) as info:
        run_query(unreachable, "tile_geometry", tile="DES0239+0216")
    assert str(info.value) == "archive query 'tile_geometry': unknown parameter 'tile'; it takes: tilename"


def test_command_line_strings_are_converted() -> None:
    q = get_query("templates")
    p = q.validate({"expnum": "668439", "ccdnum": "5", "min_days_separation": "20", "min_t_eff": "0.5"})
    assert p == {"expnum": 668439, "ccdnum": 5, "min_days_separation": 20.0, "min_t_eff": 0.5,
                 "tag": None, "archive_name": "desar2home"}
    assert get_query("night_exposures").validate({"nite": "20170817", "program": "gw", "bands": "g, r"})[
        "bands"] == ["g", "r"]
    assert q.signature().startswith("templates(expnum: int, ccdnum: int = None, min_days_separation: float = 15.0")
