"""The Magellanic campaign's parts on their own: the half-sample mode, BackCalc's solver, the coarse
grid, kred's tables and log, run parameters and planning, and the errors a user meets."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import yaml

from skyops.campaigns.magellanic import plan
from skyops.campaigns.magellanic.backcalc import solve_offsets
from skyops.campaigns.magellanic.backstats import batch_slice
from skyops.campaigns.magellanic.fieldconfig import load_field_config
from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.hsm import (background_mode, clipped_stats_sorted, half_sample_mode,
                                             half_sample_mode_sorted, pixel_stats)
from skyops.campaigns.magellanic.layout import (FieldNameError, KredTree, UnknownFieldError, UnknownTileError,
                                                mosaic_name, tile_dir_name)
from skyops.campaigns.magellanic.params import STAGES, MagellanicParamError, parse_stages, validate
from skyops.campaigns.magellanic.tables import Tab, ecsv_text, parse_ecsv
from skyops.errors import InputError, ProcessingError, SkyopsError, StepParameterError
from skyops.steps.runner import run_step


# ------------------------------------------------------------------ half-sample mode
def test_hsm_small_samples_by_hand():
    assert half_sample_mode([5.0]) == 5.0
    assert half_sample_mode([1.0, 3.0]) == 2.0
    assert half_sample_mode([1.0, 2.0, 10.0]) == 1.5  # the closer pair
    assert half_sample_mode([1.0, 5.0, 9.0]) == 5.0  # a tie: the middle value
    # 1 2 3 4 5 100 101: the narrowest half {1,2,3,4} -> {2,3} or {1,2}: first narrowest -> {1,2} -> 1.5
    assert half_sample_mode([101, 3, 1, 100, 2, 4, 5]) == 1.5
    assert half_sample_mode([np.nan, 7.0, np.inf, 7.0, 8.0]) == 7.0  # non-finite values are ignored
    with pytest.raises(ProcessingError, match="no finite values"):
        half_sample_mode([np.nan, np.inf])


def test_hsm_is_vectorised_over_rows_and_matches_one_at_a_time():
    g = np.random.default_rng(3)
    x = np.sort(g.normal(size=(50, 1001)) + g.exponential(3.0, size=(50, 1001)) * (g.random((50, 1001)) < 0.2),
                axis=1)
    rows = half_sample_mode_sorted(x)
    assert rows.shape == (50,)
    assert np.array_equal(rows, [half_sample_mode(r, presorted=True) for r in x])
    cube = half_sample_mode_sorted(x.reshape(5, 10, 1001))
    assert np.array_equal(cube.ravel(), rows)


def test_mode_finds_the_sky_under_a_one_sided_tail():
    g = np.random.default_rng(11)
    sky = g.normal(100.0, 10.0, 200_000)
    stars = sky.copy()
    hit = g.random(sky.size) < 0.15  # 15% of the pixels carry emission or star light
    stars[hit] += g.exponential(40.0, hit.sum())
    m = background_mode(stars)
    assert abs(m.mode - 100.0) < 0.5 and abs(m.hsm - 100.0) < 2.0  # within 0.05 and 0.2 sigma
    assert m.sigma == pytest.approx(10.0, rel=0.05)
    assert stars.mean() - 100.0 > 5.0 and np.median(stars) - 100.0 > 1.0  # what the mode is for
    # the refined mode is far less noisy than the raw HSM (the reason it exists)
    modes = np.array([(background_mode(g.normal(0, 1, 20_000)).mode, half_sample_mode(g.normal(0, 1, 20_000)))
                      for _ in range(40)])
    assert modes[:, 0].std() < 0.5 * modes[:, 1].std()


def test_clipped_stats_agree_with_astropy():
    from astropy.stats import sigma_clipped_stats

    g = np.random.default_rng(5)
    x = np.concatenate([g.normal(50.0, 4.0, 50_000), g.uniform(60, 500, 3000)])
    mean, median, std = clipped_stats_sorted(np.sort(x))
    a_mean, a_median, a_std = sigma_clipped_stats(x, sigma=3.0, maxiters=10)
    assert (mean, median, std) == (pytest.approx(a_mean, rel=1e-9), pytest.approx(a_median, rel=1e-9),
                                   pytest.approx(a_std, rel=1e-9))
    st = pixel_stats(x, clip=True)
    assert st.clip_mean == pytest.approx(a_mean, rel=1e-6) and st.mean > st.clip_mean
    assert np.isnan(pixel_stats(x).clip_mean)


# ------------------------------------------------------------------ BackCalc
def _graph(side: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A survey-like overlap graph: side x side dithered CCD images, each overlapping its (up to 8)
    neighbours, with a tenth of the pairs lost (too few common cells)."""
    pos = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2) + g.uniform(0, 0.1, (side**2, 2))
    i, j = np.triu_indices(side * side, 1)
    keep = (np.abs(pos[i] - pos[j]).max(axis=1) < 1.5) & (g.random(i.size) < 0.9)
    return i[keep], j[keep]


