"""A DAG chaining two real steps through ComputeOperator, run with dag.test()."""
from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from skyops.config import PROJECT_ROOT
from skyops.provenance import ProvenanceStore


def rows(store: ProvenanceStore, sql: str, **params):
    with store.engine.connect() as c:
        return c.execute(sa.text(sql), params).all()


def test_chain_runs_and_provenance_holds_the_graph(run_dag):
    dr = run_dag(PROJECT_ROOT / "tests" / "dags" / "selftest_chain.py")
    assert dr.state == "success"
    tis = {(ti.task_id, ti.map_index): ti for ti in dr.get_task_instances()}
    assert {ti.rendered_map_index for (tid, _), ti in tis.items() if tid == "make_mapped"} == {
        "seed=1", "seed=2", "seed=3"}

    store = ProvenanceStore.from_config()
    tasks = rows(store, "SELECT task_id, map_index, try_number, status, executor, metrics, pfw_attempt_id "
                        "FROM task WHERE run_id = :r ORDER BY task_id, map_index", r=dr.run_id)
    assert [(t.task_id, t.map_index, t.status) for t in tasks] == [
        ("make_image", -1, "success"), ("make_mapped", 0, "success"), ("make_mapped", 1, "success"),
        ("make_mapped", 2, "success"), ("measure", -1, "success")]
    assert len({t.pfw_attempt_id for t in tasks}) == 1 and tasks[0].pfw_attempt_id is not None
    measure = next(t for t in tasks if t.task_id == "measure")
    metrics = json.loads(measure.metrics)
    assert metrics["completeness"] >= 0.95 and metrics["pos_rms_pix"] < 0.05  # science, not just plumbing

    cat = rows(store, "SELECT f.path, f.filename, f.md5sum FROM desfile f JOIN task t ON f.wgb_task_id = t.id "
                      "WHERE t.run_id = :r AND f.filetype = 'selftest_catalog'", r=dr.run_id)
    assert len(cat) == 1
    cat_path = f"{cat[0].path}/{cat[0].filename}"
    assert len(cat[0].md5sum) == 32
    assert {Path(p).name for p in store.ancestors(cat_path)} == {"selftest_image.fits", "selftest_truth.fits"}
    # The mapped tries wrote into their own workdirs: three distinct images, none shared.
    mapped = rows(store, "SELECT f.path FROM desfile f JOIN task t ON f.wgb_task_id = t.id "
                         "WHERE t.run_id = :r AND t.task_id = 'make_mapped' AND f.filetype = 'selftest_image'",
                  r=dr.run_id)
    assert len({m.path for m in mapped}) == 3
