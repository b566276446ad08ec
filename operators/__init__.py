"""Airflow adapters: operators, hooks and triggers. Thin: the work is in :mod:`skyops`."""
