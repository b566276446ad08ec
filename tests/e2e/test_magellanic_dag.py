"""magellanic_mosaic end to end with dag.test(): the demo kred field staged from the archive and mosaicked.

The demo field LMC_c42 restricted to its 400 s H-alpha exposures (two dithers of six CCDs: the
smallest field with overlaps), one tile (T02) and two BackStats batches, so the whole DAG runs in
about a minute. The science tolerances are checked on the whole demo field, step by step, in
tests/integration/test_magellanic_pipeline.py; here the DAG's shape, the kred tree, the field log,
provenance and redoing from a stage.
"""
from __future__ import annotations

import dataclasses

import fitsio
import pytest
import sqlalchemy as sa

from skyops.config import PROJECT_ROOT, platform_config
from skyops.provenance import ProvenanceStore

DAG_FILE = PROJECT_ROOT / "dags" / "magellanic_mosaic.py"
FIELD = "LMC_c42"


@pytest.fixture(scope="module")
def kred_archive(airflow_db):
    """The demo kred field (N662 400 s only) built and registered in this session's archive."""
    from skyops.sim import create_archive
    from skyops.sim.presets import PRESETS

    plan = dataclasses.replace(PRESETS["demo"].kred, filters=("N662",), exptimes=(400.0,))
    return create_archive(preset="demo", seed=42, config=platform_config(), parts="kred", kred=plan)


@pytest.fixture(scope="module")
def fast_retries(tmp_path_factory, fast_configs):
    """configs/ with a 1 s retry delay (dag.test waits out retry delays)."""
    with fast_configs(tmp_path_factory.mktemp("configs"), "magellanic_mosaic.yaml") as d:
        yield d


def _tis(dr) -> dict[str, list]:
    out: dict[str, list] = {}
    for ti in dr.get_task_instances():
        out.setdefault(ti.task_id, []).append(ti)
    return out


def test_bad_params_are_refused_when_a_run_is_triggered(airflow_db, fast_retries):
    """The DAG's params are JSON-schema checked (what triggering a run does) before any task runs."""
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    import runpy

    dag = runpy.run_path(str(DAG_FILE))["dag"]
    for conf, words in (({"np": 0}, "param np"), ({"field": "LMC c42"}, "param field"),
                        ({"tiles": ["2"]}, "param tiles"), ({"bsub": "yes"}, "param bsub")):
        params = copy.deepcopy(dag.params)
        with pytest.raises(ParamValidationError) as e:
            params.update(conf)  # a ParamsDict checks each value as it is set, as a triggered run's conf is
            params.validate()
        assert words in str(e.value)
    params = copy.deepcopy(dag.params)
    params.update({"field": FIELD, "tiles": ["T01", "T03"], "np": 3, "stages": "backstats-"})
    assert params.validate()["np"] == 3