def test_backcalc_recovers_a_known_solution_up_to_a_constant():
    g = np.random.default_rng(1)
    n = 400
    i, j = _graph(20, g)
    x = g.normal(0, 5.0, n)
    w = g.integers(100, 2000, i.size).astype(float)
    exact = solve_offsets(n, i, j, x[j] - x[i], w)
    assert exact.n_components == 1 and exact.rms < 1e-9
    assert np.allclose(exact.x, x - x.mean(), atol=1e-8)  # the gauge: zero mean
    # noise with variance 1 / weight (as for BackStats: weight = common cells): the fit is then the
    # minimum-variance estimate, with covariance L^+ (L the weighted Laplacian of the overlap graph)
    sd = 1.0 / np.sqrt(w)
    noisy = solve_offsets(n, i, j, x[j] - x[i] + g.normal(0, 1.0, i.size) * sd, w)
    err = noisy.x - (x - x.mean())
    a = np.zeros((i.size, n))
    a[np.arange(i.size), i], a[np.arange(i.size), j] = -1.0, 1.0
    cov = np.linalg.pinv(a.T @ (w[:, None] * a))
    chi2 = err @ np.linalg.pinv(cov) @ err / (n - 1)
    assert 0.8 < chi2 < 1.2, chi2  # errors exactly as large as the data allow: no more, no less
    assert np.abs(err).max() < 5 * np.sqrt(np.diag(cov)).max() and noisy.better_than_none
    assert noisy.rms < 0.2 * noisy.rms_none


def test_backcalc_groups_are_solved_apart_and_isolated_images_stay_at_zero():
    # two groups (two filters) and one image with no overlap at all
    i = np.array([0, 1, 0, 3, 4])
    j = np.array([1, 2, 2, 4, 5])
    x = np.array([1.0, 2.0, 4.0, 10.0, 20.0, 40.0, 0.0])
    sol = solve_offsets(7, i, j, x[j] - x[i], np.ones(5))
    assert sol.n_components == 2
    assert np.allclose(sol.x[:3], x[:3] - x[:3].mean()) and np.allclose(sol.x[3:6], x[3:6] - x[3:6].mean())
    assert sol.x[6] == 0.0 and len(set(sol.component[[0, 3, 6]])) == 3


def test_backcalc_weights_decide_between_inconsistent_pairs():
    # 0 -> 1 measured twice, inconsistently: the heavier measurement wins, in proportion
    sol = solve_offsets(2, np.array([0, 0]), np.array([1, 1]), np.array([1.0, 2.0]), np.array([3.0, 1.0]))
    assert sol.x[1] - sol.x[0] == pytest.approx(1.25)


def test_backcalc_keeps_no_correction_when_the_pairs_are_pure_inconsistency():
    # a loop whose differences sum to 3: no set of offsets explains any of it
    sol = solve_offsets(3, np.array([0, 1, 2]), np.array([1, 2, 0]), np.array([1.0, 1.0, 1.0]), np.ones(3))
    assert np.allclose(sol.x, 0.0, atol=1e-12) and not sol.better_than_none


def test_backcalc_rejects_bad_input():
    with pytest.raises(ProcessingError, match="weights must be positive"):
        solve_offsets(2, np.array([0]), np.array([1]), np.array([1.0]), np.array([0.0]))
    with pytest.raises(ProcessingError, match="to itself"):
        solve_offsets(2, np.array([1]), np.array([1]), np.array([1.0]), np.array([1.0]))


