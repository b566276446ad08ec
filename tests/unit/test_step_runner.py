"""The step runner's contract: validation, result.json, exit codes, atomic outputs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from skyops.errors import StepParameterError, UnknownStepError
from skyops.steps.registry import get_step
from skyops.steps.runner import StepResult, parse_param_args, run_step


def test_make_and_measure_recover_truth(tmp_path):
    """The self-test chain through the real SExtractor recovers the injected stars."""
    r1 = run_step("selftest.make_image", {"nstars": 30, "seed": 7}, tmp_path / "a")
    assert r1.ok and r1.exit_code == 0
    assert {o["filetype"] for o in r1.outputs} == {"selftest_image", "selftest_truth"}
    img = r1.output_paths("selftest_image")[0]
    r2 = run_step("selftest.measure", {"image": img, "truth": r1.output_paths("selftest_truth")[0]}, tmp_path / "b")
    assert r2.ok, r2.error
    assert r2.metrics["completeness"] == 1.0
    assert r2.metrics["pos_rms_pix"] < 0.05
    assert abs(r2.metrics["flux_ratio_median"] - 1) < 0.02
    assert r2.versions["source-extractor"].startswith("Source Extractor version 2.")
    assert [u["path"] for u in r2.used] == [img, r1.output_paths("selftest_truth")[0]]
    for key in ("skyops", "python", "numpy", "astropy", "galsim", "fitsio"):
        assert key in r2.versions
    assert r2.wall_s > 0 and r2.cpu_s > 0 and r2.peak_rss_mb > 10
    on_disk = json.loads((tmp_path / "b" / "result.json").read_text())
    assert on_disk["outputs"][0]["md5"] == r2.outputs[0]["md5"]
    assert len(on_disk["outputs"][0]["md5"]) == 32


def test_unknown_parameter_exact_message(tmp_path):
    r = run_step("selftest.make_image", {"nstar": 3}, tmp_path)
    assert r.exit_code == 2 and r.status == "failed"
    assert r.error["message"] == (
        "step 'selftest.make_image': unknown parameter 'nstar'; it takes: nstars (int, default 40), "
        "size (int, default 256), seed (int, default 1), fwhm_pix (float, default 3.0), sky (float, default 100.0)")
    assert StepResult.load(tmp_path).error == r.error


def test_wrong_type_exact_message():
    with pytest.raises(StepParameterError) as e:
        get_step("selftest.make_image").validate({"nstars": "many"})
    assert str(e.value) == ("step 'selftest.make_image': parameter 'nstars': Input should be a valid integer, "
                            "unable to parse string as an integer (got 'many'); expected int")


def test_missing_required_parameter():
    with pytest.raises(StepParameterError) as e:
        get_step("selftest.measure").validate({"image": "x"})
    assert str(e.value) == "step 'selftest.measure': parameter 'truth' is required; expected str"


def test_unknown_step_names_neighbours():
    with pytest.raises(UnknownStepError) as e:
        get_step("selftest.nope")
    assert str(e.value) == ("no step named 'selftest.nope'; steps in 'selftest': selftest.make_image, "
                            "selftest.measure, selftest.slow_write")


def test_failure_inside_step_exit_1(tmp_path):
    r = run_step("selftest.measure", {"image": str(tmp_path / "missing.fits"), "truth": "x"}, tmp_path / "w")
    assert r.exit_code == 1 and r.error["type"] == "FileNotFoundError"
    assert "traceback" in r.error
    assert not any(p.name.endswith(".fits") for p in (tmp_path / "w").iterdir())


def test_param_parsing(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("ccds: [1, 3]\nband: i\n")
    assert parse_param_args([str(f), "n=3", "flag=true", "band=z", "name=D001"]) == {
        "ccds": [1, 3], "band": "z", "n": 3, "flag": True, "name": "D001"}
    with pytest.raises(StepParameterError, match="neither a file nor key=value"):
        parse_param_args(["nofile"])


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skyops.cli.main", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_exit_codes(tmp_path):
    ok = run_cli("step", "run", "selftest.make_image", "--params", "nstars=5", "size=64", "--workdir", "w1", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("step", "run", "selftest.make_image", "--params", "size=10", "--workdir", "w2", cwd=tmp_path)
    assert bad.returncode == 2
    assert "nstars must be >= 1 and size >= 32 (got nstars=40, size=10)" in bad.stderr
    unknown = run_cli("step", "run", "no.such", "--workdir", "w3", cwd=tmp_path)
    assert unknown.returncode == 2
    assert json.loads((tmp_path / "w3" / "result.json").read_text())["error"]["type"] == "UnknownStepError"
    listing = run_cli("step", "list", cwd=tmp_path)
    assert listing.returncode == 0 and "selftest.measure" in listing.stdout and "match_radius" in listing.stdout
