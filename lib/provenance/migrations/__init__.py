"""Alembic migrations of the provenance database (run them with ``skyops prov migrate``)."""
