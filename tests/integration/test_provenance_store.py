"""The provenance store's recording API on SQLite and PostgreSQL: schema, attempts, tasks,
files and edges, and that recording anything twice creates nothing twice."""
from __future__ import annotations

import threading
from dataclasses import replace
from enum import Enum
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from skyops.errors import ProvenanceInputError, ProvenanceSchemaError
from skyops.provenance import ProvenanceStore, TaskKey
from skyops.provenance.migrate import VERSION_TABLE
from skyops.provenance.records import utc
from skyops.provenance.schema import desfile, metadata, opm_was_derived_from, pfw_attempt, task

T0 = datetime(2024, 1, 5, 3, 0, tzinfo=timezone.utc)
KEY = TaskKey("gw_nightly", "scheduled__2024-01-05", "se_ccd", map_index=7)
RAW = {"path": "/arch/raw/c7.fits.fz", "md5": "0" * 32, "size": 1000, "filetype": "raw"}
BIAS = {"path": "/arch/cal/bias.fits", "md5": "1" * 32, "size": 500, "filetype": "cal_bias"}
RED = {"path": "/work/red/c7_red.fits", "md5": "2" * 32, "size": 2000, "filetype": "red_immask"}
CAT = {"path": "/work/red/c7_cat.fits", "md5": "3" * 32, "size": 300, "filetype": "cat_finalcut"}


@pytest.fixture
def store(db_url: str):
    s = ProvenanceStore(db_url)
    s.migrate()
    yield s
    s.close()


def rows(store: ProvenanceStore, table: sa.Table, *where) -> list[sa.Row]:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(table).where(*where)).all()


def record_se_ccd(store: ProvenanceStore) -> tuple[int, int, dict[str, int]]:
    att = store.attempt("gw_nightly", KEY.run_id, "20240105", reqnum=42, conf={"night": "20240105"})
    tid = store.task_started(KEY, name="gw.se_ccd", attempt_id=att, host="node1", config_digest="abc",
                             versions={"skyops": "0.1.0"}, start_time=T0)
    ids = store.record_files(tid, generated=[RED, CAT], used=[RAW, BIAS])
    store.task_finished(tid, status="success", exit_status=0, metrics={"nobj": 1234}, end_time=T0 + timedelta(minutes=5))
    return att, tid, ids


def test_migrate_twice_is_harmless_and_status_is_current(db_url: str) -> None:
    store = ProvenanceStore(db_url)
    before = store.status()
    assert (before["revision"], before["current"], before["counts"]) == (None, False, {})
    store.migrate()
    store.migrate()
    st = store.status()
    assert st == {
        "url": db_url, "revision": "0001", "head": "0001", "current": True,
        "counts": {"pfw_attempt": 0, "task": 0, "desfile": 0, "opm_used": 0, "opm_was_derived_from": 0},
    }
    store.close()


def test_unmigrated_database_says_what_to_do(db_url: str) -> None:
    store = ProvenanceStore(db_url)
    with pytest.raises(ProvenanceSchemaError) as err:
        store.task_started(KEY, name="x")
    assert str(err.value) == (
        f"provenance database at {db_url} is at revision None, expected 0001; run `skyops prov migrate`"
    )
    store.close()


