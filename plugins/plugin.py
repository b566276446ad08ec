"""The skyops Airflow plugin, registered through the ``airflow.plugins`` entry point."""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from skyops.plugins import listener


class SkyopsPlugin(AirflowPlugin):
    """Provenance listener now; UI pages (campaign status, lineage) later."""

    name = "skyops"
    listeners = [listener]
