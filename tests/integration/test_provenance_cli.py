"""``skyops prov ...`` run in-process on a small recorded history, on both backends."""
from __future__ import annotations

import json

import pytest
from prov.model import ProvDocument

from skyops.cli.main import main
from skyops.provenance import ProvenanceStore, TaskKey


def norm(text: str) -> list[str]:
    """Output lines with runs of blanks collapsed (rich pads table cells)."""
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


@pytest.fixture
def url(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database holding: raw + bias -> red (se_ccd[3]) -> coadd, and a diamond split/join."""
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["prov", "migrate", "--url", db_url]) == 0
    with ProvenanceStore(db_url) as s:
        att = s.attempt("gw", "run1", "20240101", reqnum=3)
        se = s.task_started(TaskKey("gw", "run1", "se_ccd", 3), name="gw.se_ccd", attempt_id=att, host="h1")
        s.record_files(se, generated=[{"path": "/d/red/c3.fits", "md5": "a" * 32, "filetype": "red"}],
                       used=[{"path": "/d/raw/r3.fits.fz", "md5": "b" * 32}, {"path": "/d/cal/bias.fits", "md5": "c" * 32}])
        s.task_finished(se, status="success", exit_status=0)
        co = s.task_started(TaskKey("gw", "run1", "coadd"), name="gw.coadd", attempt_id=att)
        s.record_files(co, generated=[{"path": "/d/coadd/co.fits", "md5": "d" * 32}], used=[{"path": "/d/red/c3.fits"}])
        s.task_finished(co, status="failed", exit_status=1, message="boom")
        sp = s.task_started(TaskKey("gw", "run1", "split"), name="gw.split", attempt_id=att)
        s.record_files(sp, generated=[{"path": "/d/s/a.fits"}, {"path": "/d/s/b.fits"}], used=[{"path": "/d/coadd/co.fits"}])
        jn = s.task_started(TaskKey("gw", "run1", "join"), name="gw.join", attempt_id=att)
        s.record_files(jn, generated=[{"path": "/d/s/ab.fits"}], used=[{"path": "/d/s/a.fits"}, {"path": "/d/s/b.fits"}])
    return db_url


def test_lineage_prints_the_tree_back_to_raw_inputs(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prov", "lineage", "co.fits", "--url", url]) == 0
    assert [line.rstrip() for line in capsys.readouterr().out.splitlines()] == [
        "co.fits  /d/coadd  md5 dddddddd  gw.coadd (coadd try 1, gw run1) failed",
        "└── c3.fits  /d/red  md5 aaaaaaaa  gw.se_ccd (se_ccd[3] try 1, gw run1) success",
        "    ├── bias.fits  /d/cal  md5 cccccccc  raw input",
        "    └── r3.fits.fz  /d/raw  md5 bbbbbbbb  raw input",
    ]


def test_lineage_shows_a_shared_ancestor_once(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prov", "lineage", "/d/s/ab.fits", "--url", url]) == 0
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == "ab.fits  /d/s  md5 -  gw.join (join try 1, gw run1) running"
    assert lines[1] == "├── a.fits  /d/s  md5 -  gw.split (split try 1, gw run1) running"
    assert "co.fits  /d/coadd  md5 dddddddd  gw.coadd (coadd try 1, gw run1) failed" in lines[2]
    assert lines[-2:] == [
        "└── b.fits  /d/s  md5 -  gw.split (split try 1, gw run1) running",
        "    └── co.fits  /d/coadd  (shown above)",
    ]
    assert sum("raw input" in line for line in lines) == 2


def test_impact_lists_files_and_tasks_to_redo(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prov", "impact", "/d/cal/bias.fits", "--url", url]) == 0
    out = norm(capsys.readouterr().out)
    assert out[0] == "5 files derived from /d/cal/bias.fits; 4 tasks to redo"
    files = [line for line in out if line.startswith("│")]
    assert files[:2] == [
        "│ 1 │ /d/red/c3.fits │ red │ aaaaaaaa │ gw.se_ccd (se_ccd[3] try 1) │ success │",
        "│ 2 │ /d/coadd/co.fits │ - │ dddddddd │ gw.coadd (coadd try 1) │ failed │",
    ]
    assert files[-4:] == [
        "│ 1 │ gw.se_ccd │ gw │ run1 │ se_ccd[3] try 1 │ success │",
        "│ 2 │ gw.coadd │ gw │ run1 │ coadd try 1 │ failed │",
        "│ 3 │ gw.split │ gw │ run1 │ split try 1 │ running │",
        "│ 4 │ gw.join │ gw │ run1 │ join try 1 │ running │",
    ]
    assert main(["prov", "impact", "ab.fits", "--url", url]) == 0
    assert capsys.readouterr().out == "nothing recorded was derived from /d/s/ab.fits\n"


def test_show_prints_the_attempt_and_its_tries(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prov", "show", "20240101", "--url", url]) == 0
    out = norm(capsys.readouterr().out)
    assert out[:4] == ["attempt 1: gw 20240101 attempt 1", "run run1", "reqnum 3", "status running"]
    assert "files 5 generated, 6 used" in out
    rows = [line.split(" │ ") for line in out if line.startswith("│ ")]
    assert [(r[0].strip("│ "), r[1], r[2], r[3], r[-3], r[-2], r[-1].strip(" │")) for r in rows] == [
        ("coadd", "1", "gw.coadd", "failed", "1", "1", "1"),
        ("join", "1", "gw.join", "running", "-", "1", "2"),
        ("se_ccd[3]", "1", "gw.se_ccd", "success", "0", "1", "2"),
        ("split", "1", "gw.split", "running", "-", "2", "1"),
    ]


def test_export_writes_prov_json(url: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "run1.json"
    assert main(["prov", "export", "run1", "--format", "prov-json", "-o", str(target), "--url", url]) == 0
    assert capsys.readouterr().err.strip() == f"wrote PROV-JSON of run run1 to {target}"
    doc = ProvDocument.deserialize(source=str(target), format="json")
    assert len(doc.get_records()) > 10
    assert main(["prov", "export", "1", "--url", url]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(target.read_text())


def test_status_and_migrate_report_the_revision(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["prov", "migrate", "--url", url]) == 0
    assert capsys.readouterr().out == f"provenance database at {url} is already at revision 0001 (head)\n"
    assert main(["prov", "status", "--url", url]) == 0
    out = norm(capsys.readouterr().out)
    assert out == [
        f"database {url}", "revision 0001 (head 0001) current", "pfw_attempt 1 rows", "task 4 rows",
        "desfile 7 rows", "opm_used 6 rows", "opm_was_derived_from 7 rows",
    ]


def test_bad_file_and_run_exit_2_with_a_clear_message(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prov", "lineage", "nope.fits", "--url", url]) == 2
    assert capsys.readouterr().err == (
        f"skyops: error: file 'nope.fits' is not recorded in the provenance database at {url}; "
        "give the full path as recorded or a bare file name\n"
    )
    assert main(["prov", "impact", "/d/x/nope.fits", "--url", url]) == 2
    assert "file '/d/x/nope.fits' is not recorded" in capsys.readouterr().err
    assert main(["prov", "show", "run9", "--url", url]) == 2
    assert capsys.readouterr().err == (
        f"skyops: error: run 'run9' is not recorded in the provenance database at {url}: no attempt has that id, "
        "run id or unit name; `skyops prov status` shows what the database holds\n"
    )


def test_unmigrated_database_exits_1_and_says_to_migrate(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    assert main(["prov", "lineage", "x.fits", "--url", url]) == 1
    assert capsys.readouterr().err == (
        f"skyops: error: provenance database at {url} is at revision None, expected 0001; run `skyops prov migrate`\n"
    )
    assert main(["prov", "status", "--url", url]) == 1
    assert "needs `skyops prov migrate`" in capsys.readouterr().out
