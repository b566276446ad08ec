"""The skyops_healthcheck DAG, run for real with dag.test(), and its provenance."""
from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from skyops.config import platform_config
from skyops.provenance import ProvenanceStore

from skyops.config import PROJECT_ROOT

DAGS = PROJECT_ROOT / "dags"


def generated(store: ProvenanceStore, run_id: str, filetype: str) -> list[str]:
    """Full paths of the files of ``filetype`` that tasks of ``run_id`` generated."""
    q = sa.text("SELECT f.path, f.filename FROM desfile f JOIN task t ON f.wgb_task_id = t.id "
                "WHERE t.run_id = :r AND f.filetype = :ft")
    with store.engine.connect() as c:
        return [f"{p}/{n}" for p, n in c.execute(q, {"r": run_id, "ft": filetype})]


def make_empty_archive() -> None:
    """An archive DB with DESDM's tables and an empty file root: reachable, 0 files."""
    from skyops.archive.schema import create_schema

    cfg = platform_config()
    url = cfg.databases.archive
    Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    create_schema(engine)
    engine.dispose()
    Path(cfg.archive.root[len("file://"):]).mkdir(parents=True, exist_ok=True)


def test_healthcheck_dag_records_every_check(run_dag):
    make_empty_archive()
    dr = run_dag(DAGS / "skyops_healthcheck.py")
    assert dr.state == "success"
    store = ProvenanceStore.from_config()
    info = store.show_attempt(dr.run_id)
    tasks = {t["task_id"]: t for t in info["tasks"]}
    assert set(tasks) == {"check_provenance", "check_archive", "check_tools", "check_workspace", "report"}
    assert all(t["status"] == "success" for t in tasks.values()), tasks
    tools = tasks["check_tools"]
    assert "SWarp" in tools["versions"] and tools["versions"]["SWarp"].startswith("SWarp version 2.")
    assert tools["executor"] == "local" and tools["host"]
    # The report is derived from the four check files, and provenance can say so.
    report = generated(store, dr.run_id, "health_report")
    assert len(report) == 1
    parents = store.ancestors(report[0])
    assert {Path(p).name for p in parents} == {f"health_{c}.json" for c in ("provenance", "archive", "tools", "workspace")}
    text = Path(report[0]).read_text()
    assert "| tools | yes |" in text and "| archive | yes |" in text


def test_healthcheck_fails_when_archive_root_missing(run_dag, tmp_path, monkeypatch):
    make_empty_archive()
    monkeypatch.setenv("SKYOPS_ARCHIVE_ROOT", f"file://{tmp_path}/no_such_root")
    dr = run_dag(DAGS / "skyops_healthcheck.py")
    assert dr.state == "failed"
    info = ProvenanceStore.from_config().show_attempt(dr.run_id)
    tasks = {t["task_id"]: t for t in info["tasks"]}
    assert tasks["check_archive"]["status"] == "failed"
    assert "is not a readable directory" in tasks["check_archive"]["message"]
    assert tasks["check_tools"]["status"] == "success"
    # all_done: the report is still written and says what failed, then fails the run
    assert tasks["report"]["status"] == "failed"
    assert tasks["report"]["message"].endswith("1 of 4 health checks failed: archive")
    (report,) = generated(ProvenanceStore.from_config(), dr.run_id, "health_report")
    assert "| archive | NO |" in Path(report).read_text()
