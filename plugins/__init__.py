"""The skyops Airflow plugin: provenance listener (and later UI pages)."""
