"""``skyops archive``: list, init, query (printed and written), create, and its error exits."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from skyops.archive import ArchiveDB
from skyops.cli.archive import parse_params
from skyops.cli.main import main
from skyops.errors import InputError
from skyops.manifest import Manifest


def test_queries_lists_every_query_with_params(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["archive", "queries"]) == 0
    out = capsys.readouterr().out
    for name in ("tile_geometry", "coadd_files", "se_sources", "night_exposures", "templates", "files_by_name"):
        assert name in out
    assert "min_days_separation" in out and "15.0" in out


def test_init_then_query_prints_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'desdm.sqlite'}"
    assert main(["archive", "init", "--url", url]) == 0
    db = ArchiveDB(url)
    db.register_archive("desar2home", root=str(tmp_path))
    db.register_files([{"filename": f"f{i}.fits", "path": "a/b", "filetype": "red_immask",
                        "compression": ".fz", "md5sum": "0" * 32, "filesize": i} for i in range(3)])
    out_file = tmp_path / "m.json"
    rc = main(["archive", "query", "files_by_name", "-p", "names=f0.fits,f2.fits", "--param", "names=f9.fits",
               "--url", url, "--output", str(out_file)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "files_by_name: 2 rows" in out and "f2.fits" in out and "manifest written to" in out
    m = Manifest.read(out_file)
    assert m.column("filename") == ["f0.fits", "f2.fits"] and m.params["names"] == ["f0.fits", "f2.fits", "f9.fits"]
    # a single row (a tile's geometry) is printed as column/value pairs
    db.insert_rows("coaddtile_geom", [{"tilename": "DES0239+0216", "ra_cent": 39.9, "dec_cent": 2.3}])
    assert main(["archive", "query", "tile_geometry", "-p", "tilename=DES0239+0216", "--url", url]) == 0
    out = capsys.readouterr().out
    assert "tile_geometry: 1 row" in out and "ra_cent" in out and "39.9" in out
    db.dispose()


def test_query_errors_exit_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'desdm.sqlite'}"
    assert main(["archive", "query", "nope", "--url", url]) == 2
    assert capsys.readouterr().err.strip() == (
        "skyops: error: unknown archive query 'nope'; known queries: coadd_files, files_by_name, "
        "night_calibrations, night_exposures, raw_exposure, raw_templates, reference_catalog, se_sources, templates, "
        "tile_geometry, tiles_in_box (list them with: skyops archive queries)"
    )
    assert main(["archive", "query", "templates", "-p", "expnum=abc", "--url", url]) == 2
    assert capsys.readouterr().err.strip() == (
        "skyops: error: archive query 'templates': parameter 'expnum' expects int "
        "(search exposure number, e.g. 668439), got 'abc' (str)"
    )
    assert main(["archive", "query", "tile_geometry", "-p", "tilename", "--url", url]) == 2
    assert "--param 'tilename': expected KEY=VALUE" in capsys.readouterr().err


def test_unreachable_database_exits_1_without_password(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["archive", "query", "tile_geometry", "-p", "tilename=x", "--url",
               "postgresql+psycopg2://u:s3cret@127.0.0.1:1/x"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot connect to the archive database postgresql+psycopg2://u:***@127.0.0.1:1/x" in err
    assert "s3cret" not in err


def test_create_without_generator_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "skyops.sim", None)  # as if skyops.sim were not installed
    assert main(["archive", "create", "--preset", "demo", "--seed", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("skyops: error: skyops archive create needs skyops.sim.create_archive, which is not available")


def test_parse_params() -> None:
    assert parse_params(["a=1", "bands=g", "bands=r", "x=y=z"]) == {"a": "1", "bands": "g,r", "x": "y=z"}
    with pytest.raises(InputError) as info:
        parse_params(["=1"])
    assert str(info.value) == "--param '=1': expected KEY=VALUE, e.g. --param tilename=DES0239+0216"