# ------------------------------------------------------------------ coarse grid
def test_coarse_binning_matches_exact_projection_and_differences_cancel():
    from astropy.wcs import WCS

    from skyops.campaigns.magellanic.coarse import CoarseGrid, PixelMap, bin_image, difference

    hdr = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 80.6, "CRVAL2": -69.4, "CRPIX1": -300.0,
           "CRPIX2": 900.0, "CD1_1": -0.263 / 3600, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.263 / 3600,
           "NAXIS1": 256, "NAXIS2": 512}
    grid = CoarseGrid(80.55, -69.45, 2.0)
    w = WCS(hdr)
    pm = PixelMap(w, grid, 512, 256)
    gx, gy = pm.rows(0, 512)
    yy, xx = np.mgrid[1:513, 1:257]
    ex, ey = grid.coords(*w.all_pix2world(xx.ravel(), yy.ravel(), 1))
    assert np.abs(gx.ravel() - ex).max() < 1e-6 and np.abs(gy.ravel() - ey).max() < 1e-6
    g = np.random.default_rng(2)
    img = g.normal(0.0, 1.0, (512, 256)).astype(np.float32)
    a = bin_image(img, hdr, grid)
    b = bin_image(img + np.float32(3.5), hdr, grid)
    assert a.nominal == pytest.approx((2.0 / 0.263) ** 2)
    d = difference(a, b)
    assert d.size > 1500 and np.allclose(d, 3.5, atol=1e-4)
    assert int(a.count.sum()) == img.size  # every pixel lands in exactly one cell


def test_batches_cover_every_pair_once():
    n = 103
    seen = np.concatenate([np.arange(n)[batch_slice(n, k, 7)] for k in range(7)])
    assert np.array_equal(seen, np.arange(n))
    with pytest.raises(StepParameterError, match="'batch'"):
        batch_slice(n, 7, 7)


# ------------------------------------------------------------------ tables and the field log
def test_tab_files_are_ecsv_that_astropy_reads():
    from astropy.table import Table

    t = Tab.from_rows([("a b", 1, 2.5, True), ("", 2, float("nan"), False)], ("name", "n", "x", "ok"),
                      meta={"chosen": "lsq", "rms": 0.25})
    text = ecsv_text(t)
    back = parse_ecsv(text)
    assert back.colnames == ["name", "n", "x", "ok"] and list(back["name"]) == ["a b", ""]
    assert back["n"].dtype == np.int64 and np.isnan(back["x"][1]) and back.meta == {"chosen": "lsq", "rms": 0.25}
    ap = Table.read(text, format="ascii.ecsv")
    assert list(ap["n"]) == [1, 2] and ap["name"][0] == "a b" and ap.meta["chosen"] == "lsq"
    empty = Tab.from_rows([], ("a", "b"), dtypes=("i8", "U4"))
    assert len(parse_ecsv(ecsv_text(empty))) == 0


def _append_many(path: str, who: int) -> None:
    log = FieldLog(KredTree(Path(path), "LMC_c42"))
    for k in range(200):
        log.write("BackStats", f"writer {who} line {k} " + "x" * (50 * (k % 7)))


