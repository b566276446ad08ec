"""Multi-row upserts, each in the fastest form its database offers.

Recording a coadd writes thousands of ``desfile`` rows and tens of thousands of edges, so
no row is ever sent on its own:

- SQLite: ``executemany`` of ``INSERT ... ON CONFLICT``, which SQLAlchemy sends as
  multi-row ``VALUES`` statements ("insertmanyvalues"). The insert-ignore statements carry
  a ``RETURNING`` clause nobody reads because SQLAlchemy only batches conflict-handling
  inserts that return rows.
- PostgreSQL: one ``INSERT ... SELECT FROM unnest(array, array, ...) ON CONFLICT``
  statement per page, with one array parameter per column. psycopg2 adapts each list in
  C and the server parses one statement with a handful of parameters, which is about twice
  as fast as a multi-row ``VALUES`` list of thousands of parameters, and many times faster
  than one statement per row.

Every statement is built once per dialect and table and then reused from SQLAlchemy's
compiled cache. Callers pass distinct rows (a multi-row upsert may not touch a row twice).
"""
from __future__ import annotations

import itertools
from datetime import datetime
from functools import lru_cache
from typing import Any, Iterable, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from skyops.provenance.db import insert_for
from skyops.provenance.schema import desfile

#: Rows per statement (SQLite: per executemany, which SQLAlchemy splits further).
PAGE = 5000
#: File names per SQLite lookup query (well under its bound-parameter limit).
LOOKUP_PAGE = 900

#: desfile columns taken from a file record, and their types as arrays on PostgreSQL.
FILE_COLUMNS: dict[str, sa.types.TypeEngine] = {
    "path": sa.Text(),
    "filename": sa.Text(),
    "md5sum": sa.Text(),
    "filesize": sa.BigInteger(),
    "filetype": sa.Text(),
    "compression": sa.Text(),
}
FILE_KEY = ("path", "filename")


