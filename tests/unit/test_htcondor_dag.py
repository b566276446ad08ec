"""``skyops condor dag gw_nightly``: the DAGMan file for a real (small, synthetic) night.

The archive is the synthetic survey's, queried for real; the DAG is written with the
bindings' writer (``htcondor2.dags``). The DAG file is parsed line by line (JOB, VARS, RETRY,
PARENT/CHILD), every submit file by ``htcondor2.Submit``, and the stage node's command is run
for real, after which every input a CCD job names must exist.
"""
from __future__ import annotations

import json
import shlex
from collections import defaultdict
from pathlib import Path

import htcondor2
import pytest

from skyops.campaigns.gw.se import product_stem
from skyops.cli.main import main
from skyops.config import load_platform_config
from skyops.steps.registry import get_step

NIGHT, EXPNUM = "20170817", 668439
pytestmark = pytest.mark.slow  # builds a small synthetic archive (~10 s) and stages it


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A platform config with its own small synthetic GW archive (64x128-pixel CCDs)."""
    from skyops.sim import create_archive

    root = tmp_path_factory.mktemp("condor_site")
    cfg_file = root / "skyops.yaml"
    cfg_file.write_text(
        f"databases: {{archive: 'sqlite:///{root}/archive.sqlite', provenance: 'sqlite:///{root}/prov.sqlite'}}\n"
        f"archive: {{root: 'file://{root}/archive'}}\n"
        f"workspace: {{scratch: {root}/ws/scratch, persistent: {root}/ws/persistent, cache: {root}/ws/cache}}\n"
        f"executors: {{htcondor: {{program: /opt/skyops/bin/skyops, max_retries: 3}}}}\n")
    create_archive("demo", 7, load_platform_config(cfg_file), parts="gw", ccd_shape=(64, 128))
    return cfg_file


def parse_dag(path: Path) -> dict:
    jobs, vars_, retries, edges = {}, {}, {}, set()
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        if words[0] == "JOB":
            jobs[words[1]] = Path(words[2])
        elif words[0] == "VARS":
            vars_[words[1]] = dict(w.split("=", 1) for w in words[2:])
        elif words[0] == "RETRY":
            retries[words[1]] = words[2:]
        elif words[0] == "PARENT":
            i = words.index("CHILD")
            edges |= {(p, c) for p in words[1:i] for c in words[i + 1:]}
        else:
            raise AssertionError(f"unexpected DAG line {line!r}")
    return {"jobs": jobs, "vars": vars_, "retries": retries, "edges": edges}


def test_gw_nightly_dag(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SKYOPS_CONFIG", str(site))
    out = tmp_path / "dag"
    assert main(["condor", "dag", "gw_nightly", "--night", NIGHT, "--expnum", str(EXPNUM),
                 "--ccds", "1-5", "-o", str(out)]) == 0
    assert "condor_submit_dag" in capsys.readouterr().out
    dag = parse_dag(out / f"gw_nightly_{NIGHT}.dag")
    ccds = ["c01", "c03", "c04", "c05"]  # 2 is dead on DECam: no job
    se = {f"se_{EXPNUM}_{c}" for c in ccds}
    diff = {f"diff_{EXPNUM}_{c}" for c in ccds}
    assert set(dag["jobs"]) == {"stage"} | se | diff
    # one submit file per kind of job, each parsed by the bindings
    assert {p.name for p in dag["jobs"].values()} == {"stage.sub", "gw.se_ccd.sub", "gw.diffimg_ccd.sub"}
    for sub_file in set(dag["jobs"].values()):
        sub = htcondor2.Submit(sub_file.read_text())
        assert sub["log"] == "$(workdir)/condor.log" and sub["initialdir"] == "$(workdir)"
        assert "max_retries" not in sub  # DAGMan retries
    se_sub = htcondor2.Submit((out / "gw.se_ccd.sub").read_text())
    assert se_sub["request_memory"] == "3072"
    assert se_sub["arguments"] == '"step run gw.se_ccd --params $(workdir)/params.json --workdir $(workdir)"'
    # RETRY on every node, not for bad input; PARENT/CHILD: stage -> SE -> diffimg per CCD
    assert all(r == ["3", "UNLESS-EXIT", "2"] for r in dag["retries"].values()) and len(dag["retries"]) == 9
    assert dag["edges"] == {("stage", s) for s in se} | {(f"se_{EXPNUM}_{c}", f"diff_{EXPNUM}_{c}") for c in ccds}
    # each node's params, written next to its workdir, validate against its step
    children = defaultdict(list)
    for p, c in dag["edges"]:
        children[p].append(c)
    for node in se | diff:
        workdir = Path(dag["vars"][node]["workdir"])
        assert workdir.parent == out / str(EXPNUM) and workdir.name == node
        params = json.loads((workdir / "params.json").read_text())
        step = "gw.se_ccd" if node.startswith("se_") else "gw.diffimg_ccd"
        get_step(step).validate(params)
    # diffimg reads exactly the files SE will write (DESDM names fixed by expnum, band, CCD, run)
    p = json.loads((out / str(EXPNUM) / f"diff_{EXPNUM}_c03" / "params.json").read_text())
    stem = product_stem(EXPNUM, "i", 3, "r4p5")
    assert p["search"] == str(out / str(EXPNUM) / f"se_{EXPNUM}_c03" / f"{stem}_immasked.fits")
    assert p["search_psf"].endswith(f"{stem}_psfexcat.psf") and p["templates"]
    # the stage node's command, run for real, brings every input a CCD job names
    stage_args = shlex.split(htcondor2.Submit((out / "stage.sub").read_text())["arguments"].strip('"'))
    stage_args = [a.replace("$(workdir)", str(out)) for a in stage_args]
    assert main(stage_args) == 0
    for node in se:
        sp = json.loads((out / str(EXPNUM) / node / "params.json").read_text())
        for key in ("raw", "bias", "flat", "refcat"):
            assert Path(sp[key]).is_file() and Path(sp[key]).is_relative_to(out / "staged")
    assert all(Path(t).is_file() for t in p["templates"])


def test_unknown_exposure_is_bad_input(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SKYOPS_CONFIG", str(site))
    assert main(["condor", "dag", "gw_nightly", "--night", NIGHT, "--expnum", "1", "-o", str(tmp_path)]) == 2
    assert "--expnum 1: no raw exposure" in capsys.readouterr().err
