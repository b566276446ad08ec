"""W3C PROV-JSON of one attempt, through the ``prov`` package.

The mapping is the one DESDM's Open Provenance Model tables already imply:

- each ``desfile`` the attempt generated or used, and each recorded parent of a generated
  file, is an entity ``desfile:<id>`` (label = file name; path, md5, size, type);
- each try of each task is an activity ``skyops:task/<id>`` (start and end time, status,
  Airflow key, executor, host, exit status);
- ``wgb_task_id`` is wasGeneratedBy, ``opm_used`` is used, ``opm_was_derived_from`` is
  wasDerivedFrom;
- the attempt is an agent ``skyops:attempt/<id>`` that every activity wasAssociatedWith,
  acting on behalf of the campaign's agent ``skyops:campaign/<dag_id>``.
"""
from __future__ import annotations

from typing import Any, Iterable

import sqlalchemy as sa
from prov.model import PROV, ProvDocument

from skyops.provenance.records import join_path, utc
from skyops.provenance.runs import attempt_tasks_filter
from skyops.provenance.schema import desfile, opm_used, opm_was_derived_from, task

SKYOPS_NS = "urn:skyops:"
DESFILE_NS = "urn:skyops:desfile:"
wdf = opm_was_derived_from


def attempt_document(conn: sa.Connection, att: sa.Row) -> ProvDocument:
    """The PROV document of an attempt: its tasks, their files and the edges between them."""
    task_ids = sa.select(task.c.id).where(attempt_tasks_filter(att))
    generated_ids = sa.select(desfile.c.id).where(desfile.c.wgb_task_id.in_(task_ids))
    tasks = conn.execute(sa.select(task).where(task.c.id.in_(task_ids)).order_by(task.c.id)).all()
    used = conn.execute(
        sa.select(opm_used.c.task_id, opm_used.c.desfile_id).where(opm_used.c.task_id.in_(task_ids))
    ).all()
    derived = conn.execute(
        sa.select(wdf.c.parent_desfile_id, wdf.c.child_desfile_id).where(wdf.c.child_desfile_id.in_(generated_ids))
    ).all()
    file_ids = sa.union(
        generated_ids,
        sa.select(opm_used.c.desfile_id).where(opm_used.c.task_id.in_(task_ids)),
        sa.select(wdf.c.parent_desfile_id).where(wdf.c.child_desfile_id.in_(generated_ids)),
    )
    files = conn.execute(sa.select(desfile).where(desfile.c.id.in_(file_ids)).order_by(desfile.c.id)).all()
    return build_document(att, tasks, files, used, derived)


def build_document(
    att: sa.Row,
    tasks: Iterable[sa.Row],
    files: Iterable[sa.Row],
    used: Iterable[tuple[int, int]],
    derived: Iterable[tuple[int, int]],
) -> ProvDocument:
    """Assemble the document from rows (see the module docstring for the mapping)."""
    doc = ProvDocument()
    doc.add_namespace("skyops", SKYOPS_NS)
    doc.add_namespace("desfile", DESFILE_NS)
    agent = _agents(doc, att)
    ends = {}
    for t in tasks:
        _activity(doc, t)
        doc.wasAssociatedWith(_task_id(t.id), agent)
        ends[t.id] = utc(t.end_time)
    for f in files:
        _entity(doc, f)
        if f.wgb_task_id in ends:
            doc.wasGeneratedBy(_file_id(f.id), _task_id(f.wgb_task_id), ends[f.wgb_task_id])
    for task_id, file_id in sorted(used):
        doc.used(_task_id(task_id), _file_id(file_id))
    for parent, child in sorted(derived):
        doc.wasDerivedFrom(_file_id(child), _file_id(parent))
    return doc


def _agents(doc: ProvDocument, att: sa.Row) -> str:
    campaign = f"skyops:campaign/{att.campaign}"
    doc.agent(campaign, {"prov:type": PROV["SoftwareAgent"], "prov:label": att.campaign})
    attempt = f"skyops:attempt/{att.id}"
    doc.agent(
        attempt,
        _present(
            {
                "prov:type": PROV["SoftwareAgent"],
                "prov:label": f"{att.campaign} {att.unitname} attempt {att.attnum}",
                "skyops:campaign": att.campaign,
                "skyops:unitname": att.unitname,
                "skyops:attnum": att.attnum,
                "skyops:reqnum": att.reqnum,
                "skyops:run_id": att.run_id,
                "skyops:status": att.status,
            }
        ),
    )
    doc.actedOnBehalfOf(attempt, campaign)
    return attempt


def _activity(doc: ProvDocument, t: sa.Row) -> None:
    attrs = {
        "prov:label": t.name,
        "skyops:dag_id": t.dag_id,
        "skyops:run_id": t.run_id,
        "skyops:task_id": t.task_id,
        "skyops:map_index": t.map_index,
        "skyops:try_number": t.try_number,
        "skyops:status": t.status,
        "skyops:executor": t.executor,
        "skyops:host": t.host,
        "skyops:exit_status": t.exit_status,
        "skyops:config_digest": t.config_digest,
    }
    doc.activity(_task_id(t.id), utc(t.start_time), utc(t.end_time), _present(attrs))


def _entity(doc: ProvDocument, f: sa.Row) -> None:
    attrs = {
        "prov:label": f.filename,
        "skyops:path": join_path(f.path, f.filename),
        "skyops:md5sum": f.md5sum,
        "skyops:filesize": f.filesize,
        "skyops:filetype": f.filetype,
        "skyops:compression": f.compression,
    }
    doc.entity(_file_id(f.id), _present(attrs))


def _present(attrs: dict[str, Any]) -> dict[str, Any]:
    """PROV has no null: leave out what was not recorded."""
    return {k: v for k, v in attrs.items() if v is not None}


def _task_id(task_id: int) -> str:
    return f"skyops:task/{task_id}"


def _file_id(file_id: int) -> str:
    return f"desfile:{file_id}"
