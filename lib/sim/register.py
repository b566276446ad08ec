"""Registering a built survey in the DESDM-compatible archive database.

What goes where (tables of :mod:`skyops.archive.schema`):

==================  ===========================================================================
ops_archive         the archive root (``file://...``) under its name (``desar2home``)
pfw_attempt         one finalcut attempt per processed exposure (reqnum, unitname ``D00668439``,
                    attnum, archive_path; none for a raw-only template) and one precal attempt
                    per calibrated night (unitname = nite)
pfw_attempt_val     ``sim_preset``, ``sim_seed``, ``campaign`` of each attempt
proctag             the night's tags (``Y4N_FINALCUT``, ``Y3A1_FINALCUT``) on finalcut attempts
desfile +           every file written: raw, red_immask, cal_biascor, cal_norm_dflatcor,
file_archive_info   cal_bpm, cal_refcat, sim_truth (md5 and size as written)
exposure            every exposure; ``filename`` is the raw file when one was written
image               every red_immask CCD with its header WCS, footprint, sky, gains, FWHM
zeropoint           FGCM-like zeropoints (source ``FGCM``, version ``v1``) for *template*
                    exposures only: truth + 3 mmag scatter, ``sigma_mag_zero`` 0.005. Search
                    exposures get theirs from the GW pipeline's own calibration.
catalog             the reference catalog (filetype ``cal_refcat``, ``objects`` = rows)
miscfile            the night's calibrations (cal_biascor, cal_norm_dflatcor, cal_bpm) by nite, band, ccdnum
blacklist           CCDs 2 and 61 of every exposure
==================  ===========================================================================

Registration replaces: rows left by an earlier build of the same files, exposures and
attempts are deleted first, in the same transaction, so building twice gives one copy.
"""
from __future__ import annotations

import datetime as _dt
import logging
from typing import Any, Iterable

import sqlalchemy as sa

from skyops.archive import ArchiveDB
from skyops.archive.queries import CALIBRATION_FILETYPES
from skyops.sim import layout
from skyops.sim.exposure_spec import TEMPLATE, ExposureSpec
from skyops.sim.focalplane import BAD_CCDS, DETPOS
from skyops.sim.products import WrittenFile
from skyops.sim.seeding import rng
from skyops.sim.survey import BuildResult, Survey

log = logging.getLogger(__name__)

OPERATOR = "skyops-sim"
ZP_SOURCE, ZP_VERSION = "FGCM", "v1"
_IMAGE_KEYS = ("filename", "compression", "filetype", "pfw_attempt_id", "expnum", "ccdnum", "band", "nite",
               "tilename", "exptime", "airmass", "fwhm", "skybrite", "skysigma", "gaina", "gainb", "naxis1",
               "naxis2", "ctype1", "ctype2", "crval1", "crval2", "crpix1", "crpix2", "cd1_1", "cd1_2", "cd2_1",
               "cd2_2", "ra_cent", "dec_cent", "rac1", "decc1", "rac2", "decc2", "rac3", "decc3", "rac4", "decc4",
               "racmin", "racmax", "deccmin", "deccmax", "crossra0")


#: Files of an exposure's finalcut attempt: the image and its auxiliaries (DES tiles part).
_FINALCUT_FILETYPES = ("red_immask", "red_bkg", "red_segmap", "psfex_model")


def processing_time(nite: str) -> _dt.datetime:
    """A fixed 'processed at' time for a night (noon UTC the day after): no clock in the archive."""
    return _dt.datetime.strptime(nite, "%Y%m%d") + _dt.timedelta(days=1, hours=12)


