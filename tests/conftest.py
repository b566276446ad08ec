"""Shared fixtures: an isolated SKYOPS_HOME, and throwaway SQLite/PostgreSQL databases.

PostgreSQL is the machine's server at 127.0.0.1:5432 (trust auth). Each test session (each
xdist worker) creates its own database and drops it at the end. When the server is down a
PostgreSQL test skips, except under ``CI=true``, where it fails: CI must not pass by
skipping what it is meant to check.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("SKYOPS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def skyops_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session works in its own SKYOPS_HOME, never the developer's .skyops/."""
    home = tmp_path_factory.mktemp("skyops_home")
    os.environ["SKYOPS_HOME"] = str(home)
    return home


def _pg_available() -> bool:
    from skyops.devservices import is_up

    return is_up(5432)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """Admin URL of the PostgreSQL server; skips (or fails under CI) when it is down."""
    if not _pg_available():
        if IN_CI:
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is down and CI=true: PostgreSQL tests may not skip")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not running")
    return PG_ADMIN_URL


def make_pg_database(admin_url: str, prefix: str) -> tuple[str, callable]:
    """Create a throwaway database; returns its URL and a function that drops it."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"

    def drop() -> None:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str):
    """A PostgreSQL database of its own for this test session."""
    url, drop = make_pg_database(pg_server_url, "skyops_test")
    yield url
    drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run a test on both backends: a fresh SQLite file and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    url, drop = make_pg_database(request.getfixturevalue("pg_server_url"), "skyops_t")
    request.addfinalizer(drop)
    return url
