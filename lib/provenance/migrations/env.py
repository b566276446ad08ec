"""Alembic environment of the provenance database.

skyops runs migrations in code (:func:`skyops.provenance.migrate.upgrade`), handing Alembic an
open connection in ``config.attributes["connection"]``; no ``alembic.ini`` is needed. For a
developer who runs Alembic's own commands against a Config from
:func:`skyops.provenance.migrate.alembic_config`, the URL comes from the ``sqlalchemy.url``
option or, failing that, the platform config.
"""
from __future__ import annotations

from alembic import context

from skyops.provenance.migrate import VERSION_TABLE
from skyops.provenance.schema import metadata

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from skyops.provenance.store import ProvenanceStore

    url = config.get_main_option("sqlalchemy.url")
    store = ProvenanceStore(url) if url else ProvenanceStore.from_config()
    with store.engine.begin() as conn:
        _run(conn)
    store.close()


if context.is_offline_mode():
    raise SystemExit("skyops provenance migrations run online only: use `skyops prov migrate`")
run_migrations_online()