def pages(rows: Iterable[Any], size: int = PAGE) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items."""
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _natural_key(table: sa.Table) -> list[sa.Column]:
    return [table.c[c] for c in FILE_KEY] if table is desfile else list(table.primary_key.columns)


def _generated_update(excluded: Any) -> dict[str, Any]:
    """What a generated file recorded again takes from the new record (where given)."""
    keep = {c: sa.func.coalesce(excluded[c], desfile.c[c]) for c in ("md5sum", "filesize", "filetype", "compression")}
    return {**keep, "wgb_task_id": excluded["wgb_task_id"]}


class BulkWriter:
    """Portable writer: executemany of multi-row ``INSERT ... VALUES ... ON CONFLICT``."""

    def __init__(self, dialect_name: str) -> None:
        self.insert = insert_for(dialect_name)

    def upsert_generated(
        self, conn: sa.Connection, rows: Sequence[dict[str, Any]], task_id: int, created: datetime
    ) -> list[tuple[int, str, str]]:
        """Insert or update generated files; returns (id, path, filename) of every row."""
        stmt = _values_generated_upsert(self.insert)
        out: list[tuple[int, str, str]] = []
        for chunk in pages(dict(r, wgb_task_id=task_id, created=created) for r in rows):
            out.extend(tuple(r) for r in conn.execute(stmt, chunk))
        return out

    def insert_files(self, conn: sa.Connection, rows: Sequence[dict[str, Any]], created: datetime) -> None:
        """Insert files that are not recorded yet; recorded ones are left alone."""
        stmt = _values_insert_ignore(self.insert, desfile)
        for chunk in pages(dict(r, created=created) for r in rows):
            conn.execute(stmt, chunk)

    def lookup(self, conn: sa.Connection, keys: Iterable[tuple[str, str]]) -> list[sa.Row]:
        """``desfile`` rows (id, path, filename, md5sum, filesize, filetype) for (path, filename) keys.

        One indexed query per folder: SQLite answers ``path = ? AND filename IN (...)`` from
        the unique index, but scans the whole index for a row-value ``IN`` list, and the
        filename index alone would return every same-named file of every other folder.
        """
        by_folder: dict[str, list[str]] = {}
        for path, name in sorted(set(keys)):
            by_folder.setdefault(path, []).append(name)
        stmt = _folder_lookup()
        out: list[sa.Row] = []
        for path, names in by_folder.items():
            for chunk in pages(names, LOOKUP_PAGE):
                out.extend(conn.execute(stmt, {"path": path, "names": chunk}))
        return out

    def insert_pairs(self, conn: sa.Connection, table: sa.Table, pairs: Iterable[tuple[int, int]]) -> int:
        """Insert-ignore (a, b) rows into a two-column link table; returns how many were offered."""
        stmt = _values_insert_ignore(self.insert, table)
        a, b = (c.name for c in table.columns)
        n = 0
        for chunk in pages(pairs):
            conn.execute(stmt, [{a: x, b: y} for x, y in chunk])
            n += len(chunk)
        return n


class PostgresBulkWriter(BulkWriter):
    """PostgreSQL writer: ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT`` per page."""

    def upsert_generated(
        self, conn: sa.Connection, rows: Sequence[dict[str, Any]], task_id: int, created: datetime
    ) -> list[tuple[int, str, str]]:
        stmt = _unnest_generated_upsert()
        out: list[tuple[int, str, str]] = []
        for chunk in pages(rows):
            params = {**_arrays(chunk, FILE_COLUMNS), "wgb_task_id": task_id, "created": created}
            out.extend(tuple(r) for r in conn.execute(stmt, params))
        return out

    def insert_files(self, conn: sa.Connection, rows: Sequence[dict[str, Any]], created: datetime) -> None:
        stmt = _unnest_files_insert_ignore()
        for chunk in pages(rows):
            conn.execute(stmt, {**_arrays(chunk, FILE_COLUMNS), "created": created})

    def insert_pairs(self, conn: sa.Connection, table: sa.Table, pairs: Iterable[tuple[int, int]]) -> int:
        stmt = _unnest_pairs_insert_ignore(table)
        n = 0
        for chunk in pages(pairs):
            xs, ys = zip(*chunk)
            conn.execute(stmt, {"a_x": list(xs), "a_y": list(ys)})
            n += len(chunk)
        return n

    def lookup(self, conn: sa.Connection, keys: Iterable[tuple[str, str]]) -> list[sa.Row]:
        """Rows for (path, filename) keys: one unique-index probe per element of unnest(arrays)."""
        stmt = _unnest_lookup()
        out: list[sa.Row] = []
        for chunk in pages(sorted(set(keys))):
            paths, names = zip(*chunk)
            out.extend(conn.execute(stmt, {"a_path": list(paths), "a_filename": list(names)}))
        return out


def writer_for(dialect_name: str) -> BulkWriter:
    return PostgresBulkWriter(dialect_name) if dialect_name == "postgresql" else BulkWriter(dialect_name)


def _arrays(rows: Sequence[dict[str, Any]], columns: dict[str, Any]) -> dict[str, list[Any]]:
    return {f"a_{c}": [r[c] for r in rows] for c in columns}


# -- statements, built once -----------------------------------------------------------


@lru_cache(maxsize=None)
def _values_insert_ignore(insert: Any, table: sa.Table) -> Any:
    return insert(table).on_conflict_do_nothing(index_elements=_natural_key(table)).returning(sa.literal_column("1"))


@lru_cache(maxsize=None)
def _values_generated_upsert(insert: Any) -> Any:
    ins = insert(desfile)
    return ins.on_conflict_do_update(
        index_elements=_natural_key(desfile), set_=_generated_update(ins.excluded)
    ).returning(desfile.c.id, desfile.c.path, desfile.c.filename)


_LOOKUP_COLS = ("id", "path", "filename", "md5sum", "filesize", "filetype")


@lru_cache(maxsize=None)
def _folder_lookup() -> Any:
    return sa.select(*(desfile.c[c] for c in _LOOKUP_COLS)).where(
        desfile.c.path == sa.bindparam("path"), desfile.c.filename.in_(sa.bindparam("names", expanding=True))
    )


@lru_cache(maxsize=None)
def _unnest_lookup() -> Any:
    """Each key probes the unique index once, whatever the planner thinks of the tables.

    The probe is a LATERAL subquery with ``LIMIT 1`` (a no-op on a unique key) because
    PostgreSQL cannot flatten it into a join: with the statistics of a table still being
    loaded, a plain join is planned as a hash join over a scan of every ``desfile`` row.
    """
    keys = _unnest({"path": sa.Text(), "filename": sa.Text()})
    probe = (
        sa.select(*(desfile.c[c] for c in _LOOKUP_COLS))
        .where(desfile.c.path == keys.c.path, desfile.c.filename == keys.c.filename)
        .limit(1)
        .lateral("found")
    )
    return sa.select(*(probe.c[c] for c in _LOOKUP_COLS)).select_from(keys.join(probe, sa.true()))


def _unnest(columns: dict[str, sa.types.TypeEngine]) -> Any:
    """``unnest(CAST(:a_x AS type[]), ...)`` as a table with the given column names."""
    arrays = [sa.cast(sa.bindparam(f"a_{name}"), pg.ARRAY(type_)) for name, type_ in columns.items()]
    return sa.func.unnest(*arrays).table_valued(*columns).render_derived(name="rows")


def _unnest_files_select(with_task: bool) -> tuple[list[str], Any]:
    rows = _unnest(FILE_COLUMNS)
    names = list(FILE_COLUMNS) + ["created"]
    cols = [rows.c[c] for c in FILE_COLUMNS] + [sa.bindparam("created", type_=sa.DateTime(timezone=True))]
    if with_task:
        names.append("wgb_task_id")
        cols.append(sa.bindparam("wgb_task_id", type_=sa.BigInteger()))
    return names, sa.select(*cols)


@lru_cache(maxsize=None)
def _unnest_generated_upsert() -> Any:
    names, select = _unnest_files_select(with_task=True)
    ins = pg.insert(desfile).from_select(names, select)
    return ins.on_conflict_do_update(
        index_elements=_natural_key(desfile), set_=_generated_update(ins.excluded)
    ).returning(desfile.c.id, desfile.c.path, desfile.c.filename)


@lru_cache(maxsize=None)
def _unnest_files_insert_ignore() -> Any:
    names, select = _unnest_files_select(with_task=False)
    return pg.insert(desfile).from_select(names, select).on_conflict_do_nothing(index_elements=_natural_key(desfile))


@lru_cache(maxsize=None)
def _unnest_pairs_insert_ignore(table: sa.Table) -> Any:
    a, b = (c.name for c in table.columns)
    rows = _unnest({"x": sa.BigInteger(), "y": sa.BigInteger()})
    select = sa.select(rows.c.x, rows.c.y)
    return pg.insert(table).from_select([a, b], select).on_conflict_do_nothing(index_elements=_natural_key(table))
