"""Archive query latency at survey scale, with and without skyops' indexes.

An archive of ``--exposures`` DECam exposures (default 10,000) x 62 CCDs is generated with
vectorised numpy -- pointings over ~800 deg^2 straddling RA 0, five bands, each CCD with its
red_immask image, red_bkg / red_segmap / psfex_model files, an FGCM zeropoint, DESFILE and
FILE_ARCHIVE_INFO rows, plus DES tiles, proctags and a blacklist (no pixels) -- and bulk
loaded through :meth:`ArchiveDB.insert_rows`, into SQLite and into a throwaway PostgreSQL
database (dropped afterwards).

Then ``se_sources`` (a tile in the middle of the footprint, and one crossing RA 0) and
``templates`` (a late exposure, all its CCDs) are timed: the median of ``--repeat`` runs
(after one warm-up), first on the baseline -- primary keys only, no secondary index -- then
with :mod:`skyops.archive.schema`'s indexes. Target: under 100 ms each with indexes. Without
indexes some plans are quadratic (SQLite joins 2.5M FILE_ARCHIVE_INFO rows per image), so a
run is cancelled after ``--timeout`` seconds and reported as a lower bound.

Timings include the whole ``run_query`` call (validation, SQL, fetching, building the
Manifest). The machine is shared: expect noise. Results: ``bench/results/archive.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from skyops.archive import ArchiveDB, run_query
from skyops.archive.schema import create_indexes

RESULTS = Path(__file__).parent / "results" / "archive.json"
PG_ADMIN_URL = os.environ.get("SKYOPS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
TAG = "Y3A1_FINALCUT"
BANDS = np.array(["g", "r", "i", "z", "Y"])
#: DECam: 12 rows of 2k x 4k CCDs, 62 in all; 0.30 x 0.15 deg each.
DECAM_ROWS = [3, 4, 5, 6, 6, 7, 7, 6, 6, 5, 4, 3]
CCD_W, CCD_H = 0.30, 0.15
TILE = 0.7306
RA0, RA_SPAN, DEC_MIN, DEC_MAX = 330.0, 60.0, -60.0, -40.0


# ---------------------------------------------------------------------------------------------
# synthetic survey, vectorised
# ---------------------------------------------------------------------------------------------

def ccd_corners() -> tuple[np.ndarray, np.ndarray]:
    """Tangent-plane corner offsets (deg) of the 62 CCDs: x, y of shape (62, 4)."""
    xs, ys = [], []
    for r, n in enumerate(DECAM_ROWS):
        y0 = (r - len(DECAM_ROWS) / 2) * CCD_H
        for k in range(n):
            x0 = (k - n / 2) * CCD_W
            xs.append([x0, x0 + CCD_W, x0 + CCD_W, x0])
            ys.append([y0, y0, y0 + CCD_H, y0 + CCD_H])
    return np.array(xs), np.array(ys)


def footprint(ra0: np.ndarray, dec0: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """DESDM corner columns for footprints with offsets (x, y) around pointings (ra0, dec0)."""
    dec = dec0[..., None, None] + y
    ra_u = ra0[..., None, None] + x / np.cos(np.radians(dec))
    lo, hi = ra_u.min(-1), ra_u.max(-1)
    out = {f"rac{i + 1}": ra_u[..., i] % 360.0 for i in range(4)}
    out.update({f"decc{i + 1}": dec[..., i] for i in range(4)})
    out.update(racmin=lo % 360.0, racmax=hi % 360.0, deccmin=dec.min(-1), deccmax=dec.max(-1),
               crossra0=np.where(np.floor(lo / 360.0) != np.floor(hi / 360.0), "Y", "N"),
               ra_cent=ra_u.mean(-1) % 360.0, dec_cent=dec.mean(-1))
    return out


def _rows(columns: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Column arrays/scalars -> list of row dicts (numpy converted to Python values)."""
    keys = list(columns)
    cols = [v.tolist() if isinstance(v, np.ndarray) else [v] * n for v in columns.values()]
    return [dict(zip(keys, vals)) for vals in zip(*cols)]


