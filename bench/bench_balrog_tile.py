"""Balrog data path on one demo tile, block by block, and an estimate for a full DES tile.

A demo tile (DES0239+0216: 684 x 684 coadd pixels, g r i z, two epochs of ~8 demo CCDs of
256 x 512 pixels per band) is built into a SQLite archive, then run through ``run_step`` on one
core (SWarp/SExtractor/PSFEx NTHREADS 1): block 1 prep (query + staging), block 2 coadd per band
and detection (CHI-MEAN + dual-mode SExtractor + coadd PSFEx), block 3 MEDS per band, block 4
injection of realization 0 (default injection config: 30 arcsec grid, Poisson noise), block 5 the
realization's coadd and detection, block 6 its MEDS, and the match. Each step's wall and CPU time
comes from its result.json.

Unit costs are derived from the measured times: coadd per input single-epoch pixel, detection per
coadd pixel, MEDS per cutout pixel (and per object-epoch), injection per drawn object-epoch. The
full-tile estimate applies them to a DES tile: 10,000 x 10,000 coadd pixels, ~40 epochs per band
(each tile pixel covered ~40 times by single-epoch pixels), DES Y3-like 22 detections / arcmin^2
(~42,000 per tile) with MEDS boxes of the demo's mean size, and 30 arcsec injection grids
(~8,900 objects per realization). Results: ``bench/results/balrog_tile.json``.

``--completeness N`` then injects N more realizations (1..N) with magnitudes flat in i 19-24 on a
20 arcsec grid (as tests/integration/test_balrog_tile.py, with Poisson noise), runs their coadd,
detection and match, and reports the completeness of the injections 1 mag brighter than the i-band
5-sigma depth over all of them -- every injection, blends with real objects included -- with its
95% (Wilson) interval, the same for isolated injections, and why the missed ones were missed.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import fitsio  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from skyops.campaigns.balrog.layout import TileLayout  # noqa: E402
from skyops.campaigns.balrog.prep import read_srclist  # noqa: E402
from skyops.config import ArchiveConfig, DatabasesConfig, PlatformConfig  # noqa: E402
from skyops.sim import create_archive  # noqa: E402
from skyops.sim.presets import PRESETS  # noqa: E402
from skyops.steps.runner import StepResult, run_step  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "balrog_tile.json"
TILE, MEDSCONF, BANDS = "DES0239+0216", "y3a1-v02", ("g", "r", "i", "z")
#: The full DES tile of the estimate.
DES_NAXIS, DES_EPOCHS, DES_DENSITY_ARCMIN2, DES_SCALE = 10_000, 40, 22.0, 0.263


def run(name: str, params: dict[str, Any], work: Path) -> StepResult:
    r = run_step(name, params, work)
    if not r.ok:
        raise SystemExit(f"{name} failed: {r.error}")
    return r


#: The completeness injections (``--completeness``): flat magnitudes, so that ~half are at depth - 1.
COMPLETENESS_INJECTION = """
description: bench completeness (flat magnitudes)
seed: 7
grid: {spacing: 20.0, edge_buffer: 8.0}
deepfield: {seed: 5, n_objects: 2000, mag_range: [19.0, 24.0], count_slope: 0.0}
stars: {fraction: 0.1, mag_range: [19.0, 24.0]}
noise: poisson
"""


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial fraction k / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / d, z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return float(mid - half), float(mid + half)


def completeness(c: dict[str, Any], w: Path, root: Path, n: int, console: Console) -> dict[str, Any]:
    """Realizations 1..n with COMPLETENESS_INJECTION: completeness at depth - 1, pooled."""
    cfg = root / "completeness_injection.yaml"
    cfg.write_text(COMPLETENESS_INJECTION)
    tot = {"n": 0, "k": 0, "n_iso": 0, "k_iso": 0}
    misses: dict[str, int] = {}
    per: list[dict[str, Any]] = []
    for r in range(1, n + 1):
        run("balrog.inject", c | {"realization": r, "galsim_config": str(cfg)}, w / f"c_inject{r}")
        run("balrog.coadd", c | {"realization": r}, w / f"c_coadd{r}")
        run("balrog.match", c | {"realization": r}, w / f"c_match{r}")
        s = json.loads(TileLayout(Path(c["meds_dir"]), MEDSCONF, TILE).for_realization(r).match_summary().read_text())
        k, k_iso = round(s["n_bright"] * s["completeness_bright"]), round(
            s["n_bright_isolated"] * s["completeness_bright_isolated"])
        tot["n"] += s["n_bright"]
        tot["k"] += k
        tot["n_iso"] += s["n_bright_isolated"]
        tot["k_iso"] += k_iso
        for why, v in s["bright_misses"].items():
            misses[why] = misses.get(why, 0) + v
        per.append({"realization": r, "depth_i": s["depth_5sigma"]["i"], "n_bright": s["n_bright"], "matched": k,
                    "bright_misses": s["bright_misses"]})
    out = {"realizations": n, "n_bright": tot["n"], "matched": tot["k"], "completeness": tot["k"] / tot["n"],
           "interval95": wilson(tot["k"], tot["n"]), "n_bright_isolated": tot["n_iso"],
           "matched_isolated": tot["k_iso"], "completeness_isolated": tot["k_iso"] / tot["n_iso"],
           "interval95_isolated": wilson(tot["k_iso"], tot["n_iso"]), "bright_misses": misses, "per_realization": per}
    lo, hi = out["interval95"]
    console.print(f"completeness at depth - 1 over {n} realizations: {tot['k']}/{tot['n']} = {out['completeness']:.3f} "
                  f"(95% {lo:.3f}-{hi:.3f}); isolated {tot['k_iso']}/{tot['n_iso']} = "
                  f"{out['completeness_isolated']:.3f}; misses {misses}")
    return out


def se_pixels(layout: TileLayout, band: str) -> int:
    return int(sum(np.prod(fitsio.FITS(i.image_path)[0].get_dims()) for i in read_srclist(layout.srclist(band))))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench balrog_tile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--keep", type=Path, help="keep the archive and outputs in this folder")
    ap.add_argument("--completeness", type=int, default=0, metavar="N",
                    help="also measure completeness at depth - 1 over N more realizations (~30 s each)")
    args = ap.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench_balrog_") as tmp:
        root = args.keep or Path(tmp)
        archive, db = root / "archive", f"sqlite:///{root / 'desdm.sqlite'}"
        cfg = PlatformConfig(databases=DatabasesConfig(archive=db), archive=ArchiveConfig(root=archive.as_uri()))
        t0 = time.perf_counter()
        create_archive("demo", args.seed, cfg, parts=("tiles",),
                       tiles=dataclasses.replace(PRESETS["demo"].tiles, tilenames=(TILE,)))
        t_build = time.perf_counter() - t0
        meds_dir = root / "meds"
        c = {"tile": TILE, "medsconf": MEDSCONF, "meds_dir": str(meds_dir)}
        w = root / "work"
        steps: dict[str, StepResult] = {}
        steps["1 prep"] = run("balrog.prep", c | {"archive_url": db, "archive_root": archive.as_uri(),
                                                   "cache": False}, w / "prep")
        for b in BANDS:
            steps[f"2 coadd {b}"] = run("balrog.coadd_band", c | {"band": b}, w / f"coadd_{b}")
        steps["2 detect"] = run("balrog.detect", c, w / "detect")
        for b in BANDS:
            steps[f"3 meds {b}"] = run("balrog.meds", c | {"bands": [b]}, w / f"meds_{b}")
        steps["4 inject r0"] = run("balrog.inject", c | {"realization": 0}, w / "inject")
        for b in BANDS:
            steps[f"5 coadd r0 {b}"] = run("balrog.coadd_band", c | {"band": b, "realization": 0}, w / f"rc_{b}")
        steps["5 detect r0"] = run("balrog.detect", c | {"realization": 0}, w / "rdetect")
        for b in BANDS:
            steps[f"6 meds r0 {b}"] = run("balrog.meds", c | {"bands": [b], "realization": 0}, w / f"rmeds_{b}")
        steps["match r0"] = run("balrog.match", c | {"realization": 0}, w / "match")

        base = TileLayout(meds_dir, MEDSCONF, TILE)
        geom = json.loads(base.geometry().read_text())
        n_coadd = int(geom["naxis1"]) * int(geom["naxis2"])
        n_se = {b: se_pixels(base, b) for b in BANDS}
        meds_m = {b: steps[f"3 meds {b}"].metrics for b in BANDS}
        n_obj = meds_m["r"]["meds_r_objects"]
        cut_pix = sum(meds_m[b][f"meds_{b}_pixels"] for b in BANDS)
        cuts = sum(meds_m[b][f"meds_{b}_cutouts"] for b in BANDS)
        inj = steps["4 inject r0"].metrics
        comp = completeness(c, w, root, args.completeness, console) if args.completeness > 0 else None

    def wall(prefix: str) -> float:
        return sum(r.wall_s for k, r in steps.items() if k.startswith(prefix))

    def cpu(prefix: str) -> float:
        return sum(r.cpu_s for k, r in steps.items() if k.startswith(prefix))

    coadd_s, detect_s, meds_s, inject_s = wall("2 coadd"), wall("2 detect"), wall("3 meds"), wall("4 inject")
    unit = {
        "coadd_s_per_mpix_se": coadd_s / (sum(n_se.values()) / 1e6),
        "detect_s_per_mpix_coadd_band": detect_s / (n_coadd * len(BANDS) / 1e6),
        "meds_s_per_mpix_cutout": meds_s / (cut_pix / 1e6),
        "meds_ms_per_cutout": 1e3 * meds_s / cuts,
        "inject_ms_per_draw": 1e3 * inject_s / inj["n_draws"],
        "mean_box_pix2": cut_pix / cuts,
    }
    # the full DES tile
    n_coadd_des = DES_NAXIS ** 2
    area_arcmin2 = (DES_NAXIS * DES_SCALE / 60.0) ** 2
    n_obj_des = DES_DENSITY_ARCMIN2 * area_arcmin2
    n_inj_des = (DES_NAXIS * DES_SCALE - 2 * 10.0) ** 2 / (30.0 ** 2 * np.sqrt(3) / 2)
    se_pix_des = DES_EPOCHS * n_coadd_des * 1.1  # ~10% of single-epoch pixels fall outside the tile
    est = {
        "coadd_per_band_h": unit["coadd_s_per_mpix_se"] * se_pix_des / 1e6 / 3600,
        "detect_all_bands_h": unit["detect_s_per_mpix_coadd_band"] * n_coadd_des * len(BANDS) / 1e6 / 3600,
        "meds_per_band_h": unit["meds_ms_per_cutout"] / 1e3 * n_obj_des * (1 + DES_EPOCHS) / 3600,
        "inject_per_realization_h": unit["inject_ms_per_draw"] / 1e3 * n_inj_des * len(BANDS) * DES_EPOCHS / 3600,
        "n_objects": round(n_obj_des), "n_injected_per_realization": round(n_inj_des),
    }
    est["base_tile_cpu_h"] = len(BANDS) * (est["coadd_per_band_h"] + est["meds_per_band_h"]) + est[
        "detect_all_bands_h"]
    est["per_realization_cpu_h"] = est["inject_per_realization_h"] + est["base_tile_cpu_h"]

    t = Table(title=f"Balrog demo tile {TILE}: {geom['naxis1']}x{geom['naxis2']} coadd, {n_obj} objects, "
                    f"{sum(n_se.values()) / 1e6:.2f} Mpix of single-epoch images (4 bands)")
    for col in ("step", "wall s", "cpu s", "peak MiB"):
        t.add_column(col, justify="right" if col != "step" else "left")
    for k, r in steps.items():
        t.add_row(k, f"{r.wall_s:.2f}", f"{r.cpu_s:.2f}", f"{r.peak_rss_mb:.0f}")
    t.add_row("[b]total[/]", f"{sum(r.wall_s for r in steps.values()):.1f}",
              f"{sum(r.cpu_s for r in steps.values()):.1f}", "")
    console.print(t)
    console.print(f"archive build {t_build:.1f} s; per block (wall): prep {wall('1'):.1f} s, coadd+detect "
                  f"{coadd_s + detect_s:.1f} s, MEDS {meds_s:.1f} s, inject {inject_s:.1f} s "
                  f"({inj['n_draws']} draws), realization coadd {wall('5'):.1f} s, realization MEDS {wall('6'):.1f} s")
    console.print("unit costs: " + ", ".join(f"{k} {v:.4g}" for k, v in unit.items()))
    console.print(f"full DES tile ({DES_NAXIS}^2 pixels, {DES_EPOCHS} epochs/band, {est['n_objects']} objects, "
                  f"{est['n_injected_per_realization']} injections): coadd {est['coadd_per_band_h']:.2f} h/band, "
                  f"detection {est['detect_all_bands_h']:.2f} h, MEDS {est['meds_per_band_h']:.2f} h/band, "
                  f"injection {est['inject_per_realization_h']:.2f} h/realization; base tile "
                  f"{est['base_tile_cpu_h']:.1f} core-h, each realization {est['per_realization_cpu_h']:.1f} core-h")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "host": platform.node(), "python": platform.python_version(), "archive_build_s": round(t_build, 2),
        "steps": {k: {"wall_s": r.wall_s, "cpu_s": r.cpu_s, "peak_rss_mb": r.peak_rss_mb} for k, r in steps.items()},
        "demo": {"coadd_pixels": n_coadd, "se_pixels": n_se, "objects": n_obj, "cutouts": cuts,
                 "cutout_pixels": cut_pix, "draws": inj["n_draws"]},
        "unit_costs": unit, "des_tile_estimate": est, "completeness": comp,
    }, indent=1))
    console.print(f"results: {RESULTS}")
    return 0
