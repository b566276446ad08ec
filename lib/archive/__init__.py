"""``skyops.archive``: the DESDM-compatible archive database.

Campaigns ask the archive which files to process; the archive answers with a
:class:`~skyops.manifest.Manifest` that staging copies. The database speaks DESDM -- same
tables, same column names (:mod:`skyops.archive.schema`) -- so the same named queries run on
SQLite (embedded default), PostgreSQL, and the real DESDM on Oracle through python-oracledb.

Public API
----------
Connecting::

    db = ArchiveDB.from_config(config=None, url=None)   # platform config or an explicit URL
    db = ArchiveDB(url, schema=None, prefix=None)       # "PROD" -> PROD.IMAGE, "Y3A2_" -> Y3A2_IMAGE
    db.check(); db.create_schema(indexes=True); db.analyze()
    with db.connect() as conn: ...; with db.begin() as conn: ...

Querying (:mod:`skyops.archive.queries`)::

    QUERIES: dict[str, NamedQuery]                        # name -> params, description, builder
    run_query(db_or_engine_or_conn, name, **params) -> Manifest
    db.query(name, **params) -> Manifest
    db.tile_geometry(tilename) -> dict
    compile_query(name, dialect="oracle", schema=None, prefix=None, **params) -> str
    coaddsrc_rows(se_sources_manifest) -> list[dict]      # desmeds' per-image shape

    tile_geometry(tilename)                      -> QueryTable (not files)
    coadd_files(tilename, band, tag)             -> coadd images + catalogs
    se_sources(tilename, band, tag, zp_source="FGCM", zp_version="v1")
    night_exposures(nite, program, bands)
    templates(expnum, ccdnum=None, min_days_separation=15.0, min_t_eff=0.3, tag=None)
    files_by_name(names)                         # any number of names; IN lists <= 1000
    (every file query also takes archive_name="desar2home")

Loading (for :mod:`skyops.sim`)::

    db.insert_rows(table_name, rows: list[dict]) -> int      # batched; COPY on PostgreSQL
    db.register_archive(name="desar2home", root=...)
    db.register_files(files: list[dict], archive_name="desar2home") -> list[int]  # DESFILE + FILE_ARCHIVE_INFO
    db.register_file(filename, path, filetype, *, compression=None, filesize=None, md5sum=None,
                     pfw_attempt_id=None, wgb_task_id=None, archive_name="desar2home") -> int

Schema (:mod:`skyops.archive.schema`)::

    metadata, TABLES, get_table(name), create_schema(bind, indexes=True),
    create_indexes(bind), drop_indexes(bind), drop_schema(bind)

Errors are :class:`~skyops.errors.ArchiveError` (database refused or unreachable:
:class:`~skyops.errors.ArchiveConnectionError`), :class:`~skyops.errors.UnknownQueryError` and
:class:`~skyops.errors.QueryParameterError`; none of them ever contains a password.
"""
from __future__ import annotations

from skyops.archive.db import ArchiveDB, run_query
from skyops.archive.queries import (
    QUERIES,
    NamedQuery,
    Param,
    QueryTable,
    coaddsrc_rows,
    compile_query,
    get_query,
    parse_archive_schema,
    tables_for,
)
from skyops.archive.schema import TABLES, create_indexes, create_schema, drop_indexes, get_table, metadata

__all__ = [
    "ArchiveDB", "run_query", "QUERIES", "NamedQuery", "Param", "QueryTable", "coaddsrc_rows",
    "compile_query", "get_query", "parse_archive_schema", "tables_for", "TABLES", "create_schema",
    "create_indexes", "drop_indexes", "get_table", "metadata",
]