def tiles() -> list[dict[str, Any]]:
    """DES-like tiles covering the footprint (some crossing RA 0)."""
    rows, names = [], set()
    h = TILE / 2
    x = np.array([[-h, h, h, -h]])
    y = np.array([[-h, -h, h, h]])
    for dec in np.arange(DEC_MIN + h, DEC_MAX, TILE):
        step = TILE / np.cos(np.radians(dec))
        for ra in np.arange(RA0 + step / 2, RA0 + RA_SPAN, step) % 360.0:
            hh, mm = divmod(int(round(ra / 15 * 60)), 60)
            dd, dm = divmod(int(round(abs(dec) * 60)), 60)
            name = f"DES{hh % 24:02d}{mm:02d}{'-' if dec < 0 else '+'}{dd:02d}{dm:02d}"
            if name in names:
                continue
            names.add(name)
            fp = footprint(np.array(ra), np.array(dec), x, y)
            rows.append({"tilename": name, "id": len(rows) + 1, "pixelscale": 0.263, "naxis1": 10000,
                         "naxis2": 10000, "crval1": float(ra), "crval2": float(dec),
                         **{k: v[0].item() for k, v in fp.items()}})
    return rows


def exposures(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Pointings uniform on the sky patch, bands at random, dates increasing with expnum."""
    sin_lo, sin_hi = np.sin(np.radians([DEC_MIN + 1.1, DEC_MAX - 1.1]))
    dec = np.degrees(np.arcsin(rng.uniform(sin_lo, sin_hi, n)))
    ra = (RA0 + 1.5 + rng.uniform(0, RA_SPAN - 3.0, n)) % 360.0
    mjd = np.sort(rng.uniform(56500.0, 59000.0, n))
    day0 = np.datetime64("1858-11-17")
    nite = np.datetime_as_string(day0 + np.floor(mjd - 0.5).astype("timedelta64[D]"), unit="D")
    return {"expnum": 200000 + np.arange(n), "ra": ra, "dec": dec, "mjd": mjd,
            "band": BANDS[rng.integers(0, 5, n)], "t_eff": rng.uniform(0.1, 1.2, n).round(4),
            "nite": np.char.replace(nite, "-", "")}


def _md5s(rng: np.random.Generator, n: int) -> list[str]:
    a = rng.integers(0, 2**63, size=(n, 2))
    return [f"{p:016x}{q:016x}" for p, q in a.tolist()]


def survey_chunks(n_exposures: int, seed: int, chunk: int = 400) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """The archive's rows, ``chunk`` exposures at a time (table name -> rows)."""
    rng = np.random.default_rng(seed)
    exp = exposures(n_exposures, rng)
    x, y = ccd_corners()
    ccdnum = np.arange(1, 63)
    next_file = 1
    for start in range(0, n_exposures, chunk):
        sl = slice(start, min(start + chunk, n_exposures))
        e = {k: v[sl] for k, v in exp.items()}
        ne = len(e["expnum"])
        attempt = e["expnum"] - 199999
        out: dict[str, list[dict[str, Any]]] = {}
        out["pfw_attempt"] = _rows({"id": attempt, "reqnum": 4000,
                                    "unitname": np.char.add("D00", e["expnum"].astype(str)), "attnum": 1}, ne)
        out["proctag"] = _rows({"tag": TAG, "pfw_attempt_id": attempt}, ne)
        raw = np.char.add(np.char.add("DECam_00", e["expnum"].astype(str)), ".fits")
        out["exposure"] = _rows({
            "expnum": e["expnum"], "filename": raw, "nite": e["nite"], "mjd_obs": e["mjd"], "band": e["band"],
            "exptime": 90.0, "telra": e["ra"], "teldec": e["dec"], "ra_cent": e["ra"], "dec_cent": e["dec"],
            "program": "survey", "obstype": "object", "t_eff": e["t_eff"]}, ne)
        fp = {k: v.reshape(-1) for k, v in footprint(e["ra"], e["dec"], x, y).items()}
        n = ne * 62
        rep = lambda a: np.repeat(a, 62)  # noqa: E731
        expnum, band, nite, att = rep(e["expnum"]), rep(e["band"]), rep(e["nite"]), rep(attempt)
        ccd = np.tile(ccdnum, ne)
        stem = [f"D00{x_}_{b}_c{c:02d}_r4000p01" for x_, b, c in zip(expnum.tolist(), band.tolist(), ccd.tolist())]
        base = [f"OPS/finalcut/Y3A1/r4000/{ni}/D00{x_}/p01/red" for ni, x_ in zip(nite.tolist(), expnum.tolist())]
        img_names = [s + "_immasked.fits" for s in stem]
        out["image"] = _rows({"filename": np.array(img_names), "compression": ".fz", "filetype": "red_immask",
                              "pfw_attempt_id": att, "expnum": expnum, "ccdnum": ccd, "band": band, "nite": nite,
                              "naxis1": 2048, "naxis2": 4096, "exptime": 90.0,
                              "fwhm": rng.uniform(0.8, 1.6, n).round(3), **fp}, n)
        zp_flag = (rng.random(n) < 0.02).astype(int)
        out["zeropoint"] = _rows({"imagename": np.array(img_names), "source": "FGCM", "version": "v1",
                                  "expnum": expnum, "ccdnum": ccd, "band": band,
                                  "mag_zero": rng.normal(31.5, 0.1, n).round(5), "sigma_mag_zero": 0.005,
                                  "flag": zp_flag}, n)
        misc, files = [], []
        for suffix, ftype, comp, sub in (("immasked.fits", "red_immask", ".fz", "immask"),
                                         ("bkg.fits", "red_bkg", ".fz", "bkg"),
                                         ("segmap.fits", "red_segmap", ".fz", "seg"),
                                         ("psfexcat.psf", "psfex_model", None, "psf")):
            names = np.array([f"{s}_{suffix}" for s in stem])
            if ftype != "red_immask":
                misc += _rows({"filename": names, "compression": comp, "filetype": ftype, "pfw_attempt_id": att,
                               "expnum": expnum, "ccdnum": ccd, "band": band, "nite": nite}, n)
            ids = np.arange(next_file, next_file + n)
            next_file += n
            files.append(({"id": ids, "filename": names, "compression": comp, "filetype": ftype,
                           "filesize": rng.integers(1_000_000, 40_000_000, n), "md5sum": np.array(_md5s(rng, n)),
                           "pfw_attempt_id": att},
                          {"desfile_id": ids, "archive_name": "desar2home", "filename": names, "compression": comp,
                           "path": np.array([f"{b}/{sub}" for b in base])}))
        raw_ids = np.arange(next_file, next_file + ne)
        next_file += ne
        files.append(({"id": raw_ids, "filename": raw, "compression": ".fz", "filetype": "raw",
                       "filesize": 500_000_000, "md5sum": np.array(_md5s(rng, ne)), "pfw_attempt_id": attempt},
                      {"desfile_id": raw_ids, "archive_name": "desar2home", "filename": raw, "compression": ".fz",
                       "path": np.char.add("DTS/src/", e["nite"])}))
        out["miscfile"] = misc
        out["desfile"] = [r for d, _ in files for r in _rows(d, len(d["id"]))]
        out["file_archive_info"] = [r for _, f in files for r in _rows(f, len(f["desfile_id"]))]
        bad = rng.random(n) < 0.01
        bl = (ccd == 2) | (ccd == 61) | bad
        out["blacklist"] = _rows({"expnum": expnum[bl], "ccdnum": ccd[bl], "reason": "bench"}, int(bl.sum()))
        yield out


def load(db: ArchiveDB, n_exposures: int, seed: int, console: Console) -> dict[str, Any]:
    """Tables without secondary indexes, then every row; returns row counts and timings."""
    t0 = time.perf_counter()
    db.create_schema(indexes=False)
    db.register_archive("desar2home", root="/archive/desar2home")
    counts: dict[str, int] = {"coaddtile_geom": db.insert_rows("coaddtile_geom", tiles())}
    gen_s = 0.0
    chunks = survey_chunks(n_exposures, seed)
    while True:
        g0 = time.perf_counter()
        part = next(chunks, None)
        gen_s += time.perf_counter() - g0
        if part is None:
            break
        with db.begin() as conn:
            for table, rows in part.items():
                counts[table] = counts.get(table, 0) + db.insert_rows(table, rows, conn=conn)
    load_s = time.perf_counter() - t0
    total = sum(counts.values())
    console.print(f"{db.dialect}: loaded {total:,} rows in {load_s:.0f} s (generation {gen_s:.0f} s)")
    return {"rows": counts, "total_rows": total, "load_s": round(load_s, 1), "generate_s": round(gen_s, 1)}


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------

def targets(db: ArchiveDB) -> dict[str, tuple[str, dict[str, Any]]]:
    """The cases to time: a mid-footprint tile, a tile crossing RA 0, a late central exposure."""
    with db.connect() as conn:
        g = db.tables.coaddtile_geom
        def tile_near(ra: float, dec: float, cross: str) -> str:
            dra = sa.case((g.c.ra_cent > 180, g.c.ra_cent - 360), else_=g.c.ra_cent) - ra
            return conn.execute(sa.select(g.c.tilename).where(g.c.crossra0 == cross)
                                .order_by(dra * dra + (g.c.dec_cent - dec) * (g.c.dec_cent - dec)).limit(1)).scalar_one()
        mid, cross = tile_near(15.0, -50.0, "N"), tile_near(0.0, -50.0, "Y")
        e = db.tables.exposure
        late = conn.execute(sa.select(e.c.expnum).where(e.c.ra_cent.between(14, 16), e.c.dec_cent.between(-51, -49))
                            .order_by(e.c.mjd_obs.desc()).limit(1)).scalar_one()
        band = conn.execute(sa.select(e.c.band).where(e.c.expnum == late)).scalar_one()
    return {
        "se_sources": ("se_sources", {"tilename": mid, "band": "r", "tag": TAG}),
        "se_sources (crossra0 tile)": ("se_sources", {"tilename": cross, "band": "i", "tag": TAG}),
        f"templates ({band} band)": ("templates", {"expnum": late}),
    }


class QueryTimeout(Exception):
    """A baseline query ran past --timeout and was cancelled by the database."""


@contextlib.contextmanager
def deadline(conn: sa.Connection, seconds: float) -> Iterator[None]:
    """Cancel statements on ``conn`` after ``seconds`` (PostgreSQL statement_timeout, SQLite
    progress handler) and raise QueryTimeout; without indexes some plans are quadratic."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET statement_timeout = {int(seconds * 1000)}")
        try:
            yield
        except sa.exc.OperationalError as exc:
            if "statement timeout" not in str(exc):
                raise
            conn.rollback()
            raise QueryTimeout() from None
        finally:
            conn.exec_driver_sql("SET statement_timeout = 0")
        return
    raw = conn.connection.driver_connection
    end = time.perf_counter() + seconds
    raw.set_progress_handler(lambda: int(time.perf_counter() > end), 100_000)
    try:
        yield
    except sa.exc.OperationalError as exc:
        if "interrupted" not in str(exc):
            raise
        raise QueryTimeout() from None
    finally:
        raw.set_progress_handler(None, 0)


def time_query(db: ArchiveDB, name: str, params: dict[str, Any], repeat: int, timeout: float) -> dict[str, Any]:
    """Median wall time of ``run_query`` over ``repeat`` runs after a warm-up; a run that
    exceeds ``timeout`` seconds ends the case (reported as a lower bound)."""
    times: list[float] = []
    rows = None
    with db.engine.connect() as conn:
        for i in range(repeat + 1):
            t0 = time.perf_counter()
            try:
                with deadline(conn, timeout):
                    rows = len(run_query(conn, name, **params))
            except QueryTimeout:
                return {"timeout_s": timeout, "median_ms": None, "rows": rows, "runs": len(times)}
            if i:  # the first run warms caches
                times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2), "rows": rows,
            "runs": len(times)}


def bench_backend(db: ArchiveDB, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    out: dict[str, Any] = {"load": load(db, args.exposures, args.seed, console)}
    db.analyze()
    cases = targets(db)
    out["cases"] = {label: {"query": q, "params": p} for label, (q, p) in cases.items()}
    for label, (q, p) in cases.items():
        out["cases"][label]["baseline"] = time_query(db, q, p, args.baseline_repeat, args.timeout)
    t0 = time.perf_counter()
    with db.begin() as conn:
        create_indexes(conn)
    out["load"]["index_s"] = round(time.perf_counter() - t0, 1)
    console.print(f"{db.dialect}: baseline timed; indexes built in {out['load']['index_s']} s")
    db.analyze()
    for label, (q, p) in cases.items():
        out["cases"][label]["indexed"] = time_query(db, q, p, args.repeat, args.timeout)
        base, idx = out["cases"][label]["baseline"], out["cases"][label]["indexed"]
        assert base["rows"] in (None, idx["rows"]), f"{label}: indexes changed the result"
    return out


def _ms(res: dict[str, Any]) -> str:
    return f"> {res['timeout_s'] * 1000:,.0f} (cancelled)" if res["median_ms"] is None else f"{res['median_ms']:,.1f}"


def report(results: dict[str, Any], console: Console) -> None:
    table = Table(title=f"archive queries, {results['exposures']:,} exposures x 62 CCDs (median ms)")
    for col in ("backend", "query", "rows", "baseline (PK only)", "indexed", "speed-up", "< 100 ms"):
        table.add_column(col, justify="left" if col in ("backend", "query") else "right")
    for backend, res in results["backends"].items():
        for label, case in res["cases"].items():
            b, i = case["baseline"], case["indexed"]
            if i["median_ms"] is None:
                ratio, ok = "-", "NO"
            else:
                bound = b["median_ms"] or b["timeout_s"] * 1000
                ratio = f"{'> ' if b['median_ms'] is None else ''}{bound / i['median_ms']:,.0f}x"
                ok = "yes" if i["median_ms"] < 100 else "NO"
            table.add_row(backend, label, f"{i['rows']:,}", _ms(b), _ms(i), ratio, ok)
    console.print(table)
    for backend, res in results["backends"].items():
        ld = res["load"]
        console.print(f"{backend}: loaded {ld['total_rows']:,} rows in {ld['load_s']} s "
                      f"({ld['total_rows'] / ld['load_s']:,.0f} rows/s incl. generation), indexes in {ld['index_s']} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_archive", description=__doc__.split("\n")[0])
    parser.add_argument("--exposures", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=9, help="timed runs with indexes (median)")
    parser.add_argument("--baseline-repeat", type=int, default=3, help="timed runs without indexes")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="cancel a query after this many seconds (baseline plans can be quadratic)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    results: dict[str, Any] = {
        "benchmark": "archive", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "exposures": args.exposures, "ccds": 62, "seed": args.seed, "host": platform.node(),
        "python": platform.python_version(), "sqlalchemy": sa.__version__, "backends": {},
    }
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    with tempfile.TemporaryDirectory(prefix="bench_archive_") as tmp:
        if "sqlite" in backends:
            db = ArchiveDB(f"sqlite:///{Path(tmp) / 'desdm.sqlite'}")
            try:
                results["backends"]["sqlite"] = bench_backend(db, args, console)
                results["backends"]["sqlite"]["sqlite_version"] = sqlite3.sqlite_version
            finally:
                db.dispose()
        if "postgresql" in backends:
            name = f"skyops_bench_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{name}"'))
                version = c.execute(sa.text("SHOW server_version")).scalar_one()
            db = ArchiveDB(sa.make_url(PG_ADMIN_URL).set(database=name))
            try:
                results["backends"]["postgresql"] = bench_backend(db, args, console)
                results["backends"]["postgresql"]["server_version"] = version
            finally:
                db.dispose()
                with admin.connect() as c:
                    c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    report(results, console)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
