"""The low-latency watcher: which exposures are new, and the trigger that waits for them."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from skyops.archive import ArchiveDB
from skyops.campaigns.gw.watch import processed_exposures, recent_exposures, run_id_for, since_nite
from skyops.config import platform_config
from skyops.provenance import ProvenanceStore, TaskKey


@pytest.fixture
def archive():
    """An archive DB (this session's configured one) with four exposures on two nights."""
    db = ArchiveDB.from_config()
    db.create_schema()
    rows = [{"expnum": e, "filename": f"DECam_{e:08d}.fits", "nite": n, "band": b, "program": p, "mjd_obs": 0.0}
            for e, n, b, p in ((900001, "20261118", "i", "gw"), (900002, "20261119", "i", "gw"),
                               (900003, "20261119", "r", "gw"), (900004, "20261119", "i", "survey"))]
    with db.begin() as c:
        c.exec_driver_sql("DELETE FROM exposure WHERE expnum >= 900000")
    db.insert_rows("exposure", rows)
    yield db
    db.dispose()


def test_recent_exposures_filters_program_band_and_night(archive):
    got = recent_exposures(archive.engine, program="gw", bands=["i"], since_nite="20261119")
    assert [r["expnum"] for r in got] == [900002]
    assert [r["expnum"] for r in recent_exposures(archive.engine, program="gw", bands=None, since_nite="20261118")] \
        == [900001, 900002, 900003]


def test_since_nite_rolls_at_noon_utc():
    assert since_nite(0, datetime(2026, 11, 20, 11, 0, tzinfo=timezone.utc)) == "20261119"
    assert since_nite(0, datetime(2026, 11, 20, 13, 0, tzinfo=timezone.utc)) == "20261120"
    assert since_nite(1, datetime(2026, 11, 20, 13, 0, tzinfo=timezone.utc)) == "20261119"


def test_processed_exposures_come_from_gw_exposure_runs(tmp_path):
    store = ProvenanceStore(f"sqlite:///{tmp_path / 'p.sqlite'}")
    store.migrate()
    store.record_state(TaskKey("gw_exposure", run_id_for(900001), "params"), "success")
    store.record_state(TaskKey("gw_nightly", "scheduled__x", "params"), "success")
    assert processed_exposures(store.engine) == {900001}


def test_trigger_fires_for_new_exposures_and_times_out_when_none(archive):
    from skyops.operators.triggers import NewExposuresTrigger

    async def first_event(trigger):
        async for ev in trigger.run():
            return ev.payload

    t = NewExposuresTrigger(program="gw", bands=["i"], since_nite="20261118", known=[900001], poll_seconds=0.05,
                            timeout_seconds=5)
    assert asyncio.run(first_event(t)) == {"status": "new", "expnums": [900002]}
    idle = NewExposuresTrigger(program="gw", bands=["i"], since_nite="20261118", known=[900001, 900002],
                               poll_seconds=0.05, timeout_seconds=0.2)
    assert asyncio.run(first_event(idle)) == {"status": "timeout", "expnums": []}
    cls, kwargs = idle.serialize()
    assert cls == "skyops.operators.triggers.NewExposuresTrigger" and "url" not in str(kwargs).lower()
    assert platform_config().databases.archive not in str(kwargs)
