"""DesdmQueryOperator: run a named DESDM query and write its manifest to a file.

The rows never travel through XCom: the manifest is written (atomically) into the
workspace and XCom carries its path and row count. The query name and its parameters
are checked when the DAG is parsed, so a typo fails in the DAG processor, not at 3 a.m.
The manifest is recorded in provenance as a file this task generated.

:func:`query_manifests` runs several named queries over one connection inside another
operator's provenance record, so that a pipeline needing several small lookups before it can
stage pays one task start for all of them (the GW exposure's ``prepare`` task, which also
stages and plans); :func:`checked_queries` checks such a ``{name: (query, params)}`` set when
the DAG is parsed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from airflow.sdk import BaseOperator, Context

from skyops.config import platform_config
from skyops.operators.compute import safe_segment, task_key


class DesdmQueryOperator(BaseOperator):
    """Run archive query ``query`` with ``query_params`` (templated) into a manifest file.

    :param query: a named query (``se_sources``, ``night_exposures``, ``templates``, ...).
    :param query_params: its bind parameters; templated, may hold XComArgs.
    :param manifest_path: where to write the manifest (templated); default under the scratch workspace.
    :param unit: the provenance unit (tile, night, field); templated.
    """

    template_fields: Sequence[str] = ("query_params", "manifest_path", "unit")
    template_fields_renderers = {"query_params": "json"}
    ui_color = "#f4ecd8"

    def __init__(self, *, query: str, query_params: dict[str, Any] | None = None, manifest_path: str | None = None,
                 unit: str = "{{ run_id }}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.query = query
        from skyops.archive.queries import get_query

        get_query(query)  # unknown query name: fails at parse time, naming it
        self.query_params = query_params or {}
        self.manifest_path = manifest_path
        self.unit = unit

    def execute(self, context: Context) -> dict[str, Any]:
        out = Path(self.manifest_path) if self.manifest_path else None
        got = _run_queries(self, context, {self.query: (self.query, dict(self.query_params))},
                           f"query.{self.query}", {self.query: out} if out else None)[self.query]
        context["ti"].xcom_push(key="manifest", value=got["manifest"])  # so that `op.output["manifest"]` works
        return got


def checked_queries(task_id: str | None, queries: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{name: (query, params)}`` checked when the DAG is parsed: a malformed entry or an
    unknown query name fails in the DAG processor, naming the task and the query."""
    from skyops.archive.queries import get_query

    if not queries:
        raise ValueError(f"{task_id}: needs at least one archive query")
    for name, spec in queries.items():
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
            raise ValueError(f"{task_id}: query {name!r} must be (query name, params), got {spec!r}")
        get_query(spec[0])  # unknown query name: fails at parse time, naming it
    return {name: (spec[0], spec[1] or {}) for name, spec in queries.items()}


def _run_queries(op: BaseOperator, context: Context, queries: dict[str, tuple[str, dict[str, Any]]],
                 record_name: str, paths: dict[str, Path] | None = None) -> dict[str, dict[str, Any]]:
    """Run ``queries`` over one connection into manifest files, recorded as one provenance task."""
    from skyops.launch import recorded_task
    from skyops.provenance import ProvenanceStore

    cfg = platform_config()
    key = task_key(context)
    store = ProvenanceStore.from_config(cfg)
    attempt_id = store.attempt(key.dag_id, key.run_id, str(getattr(op, "unit", key.run_id)))
    with recorded_task(store, key, record_name[:250], attempt_id=attempt_id) as rec:
        return query_manifests(op, context, queries, rec, paths)


def query_manifests(op: BaseOperator, context: Context, queries: dict[str, tuple[str, dict[str, Any]]],
                    rec: Any, paths: dict[str, Path] | None = None) -> dict[str, dict[str, Any]]:
    """Run ``queries`` over one connection into manifest files, inside an open provenance record.

    ``rec`` (a :class:`~skyops.launch.TaskRecord`) gets each manifest as a generated file
    and the row counts as metrics, so that a task that also does something else with the
    manifests (stage them) keeps one provenance row. Returns ``{name: {"manifest", "rows"}}``.
    """
    from skyops.archive import ArchiveDB
    from skyops.fileio import md5sum

    cfg = platform_config()
    key = task_key(context)
    folder = Path(cfg.workspace.scratch) / safe_segment(key.dag_id) / safe_segment(key.run_id) / "manifests"
    got: dict[str, dict[str, Any]] = {}
    db = ArchiveDB.from_config(cfg)
    try:
        for name, (query, params) in queries.items():
            out = (paths or {}).get(name) or (
                folder / f"{safe_segment(key.task_id)}_{key.map_index}_{safe_segment(name)}.json")
            manifest = db.query(query, **params)
            manifest.write(out)
            rec.generated([{"path": str(out), "md5": md5sum(out), "size": out.stat().st_size,
                            "filetype": "manifest"}])
            got[name] = {"manifest": str(out), "rows": len(manifest)}
            op.log.info("query %s %s -> %d rows, manifest %s", query, params, len(manifest), out)
    finally:
        db.dispose()
    if len(queries) == 1:
        rec.metrics.update(rows=got[next(iter(got))]["rows"], query=next(iter(queries.values()))[0])
    else:
        rec.metrics.update(rows={name: v["rows"] for name, v in got.items()},
                           queries={name: q for name, (q, _) in queries.items()})
    return got
