"""skyops: survey production campaigns as Airflow 3 DAGs.

The repository's top-level folders map onto one import root (see ARCHITECTURE.md):
``lib/`` is ``skyops``, ``operators/`` is ``skyops.operators`` and ``plugins/`` is
``skyops.plugins``. The Airflow plugin is registered through the ``airflow.plugins``
entry point so that a worker finds it wherever skyops is installed.
"""
from setuptools import find_packages, setup

_LIB = find_packages("lib")

setup(
    name="skyops",
    version="0.1.0",
    description="Survey production operations for DES-style campaigns on Apache Airflow 3",
    python_requires=">=3.11",
    package_dir={
        "skyops": "lib",
        "skyops.operators": "operators",
        "skyops.plugins": "plugins",
        **{f"skyops.{p}": f"lib/{p.replace('.', '/')}" for p in _LIB},
    },
    packages=["skyops", "skyops.operators", "skyops.plugins"] + [f"skyops.{p}" for p in _LIB],
    package_data={"skyops": ["data/*", "provenance/migrations/*.ini", "provenance/migrations/*.mako"]},
    entry_points={
        "console_scripts": ["skyops = skyops.cli.main:main"],
        "airflow.plugins": ["skyops = skyops.plugins.plugin:SkyopsPlugin"],
    },
)
