"""Attempts (``pfw_attempt``) and their tasks, as operators look them up.

An operator names a run the way they know it: the attempt id from a report, the Airflow
run id, or the unit (tile, night, field), meaning its latest attempt. The tasks of an
attempt are the tries recorded against it plus the tries the listener recorded for the same
DAG run without knowing the unit (query and staging tasks, for instance).
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from skyops.errors import ProvenanceInputError
from skyops.provenance.records import from_json, join_path, utc
from skyops.provenance.schema import desfile, opm_used, pfw_attempt, task


def resolve_attempt(conn: sa.Connection, run: str | int, where: str) -> sa.Row:
    """The attempt named by id, run id or unit name (latest attempt), tried in that order."""
    text = str(run)
    if isinstance(run, int) or text.isdigit():
        row = conn.execute(sa.select(pfw_attempt).where(pfw_attempt.c.id == int(text))).first()
        if row is not None:
            return row
        if isinstance(run, int):
            raise _unknown(text, where)
    by_run = conn.execute(
        sa.select(pfw_attempt).where(pfw_attempt.c.run_id == text).order_by(pfw_attempt.c.id)
    ).all()
    if len(by_run) > 1:
        units = ", ".join(f"{r.id} ({r.campaign} {r.unitname})" for r in by_run[:20])
        raise ProvenanceInputError(
            f"run id {text!r} has {len(by_run)} attempts in the provenance database at {where} "
            f"(one per unit): {units}; give the attempt id or the unit name"
        )
    if by_run:
        return by_run[0]
    latest = conn.execute(
        sa.select(pfw_attempt)
        .where(pfw_attempt.c.unitname == text)
        .order_by(pfw_attempt.c.id.desc())
        .limit(1)
    ).first()
    if latest is None:
        raise _unknown(text, where)
    return latest


def attempts_of_run(conn: sa.Connection, run: str | int, where: str) -> list[sa.Row]:
    """Every attempt (one per unit) of the DAG run when ``run`` is a run id; otherwise the
    one attempt :func:`resolve_attempt` finds (same precedence: id, run id, unit name)."""
    text = str(run)
    if not (isinstance(run, int) or (text.isdigit() and _exists(conn, int(text)))):
        rows = conn.execute(
            sa.select(pfw_attempt).where(pfw_attempt.c.run_id == text).order_by(pfw_attempt.c.id)
        ).all()
        if rows:
            return rows
    return [resolve_attempt(conn, run, where)]


def _exists(conn: sa.Connection, attempt_id: int) -> bool:
    return conn.execute(sa.select(pfw_attempt.c.id).where(pfw_attempt.c.id == attempt_id)).first() is not None


def generated_files(conn: sa.Connection, attempts: list[sa.Row], filetype: str | None) -> list[str]:
    """Full paths of the files the attempts' tasks generated, optionally of one filetype."""
    task_ids = sa.select(task.c.id).where(sa.or_(*(attempt_tasks_filter(a) for a in attempts)))
    query = sa.select(desfile.c.path, desfile.c.filename).where(desfile.c.wgb_task_id.in_(task_ids))
    if filetype:
        query = query.where(desfile.c.filetype == filetype)
    return sorted(join_path(p, f) for p, f in conn.execute(query))


def _unknown(text: str, where: str) -> ProvenanceInputError:
    return ProvenanceInputError(
        f"run {text!r} is not recorded in the provenance database at {where}: no attempt has that "
        "id, run id or unit name; `skyops prov status` shows what the database holds"
    )


def attempt_tasks_filter(att: sa.Row) -> sa.ColumnElement[bool]:
    """Tries recorded against the attempt, or in its DAG run without an attempt."""
    return sa.or_(
        task.c.pfw_attempt_id == att.id,
        sa.and_(task.c.pfw_attempt_id.is_(None), task.c.dag_id == att.campaign, task.c.run_id == att.run_id),
    )


def attempt_dict(att: sa.Row) -> dict[str, Any]:
    return {
        "id": att.id,
        "campaign": att.campaign,
        "unitname": att.unitname,
        "attnum": att.attnum,
        "reqnum": att.reqnum,
        "run_id": att.run_id,
        "status": att.status,
        "start_time": utc(att.start_time),
        "end_time": utc(att.end_time),
        "conf": from_json(att.conf),
    }


def show(conn: sa.Connection, att: sa.Row) -> dict[str, Any]:
    """The attempt, each try of each of its tasks with its file counts, and totals."""
    generated = (
        sa.select(sa.func.count()).select_from(desfile).where(desfile.c.wgb_task_id == task.c.id).scalar_subquery()
    )
    used = sa.select(sa.func.count()).select_from(opm_used).where(opm_used.c.task_id == task.c.id).scalar_subquery()
    where = attempt_tasks_filter(att)
    rows = conn.execute(
        sa.select(task, generated.label("files_generated"), used.label("files_used"))
        .where(where)
        .order_by(task.c.task_id, task.c.map_index, task.c.try_number, task.c.dag_id, task.c.run_id)
    ).all()
    distinct_used = conn.execute(
        sa.select(sa.func.count(sa.distinct(opm_used.c.desfile_id))).where(
            opm_used.c.task_id.in_(sa.select(task.c.id).where(where))
        )
    ).scalar_one()
    out = attempt_dict(att)
    out["tasks"] = [_task_dict(r) for r in rows]
    out["files"] = {"generated": sum(r.files_generated for r in rows), "used": distinct_used}
    return out


def _task_dict(row: sa.Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "dag_id": row.dag_id,
        "run_id": row.run_id,
        "task_id": row.task_id,
        "map_index": row.map_index,
        "try_number": row.try_number,
        "status": row.status,
        "executor": row.executor,
        "host": row.host,
        "start_time": utc(row.start_time),
        "end_time": utc(row.end_time),
        "exit_status": row.exit_status,
        "config_digest": row.config_digest,
        "versions": from_json(row.versions),
        "metrics": from_json(row.metrics),
        "message": row.message,
        "files_generated": row.files_generated,
        "files_used": row.files_used,
    }
