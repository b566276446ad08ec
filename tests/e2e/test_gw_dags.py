"""The GW campaign end to end: gw_nightly and gw_exposure on the demo night, with dag.test().

Science is checked against the synthetic survey's truth on the CCDs the runs process:
astrometric offsets, zeropoints, transients recovered, candidates ingested once. The
per-CCD science tolerances on larger samples live in the steps' own tests
(tests/integration/test_gw_se_pipeline.py, tests/unit/test_gw_diffimg.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import fitsio
import numpy as np
import pytest
import sqlalchemy as sa

from skyops.archive import ArchiveDB
from skyops.config import PROJECT_ROOT, platform_config
from skyops.provenance import ProvenanceStore

DAGS = PROJECT_ROOT / "dags"
NIGHT, SEARCH = "20170817", (668439, 668440, 668441)


@pytest.fixture(scope="module")
def fast_retries(tmp_path_factory, fast_configs):
    """A copy of configs/ whose GW retry delay is 1 s (dag.test waits out retry delays)."""
    with fast_configs(tmp_path_factory.mktemp("configs"), "gw_nightly.yaml") as d:
        yield d


def truth(name: str) -> np.ndarray:
    root = Path(platform_config().archive.root.removeprefix("file://"))
    return fitsio.read(str(root / "SIM" / "truth" / name))


def se_tasks(store: ProvenanceStore, run_id: str) -> list[dict]:
    q = sa.text("SELECT task_id, map_index, try_number, status, metrics, message FROM task "
                "WHERE run_id = :r AND name = 'gw.se_ccd' ORDER BY task_id, map_index, try_number")
    with store.engine.connect() as c:
        return [dict(r._mapping, metrics=json.loads(r.metrics or "{}")) for r in c.execute(q, {"r": run_id})]


def test_bad_params_fail_before_any_task_runs(airflow_db, fast_retries):
    import runpy

    from airflow.sdk.exceptions import ParamValidationError

    dag = runpy.run_path(str(DAGS / "gw_nightly.py"))["dag"]
    for conf, words in (({"night": "2017-08-17"}, "param night"), ({"night": NIGHT, "band": "q"}, "param band"),
                        ({"night": NIGHT, "ccds": [1, 63]}, "param ccds"), ({"night": NIGHT, "ccds": "1,3-70"},
                                                                              "param ccds")):
        with pytest.raises(ParamValidationError) as e:
            dag.test(run_conf=conf)
        assert words in str(e.value)


def test_gw_nightly_demo_night(run_dag, demo_archive, fast_retries, tmp_path):
    dr = run_dag(DAGS / "gw_nightly.py", run_conf={"night": NIGHT, "ccds": "28,40"})
    assert dr.state == "success"
    tis = {(t.task_id, t.map_index): t for t in dr.get_task_instances()}
    assert tis[("exposure.se_c28", 0)].rendered_map_index == str(SEARCH[0])
    assert tis[("exposure.se_c05", 0)].state == "skipped"  # not selected with -c: visibly skipped

    store = ProvenanceStore.from_config()
    with store.engine.connect() as c:  # TaskFlow tasks reach provenance through the listener alone
        listened = c.execute(sa.text("SELECT status FROM task WHERE run_id = :r AND task_id = 'pick_exposures'"),
                             {"r": dr.run_id}).scalars().all()
    assert listened == ["success"]
    with store.engine.connect() as c:  # one task per exposure runs its five archive lookups and stages them
        queries = c.execute(sa.text("SELECT map_index, status, name, metrics FROM task WHERE run_id = :r "
                                    "AND task_id = 'exposure.prepare' ORDER BY map_index"), {"r": dr.run_id}).all()
    assert [(q.map_index, q.status) for q in queries] == [(0, "success"), (1, "success"), (2, "success")]
    for q in queries:
        assert q.name == "query.raw_exposure+night_calibrations+reference_catalog+templates+raw_templates+stage"
        assert json.loads(q.metrics)["files"] > 0  # the staging's totals share the row with the lookups'
        rows = json.loads(q.metrics)["rows"]
        assert set(rows) == {"raw", "calibrations", "refcat", "templates", "raw_templates"}
        assert rows["raw"] == 1 and rows["calibrations"] >= 1 and rows["refcat"] == 1 and rows["templates"] >= 1
        assert rows["raw_templates"] == 0  # the default survey has every template processed
    assert len(store.run_files(dr.run_id, filetype="manifest")) == 3 * 5 + 2  # + night_exposures, q_truth
    with store.engine.connect() as c:  # every task of the run, CCD tasks included, is an attempt of the night
        units = c.execute(sa.text("SELECT DISTINCT unitname FROM pfw_attempt WHERE run_id = :r"),
                          {"r": dr.run_id}).scalars().all()
    assert units == [NIGHT]
    ses = se_tasks(store, dr.run_id)
    assert len(ses) == 6 and all(t["status"] == "success" for t in ses)
    ccds = truth("ccds.fits")
    for t in ses:  # the header WCS offsets the sim applied are recovered
        m = t["metrics"]
        row = ccds[(ccds["expnum"] == m["expnum"]) & (ccds["ccdnum"] == m["ccdnum"])][0]
        assert abs(m["astrom_dra_arcsec"] - row["astrom_dra_arcsec"]) < 0.02
        assert abs(m["astrom_ddec_arcsec"] - row["astrom_ddec_arcsec"]) < 0.02
        assert m["astrom_rms_arcsec"] < 0.05

    # Zeropoints against the truth, 0.01 mag per CCD as the issue asks, on these crowded
    # demo CCDs too (gw.calibrate rejects blended stars; test_gw_se_pipeline.py checks the six
    # CCDs of the gw-demo exposure that were worst before that).
    zps = [p for p in store.run_files(dr.run_id, filetype="bliss_zeropoint")]
    assert len(zps) == 3
    errors = []
    for p in zps:
        for r in fitsio.read(p, ext="ZEROPOINT"):
            true = ccds[(ccds["expnum"] == r["expnum"]) & (ccds["ccdnum"] == r["ccdnum"])][0]["mag_zero"]
            errors.append(r["mag_zero"] - true)
    assert len(errors) == 6 and max(map(abs, errors)) < 0.01, errors
    # calibrate also plans the difference imaging: each CCD's diff parameters carry its fitted zeropoint
    fitted = {(int(r["expnum"]), int(r["ccdnum"])): float(r["mag_zero"])
              for p in zps for r in fitsio.read(p, ext="ZEROPOINT")}
    for i, expnum in enumerate(SEARCH):
        cal = tis[("exposure.calibrate", i)]
        assert cal.state == "success"
        assert cal.xcom_pull(task_ids="exposure.calibrate", key="planned", map_indexes=i) == [28, 40]
        assert cal.xcom_pull(task_ids="exposure.calibrate", key="c05", map_indexes=i) is None
        for ccd in (28, 40):
            plan = cal.xcom_pull(task_ids="exposure.calibrate", key=f"c{ccd}", map_indexes=i)
            assert plan["ccd"] == ccd and plan["zeropoint"] == pytest.approx(fitted[(expnum, ccd)])
        assert tis[("exposure.diff_c05", i)].state == "skipped"

    db = ArchiveDB.from_config()
    with db.connect() as c:
        cands = c.execute(sa.text("SELECT expnum, ccdnum, ra, dec, mag, snr FROM gw_candidate "
                                  "WHERE nite = :n AND season = :s"), {"n": NIGHT, "s": "dp60"}).all()
    db.dispose()
    inj = truth("transients.fits")
    inj = inj[np.isin(inj["ccdnum"], [28, 40]) & inj["in_bounds"] & (inj["snr_expected"] >= 10)]
    assert len(inj) >= 3
    found = 0
    for t in inj:
        same = [c for c in cands if c.expnum == t["expnum"]]
        d = [np.hypot((c.ra - t["ra"]) * np.cos(np.radians(t["dec"])), c.dec - t["dec"]) * 3600 for c in same]
        found += bool(d) and min(d) < 1.0
    assert found == len(inj)  # every injected transient at SNR >= 10 on these CCDs is a candidate

    (summary,) = store.run_files(dr.run_id, filetype="gw_night_summary")
    text = Path(summary).read_text()
    assert "exposures processed: **3**, CCDs: **6**" in text and "Detection efficiency" in text

    # Ingesting the same candidate files again (a re-run) leaves one row per candidate.
    from skyops.steps.runner import run_step

    files = store.run_files(dr.run_id, filetype="gw_diff_candidates")
    again = run_step("gw.ingest_candidates", {"candidates": files, "night": NIGHT}, tmp_path / "reingest")
    assert again.ok and again.metrics["night_total"] == len(cands)
    # ... and the same files under another season (-S) sit beside them, not over them.
    other = run_step("gw.ingest_candidates", {"candidates": files, "night": NIGHT, "season": "dp61"},
                     tmp_path / "season")
    assert other.ok and other.metrics["night_total"] == len(cands)
    db = ArchiveDB.from_config()
    with db.connect() as c:
        per_season = dict(c.execute(sa.text("SELECT season, count(*) FROM gw_candidate WHERE nite = :n "
                                            "GROUP BY season"), {"n": NIGHT}).all())
    db.dispose()
    assert per_season == {"dp60": len(cands), "dp61": len(cands)}


def test_gw_exposure_with_a_ccd_that_fails_all_its_tries_ends_failed(run_dag, demo_archive, fast_retries):
    """gw_exposure has no verdict task: its leaf, ingest (none_failed), carries the failure to the run."""
    stop = threading.Event()
    killed: list[str] = []

    def killer() -> None:  # every try of CCD 40's SE step, as a node that keeps dying would
        while not stop.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                if b"gw.se_ccd" in cmd and b"exposure.se_c40/try" in cmd:
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append(pid)
            time.sleep(0.05)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    try:
        dr = run_dag(DAGS / "gw_exposure.py", run_conf={"night": NIGHT, "expnum": SEARCH[1], "ccds": "28,40"})
    finally:
        stop.set()
        th.join(5)
    assert killed
    states = {t.task_id: t.state for t in dr.get_task_instances()}
    assert "verdict" not in states
    assert states["exposure.se_c40"] == "failed" and states["exposure.se_c28"] == "success"
    assert states["exposure.ingest"] == "upstream_failed"
    assert dr.state == "failed"


def test_gw_exposure_retry_of_one_ccd_is_in_provenance(run_dag, demo_archive, fast_retries):
    """A CCD whose step is killed (an OOM kill, a lost node) is retried alone; both tries recorded."""
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                if b"gw.se_ccd" in cmd and b"exposure.se_c40/try1" in cmd:  # unmapped group: no map index
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    return
            time.sleep(0.05)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    dr = run_dag(DAGS / "gw_exposure.py", run_conf={"night": NIGHT, "expnum": SEARCH[1], "ccds": "40"})
    th.join(5)
    assert killed, "the se_c40 step was never seen running"
    assert dr.state == "success"
    tries = [(t["task_id"], t["try_number"], t["status"]) for t in se_tasks(ProvenanceStore.from_config(), dr.run_id)]
    assert tries == [("exposure.se_c40", 1, "failed"), ("exposure.se_c40", 2, "success")]
    msg = se_tasks(ProvenanceStore.from_config(), dr.run_id)[0]["message"]
    assert "killed by signal 9 (SIGKILL)" in msg

    # -j (skip SE) on the same exposure: no SE runs, calibration and diffimg reuse the
    # outputs of the successful try above, found through provenance.
    again = run_dag(DAGS / "gw_exposure.py",
                    run_conf={"night": NIGHT, "expnum": SEARCH[1], "ccds": "40", "skip_se": True})
    assert again.state == "success"
    states = {t.task_id: t.state for t in again.get_task_instances()}
    assert states["exposure.se_c40"] == "skipped" and states["exposure.diff_c40"] == "success"
    store = ProvenanceStore.from_config()
    (cat,) = [f for f in store.run_files(dr.run_id, filetype="cat_finalcut")]
    assert cat in store.ancestors(store.run_files(again.run_id, filetype="bliss_zeropoint")[0])

    # -C off (and -j): nothing to calibrate; the calibrate task still plans the difference
    # imaging, without zeropoints, and ends success (it is not skipped: its plan is needed)
    nocal = run_dag(DAGS / "gw_exposure.py", run_conf={"night": NIGHT, "expnum": SEARCH[1], "ccds": "40",
                                                       "skip_se": True, "calibrate": False})
    assert nocal.state == "success"
    tis = {t.task_id: t for t in nocal.get_task_instances()}
    assert tis["exposure.calibrate"].state == "success" and tis["exposure.diff_c40"].state == "success"
    plan = tis["exposure.calibrate"].xcom_pull(task_ids="exposure.calibrate", key="c40")
    assert plan["ccd"] == 40 and plan["zeropoint"] is None
    assert store.run_files(nocal.run_id, filetype="bliss_zeropoint") == []
    assert store.run_files(nocal.run_id, filetype="gw_diff_candidates")

