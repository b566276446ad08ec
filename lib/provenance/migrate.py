"""Alembic, driven from code: upgrade the provenance schema and report its revision.

Users never need an ``alembic.ini``: the Alembic Config is built here, its
``script_location`` pointing at the ``migrations`` folder inside this package, and the
migration runs on a connection the store opens. The version table has a name of its own
(``provenance_alembic_version``) so that the provenance schema can share a PostgreSQL
database with other Alembic-managed schemas without either one seeing the other's revision.

To write a new revision (developers)::

    from alembic import command
    from skyops.provenance.migrate import alembic_config
    command.revision(alembic_config(), message="add ...", rev_id="0002")
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from skyops.errors import ProvenanceSchemaError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "provenance_alembic_version"
#: Key of the PostgreSQL advisory lock that serialises concurrent ``migrate()`` calls.
PG_MIGRATION_LOCK = 0x5C09_0001


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config for the provenance migrations, built without any ini file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision shipped with this code (``0001``, ...)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no migrations under {MIGRATIONS_DIR}"
    return head


def current_revision(conn: sa.Connection) -> str | None:
    """The revision the database is at; None for a database that was never migrated."""
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def upgrade(conn: sa.Connection, where: str) -> tuple[str | None, str]:
    """Upgrade to head inside the caller's transaction; returns (before, after).

    ``where`` names the database (password redacted) in errors.

    Safe to call from several processes at once: PostgreSQL callers queue on an advisory
    lock, SQLite callers on the write lock (the store opens writing transactions with
    ``BEGIN IMMEDIATE``); the second finds the schema current and does nothing.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
    before = current_revision(conn)
    if before == head_revision():
        return before, before
    if before is not None and not is_known(before):
        raise ProvenanceSchemaError(
            f"provenance database at {where} is at revision {before}, which this skyops does not know "
            f"(its newest is {head_revision()}): it was migrated by a newer skyops; upgrade skyops to use it"
        )
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    return before, current_revision(conn) or head_revision()


def is_known(revision: str) -> bool:
    """Whether this code ships ``revision`` (a database ahead of the code has one it does not)."""
    script = ScriptDirectory.from_config(alembic_config())
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic raises a family of errors for unknown or malformed ids
        return False