def test_magellanic_mosaic_demo_field(run_dag, kred_archive, fast_retries):
    dr = run_dag(DAG_FILE, run_conf={"field": FIELD, "tiles": "T02", "np": 2})
    assert dr.state == "success"
    tis = _tis(dr)
    # the shape: mapped over the 2 MEF files / exposures, 1 tile x 1 filter x 1 exptime, 2 batches
    for task_id, n in (("mef_check", 2), ("mef_sum", 2), ("mef_prep", 2), ("swarp_setup", 1), ("swarp", 1),
                       ("back_stats", 2), ("back_sub", 2), ("swarp_setup_b", 1), ("swarp_b", 1)):
        assert len(tis[task_id]) == n and all(t.state == "success" for t in tis[task_id]), task_id
    for task_id in ("mef_tables", "setup_tile", "find_overlaps", "back_calc", "swarp_eval"):
        assert [t.state for t in tis[task_id]] == ["success"], task_id
    assert {t.rendered_map_index for t in tis["back_stats"]} == {"1/2", "2/2"}
    assert tis["swarp"][0].rendered_map_index == "T02 N662 400.0s"

    # kred's directory structure under the campaign's top-level directory
    root = platform_config().workspace.persistent / "kred"
    assert len(list((root / "DECam_MEF" / FIELD).glob("*.fits"))) == 2
    assert len(list((root / "DECam_PREP" / FIELD / "data").glob("*.fits"))) == 12
    links = list((root / "DECam_PREP" / FIELD / "Tile02").iterdir())
    assert links and all(p.is_symlink() and p.resolve().parent.name == "data" for p in links)
    assert sorted(p.name for p in (root / "DECam_PREP" / FIELD / "Tile02_b").iterdir()) == sorted(p.name for p in links)
    before = root / "DECam_SWARP" / FIELD / "Tile02" / "Tile02_N662_400s.fits"
    after = root / "DECam_SWARP" / FIELD / "Tile02_b" / "Tile02_N662_400s.fits"
    for p in (before, after):
        h = fitsio.read_header(str(p))
        assert (h["NAXIS1"], h["NAXIS2"]) == (400, 400)
    assert (root / "DECam_SWARP" / FIELD / "eval" / "Tile02_N662_400s.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("_mef.tab", "_det.tab", "_mef_qual.tab", "_Tile02.tab", "_overlaps.tab", "_backcalc.tab"):
        assert (root / "Summary" / f"{FIELD}{name}").is_file(), name

    # one log for the field, a whole line from every stage and every mapped task
    log = (root / "Summary" / f"{FIELD}.log").read_text().splitlines()
    stages = [line.split()[2] for line in log]
    for stage, n in (("MefCheck", 2), ("MefPrep", 2), ("BackStats", 2), ("BackSub", 2), ("Swarp", 2)):
        assert stages.count(stage) == n, stage
    assert {"MefSum", "SetupTile", "SwarpSetup", "FindOverlaps", "BackCalc", "SwarpEval"} <= set(stages)
    assert all(line.startswith("20") and f" {FIELD} " in line for line in log)

    # provenance: every step task recorded, BackCalc's fit better than no correction
    store = ProvenanceStore.from_config()
    with store.engine.connect() as c:
        rows = c.execute(sa.text("SELECT name, status, metrics FROM task WHERE run_id = :r "
                                 "AND name LIKE 'magellanic.%'"), {"r": dr.run_id}).all()
    # 2 MefCheck + 2 MefSum + tables + 2 MefPrep + SetupTile + SwarpSetup + Swarp + FindOverlaps
    # + 2 BackStats + BackCalc + 2 BackSub + SwarpSetup_b + Swarp_b + SwarpEval
    assert len(rows) == 19 and all(r.status == "success" for r in rows)
    calc = next(r for r in rows if r.name == "magellanic.back_calc")
    assert '"chosen": "lsq"' in calc.metrics

    # redo one stage (kred: comment out every other line of the command file): BackCalc reads
    # BackStats' tables from the tree; every other stage is skipped, visibly
    n_log = len(log)
    calc_before = (root / "Summary" / f"{FIELD}_backcalc.tab").read_text()
    dr2 = run_dag(DAG_FILE, run_conf={"field": FIELD, "tiles": ["T02"], "np": 2, "stages": ["BackCalc"]})
    assert dr2.state == "success"
    tis2 = _tis(dr2)
    for task_id in ("mef_check", "mef_sum", "mef_tables", "mef_prep", "setup_tile", "swarp", "find_overlaps",
                    "back_stats", "back_sub", "swarp_b", "swarp_eval"):
        assert tis2[task_id] and all(t.state == "skipped" for t in tis2[task_id]), task_id
    assert [t.state for t in tis2["back_calc"]] == ["success"]
    assert (root / "Summary" / f"{FIELD}_backcalc.tab").read_text() == calc_before  # same inputs, same offsets
    new = (root / "Summary" / f"{FIELD}.log").read_text().splitlines()[n_log:]
    assert [line.split()[2] for line in new] == ["BackCalc"]
