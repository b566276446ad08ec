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

Alembic itself is imported only to migrate: every task records provenance and checks the
schema revision, and importing Alembic costs a fifth of a second per task. The revision
check reads the version table with one SELECT, and the head comes from the revision files'
``revision`` / ``down_revision`` lines (``tests/unit/test_provenance_units.py`` checks it
against Alembic's own answer).
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from skyops.errors import ProvenanceSchemaError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "provenance_alembic_version"
#: Key of the PostgreSQL advisory lock that serialises concurrent ``migrate()`` calls.
PG_MIGRATION_LOCK = 0x5C09_0001


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config for the provenance migrations, built without any ini file."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@lru_cache(maxsize=1)
def shipped_revisions() -> dict[str, str | None]:
    """Revision -> its down_revision, read from the migration files without importing Alembic."""
    revs: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS_DIR / "versions").glob("[0-9]*.py")):
        found: dict[str, str | None] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name) and t.id in ("revision", "down_revision"):
                        found[t.id] = node.value.value
        if "revision" in found:
            revs[str(found["revision"])] = found.get("down_revision")
    return revs


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision shipped with this code (``0001``, ...): the one nothing revises."""
    revs = shipped_revisions()
    heads = set(revs) - {d for d in revs.values() if d}
    assert len(heads) == 1, f"migrations under {MIGRATIONS_DIR} must have one head, found {sorted(heads)}"
    return heads.pop()


def current_revision(conn: sa.Connection) -> str | None:
    """The revision the database is at; None for a database that was never migrated."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return rows[0] if len(rows) == 1 else None


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
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    return before, current_revision(conn) or head_revision()


def is_known(revision: str) -> bool:
    """Whether this code ships ``revision`` (a database ahead of the code has one it does not)."""
    return revision in shipped_revisions()
