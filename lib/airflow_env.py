"""The Airflow settings skyops runs with locally, as environment variables.

Airflow reads its configuration when first imported, so these must be in the
environment before ``import airflow``: the demo, the tests and ``make`` all call
:func:`apply`. Nothing here imports Airflow. A real deployment sets the same variables
(or airflow.cfg) itself; see docker/ and the README.
"""
from __future__ import annotations

import os
from pathlib import Path

from skyops.config import PROJECT_ROOT, skyops_home


def settings(home: Path | None = None, *, metadata_url: str | None = None) -> dict[str, str]:
    """AIRFLOW_* variables for an embedded Airflow under ``$SKYOPS_HOME/airflow``."""
    home = Path(home or skyops_home())
    af = home / "airflow"
    return {
        "AIRFLOW_HOME": str(af),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url or f"sqlite:///{af / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(af / "logs"),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
    }


def apply(home: Path | None = None, *, override: bool = False, **kw: str) -> dict[str, str]:
    """Put :func:`settings` into ``os.environ`` (without overriding what is set, by default)."""
    env = settings(home, **kw)
    for k, v in env.items():
        if override or k not in os.environ:
            os.environ[k] = v
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env