def register_build(db: ArchiveDB, survey: Survey, build: BuildResult, archive_name: str,
                   root_url: str) -> dict[str, int]:
    """Write every row for ``build`` into ``db``; returns rows inserted per table."""
    db.create_schema()
    files = build.files
    specs = list(survey.exposures.values())
    counts: dict[str, int] = {}
    with db.begin() as conn:
        db.register_archive(archive_name, root_url, conn=conn)
        _delete_previous(db, conn, survey, files)
        attempts = _insert_attempts(db, conn, survey, counts)
        desfile_rows = []
        for wf in files:
            desfile_rows.append({"filename": wf.file.filename, "path": wf.file.path, "filetype": wf.file.filetype,
                                 "compression": None, "filesize": wf.filesize, "md5sum": wf.md5sum,
                                 "pfw_attempt_id": _attempt_of(wf, survey, attempts)})
        db.register_files(desfile_rows, archive_name=archive_name, conn=conn)
        counts["desfile"] = counts["file_archive_info"] = len(desfile_rows)
        raw_names = {wf.meta["expnum"]: wf.filename for wf in files if wf.file.filetype == "raw"}
        counts["exposure"] = db.insert_rows("exposure", [_exposure_row(s, raw_names.get(s.expnum)) for s in specs],
                                            conn=conn)
        images = [wf for wf in files if wf.file.filetype == "red_immask"]
        counts["image"] = db.insert_rows("image", [_image_row(wf, _attempt_of(wf, survey, attempts)) for wf in images],
                                         conn=conn)
        zps = _zeropoint_rows(survey, build)
        counts["zeropoint"] = db.insert_rows("zeropoint", zps, conn=conn) if zps else 0
        counts["blacklist"] = db.insert_rows("blacklist", [
            {"expnum": s.expnum, "ccdnum": c, "reason": f"dead CCD {DETPOS[c]}"}
            for s in specs for c in sorted(BAD_CCDS)
        ], conn=conn)
        cals = [wf for wf in files if wf.file.filetype in CALIBRATION_FILETYPES]
        counts["miscfile"] = db.insert_rows("miscfile", [
            {"filename": wf.filename, "compression": None, "filetype": wf.file.filetype,
             "pfw_attempt_id": _attempt_of(wf, survey, attempts), "expnum": None, "ccdnum": wf.meta["ccdnum"],
             "band": wf.meta.get("band"), "nite": wf.meta["nite"], "tilename": None}
            for wf in cals], conn=conn) if cals else 0
        refcats = [wf for wf in files if wf.file.filetype == "cal_refcat"]
        counts["catalog"] = db.insert_rows("catalog", [
            {"filename": wf.filename, "compression": None, "filetype": "cal_refcat", "pfw_attempt_id": None,
             "tilename": None, "band": None, "expnum": None, "ccdnum": None, "objects": wf.meta.get("n_rows")}
            for wf in refcats], conn=conn) if refcats else 0
    db.analyze()
    log.info("registered %d files of preset %s (seed %d)", len(files), survey.preset.name, survey.seed)
    return counts


def _attempt_keys(survey: Survey) -> list[dict[str, Any]]:
    """(reqnum, unitname, attnum) of every attempt the survey's files belong to."""
    out = []
    for s in survey.exposures.values():
        if not survey.has_finalcut(s.expnum):  # a raw-only template: DESDM never processed it
            continue
        out.append({"reqnum": s.reqnum, "unitname": s.unitname, "attnum": s.attnum, "kind": "finalcut",
                    "archive_path": layout.finalcut_archive_path(s), "nite": s.nite, "campaign": s.campaign,
                    "tags": s.tags})
    for nite in survey.nites:
        if survey.night_has_raw(nite):
            cal = survey.calib_run(nite)
            out.append({"reqnum": cal.reqnum, "unitname": cal.nite, "attnum": cal.attnum, "kind": "precal",
                        "archive_path": layout.precal_path(cal), "nite": nite, "campaign": "PRECAL", "tags": ()})
    return out


def _insert_attempts(db: ArchiveDB, conn: sa.Connection, survey: Survey, counts: dict[str, int]) -> dict[tuple, int]:
    keys = _attempt_keys(survey)
    db.insert_rows("pfw_attempt", [
        {"reqnum": k["reqnum"], "unitname": k["unitname"], "attnum": k["attnum"],
         "submittime": processing_time(k["nite"]), "operator": OPERATOR, "data_state": "ACT",
         "archive_path": k["archive_path"], "task_id": None} for k in keys], conn=conn)
    t = db.tables.pfw_attempt
    ids: dict[tuple, int] = {}
    for k in keys:
        row = conn.execute(sa.select(t.c.id).where(t.c.reqnum == k["reqnum"], t.c.unitname == k["unitname"],
                                                   t.c.attnum == k["attnum"])).one()
        ids[(k["reqnum"], k["unitname"], k["attnum"])] = int(row[0])
    vals, tags = [], []
    for k in keys:
        aid = ids[(k["reqnum"], k["unitname"], k["attnum"])]
        vals += [{"pfw_attempt_id": aid, "key": key, "val": str(v)} for key, v in
                 (("sim_preset", survey.preset.name), ("sim_seed", survey.seed), ("campaign", k["campaign"]))]
        tags += [{"tag": tag, "pfw_attempt_id": aid, "created_date": processing_time(k["nite"]),
                  "created_by": OPERATOR, "doc": f"skyops.sim preset {survey.preset.name} seed {survey.seed}"}
                 for tag in k["tags"]]
    counts["pfw_attempt"] = len(keys)
    counts["pfw_attempt_val"] = db.insert_rows("pfw_attempt_val", vals, conn=conn)
    counts["proctag"] = db.insert_rows("proctag", tags, conn=conn) if tags else 0
    return ids


