"""A DESDM query and a staging task in a real DAG run, against the synthetic demo archive."""
from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from skyops.archive import ArchiveDB
from skyops.config import PROJECT_ROOT
from skyops.manifest import Manifest
from skyops.provenance import ProvenanceStore


def test_query_then_stage_records_every_file(run_dag, demo_archive):
    dr = run_dag(PROJECT_ROOT / "tests" / "dags" / "archive_stage.py")
    assert dr.state == "success"
    xq = dr.get_task_instance("night_exposures").xcom_pull(task_ids="night_exposures")
    manifest = Manifest.read(xq["manifest"])
    assert xq["rows"] == len(manifest) == 3  # the demo night has three i-band search exposures
    assert {r["filetype"] for r in manifest.records()} == {"raw"}

    xs = dr.get_task_instance("stage_raw").xcom_pull(task_ids="stage_raw")
    report = json.loads(Path(xs["report"]).read_text())
    staged = {f["filename"]: f for f in report["files"]}
    db = ArchiveDB.from_config()
    with db.connect() as c:
        archive_md5 = dict(c.execute(sa.text("SELECT filename, md5sum FROM desfile WHERE filetype = 'raw'")).all())
    db.dispose()
    for name, f in staged.items():
        assert Path(f["path"]).is_file() and f["md5"] == archive_md5[name]

    store = ProvenanceStore.from_config()
    with store.engine.connect() as c:
        used = c.execute(sa.text(
            "SELECT d.path, d.filename, d.md5sum FROM opm_used u JOIN task t ON u.task_id = t.id "
            "JOIN desfile d ON u.desfile_id = d.id WHERE t.run_id = :r AND t.task_id = 'stage_raw'"),
            {"r": dr.run_id}).all()
        gen = c.execute(sa.text(
            "SELECT d.filetype FROM desfile d JOIN task t ON d.wgb_task_id = t.id "
            "WHERE t.run_id = :r AND t.task_id = 'night_exposures'"), {"r": dr.run_id}).all()
    assert {(f"{p}/{n}", m) for p, n, m in used} == {(f["path"], f["md5"]) for f in staged.values()}
    assert [g.filetype for g in gen] == ["manifest"]
    attempt = store.show_attempt(dr.run_id)
    assert attempt["unitname"] == "20170817"
