"""skyops' provenance database, after DESDM's provenance model.

Every try of every task, every file it generated or used and every "was derived from"
edge is recorded in a database of skyops' own (SQLite by default, PostgreSQL in
production; never Airflow's metadata DB). Operators then ask it where a file came from
(:meth:`ProvenanceStore.lineage`), what a bad file spoiled (:meth:`ProvenanceStore.impact`),
what a run did (:meth:`ProvenanceStore.show_attempt`), or for a W3C PROV-JSON document
(:meth:`ProvenanceStore.export_prov_json`).

Typical use by the ComputeOperator::

    store = ProvenanceStore.from_config()
    store.migrate()
    att = store.attempt("gw_nightly", run_id, "20240105")
    tid = store.task_started(TaskKey("gw_nightly", run_id, "se_ccd", map_index=3), name="gw.se_ccd",
                             attempt_id=att, executor="kubernetes", versions=result["versions"])
    store.record_files(tid, generated=result["outputs"], used=result["used"])
    store.task_finished(tid, status="success", exit_status=0, metrics=result["metrics"])
"""
from skyops.provenance.lineage import ImpactedFile, ImpactReport, LineageNode
from skyops.provenance.records import FileInfo, TaskInfo, TaskKey
from skyops.provenance.store import ProvenanceStore

__all__ = [
    "FileInfo",
    "ImpactReport",
    "ImpactedFile",
    "LineageNode",
    "ProvenanceStore",
    "TaskInfo",
    "TaskKey",
]
