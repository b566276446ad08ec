"""Registering the optional survey parts -- DES tiles and kred fields -- in the archive database.

Tiles (:func:`register_tiles`): the tile exposures go through the core's
:func:`~skyops.sim.register.register_build` (PFW_ATTEMPT + PFW_ATTEMPT_VAL, PROCTAG with the
plan's tag, DESFILE/FILE_ARCHIVE_INFO for every file, EXPOSURE, IMAGE for red_immask,
ZEROPOINT FGCM v1 = truth + 3 mmag for every image, BLACKLIST of CCDs 2 and 61, CATALOG for
the tile refcat); then, in a second transaction:

==================  ===========================================================================
coaddtile_geom      one row per tile (:meth:`~skyops.sim.tiles.Tile.geom_row`)
miscfile            red_bkg, red_segmap and psfex_model of every image, with the image's
                    (pfw_attempt_id, expnum, ccdnum) -- the link ``se_sources`` follows
==================  ===========================================================================

kred (:func:`register_kred`): DESFILE/FILE_ARCHIVE_INFO only (filetypes ``kred_mef``,
``kred_config``, ``sim_truth``; no attempt): InstCal exposures are not DESDM products, and
their narrow-band filters (N662, N673) are not EXPOSURE.BAND values.

Both replace rows left by an earlier build of the same files, as ``register_build`` does.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import sqlalchemy as sa

from skyops.archive import ArchiveDB
from skyops.sim.kredtree import KredBuildResult
from skyops.sim.register import register_build
from skyops.sim.tileproducts import AUX_FILETYPES
from skyops.sim.tilesurvey import TileBuildResult, TileSurvey

log = logging.getLogger(__name__)


def register_tiles(db: ArchiveDB, ts: TileSurvey, result: TileBuildResult, archive_name: str,
                   root_url: str) -> dict[str, int]:
    """Rows for a tile build (see the module docstring); returns rows inserted per table."""
    counts = register_build(db, ts.survey, result.build, archive_name, root_url)
    t = db.tables
    aux = [wf for wf in result.files if wf.file.filetype in AUX_FILETYPES]
    with db.begin() as conn:
        conn.execute(t.coaddtile_geom.delete().where(t.coaddtile_geom.c.tilename.in_([x.name for x in result.tiles])))
        for chunk in _chunks([wf.filename for wf in aux], 900):
            conn.execute(t.miscfile.delete().where(t.miscfile.c.filename.in_(chunk)))
        counts["coaddtile_geom"] = db.insert_rows("coaddtile_geom", [x.geom_row() for x in result.tiles], conn=conn)
        attempts = _attempt_ids(conn, db, ts)
        rows = []
        for wf in aux:
            s = ts.survey.exposure(wf.meta["expnum"])
            rows.append({"filename": wf.filename, "compression": None, "filetype": wf.file.filetype,
                         "pfw_attempt_id": attempts[s.expnum], "expnum": s.expnum, "ccdnum": wf.meta["ccdnum"],
                         "band": s.band, "nite": s.nite, "tilename": None})
        counts["miscfile"] = db.insert_rows("miscfile", rows, conn=conn)
    log.info("registered %d tiles and %d exposures (%d miscfiles)", len(result.tiles), len(result.expnums), len(rows))
    return counts


def _attempt_ids(conn: sa.Connection, db: ArchiveDB, ts: TileSurvey) -> dict[int, int]:
    pa = db.tables.pfw_attempt
    out = {}
    for s in ts.survey.exposures.values():
        out[s.expnum] = int(conn.execute(sa.select(pa.c.id).where(
            pa.c.reqnum == s.reqnum, pa.c.unitname == s.unitname, pa.c.attnum == s.attnum)).scalar_one())
    return out


def register_kred(db: ArchiveDB, result: KredBuildResult, archive_name: str, root_url: str) -> dict[str, int]:
    """DESFILE/FILE_ARCHIVE_INFO rows for a kred field's files; returns rows inserted per table."""
    db.create_schema()
    t = db.tables
    with db.begin() as conn:
        db.register_archive(archive_name, root_url, conn=conn)
        for chunk in _chunks([wf.filename for wf in result.files], 900):
            ids = [r[0] for r in conn.execute(sa.select(t.desfile.c.id).where(t.desfile.c.filename.in_(chunk)))]
            for idc in _chunks(ids, 900):
                conn.execute(t.file_archive_info.delete().where(t.file_archive_info.c.desfile_id.in_(idc)))
                conn.execute(t.desfile.delete().where(t.desfile.c.id.in_(idc)))
        rows = [{"filename": wf.filename, "path": wf.file.path, "filetype": wf.file.filetype, "compression": None,
                 "filesize": wf.filesize, "md5sum": wf.md5sum, "pfw_attempt_id": None} for wf in result.files]
        db.register_files(rows, archive_name=archive_name, conn=conn)
    log.info("registered kred field %s: %d files", result.field, len(rows))
    return {"desfile": len(rows), "file_archive_info": len(rows)}


def merge_counts(*parts: dict[str, int]) -> dict[str, int]:
    """Rows per table summed over parts."""
    out: dict[str, int] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