def test_database_from_a_newer_skyops_is_refused(store: ProvenanceStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    fresh = ProvenanceStore(store.url)
    with pytest.raises(ProvenanceSchemaError) as err:
        fresh.lineage("x.fits")
    assert str(err.value) == (
        f"provenance database at {store.redacted_url} is at revision 9999, expected 0001; "
        "it was migrated by a newer skyops; upgrade skyops to use it"
    )
    with pytest.raises(ProvenanceSchemaError, match="is at revision 9999, which this skyops does not know"):
        fresh.migrate()
    fresh.close()


def test_migrated_schema_matches_the_metadata_queries_use(store: ProvenanceStore) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
        assert compare_metadata(ctx, metadata) == []


def test_attempt_numbers_count_per_unit(store: ProvenanceStore) -> None:
    a1 = store.attempt("gw_nightly", "run_a", "20240105", reqnum=1)
    assert store.attempt("gw_nightly", "run_a", "20240105") == a1
    a2 = store.attempt("gw_nightly", "run_b", "20240105")
    other = store.attempt("gw_nightly", "run_b", "20240106")
    elsewhere = store.attempt("balrog", "run_b", "20240105")
    att = {r.id: r for r in rows(store, pfw_attempt)}
    assert [att[i].attnum for i in (a1, a2, other, elsewhere)] == [1, 2, 1, 1]
    assert att[a1].reqnum == 1 and att[a1].status == "running"
    store.finish_attempt(a1, "success")
    shown = store.show_attempt(a1)
    assert shown["status"] == "success" and shown["end_time"] is not None
    with pytest.raises(ProvenanceInputError, match="pfw_attempt id 999999 is not recorded"):
        store.finish_attempt(999_999, "failed")


def test_recording_twice_creates_no_duplicates(store: ProvenanceStore) -> None:
    first = record_se_ccd(store)
    counts = store.status()["counts"]
    assert counts == {"pfw_attempt": 1, "task": 1, "desfile": 4, "opm_used": 2, "opm_was_derived_from": 4}
    second = record_se_ccd(store)
    store.add_derivations([(RAW["path"], RED["path"])])
    assert second == first
    assert store.status()["counts"] == counts


def test_task_rows_keep_what_is_known(store: ProvenanceStore) -> None:
    att, tid, _ = record_se_ccd(store)
    (row,) = rows(store, task, task.c.id == tid)
    assert (row.name, row.pfw_attempt_id, row.executor, row.host, row.status, row.exit_status) == (
        "gw.se_ccd", att, "local", "node1", "success", 0)
    assert row.metrics == '{"nobj": 1234}' and row.versions == '{"skyops": "0.1.0"}'
    # the operator recording the start again (a retried callback) does not un-finish the try
    assert store.task_started(KEY, name="gw.se_ccd") == tid
    (row,) = rows(store, task, task.c.id == tid)
    assert (row.status, row.pfw_attempt_id, row.host, row.config_digest) == ("success", att, "node1", "abc")


class State(str, Enum):
    """Like Airflow's TaskInstanceState: a str enum whose str() is not its value."""

    QUEUED = "queued"


def test_record_state_creates_updates_and_keeps_tries_apart(store: ProvenanceStore) -> None:
    key = TaskKey("gw_nightly", "run_a", "query_ccds")
    tid = store.record_state(key, State.QUEUED)
    assert rows(store, task, task.c.id == tid)[0].status == "queued"
    assert store.record_state(key, "running", host="w1", start_time=T0) == tid
    retry = TaskKey("gw_nightly", "run_a", "query_ccds", try_number=2)
    assert store.record_state(key, "up_for_retry", end_time=T0 + timedelta(seconds=30), message="timeout") == tid
    tid2 = store.record_state(retry, "success", name="archive.query", executor="celery")
    assert tid2 != tid
    by_try = {r.try_number: r for r in rows(store, task, task.c.task_id == "query_ccds")}
    assert sorted(by_try) == [1, 2]
    one, two = by_try[1], by_try[2]
    assert (one.name, one.status, one.host, one.message) == ("query_ccds", "up_for_retry", "w1", "timeout")
    assert (two.name, two.status, two.executor) == ("archive.query", "success", "celery")
    # the UI marks the first try failed: the listener overwrites the state, keeps the rest
    assert store.record_state(key, "failed") == tid
    (one,) = rows(store, task, task.c.id == tid)
    assert (one.status, one.host, one.message) == ("failed", "w1", "timeout")
    # the operator then attaches the try to its attempt and names its step
    att = store.attempt("gw_nightly", "run_a", "20240105")
    assert store.task_started(retry, name="archive.query", attempt_id=att) == tid2
    (two,) = rows(store, task, task.c.id == tid2)
    assert (two.status, two.pfw_attempt_id) == ("success", att)


def test_record_clears_marks_ended_tries(store: ProvenanceStore) -> None:
    _, tid, _ = record_se_ccd(store)
    unseen = TaskKey("gw_nightly", KEY.run_id, "never_seen")
    assert store.record_clears([KEY, KEY, unseen]) == 2
    (row,) = rows(store, task, task.c.id == tid)
    assert (row.status, row.exit_status, row.host, row.end_time is not None) == ("cleared", 0, "node1", True)
    assert rows(store, task, task.c.task_id == "never_seen")[0].status == "cleared"
    assert store.task_started(KEY, name="gw.se_ccd") == tid  # a late callback does not revive it
    assert rows(store, task, task.c.id == tid)[0].status == "cleared"
    assert store.record_clears([]) == 0


def test_run_files_lists_what_a_run_generated(store: ProvenanceStore) -> None:
    att, _, _ = record_se_ccd(store)
    other = store.attempt("gw_nightly", KEY.run_id, "20240106")
    t2 = store.task_started(TaskKey("gw_nightly", KEY.run_id, "report"), name="gw.report", attempt_id=other)
    store.record_files(t2, generated=[{"path": "/work/night.md", "filetype": "night_report"}])
    assert store.run_files(KEY.run_id) == ["/work/night.md", CAT["path"], RED["path"]]
    assert store.run_files(KEY.run_id, filetype="night_report") == ["/work/night.md"]
    assert store.run_files(att) == [CAT["path"], RED["path"]]
    assert store.run_files("20240106", filetype="") == ["/work/night.md"]
    with pytest.raises(ProvenanceInputError, match="run 'nope' is not recorded"):
        store.run_files("nope")


def test_files_are_updated_when_recorded_again(store: ProvenanceStore) -> None:
    _, tid, ids = record_se_ccd(store)
    rerun = store.task_started(replace(KEY, try_number=2), name="gw.se_ccd")
    new_red = {**RED, "md5": "f" * 32, "size": 2001}
    again = store.record_files(rerun, generated=[new_red], used=[RAW])
    assert again == {RED["path"]: ids[RED["path"]], RAW["path"]: ids[RAW["path"]]}
    (red,) = rows(store, desfile, desfile.c.id == ids[RED["path"]])
    assert (red.md5sum, red.filesize, red.wgb_task_id, red.filetype) == ("f" * 32, 2001, rerun, "red_immask")
    # using a file without checksums leaves the recorded ones alone
    store.record_files(rerun, used=[{"path": BIAS["path"]}])
    (bias,) = rows(store, desfile, desfile.c.id == ids[BIAS["path"]])
    assert (bias.md5sum, bias.filesize, bias.filetype, bias.wgb_task_id) == ("1" * 32, 500, "cal_bias", None)
    # a used file whose size was not known gets it
    store.record_files(rerun, used=[{"path": "/arch/new.fits"}])
    store.record_files(rerun, used=[{"path": "/arch/new.fits", "size": 77, "md5sum": "a" * 32}])
    (new,) = rows(store, desfile, desfile.c.filename == "new.fits")
    assert (new.filesize, new.md5sum, new.compression) == (77, "a" * 32, None)
    (raw,) = rows(store, desfile, desfile.c.filename == "c7.fits.fz")
    assert raw.compression == ".fz"


def test_derivation_modes(store: ProvenanceStore) -> None:
    tid = store.task_started(KEY, name="gw.se_ccd")
    ids = store.record_files(tid, generated=[RED, CAT], used=[RAW, BIAS], derivation="none")
    assert rows(store, opm_was_derived_from) == []
    store.add_derivations([(RAW["path"], RED["path"]), (RED["path"], CAT["path"])])
    edges = {(r.parent_desfile_id, r.child_desfile_id) for r in rows(store, opm_was_derived_from)}
    assert edges == {(ids[RAW["path"]], ids[RED["path"]]), (ids[RED["path"]], ids[CAT["path"]])}
    assert store.ancestors(CAT["path"]) == {RAW["path"], RED["path"]}


def test_bad_records_are_refused_with_the_reason(store: ProvenanceStore) -> None:
    where = store.redacted_url
    with pytest.raises(ProvenanceInputError) as err:
        store.record_files(12345, generated=[RED])
    assert str(err.value) == (
        f"task id 12345 is not recorded in the provenance database at {where}; "
        "pass the id returned by task_started() or record_state()"
    )
    tid = store.task_started(KEY, name="gw.se_ccd")
    with pytest.raises(ProvenanceInputError, match=r"record_files\(derivation='some'\) for task \d+: expected one of all, none"):
        store.record_files(tid, generated=[RED], derivation="some")
    with pytest.raises(ProvenanceInputError, match=r"used\[1\] of task \d+: a file record needs a 'path'"):
        store.record_files(tid, used=[RAW, {"md5": "x"}])
    with pytest.raises(ProvenanceInputError, match="'size' of /work/red/c7_red.fits must be a byte count"):
        store.record_files(tid, generated=[{**RED, "size": "big"}])
    with pytest.raises(ProvenanceInputError) as err:
        store.add_derivations([("/nowhere/a.fits", RED["path"])])
    assert str(err.value) == (
        f"2 file(s) are not recorded in the provenance database at {where}: /nowhere/a.fits, /work/red/c7_red.fits; "
        "record them with record_files() before adding derivations between them"
    )
    assert store.status()["counts"]["desfile"] == 0  # nothing half-recorded


def test_show_attempt_lists_tries_and_file_counts(store: ProvenanceStore) -> None:
    att, tid, _ = record_se_ccd(store)
    store.record_state(TaskKey("gw_nightly", KEY.run_id, "query_ccds"), "success")  # listener, no attempt
    store.record_state(TaskKey("gw_nightly", "other_run", "query_ccds"), "success")  # another run
    retry = store.task_started(replace(KEY, try_number=2), name="gw.se_ccd", attempt_id=att)
    store.task_finished(retry, status="failed", exit_status=1, message="SExtractor crashed")
    for run in (att, str(att), KEY.run_id, "20240105"):
        info = store.show_attempt(run)
        assert (info["id"], info["campaign"], info["unitname"], info["attnum"], info["reqnum"]) == (
            att, "gw_nightly", "20240105", 1, 42)
    assert info["conf"] == {"night": "20240105"}
    assert [(t["task_id"], t["map_index"], t["try_number"], t["status"], t["files_generated"], t["files_used"])
            for t in info["tasks"]] == [("query_ccds", -1, 1, "success", 0, 0), ("se_ccd", 7, 1, "success", 2, 2),
                                        ("se_ccd", 7, 2, "failed", 0, 0)]
    assert info["tasks"][2]["message"] == "SExtractor crashed"
    assert info["tasks"][1]["start_time"] == T0 and info["tasks"][1]["metrics"] == {"nobj": 1234}
    assert info["files"] == {"generated": 2, "used": 2}
    later = store.attempt("gw_nightly", "run_later", "20240105")
    assert store.show_attempt("20240105")["id"] == later
    with pytest.raises(ProvenanceInputError, match="run 'nope' is not recorded in the provenance database"):
        store.show_attempt("nope")


def test_a_run_with_several_units_needs_the_attempt(store: ProvenanceStore) -> None:
    a = store.attempt("balrog", "run_1", "DES0001-0001")
    b = store.attempt("balrog", "run_1", "DES0002-0002")
    with pytest.raises(ProvenanceInputError) as err:
        store.show_attempt("run_1")
    assert str(err.value) == (
        f"run id 'run_1' has 2 attempts in the provenance database at {store.redacted_url} (one per unit): "
        f"{a} (balrog DES0001-0001), {b} (balrog DES0002-0002); give the attempt id or the unit name"
    )


def test_parallel_writers_share_inputs_without_duplicates(store: ProvenanceStore) -> None:
    """Four threads record tasks that use the same inputs: no error, one row per file."""
    shared = [{"path": f"/arch/cal/flat_{i}.fits", "md5": f"{i:032x}"} for i in range(50)]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for k in range(5):
                tid = store.task_started(TaskKey("d", "r", f"t{n}", map_index=k), name="p")
                store.record_files(tid, generated=[{"path": f"/out/{n}/{k}.fits"}], used=shared)
                store.attempt("d", "r", f"unit{k}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counts = store.status()["counts"]
    assert (counts["desfile"], counts["task"], counts["opm_used"], counts["pfw_attempt"]) == (70, 20, 1000, 5)
    assert counts["opm_was_derived_from"] == 1000


def test_run_end_finishes_its_attempts_and_a_clear_reopens_them(store: ProvenanceStore) -> None:
    """finish_run (the listener's DAG-run end hook) and unit_status (campaign status)."""
    a1 = store.attempt("balrog_tile", "run1", "DES0239+0216")
    store.task_started(TaskKey("balrog_tile", "run1", "coadd", -1, 1), name="balrog.coadd", attempt_id=a1)
    a2 = store.attempt("balrog_tile", "run2", "DES0239+0216")  # a second run of the same tile
    store.task_started(TaskKey("balrog_tile", "run2", "coadd", -1, 1), name="balrog.coadd", attempt_id=a2)
    other = store.attempt("balrog_tile", "run3", "DES0240+0001")
    store.task_started(TaskKey("balrog_tile", "run3", "coadd", -1, 1), name="balrog.coadd", attempt_id=other)
    assert store.finish_run("balrog_tile", "run1", "failed") == 1
    assert store.finish_run("balrog_tile", "run2", "success") == 1
    assert store.finish_run("other_dag", "run3", "success") == 0  # another DAG's run of that id: untouched
    st = store.unit_status("balrog_tile")
    assert st["DES0239+0216"]["status"] == "success" and st["DES0239+0216"]["attnum"] == 2
    assert st["DES0240+0001"]["status"] == "running"
    assert set(store.unit_status("balrog_tile", ["DES0240+0001", "DES9999+0000"])) == {"DES0240+0001"}
    # clearing a task of run2 re-opens its attempt until the run ends again
    assert store.attempt("balrog_tile", "run2", "DES0239+0216") == a2
    assert store.unit_status("balrog_tile")["DES0239+0216"]["status"] == "running"


def test_record_state_keep_times_fills_only_empty_times(store: ProvenanceStore) -> None:
    """The listener's Airflow-side times must not overwrite a remote step's own (keep_times)."""
    key = TaskKey("gw_nightly", "run_k", "se", map_index=4)
    step_start, step_end = T0, T0 + timedelta(minutes=5)
    tid = store.record_state(key, "running", start_time=step_start, end_time=step_end)
    resumed = T0 + timedelta(hours=2)
    assert store.record_state(key, "success", start_time=resumed, end_time=resumed, keep_times=True) == tid
    (row,) = rows(store, task, task.c.id == tid)
    assert (row.status, utc(row.start_time), utc(row.end_time)) == ("success", step_start, step_end)
    # a try with no times yet takes the listener's
    other = TaskKey("gw_nightly", "run_k", "se", map_index=5)
    tid2 = store.record_state(other, "running")
    store.record_state(other, "failed", end_time=resumed, keep_times=True)
    (row,) = rows(store, task, task.c.id == tid2)
    assert (row.status, utc(row.end_time)) == ("failed", resumed)
    # without keep_times the times are replaced, as before
    store.record_state(other, "failed", end_time=step_end)
    (row,) = rows(store, task, task.c.id == tid2)
    assert utc(row.end_time) == step_end
