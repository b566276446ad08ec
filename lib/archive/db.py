"""Connecting to the archive database, running named queries, and loading rows.

:class:`ArchiveDB` is built from a SQLAlchemy URL or from the platform config
(``databases.archive``, or a DES ``desservices`` section for the real DESDM). It never lets a
password out: its ``repr``, its log lines and every error it raises carry the URL with the
password masked, and driver errors are re-raised as :class:`~skyops.errors.ArchiveError` with
their text passed through :func:`~skyops.secrets.redact_text` and *without* the driver's
exception chained (drivers like to echo their connection string).

Loading (for ``skyops.sim``) is two calls: :meth:`ArchiveDB.insert_rows` (any table, batched
executemany; PostgreSQL ``COPY`` when the driver is psycopg2) and
:meth:`ArchiveDB.register_files` (DESFILE + FILE_ARCHIVE_INFO together, ids assigned by the
database).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import io
import logging
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from skyops.archive import schema as _schema
from skyops.archive.queries import (
    DEFAULT_ARCHIVE_NAME,
    Tables,
    make_result,
    parse_archive_schema,
    plan,
    tables_for,
)
from skyops.errors import ArchiveConnectionError, ArchiveError, InputError, SkyopsError
from skyops.manifest import Manifest
from skyops.secrets import redact_text

log = logging.getLogger(__name__)

#: Driver messages meaning "no such table" (SQLite, PostgreSQL, Oracle ORA-00942).
_MISSING_TABLE = re.compile(r"no such table|relation .* does not exist|ORA-00942", re.I)
#: Rows per executemany batch / COPY chunk in insert_rows.
BATCH_ROWS = 20_000


class ArchiveDB:
    """One archive database: an engine, its schema owner/prefix, and the source of its URL.

    ``url`` is a SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg2://...``,
    ``oracle+oracledb://...``). ``schema``/``prefix`` place the tables (``PROD.IMAGE``,
    ``Y3A2_IMAGE``); ``source`` says where the URL came from, for error messages.
    """

    def __init__(self, url: str | sa.URL, *, schema: str | None = None, prefix: str | None = None,
                 source: str = "archive URL", secrets: Sequence[str] = ()) -> None:
        self.source = source
        self.schema = schema
        self.prefix = prefix
        self.tables: Tables = tables_for(schema, prefix)
        self._secrets = _secret_forms(url, secrets)
        err: SkyopsError | None = None
        try:
            self._url = sa.make_url(url)
            self._sqlite_prepare()
            self.engine: Engine = sa.create_engine(self._url, hide_parameters=True, pool_pre_ping=True,
                                                   **self._engine_kwargs())
        except SkyopsError:
            raise
        except Exception as exc:  # bad URL, missing driver: the message may quote the URL
            err = ArchiveError(
                f"{source}: cannot use archive database URL {self._redact(str(url))}: "
                f"{self._redact(str(exc))}; check the URL and that its driver is installed"
            )
        if err is not None:
            raise err
        if self._url.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_on_connect)
        log.debug("archive database %s (schema=%s, prefix=%s)", self.url, schema, prefix)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Any = None, url: str | None = None) -> "ArchiveDB":
        """The archive of a :class:`~skyops.config.PlatformConfig` (default: the platform's).

        ``url`` overrides the config's URL. Otherwise ``databases.desservices_file`` /
        ``desservices_section`` (if either is set) name a DES credentials section, read with
        :func:`~skyops.credentials.read_desservices` (which refuses a file others can read);
        else ``databases.archive`` is the URL. ``databases.archive_schema`` gives the schema
        owner and/or release prefix (:func:`~skyops.archive.queries.parse_archive_schema`).
        """
        if config is None:
            from skyops.config import platform_config

            config = platform_config()
        dbs = config.databases
        schema, prefix = parse_archive_schema(dbs.archive_schema)
        if url:
            return cls(url, schema=schema, prefix=prefix, source="--url")
        if dbs.desservices_file or dbs.desservices_section:
            from skyops.credentials import read_desservices

            creds = read_desservices(dbs.desservices_section or "db-desoper", dbs.desservices_file)
            return cls(creds.sqlalchemy_url(), schema=schema, prefix=prefix, source=creds.source,
                       secrets=[creds.passwd])
        return cls(dbs.archive, schema=schema, prefix=prefix, source="databases.archive")

    def _engine_kwargs(self) -> dict[str, Any]:
        if self._url.get_backend_name() == "sqlite":
            return {"connect_args": {"timeout": 30}}
        if self._url.get_backend_name() == "postgresql" and self._url.get_driver_name() in ("psycopg2", "psycopg"):
            return {"connect_args": {"connect_timeout": 10}}
        return {}

    def _sqlite_prepare(self) -> None:
        """Create the folder of a SQLite file so the embedded default works on a fresh home."""
        if self._url.get_backend_name() == "sqlite":
            db = self._url.database
            if db and db != ":memory:" and not db.startswith("file:"):
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)

    # -- identity, without secrets --------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL with its password masked (safe to log)."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self._url.get_backend_name()

    def __repr__(self) -> str:
        return f"ArchiveDB(url={self.url!r}, schema={self.schema!r}, prefix={self.prefix!r})"

    __str__ = __repr__

    def _redact(self, text: str) -> str:
        return redact_text(text, *self._secrets)

    # -- connections ----------------------------------------------------------------------

    def _open(self) -> Connection:
        err: SkyopsError | None = None
        try:
            return self.engine.connect()
        except Exception as exc:
            err = ArchiveConnectionError(
                f"cannot connect to the archive database {self.url} (from {self.source}): "
                f"{self._redact(_one_line(exc))}; check that the server is running and that "
                f"the URL and credentials are right"
            )
        raise err

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection (no implicit transaction commit); driver errors become ArchiveError."""
        conn = self._open()
        try:
            with self._translated():
                yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction, committed when the block succeeds."""
        with self.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Re-raise SQLAlchemy/driver errors as ArchiveError, redacted, cause not chained."""
        err: SkyopsError | None = None
        try:
            yield
        except Exception as exc:
            if not isinstance(exc, (sa.exc.SQLAlchemyError, *self._driver_errors())):
                raise
            text = self._redact(_one_line(exc))
            hint = ("; the archive tables are missing: run skyops archive init"
                    if _MISSING_TABLE.search(text) else "")
            err = ArchiveError(f"archive database {self.url}: {text}{hint}")
        if err is not None:
            err.__suppress_context__ = True
            raise err

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        """The DBAPI's base error class (raised by COPY, which bypasses SQLAlchemy)."""
        dbapi = getattr(self.engine.dialect, "loaded_dbapi", None)
        return (dbapi.Error,) if dbapi is not None and hasattr(dbapi, "Error") else ()

    def check(self) -> None:
        """Connect and run ``SELECT 1``; raises ArchiveConnectionError when unreachable."""
        with self.connect() as conn:
            conn.execute(sa.text("SELECT 1" + (" FROM dual" if self.dialect == "oracle" else "")))

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "ArchiveDB":
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    # -- schema ---------------------------------------------------------------------------

    def create_schema(self, indexes: bool = True) -> None:
        """Create the archive tables (idempotent); never on Oracle (DESDM exists already)."""
        if self.dialect == "oracle":
            raise ArchiveError(f"{self.url}: refusing to create tables in an Oracle DESDM database")
        if self.schema or self.prefix:
            raise ArchiveError(
                f"{self.url}: create_schema works on unprefixed tables only "
                f"(schema={self.schema!r}, prefix={self.prefix!r}); unset databases.archive_schema"
            )
        with self.begin() as conn:
            _schema.create_schema(conn, indexes=indexes)

    def analyze(self) -> None:
        """Refresh planner statistics after a bulk load (SQLite and PostgreSQL ``ANALYZE``)."""
        with self.begin() as conn:
            conn.execute(sa.text("ANALYZE"))

    # -- queries --------------------------------------------------------------------------

    def query(self, name: str, **params: Any) -> Manifest:
        """Run named query ``name`` (see :data:`~skyops.archive.queries.QUERIES`)."""
        return run_query(self, name, **params)

    def tile_geometry(self, tilename: str) -> dict[str, Any]:
        """The tile's COADDTILE_GEOM row as a dict; InputError if the tile is unknown."""
        result = self.query("tile_geometry", tilename=tilename)
        if not result.rows:
            raise InputError(
                f"tile {tilename!r} is not in COADDTILE_GEOM of {self.url}; check the tile name "
                f"(e.g. DES0239+0216)"
            )
        return next(result.records())

    # -- loading --------------------------------------------------------------------------

    def insert_rows(self, table_name: str, rows: Sequence[Mapping[str, Any]],
                    batch_size: int = BATCH_ROWS, conn: Connection | None = None) -> int:
        """Insert ``rows`` (dicts keyed by column name) into the DESDM table ``table_name``.

        Batched executemany, or ``COPY`` on PostgreSQL/psycopg2; numpy scalars are accepted.
        A column a row leaves out gets its default (NULL, or the server default). Explicit
        ids in identity columns (pfw_attempt.id, desfile.id) are allowed; the identity
        sequence is then moved past them. Runs in one transaction (or in ``conn``'s).
        Returns the number of rows inserted.
        """
        if not rows:
            return 0
        table = getattr(self.tables, _schema.get_table(table_name).name)
        groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(row.keys()), []).append(row)
        for cols in groups:
            unknown = [c for c in cols if c not in table.c]
            if unknown:
                raise InputError(
                    f"insert into {table.name}: unknown column(s) {', '.join(unknown)}; "
                    f"{table.name} has: {', '.join(table.c.keys())}"
                )
        copy = self.dialect == "postgresql" and self.engine.dialect.driver == "psycopg2"
        with self._conn_or_begin(conn) as c:
            for cols, group in groups.items():
                if _has_numpy(group[0]):
                    group = [{k: _plain(v) for k, v in r.items()} for r in group]
                for start in range(0, len(group), batch_size):
                    batch = group[start:start + batch_size]
                    if copy:
                        _copy_rows(c, table, list(cols), batch)
                    else:
                        c.execute(table.insert(), list(batch))
            for cols in groups:
                self._sync_identity(c, table, list(cols))
        log.debug("inserted %d rows into %s", len(rows), table.name)
        return len(rows)

    def register_archive(self, name: str = DEFAULT_ARCHIVE_NAME, root: str = "",
                         root_http: str | None = None, conn: Connection | None = None) -> None:
        """Add an OPS_ARCHIVE row unless one with ``name`` exists."""
        t = self.tables.ops_archive
        with self._conn_or_begin(conn) as c:
            if c.execute(sa.select(t.c.name).where(t.c.name == name)).first() is None:
                c.execute(t.insert().values(name=name, root=root, root_http=root_http))

    def register_files(self, files: Sequence[Mapping[str, Any]], archive_name: str = DEFAULT_ARCHIVE_NAME,
                       conn: Connection | None = None) -> list[int]:
        """Register archived files: one DESFILE and one FILE_ARCHIVE_INFO row each.

        Each mapping has ``filename``, ``path`` (folder relative to the archive root) and
        ``filetype``, optionally ``compression`` (``.fz``/``.gz``; '' or None for none),
        ``filesize``, ``md5sum``, ``pfw_attempt_id``, ``wgb_task_id``. The OPS_ARCHIVE row
        ``archive_name`` must exist (:meth:`register_archive`). Returns the new desfile ids
        in the order of ``files``.
        """
        d, f = self.tables.desfile, self.tables.file_archive_info
        keys = ("filename", "compression", "filetype", "filesize", "md5sum", "pfw_attempt_id", "wgb_task_id")
        desfile_rows = []
        for i, rec in enumerate(files):
            missing = [k for k in ("filename", "path", "filetype") if not rec.get(k)]
            if missing:
                raise InputError(f"register_files: file {i} ({rec.get('filename')!r}) lacks {', '.join(missing)}")
            row = {k: _plain(rec.get(k)) for k in keys}
            row["compression"] = row["compression"] or None
            desfile_rows.append(row)
        if not desfile_rows:
            return []
        ids: list[int] = []
        with self._conn_or_begin(conn) as c:
            stmt = d.insert().returning(d.c.id, sort_by_parameter_order=True)
            for start in range(0, len(desfile_rows), BATCH_ROWS):
                ids.extend(r[0] for r in c.execute(stmt, desfile_rows[start:start + BATCH_ROWS]))
            fai_rows = [
                {"desfile_id": i, "archive_name": archive_name, "filename": row["filename"],
                 "compression": row["compression"], "path": str(rec["path"]).strip("/")}
                for i, row, rec in zip(ids, desfile_rows, files)
            ]
            for start in range(0, len(fai_rows), BATCH_ROWS):
                c.execute(f.insert(), fai_rows[start:start + BATCH_ROWS])
        return ids

    def register_file(self, filename: str, path: str, filetype: str, *, compression: str | None = None,
                      filesize: int | None = None, md5sum: str | None = None,
                      pfw_attempt_id: int | None = None, wgb_task_id: int | None = None,
                      archive_name: str = DEFAULT_ARCHIVE_NAME, conn: Connection | None = None) -> int:
        """Register one archived file (see :meth:`register_files`); returns its desfile id."""
        return self.register_files([{
            "filename": filename, "path": path, "filetype": filetype, "compression": compression,
            "filesize": filesize, "md5sum": md5sum, "pfw_attempt_id": pfw_attempt_id,
            "wgb_task_id": wgb_task_id,
        }], archive_name=archive_name, conn=conn)[0]

    @contextlib.contextmanager
    def _conn_or_begin(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            with self._translated():
                yield conn
        else:
            with self.begin() as c:
                yield c

    def _sync_identity(self, conn: Connection, table: sa.Table, cols: list[str]) -> None:
        """After explicit ids on PostgreSQL, move the identity sequence past the largest id."""
        ident = [c for c in table.c if c.identity is not None and c.name in cols]
        if not ident or conn.dialect.name != "postgresql":
            return
        col = ident[0]
        qualified = conn.dialect.identifier_preparer.format_table(table)
        conn.execute(
            sa.text(f"SELECT setval(pg_get_serial_sequence(:t, :c), "
                    f"(SELECT COALESCE(MAX({col.name}), 0) + 1 FROM {qualified}), false)"),
            {"t": qualified, "c": col.name},
        )


def run_query(bind: ArchiveDB | Engine | Connection, name: str, *, schema: str | None = None,
              prefix: str | None = None, **params: Any) -> Manifest:
    """Run named query ``name`` with ``params`` and return its manifest.

    ``bind`` is an :class:`ArchiveDB` (its schema/prefix apply unless given here), an Engine
    or a Connection. Bad or missing parameters raise
    :class:`~skyops.errors.QueryParameterError`, an unknown name
    :class:`~skyops.errors.UnknownQueryError` -- both before touching the database.
    """
    if isinstance(bind, ArchiveDB):
        schema = schema if schema is not None else bind.schema
        prefix = prefix if prefix is not None else bind.prefix
    query, p, parts = plan(name, params, schema, prefix)
    rows: list[tuple[Any, ...]] = []
    columns: list[str] = list(query.columns)
    with _connection(bind) as conn:
        for stmt, binds in parts:
            result = conn.execute(stmt, binds)
            columns = list(result.keys())
            rows.extend(tuple(r) for r in result)
    if len(parts) > 1 and query.sort_key is not None:
        rows.sort(key=query.sort_key)
    manifest = make_result(query, columns, rows, p)
    if name == "files_by_name":
        found = {r[0] for r in rows}
        missing = len(set(p["names"]) - found)
        if missing:
            log.warning("files_by_name: %d of %d names are not in archive %r", missing,
                        len(set(p["names"])), p["archive_name"])
    log.info("archive query %s: %d rows", name, len(manifest))
    return manifest


@contextlib.contextmanager
def _connection(bind: ArchiveDB | Engine | Connection) -> Iterator[Connection]:
    if isinstance(bind, ArchiveDB):
        with bind.connect() as conn:
            yield conn
    elif isinstance(bind, Connection):
        yield bind
    elif isinstance(bind, Engine):
        with bind.connect() as conn:
            yield conn
    else:
        raise InputError(f"run_query needs an ArchiveDB, Engine or Connection, got {type(bind).__name__}")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _secret_forms(url: str | sa.URL, extra: Sequence[str]) -> list[str]:
    """The password in every spelling a message could show it (raw, %-encoded)."""
    out: list[str] = []
    pw: str | None = None
    try:
        pw = sa.make_url(url).password  # type: ignore[assignment]
    except Exception:
        pw = None
    for s in [pw, *extra]:
        if s:
            out += [str(s), quote_plus(str(s)), quote(str(s), safe="")]
    return sorted(set(out), key=len, reverse=True)


def _one_line(exc: BaseException) -> str:
    """A driver error as one line, without SQLAlchemy's background link."""
    text = str(getattr(exc, "orig", None) or exc)
    text = text.split("\n(Background on this error")[0]
    return " ".join(text.split())


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers (Airflow tasks) run while the generator writes."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _has_numpy(row: Mapping[str, Any]) -> bool:
    return any(type(v).__module__ == "numpy" for v in row.values())


def _plain(v: Any) -> Any:
    """numpy scalars -> Python scalars (drivers cannot bind numpy.int64)."""
    if type(v).__module__ == "numpy" and hasattr(v, "item"):
        return v.item()
    return v


def _copy_text(v: Any) -> str:
    if v is None:
        return r"\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (_dt.datetime, _dt.date)):
        return v.isoformat()
    s = str(v)
    if any(ch in s for ch in "\\\t\n\r"):
        s = s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return s


def _copy_rows(conn: Connection, table: sa.Table, cols: list[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """PostgreSQL COPY FROM STDIN (text format) on the connection's own transaction."""
    prep = conn.dialect.identifier_preparer
    buf = io.StringIO()
    for r in rows:
        buf.write("\t".join(_copy_text(r[c]) for c in cols))
        buf.write("\n")
    buf.seek(0)
    collist = ", ".join(prep.quote(c) for c in cols)
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.copy_expert(f"COPY {prep.format_table(table)} ({collist}) FROM STDIN", buf)
    finally:
        cur.close()
