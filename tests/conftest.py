"""Shared fixtures: an isolated SKYOPS_HOME, and throwaway SQLite/PostgreSQL databases.

PostgreSQL is the machine's server at 127.0.0.1:5432 (trust auth). Each test session (each
xdist worker) creates its own database and drops it at the end. When the server is down a
PostgreSQL test skips, except under ``CI=true``, where it fails: CI must not pass by
skipping what it is meant to check.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("SKYOPS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# Every test process (each xdist worker) works in its own SKYOPS_HOME, never the developer's
# .skyops/. It is set at import time, before any test module can import Airflow, because
# Airflow reads its configuration (AIRFLOW_HOME, the metadata DB) once, on first import.
_HOME = Path(tempfile.mkdtemp(prefix="skyops_test_"))
os.environ["SKYOPS_HOME"] = str(_HOME)
for _var in ("SKYOPS_CONFIG", "SKYOPS_PROVENANCE_URL", "SKYOPS_ARCHIVE_URL", "SKYOPS_ARCHIVE_ROOT"):
    os.environ.pop(_var, None)
from skyops import airflow_env  # noqa: E402

airflow_env.apply(_HOME, override=True)
# Two DAG bundles: the project's dags/ and the test DAGs, so dag.test() can serialise both.
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps([
    {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
     "kwargs": {"path": str(Path(__file__).resolve().parent.parent / "dags")}},
    {"name": "skyops-tests", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
     "kwargs": {"path": str(Path(__file__).resolve().parent / "dags")}},
])
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"


@pytest.fixture(scope="session", autouse=True)
def skyops_home() -> Path:
    """This test process's SKYOPS_HOME (removed at the end of the session)."""
    yield _HOME
    shutil.rmtree(_HOME, ignore_errors=True)


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
