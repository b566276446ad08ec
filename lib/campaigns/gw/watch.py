"""Which search exposures have arrived in the archive and not yet been processed.

The low-latency path (``gw_watch``) asks this every minute or so: exposures of the GW
program in the last nights, minus those a ``gw_exposure`` run already exists for (runs
are named ``exp_<expnum>``, so triggering twice is harmless anyway). Plain SQLAlchemy,
no Airflow: the trigger calls it from a thread in the triggerer.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterable

import sqlalchemy as sa

RUN_PREFIX = "exp_"


def run_id_for(expnum: int) -> str:
    """The gw_exposure run id of an exposure: one run per exposure, ever."""
    return f"{RUN_PREFIX}{int(expnum)}"


def recent_exposures(archive_engine: sa.Engine, *, program: str, bands: Iterable[str] | None,
                     since_nite: str) -> list[dict]:
    """Exposures of ``program`` taken on nights >= ``since_nite``, newest last."""
    from skyops.archive.schema import get_table

    e = get_table("exposure")
    q = sa.select(e.c.expnum, e.c.nite, e.c.band, e.c.mjd_obs).where(e.c.program == program, e.c.nite >= since_nite)
    if bands:
        q = q.where(e.c.band.in_(list(bands)))
    with archive_engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(q.order_by(e.c.expnum))]


def processed_exposures(provenance_engine: sa.Engine, dag_id: str = "gw_exposure") -> set[int]:
    """Exposures that already have a gw_exposure run recorded in provenance."""
    q = sa.text("SELECT DISTINCT run_id FROM task WHERE dag_id = :d AND run_id LIKE :p")
    with provenance_engine.connect() as c:
        ids = c.execute(q, {"d": dag_id, "p": RUN_PREFIX + "%"}).scalars().all()
    return {int(r[len(RUN_PREFIX):]) for r in ids if r[len(RUN_PREFIX):].isdigit()}


def since_nite(lookback_nights: int, now: datetime | None = None) -> str:
    """The first night to look at: today's DES nite minus ``lookback_nights`` (nites roll at noon UTC)."""
    now = now or datetime.now(timezone.utc)
    return (now - timedelta(hours=12) - timedelta(days=lookback_nights)).strftime("%Y%m%d")
