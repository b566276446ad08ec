"""The provenance store: what the ComputeOperator and the listener record, and what
operators ask of it (lineage, impact, a run's summary, a PROV-JSON export).

One :class:`ProvenanceStore` per process; it owns a SQLAlchemy Engine (a connection pool)
and is safe to share between threads. Every recording method is an upsert keyed on the
record's natural key, so the operator, the listener and a retried callback can all record
the same thing without creating duplicates.
"""
from __future__ import annotations

import contextlib
import logging
import os
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from skyops.errors import ProvenanceInputError, ProvenanceSchemaError
from skyops.provenance import export, lineage as lineage_q, recording, runs
from skyops.provenance.bulk import writer_for
from skyops.provenance.db import WRITE_OPTION, create_engine, insert_for, translate_errors
from skyops.provenance.lineage import ImpactReport, LineageNode
from skyops.provenance.migrate import current_revision, head_revision, is_known, upgrade
from skyops.provenance.records import (
    TERMINAL_STATES,
    FileRecord,
    TaskKey,
    file_record,
    now,
    split_path,
    state_text,
    to_json,
    utc,
)
from skyops.provenance.schema import TABLES, pfw_attempt, task
from skyops.secrets import redact_url

if TYPE_CHECKING:
    from skyops.config import PlatformConfig

log = logging.getLogger(__name__)

DERIVATIONS = ("all", "none")
#: Tries of the attempt upsert when a concurrent writer took the same attempt number.
ATTNUM_RETRIES = 5


