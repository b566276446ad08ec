"""The local executor and run_recorded: logs streamed, provenance written, kills survived."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from skyops.executors import LocalExecutor, StepSpec
from skyops.launch import StepFailed, run_recorded
from skyops.provenance import ProvenanceStore, TaskKey


def task_row(store: ProvenanceStore, task_id: str):
    with store.engine.connect() as c:
        return c.execute(sa.text("SELECT status, exit_status, message FROM task WHERE task_id = :t"),
                         {"t": task_id}).one()


@pytest.fixture
def store(tmp_path) -> ProvenanceStore:
    s = ProvenanceStore(f"sqlite:///{tmp_path / 'prov.sqlite'}")
    s.migrate()
    return s


def test_chain_records_files_and_edges(tmp_path, store):
    lines: list[str] = []
    ex = LocalExecutor()
    a = run_recorded(StepSpec("selftest.make_image", {"nstars": 10, "size": 96, "seed": 5}, tmp_path / "a"),
                     ex, store, TaskKey("d", "r1", "make"), log_sink=lines.append)
    assert any("step selftest.make_image starting" in ln for ln in lines)
    res = a.outcome.result
    img, truth = res.output_paths("selftest_image")[0], res.output_paths("selftest_truth")[0]
    b = run_recorded(StepSpec("selftest.measure", {"image": img, "truth": truth}, tmp_path / "b"),
                     ex, store, TaskKey("d", "r1", "measure"))
    cat = b.outcome.result.output_paths("selftest_catalog")[0]
    assert store.ancestors(cat) == {img, truth}
    assert store.descendants(img) == {cat}
    assert (tmp_path / "b" / "step.log").read_text().count("selftest.measure") >= 2


def test_bad_params_fail_with_exit_2_and_failed_row(tmp_path, store):
    with pytest.raises(StepFailed) as e:
        run_recorded(StepSpec("selftest.make_image", {"bogus": 1}, tmp_path), LocalExecutor(), store,
                     TaskKey("d", "r1", "bad"))
    assert e.value.exit_code == 2
    assert "unknown parameter 'bogus'" in str(e.value)
    assert task_row(store, "bad").status == "failed"
    assert task_row(store, "bad").exit_status == 2


def test_sigkill_mid_write_leaves_no_output_and_a_failed_task(tmp_path, store):
    ex = LocalExecutor()
    spec = StepSpec("selftest.slow_write", {"megabytes": 40, "seconds": 20.0}, tmp_path / "w")
    key = TaskKey("d", "r1", "slow")
    outcome: dict = {}

    def target() -> None:
        try:
            run_recorded(spec, ex, store, key)
        except StepFailed as exc:
            outcome["error"] = exc

    th = threading.Thread(target=target)
    th.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        parts = list((tmp_path / "w").glob(".blob.bin.*.part"))
        if parts and parts[0].stat().st_size >= 2 << 20:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the step never started writing")
    os.killpg(ex._proc.pid, signal.SIGKILL)
    th.join(60)
    err = outcome["error"]
    assert err.outcome.returncode == -signal.SIGKILL
    assert not (tmp_path / "w" / "blob.bin").exists()
    assert not list((tmp_path / "w").glob(".*.part"))
    assert not (tmp_path / "w" / "result.json").exists()
    row = task_row(store, "slow")
    assert row.status == "failed" and row.exit_status == -9
    assert "killed by signal 9 (SIGKILL) before writing result.json" in row.message
