"""Engines for the provenance database, and database errors turned into skyops errors.

SQLite is the embedded default: it gets WAL (readers never wait for the writer), a busy
timeout (parallel tasks queue for the write lock instead of failing), enforced foreign
keys and a page cache large enough for the indexes of a million files. skyops emits ``BEGIN`` itself so that DDL is transactional and so that a writing
transaction can take the write lock up front (``BEGIN IMMEDIATE``) rather than fail when it
upgrades a read lock. PostgreSQL goes through psycopg2 with a connect timeout and
pre-ping, since the Airflow listener holds its engine for the life of a worker.

No error leaving this module carries a password: URLs go through
:func:`~skyops.secrets.redact_url` and driver messages through
:func:`~skyops.secrets.redact_text`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from skyops.errors import ProvenanceError, ProvenanceInputError, ProvenanceUnavailableError
from skyops.secrets import redact_text, redact_url

#: Execution option marking a connection that will write (SQLite: ``BEGIN IMMEDIATE``).
WRITE_OPTION = "skyops_write"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Page cache per SQLite connection: the desfile indexes of a large history stay in memory.
SQLITE_CACHE_KIB = 32_768
PG_CONNECT_TIMEOUT_S = 10
SUPPORTED_DIALECTS = ("sqlite", "postgresql")


def parse_url(url: str) -> URL:
    """Parse a SQLAlchemy URL, or raise an error that names it (redacted) and the fix."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ProvenanceUnavailableError(
            f"provenance database URL {redact_url(url)!r} is not a SQLAlchemy URL; expected "
            "sqlite:///path/provenance.sqlite or postgresql+psycopg2://user@host:5432/db "
            "(databases.provenance in configs/skyops.yaml, or --url)"
        ) from None
    if parsed.get_backend_name() not in SUPPORTED_DIALECTS:
        raise ProvenanceUnavailableError(
            f"provenance database URL {redact_url(url)!r} uses {parsed.get_backend_name()!r}; "
            f"the provenance store supports {', '.join(SUPPORTED_DIALECTS)}"
        )
    return parsed


def create_engine(url: str, *, echo: bool = False) -> Engine:
    """An Engine for ``url`` set up for the provenance store's access pattern."""
    parsed = parse_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if parsed.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
        if parsed.get_driver_name() == "psycopg2":
            kwargs["connect_args"] = {
                "connect_timeout": PG_CONNECT_TIMEOUT_S,
                "application_name": "skyops-provenance",
            }
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (ImportError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise ProvenanceUnavailableError(
            f"cannot create an engine for the provenance database at {redact_url(url)}: "
            f"{redact_text(str(exc))}; check the URL's dialect and that its driver is installed"
        ) from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """WAL, busy timeout, foreign keys, and skyops-controlled BEGIN (see the module doc)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver must not emit BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def insert_for(dialect_name: str) -> Callable[[sa.Table], Any]:
    """The dialect's ``insert`` construct, which has ``on_conflict_do_nothing/do_update``."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # parse_url refuses other dialects; this guards direct use
        raise ProvenanceError(f"the provenance store cannot upsert on {dialect_name!r}")
    return insert


@contextlib.contextmanager
def translate_errors(url: str, action: str) -> Iterator[None]:
    """Turn SQLAlchemy/driver errors met while doing ``action`` into skyops errors.

    The message names the action, the (redacted) database and what to do; the original
    exception is not chained, since drivers may echo connection details into it.
    """
    try:
        yield
    except ProvenanceError:
        raise
    except sa.exc.IntegrityError as exc:
        raise ProvenanceInputError(
            f"{action}: the provenance database at {redact_url(url)} refused the record: "
            f"{_driver_message(exc, url)}; check that the ids passed in were returned by this store"
        ) from None
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        if exc.connection_invalidated or _is_connect_failure(exc):
            raise ProvenanceUnavailableError(
                f"{action}: cannot reach the provenance database at {redact_url(url)}: "
                f"{_driver_message(exc, url)}; {_reach_hint(url)}"
            ) from None
        raise ProvenanceError(
            f"{action}: the provenance database at {redact_url(url)} failed: {_driver_message(exc, url)}"
        ) from None
    except sa.exc.SQLAlchemyError as exc:
        raise ProvenanceError(
            f"{action}: the provenance database at {redact_url(url)} failed: {_driver_message(exc, url)}"
        ) from None


def _reach_hint(url: str) -> str:
    where = "(databases.provenance in configs/skyops.yaml, or --url)"
    if url.startswith("sqlite"):
        return f"check that the folder of the database file exists and is writable, and the URL {where}"
    return f"check that the server is running and the URL {where}"


def _is_connect_failure(exc: sa.exc.DBAPIError) -> bool:
    """True when the error happened while opening a connection (no statement ran)."""
    return exc.statement is None or "connection" in str(exc.orig).lower() or "unable to open" in str(exc.orig)


def _driver_message(exc: sa.exc.SQLAlchemyError, url: str) -> str:
    """The driver's own first lines, without SQL, parameters or credentials."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    text = "; ".join(line.strip() for line in text.splitlines()[:3] if line.strip())
    password = _password_of(url)
    return redact_text(text, *([password] if password else []))


def _password_of(url: str) -> str | None:
    try:
        return make_url(url).password  # type: ignore[return-value]
    except sa.exc.ArgumentError:
        return None