def _attempt_of(wf: WrittenFile, survey: Survey, attempts: dict[tuple, int]) -> int | None:
    ft = wf.file.filetype
    if ft in _FINALCUT_FILETYPES:
        s = survey.exposure(wf.meta["expnum"])
        return attempts[(s.reqnum, s.unitname, s.attnum)]
    if ft in ("cal_biascor", "cal_norm_dflatcor", "cal_bpm"):
        cal = survey.calib_run(wf.meta["nite"])
        return attempts.get((cal.reqnum, cal.nite, cal.attnum))
    return None


def _delete_previous(db: ArchiveDB, conn: sa.Connection, survey: Survey, files: list[WrittenFile]) -> None:
    t = db.tables
    names = [wf.filename for wf in files]
    expnums = list(survey.exposures)
    for chunk in _chunks(names, 900):
        ids = [r[0] for r in conn.execute(sa.select(t.desfile.c.id).where(t.desfile.c.filename.in_(chunk)))]
        for idc in _chunks(ids, 900):
            conn.execute(t.file_archive_info.delete().where(t.file_archive_info.c.desfile_id.in_(idc)))
            conn.execute(t.desfile.delete().where(t.desfile.c.id.in_(idc)))
        conn.execute(t.image.delete().where(t.image.c.filename.in_(chunk)))
        conn.execute(t.catalog.delete().where(t.catalog.c.filename.in_(chunk)))
        conn.execute(t.miscfile.delete().where(t.miscfile.c.filename.in_(chunk)))
        conn.execute(t.zeropoint.delete().where(t.zeropoint.c.imagename.in_(chunk)))
    for chunk in _chunks(expnums, 900):
        conn.execute(t.exposure.delete().where(t.exposure.c.expnum.in_(chunk)))
        conn.execute(t.blacklist.delete().where(t.blacklist.c.expnum.in_(chunk)))
    pa = t.pfw_attempt
    for k in _attempt_keys(survey):
        old = [r[0] for r in conn.execute(sa.select(pa.c.id).where(
            pa.c.reqnum == k["reqnum"], pa.c.unitname == k["unitname"], pa.c.attnum == k["attnum"]))]
        if old:
            conn.execute(t.proctag.delete().where(t.proctag.c.pfw_attempt_id.in_(old)))
            conn.execute(t.pfw_attempt_val.delete().where(t.pfw_attempt_val.c.pfw_attempt_id.in_(old)))
            conn.execute(pa.delete().where(pa.c.id.in_(old)))


def _exposure_row(s: ExposureSpec, raw_name: str | None) -> dict[str, Any]:
    return {"expnum": s.expnum, "filename": raw_name, "nite": s.nite, "date_obs": s.date_obs, "mjd_obs": s.mjd_obs,
            "band": s.band, "exptime": s.exptime, "telra": s.telra, "teldec": s.teldec, "ra_cent": s.telra,
            "dec_cent": s.teldec, "airmass": s.airmass, "program": s.program, "field": s.field, "object": s.object,
            "obstype": "object", "propid": s.propid, "t_eff": round(s.t_eff, 4)}


def _image_row(wf: WrittenFile, attempt_id: int | None) -> dict[str, Any]:
    row = {k: wf.meta.get(k) for k in _IMAGE_KEYS}
    row.update(filename=wf.filename, compression=None, filetype="red_immask", tilename=None,
               pfw_attempt_id=attempt_id)
    return row


def _zeropoint_rows(survey: Survey, build: BuildResult) -> list[dict[str, Any]]:
    rows = []
    for e in build.exposures:
        if e.spec.kind != TEMPLATE:
            continue
        names = {wf.meta["ccdnum"]: wf.filename for wf in e.files if wf.file.filetype == "red_immask"}
        for t in e.ccds:
            c = int(t["ccdnum"])
            if bool(t["bad"]) or c not in names:
                continue
            err = float(rng(survey.seed, "fgcm", e.spec.expnum, c).normal(0.0, 0.003))
            rows.append({"imagename": names[c], "source": ZP_SOURCE, "version": ZP_VERSION, "expnum": e.spec.expnum,
                         "ccdnum": c, "band": e.spec.band, "mag_zero": round(float(t["mag_zero"]) + err, 5),
                         "sigma_mag_zero": 0.005, "flag": 0})
    return rows


def _chunks(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