class ProvenanceStore:
    """skyops' provenance database (SQLite by default, PostgreSQL in production)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        #: The URL as given (it may hold a password: show :attr:`redacted_url` instead).
        self.url = url
        self.engine = create_engine(url, echo=echo)
        self._writer = self.engine.execution_options(**{WRITE_OPTION: True})
        self._insert = insert_for(self.engine.dialect.name)
        self._bulk = writer_for(self.engine.dialect.name)
        self._schema_ok = False

    # -- construction and lifecycle -------------------------------------------------

    @classmethod
    def from_config(cls, cfg: PlatformConfig | None = None, *, echo: bool = False) -> "ProvenanceStore":
        """The store named by ``databases.provenance`` of the platform config.

        ``cfg`` is a :class:`skyops.config.PlatformConfig` (default: the loaded
        ``configs/skyops.yaml``). For a SQLite file the parent folder is created, so the
        embedded default works on a fresh checkout.
        """
        from skyops.config import expand_vars, platform_config

        cfg = cfg if cfg is not None else platform_config()
        url = expand_vars(cfg.databases.provenance, "databases.provenance")
        _make_sqlite_folder(url)
        return cls(url, echo=echo)

    @property
    def redacted_url(self) -> str:
        """The URL with its password masked: the only form that goes into messages."""
        return redact_url(self.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        """Close the pooled connections; the store reconnects if it is used again."""
        self.engine.dispose()

    def __enter__(self) -> "ProvenanceStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProvenanceStore({self.redacted_url!r})"

    # -- schema ---------------------------------------------------------------------

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision; does nothing when already there."""
        with translate_errors(self.redacted_url, "migrate the provenance database"):
            with self._writer.begin() as conn:
                before, after = upgrade(conn, self.redacted_url)
        if before != after:
            log.info("provenance database at %s migrated from %s to %s", self.redacted_url, before, after)
        self._schema_ok = True

    def status(self) -> dict[str, Any]:
        """Where the database is, its schema revision against this code's, and row counts."""
        with translate_errors(self.redacted_url, "read the provenance database status"):
            with self.engine.connect() as conn:
                revision = current_revision(conn)
                present = set(sa.inspect(conn).get_table_names())
                counts = {
                    t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                    for t in TABLES
                    if t.name in present
                }
        head = head_revision()
        return {
            "url": self.redacted_url,
            "revision": revision,
            "head": head,
            "current": revision == head,
            "counts": counts,
        }

    def _require_schema(self) -> None:
        """Fail early, and say what to do, when the database is not at this code's revision."""
        if self._schema_ok:
            return
        with self.engine.connect() as conn:
            revision = current_revision(conn)
        head = head_revision()
        if revision != head:
            if revision is None or is_known(revision):
                hint = "run `skyops prov migrate`"
            else:
                hint = "it was migrated by a newer skyops; upgrade skyops to use it"
            raise ProvenanceSchemaError(
                f"provenance database at {self.redacted_url} is at revision {revision}, expected {head}; {hint}"
            )
        self._schema_ok = True

    @contextlib.contextmanager
    def _read(self, action: str) -> Iterator[sa.Connection]:
        with translate_errors(self.redacted_url, action):
            self._require_schema()
            with self.engine.connect() as conn:
                yield conn

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sa.Connection]:
        with translate_errors(self.redacted_url, action):
            self._require_schema()
            with self._writer.begin() as conn:
                yield conn

    # -- attempts -------------------------------------------------------------------

    def attempt(
        self, campaign: str, run_id: str, unitname: str, *, reqnum: int | None = None, conf: dict | None = None
    ) -> int:
        """Record (or find) the attempt of ``unitname`` in DAG run ``run_id``; returns its id.

        A new attempt gets the next ``attnum`` of its (campaign, unit) and status
        ``running``; recording it again fills in ``reqnum``/``conf`` when given and sets the
        status back to ``running`` (a cleared task of a finished run re-opens it).
        """
        ins = self._insert(pfw_attempt)
        prev = pfw_attempt.alias("prev")
        next_attnum = (
            sa.select(sa.func.coalesce(sa.func.max(prev.c.attnum), 0) + 1)
            .where(prev.c.campaign == campaign, prev.c.unitname == unitname)
            .scalar_subquery()
        )
        stmt = (
            ins.values(
                campaign=campaign, run_id=run_id, unitname=unitname, reqnum=reqnum, conf=to_json(conf),
                attnum=next_attnum, status="running", start_time=now(),
            )
            .on_conflict_do_update(
                index_elements=[pfw_attempt.c.campaign, pfw_attempt.c.run_id, pfw_attempt.c.unitname],
                set_={
                    "reqnum": sa.func.coalesce(ins.excluded.reqnum, pfw_attempt.c.reqnum),
                    "conf": sa.func.coalesce(ins.excluded.conf, pfw_attempt.c.conf),
                    # a task of a finished run that was cleared re-opens the attempt
                    "status": "running", "end_time": None,
                },
            )
            .returning(pfw_attempt.c.id)
        )
        with self._write(f"record attempt of {campaign} {unitname} in run {run_id}") as conn:
            return _retry_on_conflict(conn, stmt)

    def finish_attempt(self, attempt_id: int, status: str) -> None:
        """Set an attempt's final status and end time."""
        stmt = (
            sa.update(pfw_attempt)
            .where(pfw_attempt.c.id == attempt_id)
            .values(status=state_text(status), end_time=now())
        )
        with self._write(f"finish attempt {attempt_id}") as conn:
            if conn.execute(stmt).rowcount == 0:
                raise ProvenanceInputError(
                    f"pfw_attempt id {attempt_id} is not recorded in the provenance database at "
                    f"{self.redacted_url}; pass the id returned by attempt()"
                )

    def finish_run(self, dag_id: str, run_id: str, status: str) -> int:
        """Set the final status of every attempt of DAG run (``dag_id``, ``run_id``); returns how many.

        Called when a run ends (the plugin listener). The attempts are those its tasks recorded
        (their campaign may differ from the DAG id: gw_exposure runs record under gw_nightly). A
        cleared run that starts again puts its attempts back to ``running`` (:meth:`attempt` on
        its next task), so a run's attempts always show its latest outcome.
        """
        of_run = sa.select(task.c.pfw_attempt_id).where(task.c.dag_id == dag_id, task.c.run_id == run_id,
                                                         task.c.pfw_attempt_id.is_not(None))
        stmt = (
            sa.update(pfw_attempt)
            .where(pfw_attempt.c.run_id == run_id, pfw_attempt.c.id.in_(of_run))
            .values(status=state_text(status), end_time=now())
        )
        with self._write(f"finish the attempts of run {run_id}") as conn:
            return int(conn.execute(stmt).rowcount or 0)

    def unit_status(self, campaign: str, units: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Each unit's latest attempt in ``campaign``: status, attnum, run id, start and end.

        ``units`` limits the answer (units never attempted are absent).
        """
        a = pfw_attempt
        latest = (sa.select(a.c.unitname, sa.func.max(a.c.attnum).label("attnum"))
                  .where(a.c.campaign == campaign).group_by(a.c.unitname))
        if units is not None:
            latest = latest.where(a.c.unitname.in_(sa.bindparam("units", expanding=True)))
        latest = latest.subquery()
        q = sa.select(a.c.unitname, a.c.attnum, a.c.status, a.c.run_id, a.c.start_time, a.c.end_time).join(
            latest, sa.and_(a.c.unitname == latest.c.unitname, a.c.attnum == latest.c.attnum)
        ).where(a.c.campaign == campaign)
        with self._read(f"unit status of {campaign}") as conn:
            rows = conn.execute(q, {"units": list(units)} if units is not None else {}).all()
        return {r.unitname: {"status": r.status, "attnum": r.attnum, "run_id": r.run_id,
                             "start_time": r.start_time, "end_time": r.end_time} for r in rows}

    # -- tasks ----------------------------------------------------------------------

    def task_started(
        self,
        key: TaskKey,
        *,
        name: str,
        attempt_id: int | None = None,
        executor: str = "local",
        host: str | None = None,
        config_digest: str | None = None,
        versions: dict | None = None,
        start_time: datetime | None = None,
    ) -> int:
        """Record that a try started (status ``running``); returns ``task.id``.

        Recording the same try again keeps what is known (first start time, attempt, host)
        and never moves a finished try back to ``running``.
        """
        values = {
            "name": name, "pfw_attempt_id": attempt_id, "executor": executor, "host": host,
            "config_digest": config_digest, "versions": to_json(versions),
            "start_time": utc(start_time) or now(), "status": "running",
        }
        with self._write(f"record start of task {_key_text(key)}") as conn:
            return conn.execute(_task_started_upsert(self._insert), {**_natural(key), **values}).scalar_one()

    def record_state(
        self,
        key: TaskKey,
        state: str,
        *,
        name: str | None = None,
        attempt_id: int | None = None,
        host: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        message: str | None = None,
        executor: str | None = None,
        keep_times: bool = False,
    ) -> int:
        """Upsert a try with this state (the listener's entry point); returns ``task.id``.

        The row is created if missing (named after the task id unless ``name`` is given);
        otherwise the state and every value given replace what was recorded, and values
        not given are kept. With ``keep_times`` the start and end times given only fill a
        row's empty ones: the listener's view of a try (when Airflow started and ended it)
        must not overwrite the step's own times that the operator recorded (a pod or a Condor
        job that ran long before its task resumed from deferral).
        """
        given = {
            "pfw_attempt_id": attempt_id, "host": host, "start_time": utc(start_time),
            "end_time": utc(end_time), "message": message, "executor": executor, "name": name,
        }
        given = {k: v for k, v in given.items() if v is not None}
        values = {"name": key.task_id, **given, "status": state_text(state)}
        fill = tuple(c for c in ("start_time", "end_time") if keep_times and c in given)
        stmt = _task_state_upsert(self._insert, ("status", *sorted(set(given) - set(fill))), fill=fill)
        with self._write(f"record state {state_text(state)!r} of task {_key_text(key)}") as conn:
            return conn.execute(stmt, {**_natural(key), **values}).scalar_one()

    def record_clears(self, keys: Iterable[TaskKey]) -> int:
        """Mark tries that were cleared (reset to run again) as ``cleared``; returns how many.

        The listener calls this when a cleared DAG run restarts: the next try of each task
        gets a new try number, so the ended try keeps its row, times and message, and only
        its status says that its outputs are about to be replaced. A try not recorded yet
        gets a row of its own.
        """
        unique = sorted(set(keys), key=lambda k: (k.dag_id, k.run_id, k.task_id, k.map_index, k.try_number))
        if not unique:
            return 0
        params = [{**_natural(k), "name": k.task_id, "status": "cleared"} for k in unique]
        with self._write(f"record {len(unique)} cleared tries") as conn:
            conn.execute(_task_state_upsert(self._insert, ("status",)), params)
        return len(unique)

    def task_finished(
        self,
        task_id: int,
        *,
        status: str,
        exit_status: int | None = None,
        end_time: datetime | None = None,
        metrics: dict | None = None,
        message: str | None = None,
        versions: dict | None = None,
        host: str | None = None,
    ) -> None:
        """Record how a try ended: status, exit status, end time, metrics, error text."""
        values: dict[str, Any] = {"status": state_text(status), "end_time": utc(end_time) or now()}
        optional = {
            "exit_status": exit_status, "metrics": to_json(metrics), "message": message,
            "versions": to_json(versions), "host": host,
        }
        values.update({k: v for k, v in optional.items() if v is not None})
        with self._write(f"record end of task {task_id}") as conn:
            if conn.execute(sa.update(task).where(task.c.id == task_id).values(**values)).rowcount == 0:
                raise ProvenanceInputError(
                    f"task id {task_id} is not recorded in the provenance database at {self.redacted_url}; "
                    "pass the id returned by task_started() or record_state()"
                )

    # -- files and edges ------------------------------------------------------------

    def record_files(
        self,
        task_id: int,
        *,
        generated: Sequence[Mapping[str, Any]] = (),
        used: Sequence[Mapping[str, Any]] = (),
        derivation: str = "all",
    ) -> dict[str, int]:
        """Record what a try generated and used, in one transaction; returns {path: desfile.id}.

        ``derivation="all"`` also records every generated file as derived from every used
        file (what a step that declares no finer edges implies); ``"none"`` records no
        derivation, for steps that call :meth:`add_derivations` with their own edges.
        """
        if derivation not in DERIVATIONS:
            raise ProvenanceInputError(
                f"record_files(derivation={derivation!r}) for task {task_id}: expected one of {', '.join(DERIVATIONS)}"
            )
        generated, used = list(generated), list(used)
        gen = [file_record(e, f"generated[{i}] of task {task_id}") for i, e in enumerate(generated)]
        use = [file_record(e, f"used[{i}] of task {task_id}") for i, e in enumerate(used)]
        created = now()
        with self._write(f"record files of task {task_id}") as conn:
            recording.require_task(conn, task_id, self.redacted_url)
            gen_ids = recording.upsert_generated(conn, self._bulk, recording.unique_records(gen), task_id, created)
            used_ids = recording.upsert_used(conn, self._bulk, recording.unique_records(use), created)
            recording.insert_used(conn, self._bulk, task_id, used_ids.values())
            if derivation == "all" and gen_ids and used_ids:
                pairs = ((u, g) for u in sorted(used_ids.values()) for g in sorted(gen_ids.values()))
                recording.insert_derivations(conn, self._bulk, pairs)
        log.debug("task %s: recorded %d generated and %d used files", task_id, len(gen_ids), len(used_ids))
        ids = {**used_ids, **gen_ids}
        return _ids_by_input(generated, gen, ids) | _ids_by_input(used, use, ids)

    def add_derivations(self, edges: Iterable[tuple[str, str]]) -> None:
        """Record finer wasDerivedFrom edges, as (parent full path, child full path) pairs.

        Both files must already be recorded; an unknown one is an error naming it.
        """
        pairs = [(split_path(p), split_path(c)) for p, c in edges]
        if not pairs:
            return
        with self._write(f"add {len(pairs)} derivation edges") as conn:
            ids = recording.ids_for_paths(conn, self._bulk, {k for pair in pairs for k in pair}, self.redacted_url)
            recording.insert_derivations(conn, self._bulk, sorted({(ids[p], ids[c]) for p, c in pairs}))

    # -- questions ------------------------------------------------------------------

    def lineage(self, file: str | os.PathLike[str]) -> LineageNode:
        """The tree of files ``file`` was derived from, back to raw inputs, with their tasks."""
        with self._read(f"lineage of {os.fspath(file)}") as conn:
            root = lineage_q.resolve_file(conn, file, self.redacted_url)
            return lineage_q.lineage(conn, root)

    def ancestors(self, file: str | os.PathLike[str]) -> set[str]:
        """Full paths of every file ``file`` was (transitively) derived from."""
        with self._read(f"ancestors of {os.fspath(file)}") as conn:
            root = lineage_q.resolve_file(conn, file, self.redacted_url)
            return lineage_q.related_paths(conn, root.id, direction="up")

    def impact(self, file: str | os.PathLike[str]) -> ImpactReport:
        """Every file derived from ``file`` and the tasks that made them: what to redo if it was bad."""
        with self._read(f"impact of {os.fspath(file)}") as conn:
            root = lineage_q.resolve_file(conn, file, self.redacted_url)
            return lineage_q.impact(conn, root)

    def descendants(self, file: str | os.PathLike[str]) -> set[str]:
        """Full paths of every file (transitively) derived from ``file``."""
        with self._read(f"descendants of {os.fspath(file)}") as conn:
            root = lineage_q.resolve_file(conn, file, self.redacted_url)
            return lineage_q.related_paths(conn, root.id, direction="down")

    def show_attempt(self, run: str | int) -> dict[str, Any]:
        """An attempt (by id, run id or unit name) with each try of its tasks and file counts."""
        with self._read(f"show run {run}") as conn:
            att = runs.resolve_attempt(conn, run, self.redacted_url)
            return runs.show(conn, att)

    def run_files(self, run: str | int, *, filetype: str | None = None) -> list[str]:
        """Full paths of the files a run generated, sorted; only ``filetype`` ones if given.

        ``run`` is an attempt id, a unit name (latest attempt) or a run id, which covers every
        unit of that DAG run.
        """
        with self._read(f"files of run {run}") as conn:
            attempts = runs.attempts_of_run(conn, run, self.redacted_url)
            return runs.generated_files(conn, attempts, filetype)

    def export_prov_json(self, run: str | int) -> str:
        """The attempt as a W3C PROV-JSON document (see :mod:`skyops.provenance.export`)."""
        with self._read(f"export run {run}") as conn:
            att = runs.resolve_attempt(conn, run, self.redacted_url)
            doc = export.attempt_document(conn, att)
        return doc.serialize(format="json", indent=2)


_NATURAL_KEY = ("dag_id", "run_id", "task_id", "map_index", "try_number")


def _natural(key: TaskKey) -> dict[str, Any]:
    return {k: getattr(key, k) for k in _NATURAL_KEY}


@lru_cache(maxsize=None)
def _task_started_upsert(insert: Callable[[sa.Table], Any]) -> Any:
    """Upsert of a starting try: keep what is known, never un-finish a finished try."""
    ins = insert(task)
    new = ins.excluded
    return ins.on_conflict_do_update(
        index_elements=[task.c[k] for k in _NATURAL_KEY],
        set_={
            "name": new["name"],
            "executor": new["executor"],
            "pfw_attempt_id": sa.func.coalesce(new["pfw_attempt_id"], task.c.pfw_attempt_id),
            "host": sa.func.coalesce(new["host"], task.c.host),
            "config_digest": sa.func.coalesce(new["config_digest"], task.c.config_digest),
            "versions": sa.func.coalesce(new["versions"], task.c.versions),
            "start_time": sa.func.coalesce(task.c.start_time, new["start_time"]),
            "status": sa.case((task.c.status.in_(sorted(TERMINAL_STATES)), task.c.status), else_=new["status"]),
        },
    ).returning(task.c.id)


@lru_cache(maxsize=256)
def _task_state_upsert(insert: Callable[[sa.Table], Any], columns: tuple[str, ...],
                       fill: tuple[str, ...] = ()) -> Any:
    """Upsert of a try's state that overwrites exactly ``columns`` and fills ``fill`` where empty."""
    ins = insert(task)
    set_ = {c: ins.excluded[c] for c in columns}
    set_.update({c: sa.func.coalesce(task.c[c], ins.excluded[c]) for c in fill})
    return ins.on_conflict_do_update(index_elements=[task.c[k] for k in _NATURAL_KEY], set_=set_) \
        .returning(task.c.id)


def _retry_on_conflict(conn: sa.Connection, stmt: sa.Executable) -> int:
    """Run an attempt upsert, again if a concurrent writer took the same ``attnum``."""
    for n in range(ATTNUM_RETRIES):
        try:
            with conn.begin_nested():
                return conn.execute(stmt).scalar_one()
        except sa.exc.IntegrityError:
            if n == ATTNUM_RETRIES - 1:
                raise
            log.info("attempt number taken by a concurrent writer; retrying")
    raise AssertionError("unreachable")


def _ids_by_input(entries: Sequence[Mapping[str, Any]], records: list[FileRecord], ids: dict) -> dict[str, int]:
    """Map each caller's path string to its desfile id."""
    return {os.fspath(e["path"]): ids[r.key] for e, r in zip(entries, records)}


def _key_text(key: TaskKey) -> str:
    mapped = f"[{key.map_index}]" if key.map_index >= 0 else ""
    return f"{key.dag_id}/{key.run_id}/{key.task_id}{mapped} try {key.try_number}"


def _make_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite database file so that the first connect succeeds."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        return  # ProvenanceStore() reports the bad URL
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
