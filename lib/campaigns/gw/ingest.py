"""``gw.ingest_candidates``: difference-imaging candidates into the archive database.

The GW scripts wrote candidates into the ``gw`` or ``wsdiff`` schema's tables (``-m``).
skyops keeps one table per schema prefix, ``<schema>_candidate``, created on first use in
the archive database. Ingestion is idempotent: the rows of each (season, expnum, ccdnum)
being ingested are replaced in one transaction, so a retried or re-run CCD never duplicates
its candidates, and a crash half-way leaves the previous rows intact.

The season (``-S`` / diffimg's ``-p``, e.g. ``dp60``) names a processing campaign, as the
SEASON column of DESGW's candidate tables did: re-processing an exposure under a new season
adds its candidates beside the old season's instead of replacing them, so two diffimg
versions or template sets can be compared exposure by exposure.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
import sqlalchemy as sa

from skyops.errors import StepParameterError
from skyops.steps.context import StepContext
from skyops.steps.registry import step

SCHEMAS = ("gw", "wsdiff")
#: Candidate-table columns copied from the diffimg candidate file (plus identifiers).
CANDIDATE_COLUMNS = ("ra", "dec", "x", "y", "flux", "flux_err", "snr", "mag", "mag_err", "fwhm_image",
                     "elongation", "dipole_ratio", "flags")


def candidate_table(schema: str, metadata: sa.MetaData | None = None) -> sa.Table:
    """The ``<schema>_candidate`` table (``gw_candidate`` or ``wsdiff_candidate``)."""
    if schema not in SCHEMAS:
        raise StepParameterError(f"parameter 'schema' (-m): {schema!r} is not one of {', '.join(SCHEMAS)}")
    md = metadata or sa.MetaData()
    return sa.Table(
        f"{schema}_candidate", md,
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("nite", sa.String(8), nullable=False),
        sa.Column("expnum", sa.Integer, nullable=False),
        sa.Column("ccdnum", sa.Integer, nullable=False),
        sa.Column("cand_num", sa.Integer, nullable=False),
        sa.Column("season", sa.String(16), nullable=False),
        sa.Column("band", sa.String(4)),
        *[sa.Column(c, sa.Integer if c == "flags" else sa.Float) for c in CANDIDATE_COLUMNS],
        sa.Column("filename", sa.String(200)),
        sa.Column("diffimg_version", sa.String(40)),
        sa.UniqueConstraint("season", "expnum", "ccdnum", "cand_num", name=f"uq_{schema}_candidate"),
        sa.Index(f"ix_{schema}_candidate_radec", "dec", "ra"),
    )


def _rows(path: Path, nite: str, season: str, band: str | None, version: str) -> tuple[int, int, list[dict[str, Any]]]:
    tab, hdr = fitsio.read(str(path), ext=1, header=True)
    expnum, ccdnum = int(hdr.get("EXPNUM", -1)), int(hdr.get("CCDNUM", -1))
    if expnum < 0 or ccdnum < 0:
        raise StepParameterError(f"{path}: candidate file lacks EXPNUM/CCDNUM header keywords")
    keep = tab[tab["is_candidate"]] if "is_candidate" in tab.dtype.names else tab
    rows = []
    for r in keep:
        row = {"nite": nite, "season": season, "expnum": expnum, "ccdnum": ccdnum, "cand_num": int(r["id"]),
               "band": band or str(hdr.get("BAND", "")).strip() or None, "filename": path.name,
               "diffimg_version": version}
        for c in CANDIDATE_COLUMNS:
            v = r[c].item() if c in tab.dtype.names else None
            row[c] = None if isinstance(v, float) and not np.isfinite(v) else v
        rows.append(row)
    return expnum, ccdnum, rows


@step("gw.ingest_candidates", resources={"cpu": 0.5, "memory_mb": 512}, outputs=["gw_ingest_receipt"])
def ingest_candidates(ctx: StepContext, *, candidates: list[str], night: str, schema: str = "gw",
                      season: str = "dp60", band: str | None = None, diffimg_version: str = "v1") -> dict:
    """Replace the candidates of each (season, expnum, CCD) in ``<schema>_candidate`` with these files'."""
    from skyops.archive import ArchiveDB

    if not season.strip():
        raise StepParameterError("parameter 'season' (-S): must not be empty; give the processing season, e.g. dp60")
    table = candidate_table(schema)
    batches = [_rows(ctx.use(p, "gw_diff_candidates"), night, season, band, diffimg_version) for p in candidates]
    db = ArchiveDB.from_config(ctx.config)
    try:
        table.create(db.engine, checkfirst=True)
        with db.engine.begin() as conn:
            for expnum, ccdnum, rows in batches:
                conn.execute(table.delete().where(table.c.season == season, table.c.expnum == expnum,
                                                  table.c.ccdnum == ccdnum))
                if rows:
                    conn.execute(table.insert(), rows)
            total = conn.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c.nite == night, table.c.season == season)).scalar_one()
    finally:
        db.dispose()
    receipt = {"schema": schema, "table": table.name, "night": night, "season": season,
               "ingested": {f"{e}/{c:02d}": len(r) for e, c, r in batches}, "night_total": total}
    with ctx.output(f"{schema}_ingest_{season}_{night}_{len(candidates)}files.json", "gw_ingest_receipt") as tmp:
        tmp.write_text(json.dumps(receipt, indent=1))
    return {"candidates": sum(len(r) for _, _, r in batches), "ccds": len(batches), "table": table.name,
            "night_total": total}
