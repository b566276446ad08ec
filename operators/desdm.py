"""DesdmQueryOperator: run a named DESDM query and write its manifest to a file.

The rows never travel through XCom: the manifest is written (atomically) into the
workspace and XCom carries its path and row count. The query name and its parameters
are checked when the DAG is parsed, so a typo fails in the DAG processor, not at 3 a.m.
The manifest is recorded in provenance as a file this task generated.
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
        from skyops.archive import ArchiveDB
        from skyops.fileio import md5sum
        from skyops.launch import recorded_task
        from skyops.provenance import ProvenanceStore

        cfg = platform_config()
        key = task_key(context)
        out = Path(self.manifest_path) if self.manifest_path else (
            Path(cfg.workspace.scratch) / safe_segment(key.dag_id) / safe_segment(key.run_id)
            / "manifests" / f"{safe_segment(key.task_id)}_{key.map_index}_{self.query}.json")
        store = ProvenanceStore.from_config(cfg)
        attempt_id = store.attempt(key.dag_id, key.run_id, str(self.unit))
        with recorded_task(store, key, f"query.{self.query}", attempt_id=attempt_id) as rec:
            db = ArchiveDB.from_config(cfg)
            try:
                manifest = db.query(self.query, **dict(self.query_params))
            finally:
                db.dispose()
            manifest.write(out)
            rec.generated([{"path": str(out), "md5": md5sum(out), "size": out.stat().st_size,
                            "filetype": "manifest"}])
            rec.metrics.update(rows=len(manifest), query=self.query)
        self.log.info("query %s %s -> %d rows, manifest %s", self.query, self.query_params, len(manifest), out)
        context["ti"].xcom_push(key="manifest", value=str(out))  # so that `op.output["manifest"]` works
        return {"manifest": str(out), "rows": len(manifest)}
