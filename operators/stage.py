"""StageFilesOperator: a manifest's files from the archive into the workspace, verified.

Reads the manifest a :class:`~skyops.operators.desdm.DesdmQueryOperator` wrote (its path
comes through XCom, never the rows), stages with :func:`skyops.staging.stage` (streaming
md5, shared locked cache, bounded parallelism), and records in provenance a ``desfile``
row with md5 for every staged file and an ``opm_used`` edge from this task. The task log
gets one summary line; XCom gets the destination and the path of the staging report.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from airflow.sdk import BaseOperator, Context

from skyops.config import platform_config
from skyops.operators.compute import safe_segment, task_key


class StageFilesOperator(BaseOperator):
    """Stage ``manifest`` into ``dest`` (default: ``<persistent>/staged/<dag>/<run>/<task>``).

    :param manifest: path of a manifest file, or a list of them (templated; usually query XComs).
    :param dest: destination folder (templated).
    :param workers: parallel transfers.
    :param unit: the provenance unit (tile, night, field); templated.
    :param overwrite: fetch every file again (the GW scripts' ``-O``); templated.
    """

    template_fields: Sequence[str] = ("manifest", "dest", "unit", "overwrite")
    ui_color = "#e8f4e0"

    def __init__(self, *, manifest: Any, dest: str | None = None, workers: int = 4, retries: int = 4,
                 unit: str = "{{ run_id }}", overwrite: Any = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manifest = manifest
        self.overwrite = overwrite
        self.dest = dest
        self.workers = workers
        self.transfer_retries = retries
        self.unit = unit

    def execute(self, context: Context) -> dict[str, Any]:
        from skyops.launch import recorded_task
        from skyops.provenance import ProvenanceStore

        cfg = platform_config()
        key = task_key(context)
        dest = Path(self.dest) if self.dest else default_dest(cfg, key)
        store = ProvenanceStore.from_config(cfg)
        attempt_id = store.attempt(key.dag_id, key.run_id, str(self.unit))
        with recorded_task(store, key, "stage", attempt_id=attempt_id) as rec:
            out = stage_manifests(self, context, self.manifest, dest, rec, overwrite=self.overwrite,
                                  workers=self.workers, retries=self.transfer_retries)
        context["ti"].xcom_push(key="dest", value=str(dest))
        return out


def default_dest(cfg: Any, key: Any) -> Path:
    """Where a run stages when no destination is given: ``<persistent>/staged/<dag>/<run>``."""
    return Path(cfg.workspace.persistent) / "staged" / safe_segment(key.dag_id) / safe_segment(key.run_id)


def stage_manifests(op: BaseOperator, context: Context, manifest: Any, dest: Path, rec: Any, *,
                    overwrite: Any = False, workers: int = 4, retries: int = 4) -> dict[str, Any]:
    """Stage ``manifest`` (a path or a list of paths) into ``dest``, inside an open provenance record.

    ``rec`` (a :class:`~skyops.launch.TaskRecord`) gets every staged file as used, with its
    md5, and the transfer totals as metrics; the staging report is written beside the
    files. Returns ``{"dest", "report", "files", "bytes"}``, :class:`StageFilesOperator`'s XCom.
    """
    from skyops.manifest import merge_manifests
    from skyops.staging import open_source, plan, stage

    cfg = platform_config()
    key = task_key(context)
    merged = merge_manifests(manifest)
    if str(overwrite).lower() in ("true", "1", "yes"):  # -O: fetch everything again, bypassing what is here
        for f in plan(merged, dest, open_source(cfg.archive.root)):
            Path(f.dest).unlink(missing_ok=True)
        cache: Any = False
    else:
        cache = cfg.workspace.cache
    report = stage(merged, dest, root=cfg.archive.root, cache=cache, workers=workers, retries=retries)
    rec.used([{"path": str(f.path), "md5": f.md5, "size": f.size, "filetype": f.filetype} for f in report.files])
    rec.metrics.update(files=len(report.files), bytes=report.bytes, fetched=report.fetched,
                       cached=report.cached, skipped=report.skipped, seconds=round(report.seconds, 3))
    report_path = report.write(dest / f".stage_report_{safe_segment(key.task_id)}_{key.map_index}.json")
    op.log.info("%s", report.summary())
    return {"dest": str(dest), "report": str(report_path), "files": len(report.files), "bytes": report.bytes}
