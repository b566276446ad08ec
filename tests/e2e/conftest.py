"""Whole-DAG tests: a real Airflow metadata DB (SQLite, this worker's own) and dag.test()."""
from __future__ import annotations

import contextlib
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skyops.config import PROJECT_ROOT


@pytest.fixture(scope="session")
def airflow_db(skyops_home: Path) -> Path:
    """Migrate this session's Airflow metadata DB and the provenance DB once."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    from skyops.provenance import ProvenanceStore

    ProvenanceStore.from_config().migrate()
    return skyops_home / "airflow" / "airflow.db"


@pytest.fixture(scope="session")
def demo_archive(airflow_db):
    """The synthetic demo survey (gw-demo: 256x512 CCDs, seed 42) in this session's archive."""
    from skyops.config import platform_config
    from skyops.sim import create_archive

    return create_archive(preset="gw-demo", seed=42, config=platform_config())


def load_dag(path: Path | str):
    """The ``dag`` object defined by a DAG file (as the dag-processor would parse it)."""
    return runpy.run_path(str(path))["dag"]


@pytest.fixture
def run_dag(airflow_db):
    """Run a DAG file once with dag.test(); returns the DagRun."""

    def _run(path: Path | str, **kw):
        return load_dag(path).test(**kw)

    return _run


DAGS = PROJECT_ROOT / "dags"
TEST_DAGS = PROJECT_ROOT / "tests" / "dags"


@pytest.fixture(scope="session")
def tiles_archive(airflow_db):
    """The demo DES tiles (DES0239+0216 and DES0000+0209: g r i z, two epochs, real SExtractor and
    PSFEx products) added to this session's archive."""
    from skyops.config import platform_config
    from skyops.sim import create_archive

    return create_archive(preset="demo", seed=42, config=platform_config(), parts=("tiles",))


@contextlib.contextmanager
def configs_with_fast_retries(folder: Path, *campaign_files: str):
    """A copy of configs/ in ``folder`` whose campaigns retry after 1 s, active as SKYOPS_CONFIG_DIR.

    dag.test() waits out retry delays, so tests that retry a task use this.
    """
    shutil.copytree(PROJECT_ROOT / "configs", folder, dirs_exist_ok=True)
    for name in campaign_files:
        text = (folder / name).read_text()
        assert "retry_delay_seconds: 60" in text, f"{name}: expected retry_delay_seconds: 60 to shorten"
        (folder / name).write_text(text.replace("retry_delay_seconds: 60", "retry_delay_seconds: 1"))
    old = os.environ.get("SKYOPS_CONFIG_DIR")
    os.environ["SKYOPS_CONFIG_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("SKYOPS_CONFIG_DIR", None)
        else:
            os.environ["SKYOPS_CONFIG_DIR"] = old


@pytest.fixture(scope="session")
def fast_configs():
    """:func:`configs_with_fast_retries`, for module fixtures (test files do not import conftest)."""
    return configs_with_fast_retries