def test_field_log_appends_from_parallel_processes_never_interleave(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = (tmp_path / "Summary" / "LMC_c42.log").read_text().splitlines()
    assert len(lines) == 800
    for line in lines:
        parts = line.split()
        assert parts[1] == "LMC_c42" and parts[2] == "BackStats" and parts[4] == "writer"
        assert line.endswith("x" * (50 * (int(parts[7]) % 7))) or int(parts[7]) % 7 == 0
    for w in range(4):  # each writer's lines are all there, in order
        mine = [int(ln.split()[7]) for ln in lines if ln.split()[5] == str(w)]
        assert mine == list(range(200))


# ------------------------------------------------------------------ params, stages, planning
def test_stages_take_kred_names_ranges_and_lists():
    assert parse_stages("all") == STAGES == parse_stages(None)
    assert parse_stages("backstats-") == ("backstats", "backcalc", "backsub", "swarp_b", "swarpeval")
    assert parse_stages("mefprep-swarp") == ("mefprep", "setuptile", "swarp")
    assert parse_stages("-setuptile") == ("mefcheck", "mefsum", "mefprep", "setuptile")
    assert parse_stages(["BackCalc.py", "BackSub", "SwarpSetup"]) == ("swarp", "backcalc", "backsub")
    with pytest.raises(MagellanicParamError, match="unknown stage 'BackFit'"):
        parse_stages("BackFit")
    with pytest.raises(MagellanicParamError, match="runs backwards"):
        parse_stages("swarp-mefsum")


def test_run_params_name_the_bad_one():
    r = validate({"field": "LMC_c42", "tiles": "T01,T03", "np": "8", "bsub": False, "stages": "all"})
    assert r.tiles == ("T01", "T03") and r.np == 8 and not r.runs("backcalc") and r.runs("swarp")
    for raw, words in (({"field": "LMC c42"}, "param 'field'"), ({"field": "LMC_c42", "np": 0}, "param 'np'"),
                       ({"field": "LMC_c42", "tiles": "2"}, "param 'tiles'"),
                       ({"field": "LMC_c42", "bsub": "yes"}, "param 'bsub'"),
                       ({"field": "LMC_c42", "nproc": 3}, "unknown param 'nproc'")):
        with pytest.raises(MagellanicParamError, match=words):
            validate(raw)


def test_planning_follows_the_stages(tmp_path):
    mefs = tmp_path / "DECam_MEF" / "LMC_c42"
    mefs.mkdir(parents=True)
    for k in range(3):
        (mefs / f"c4d_19011{k}_000000_ooi_N662_v1.fits").write_bytes(b"")
    run = validate({"field": "LMC_c42", "np": 3, "stages": "mefsum,backstats"})
    assert [p["mef"] for p in plan.per_mef(run, tmp_path, "mefsum")] == sorted(p.name for p in mefs.iterdir())
    assert plan.per_mef(run, tmp_path, "mefprep") == [] and plan.single(run, tmp_path, "backcalc") is None
    assert [(p["batch"], p["nbatch"]) for p in plan.per_batch(run, tmp_path)] == [(0, 3), (1, 3), (2, 3)]
    assert plan.per_batch(validate({"field": "LMC_c42", "bsub": False}), tmp_path) == []
    (tmp_path / "Summary").mkdir()
    (tmp_path / "Summary" / "LMC_c42_tiles.json").write_text(json.dumps({"tiles": {"T02": {"groups": {
        "N662_400s": {"filter": "N662", "exptime": 400.0, "images": ["a.fits"]}}}}}))
    mos = plan.per_mosaic(validate({"field": "LMC_c42"}), tmp_path, bsub=True)
    assert mos == [{"root": str(tmp_path), "field": "LMC_c42", "tile": "T02", "filter": "N662", "exptime": 400.0,
                    "bsub": True}]


# ------------------------------------------------------------------ errors a user meets
def _config(root: Path) -> Path:
    p = root / "KRED" / "config" / "LMC_c42.yaml"
    p.parent.mkdir(parents=True)
    p.write_text(yaml.safe_dump({
        "format": "skyops-kred-field/1", "field": "LMC_c42", "mef_dir": "DECam_MEF/LMC_c42",
        "center": {"ra": 80.55, "dec": -69.45}, "pixel_scale": 0.263, "filters": ["N662"], "exptimes": [400.0],
        "tile_size_deg": 0.03, "tiles": [{"name": "T01", "ra": 80.5, "dec": -69.45, "size_deg": 0.03},
                                         {"name": "T02", "ra": 80.6, "dec": -69.45, "size_deg": 0.03}]}))
    return p


def test_bad_field_and_tile_names_are_skyops_errors_naming_them(tmp_path):
    _config(tmp_path)
    with pytest.raises(FieldNameError, match="'LMC c42'"):
        KredTree(tmp_path, "LMC c42")
    with pytest.raises(UnknownFieldError, match="field 'SMC_c01'.*LMC_c42") as e:
        load_field_config(KredTree(tmp_path, "SMC_c01"))
    assert isinstance(e.value, SkyopsError)
    cfg = load_field_config(KredTree(tmp_path, "LMC_c42"))
    assert [t.name for t in cfg.select_tiles(["all"])] == ["T01", "T02"]
    with pytest.raises(UnknownTileError, match="tile 'T09' is not a tile of field LMC_c42; its tiles are T01, T02"):
        cfg.select_tiles(["T02", "T09"])
    with pytest.raises(FieldNameError, match="'Q7'"):
        tile_dir_name("Q7")
    assert tile_dir_name("T2") == "Tile02" and mosaic_name("T02", "N662", 400.0) == "Tile02_N662_400s"


def test_steps_refuse_an_unknown_field_or_tile_with_exit_code_2(tmp_path):
    _config(tmp_path)
    res = run_step("magellanic.mef_sum", {"root": str(tmp_path), "field": "SMC_c01", "mef": "x.fits"}, tmp_path / "w1")
    assert res.exit_code == 2 and "field 'SMC_c01'" in res.error["message"]
    res = run_step("magellanic.setup_tile", {"root": str(tmp_path), "field": "LMC_c42", "tiles": ["T07"]},
                   tmp_path / "w2")
    assert res.exit_code == 2 and "tile 'T07'" in res.error["message"]
    res = run_step("magellanic.back_calc", {"root": str(tmp_path), "field": "LMC_c42"}, tmp_path / "w3")
    assert res.exit_code == 2 and "run MefSum" in res.error["message"]  # what to do, not a traceback
    res = run_step("magellanic.mef_prep", {"root": str(tmp_path), "field": "LMC_c42", "mef": "x.fits",
                                           "background": "plane"}, tmp_path / "w4")
    assert res.exit_code == 2 and "'background'" in res.error["message"]
    assert issubclass(MagellanicParamError, InputError)
