"""gw_nightly when the templates exist only as raw exposures: SE them, then difference against them.

An archive of its own (the GW demo survey, CCD 28 only, seed 42) in which DESDM never
processed the two template exposures: they are raw files plus their night's calibrations,
with no red_immask, IMAGE or ZEROPOINT rows, so the ``templates`` query finds nothing. Two
search exposures of the night run through ``dag.test()``; each template CCD must be SE'd
once (for both search exposures) in the ``template`` group, and the difference images must
be made against those SE outputs and still recover the injected transients.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import fitsio
import numpy as np
import pytest
import sqlalchemy as sa

from skyops.archive import ArchiveDB
from skyops.config import PROJECT_ROOT, platform_config
from skyops.provenance import ProvenanceStore

DAGS = PROJECT_ROOT / "dags"
NIGHT, SEARCH, TEMPLATES, CCD = "20170817", (668439, 668440), (521360, 521361), 28


@pytest.fixture(scope="module")
def raw_template_archive(airflow_db, tmp_path_factory, fast_configs):
    """This module's own archive (database + root) with raw-only templates; restored afterwards."""
    from skyops.sim import create_archive

    home = tmp_path_factory.mktemp("raw_templates_archive")
    env = {"SKYOPS_ARCHIVE_URL": f"sqlite:///{home / 'desdm.sqlite'}",
           "SKYOPS_ARCHIVE_ROOT": (home / "files").as_uri()}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with fast_configs(tmp_path_factory.mktemp("configs"), "gw_nightly.yaml"):
            yield create_archive(preset="gw-demo", seed=42, config=platform_config(), ccds=[CCD],
                                 raw_only_templates=True)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def truth(name: str) -> np.ndarray:
    root = Path(platform_config().archive.root.removeprefix("file://"))
    return fitsio.read(str(root / "SIM" / "truth" / name))


def test_raw_only_templates_are_se_d_once_and_differenced_against(run_dag, raw_template_archive):
    assert "red_immask" in raw_template_archive.files_by_filetype  # the search exposures' own
    dr = run_dag(DAGS / "gw_nightly.py", run_conf={"night": NIGHT, "ccds": str(CCD), "expnums": list(SEARCH)})
    assert dr.state == "success"
    tis = {(t.task_id, t.map_index): t for t in dr.get_task_instances()}
    # one template group per raw template exposure, and in each only the CCD the search CCD needs
    for i, texp in enumerate(TEMPLATES):
        ti = tis[(f"template.se_c{CCD}", i)]
        assert ti.state == "success" and ti.rendered_map_index == f"{texp} c{CCD}"
        assert tis[("template.se_c27", i)].state == "skipped"
    assert ("template.se_c28", len(TEMPLATES)) not in tis
    for i in range(len(SEARCH)):  # CCDs not selected (-c) have no SE and no difference image: skipped
        assert tis[("exposure.se_c05", i)].state == tis[("exposure.diff_c05", i)].state == "skipped"

    store = ProvenanceStore.from_config()
    with store.engine.connect() as c:  # DESDM processed no template: the templates query found none
        found = [json.loads(m)["rows"] for (m,) in c.execute(sa.text(
            "SELECT metrics FROM task WHERE run_id = :r AND task_id = 'exposure.prepare'"), {"r": dr.run_id})]
    rows = {name: sorted(r[name] for r in found) for name in ("templates", "raw_templates")}
    assert rows == {"templates": [0, 0], "raw_templates": [5, 5]}  # 2 raw + bias/flat/bpm of CCD 28
    q = sa.text("SELECT task_id, map_index, status, metrics FROM task WHERE run_id = :r AND name = 'gw.se_ccd' "
                "ORDER BY task_id, map_index")
    with store.engine.connect() as c:
        ses = [dict(r._mapping, metrics=json.loads(r.metrics)) for r in c.execute(q, {"r": dr.run_id})]
    # two search exposures need CCD 28 of both templates: each template CCD is SE'd once
    assert [(t["task_id"], t["metrics"]["expnum"]) for t in ses] == [
        ("exposure.se_c28", SEARCH[0]), ("exposure.se_c28", SEARCH[1]),
        ("template.se_c28", TEMPLATES[0]), ("template.se_c28", TEMPLATES[1])]
    ccds = truth("ccds.fits")
    for t in ses:  # the raw templates were really reduced: their header WCS offsets are recovered
        m = t["metrics"]
        assert t["status"] == "success" and m["template"] is (t["task_id"].startswith("template."))
        row = ccds[(ccds["expnum"] == m["expnum"]) & (ccds["ccdnum"] == CCD)][0]
        assert abs(m["astrom_dra_arcsec"] - row["astrom_dra_arcsec"]) < 0.02
        assert abs(m["astrom_ddec_arcsec"] - row["astrom_ddec_arcsec"]) < 0.02

    # each difference image was made against the two SE'd template CCDs, which came from the raw files
    template_images = sorted(p for p in store.run_files(dr.run_id, filetype="red_immask")
                             if Path(p).name.startswith(tuple(f"D{e:08d}_" for e in TEMPLATES)))
    assert len(template_images) == 2
    diffs = store.run_files(dr.run_id, filetype="gw_diff_image")
    assert len(diffs) == len(SEARCH)
    for d in diffs:
        h = fitsio.read_header(d, 0)
        assert h["NTEMPL"] == 2
        assert sorted([h["TEMPL001"], h["TEMPL002"]]) == [Path(p).name for p in template_images]
        ancestors = store.ancestors(d)
        assert set(template_images) <= ancestors
        assert {f"DECam_{e:08d}.fits" for e in TEMPLATES} <= {Path(a).name for a in ancestors}

    # ... and still finds every injected transient at SNR >= 10 on these CCDs
    db = ArchiveDB.from_config()
    with db.connect() as c:
        cands = c.execute(sa.text("SELECT expnum, ccdnum, ra, dec FROM gw_candidate WHERE nite = :n"),
                          {"n": NIGHT}).all()
    db.dispose()
    inj = truth("transients.fits")
    inj = inj[np.isin(inj["expnum"], SEARCH) & (inj["ccdnum"] == CCD) & inj["in_bounds"]
              & (inj["snr_expected"] >= 10)]
    assert len(inj) >= 4
    for t in inj:
        d = [np.hypot((c.ra - t["ra"]) * np.cos(np.radians(t["dec"])), c.dec - t["dec"]) * 3600
             for c in cands if c.expnum == t["expnum"]]
        assert d and min(d) < 1.0, (int(t["expnum"]), float(t["snr_expected"]))


def test_gw_exposure_ses_the_raw_templates_of_its_one_exposure(run_dag, raw_template_archive):
    """gw_exposure's group is not mapped: its prepare task's plan is read at map index -1, and its templates still run."""
    dr = run_dag(DAGS / "gw_exposure.py", run_conf={"night": NIGHT, "expnum": SEARCH[0], "ccds": str(CCD)})
    assert dr.state == "success"
    tis = {(t.task_id, t.map_index): t for t in dr.get_task_instances()}
    assert tis[(f"exposure.se_c{CCD}", -1)].state == "success"  # no map index: one exposure
    for i, texp in enumerate(TEMPLATES):
        assert tis[(f"template.se_c{CCD}", i)].state == "success"
        assert tis[(f"template.se_c{CCD}", i)].rendered_map_index == f"{texp} c{CCD}"
    store = ProvenanceStore.from_config()
    (diff,) = store.run_files(dr.run_id, filetype="gw_diff_image")
    assert fitsio.read_header(diff, 0)["NTEMPL"] == 2
