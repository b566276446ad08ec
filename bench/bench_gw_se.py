"""gw.se_ccd speed on one full-size DECam CCD (2048 x 4096), stage by stage, on one core.

The ``bench`` preset of :mod:`skyops.sim` renders one raw CCD of search exposure 668439 (with
overscan), its master bias, flat and BPM and the GAIA-like reference catalog; then
``gw.se_ccd`` runs through :func:`skyops.steps.runner.run_step` (the real contract: validation,
atomic outputs, result.json) with every thread pool pinned to one thread (SExtractor and PSFEx
run with NTHREADS 1). The step records wall and CPU seconds per stage (CPU includes the tools'
child processes): overscan/bias/flat, sky, SExtractor (both passes), PSFEx, astrometry, writing.

The budget: the GW nightly pipeline processes a CCD (single epoch + difference imaging) in
under 30 s; this bench reports the single-epoch part and the share of the budget it leaves.
Results: ``bench/results/gw_se.json``. The science is checked in the tests, but the bench also
prints the recovered astrometric offset and PSF FWHM against the truth, as a sanity check.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from skyops.sim import Survey, layout  # noqa: E402
from skyops.steps.runner import run_step  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "gw_se.json"
EXPNUM, NITE = 668439, "20170817"
BUDGET_S = 30.0
STAGES = {"overscan_bias_flat": "overscan + bias + gain + flat + masks", "sky": "sky (SEP, objects masked) + weight",
          "sextractor_pass1": "SExtractor pass 1 (bright sources, VIGNETs)", "psfex": "PSFEx (+ FWHM from the model)",
          "astrometry": "astrometric match + fit", "write": "write red_immask (+ header update)",
          "sextractor_pass2": "SExtractor pass 2 (final catalog, PSF fits)"}


def build_inputs(seed: int, ccd: int, root: Path) -> tuple[dict[str, Any], dict[str, Any], float]:
    """One full-size raw CCD, its calibrations and the refcat; the step parameters and the CCD's truth."""
    t0 = time.perf_counter()
    s = Survey("bench", seed)
    spec, cal = s.exposure(EXPNUM), s.calib_run(NITE)
    refcat = root / layout.refcat(s.refcat_name).relpath
    from skyops.sim.fitswrite import write_table

    write_table(refcat, s.refcat, "REFCAT")
    s.make_calibrations(NITE, root, ccds=[ccd])
    res = s.make_exposure(EXPNUM, root, ccds=[ccd], raw=True)
    params = {"raw": str(root / layout.raw(spec).relpath), "ccd": ccd,
              "bias": str(root / layout.biascor(cal, ccd).relpath),
              "flat": str(root / layout.flatcor(cal, spec.band, ccd).relpath),
              "bpm": str(root / layout.bpm(cal, ccd).relpath), "refcat": str(refcat)}
    t = res.ccds[0]
    truth = {k: float(t[k]) for k in ("astrom_dra_arcsec", "astrom_ddec_arcsec", "psf_fwhm", "mag_zero", "sky_e")}
    truth.update(n_stars=int(t["n_stars"]), n_galaxies=int(t["n_galaxies"]))
    return params, truth, time.perf_counter() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench gw_se", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--keep", type=Path, help="keep the inputs and outputs in this folder")
    args = ap.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench_gw_se_") as tmp:
        root = args.keep or Path(tmp)
        params, truth, t_build = build_inputs(args.seed, args.ccd, root / "archive")
        console.print(f"inputs: one 2048x4096 raw CCD ({truth['n_stars']} stars, {truth['n_galaxies']} galaxies), "
                      f"calibrations and refcat built in {t_build:.1f} s")
        result = run_step("gw.se_ccd", params, root / "se")
        if not result.ok:
            console.print(f"[red]gw.se_ccd failed: {result.error['message']}[/]")
            return 1
        sizes = {o["filetype"]: o["size"] for o in result.outputs}
        cal = run_step("gw.calibrate", {"catalogs": result.output_paths("cat_finalcut"), "refcat": params["refcat"]},
                       root / "cal")
        if not cal.ok:
            console.print(f"[red]gw.calibrate failed: {cal.error['message']}[/]")
            return 1
    m = result.metrics
    stages = {k: {"wall_s": v[0], "cpu_s": v[1]} for k, v in m["stage_seconds"].items()}
    t = Table(title=f"gw.se_ccd on one 2048x4096 CCD (exposure {EXPNUM}, CCD {args.ccd}), one core")
    for col, just in (("stage", "left"), ("wall s", "right"), ("CPU s", "right")):
        t.add_column(col, justify=just)
    for key, label in STAGES.items():
        if key in stages:
            t.add_row(label, f"{stages[key]['wall_s']:.2f}", f"{stages[key]['cpu_s']:.2f}")
    other_w = result.wall_s - sum(v["wall_s"] for v in stages.values())
    other_c = result.cpu_s - sum(v["cpu_s"] for v in stages.values())
    t.add_row("other (validation, md5 of outputs, result.json)", f"{other_w:.2f}", f"{other_c:.2f}")
    t.add_row("[bold]total (run_step)[/]", f"[bold]{result.wall_s:.2f}[/]", f"[bold]{result.cpu_s:.2f}[/]")
    t.add_row(f"share of the {BUDGET_S:.0f} s per-CCD budget (SE + diffimg)", f"{result.wall_s / BUDGET_S:.0%}",
              f"{result.cpu_s / BUDGET_S:.0%}")
    console.print(t)
    console.print(f"detections {m['n_detections']} (pass 1: {m['n_detections_pass1']}), PSF stars {m['psf_stars']}, "
                  f"astrometric stars {m['astrom_nstars']}; peak RSS {result.peak_rss_mb:.0f} MiB")
    console.print(f"astrometric offset fitted ({m['astrom_dra_arcsec']:+.4f}, {m['astrom_ddec_arcsec']:+.4f}) arcsec, "
                  f"truth ({truth['astrom_dra_arcsec']:+.4f}, {truth['astrom_ddec_arcsec']:+.4f}); rms "
                  f"{m['astrom_rms_arcsec']:.4f}; PSF FWHM {m['psf_fwhm_arcsec']:.3f} arcsec, truth "
                  f"{truth['psf_fwhm']:.3f}")
    zp = cal.metrics["ccd_mag_zero"]
    console.print(f"gw.calibrate (BLISS) on the catalog: {cal.wall_s:.2f} s wall, {cal.cpu_s:.2f} s CPU; mag_zero "
                  f"{zp:.4f}, truth {truth['mag_zero']:.4f} ({zp - truth['mag_zero']:+.4f})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "gw_se", "host": platform.node(), "python": platform.python_version(),
           "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "ccd_shape": [2048, 4096], "expnum": EXPNUM,
           "ccdnum": args.ccd, "seed": args.seed, "stages": stages, "total_wall_s": result.wall_s,
           "total_cpu_s": result.cpu_s, "peak_rss_mb": result.peak_rss_mb, "budget_s": BUDGET_S,
           "budget_fraction_wall": result.wall_s / BUDGET_S, "output_bytes": sizes, "inputs_build_s": t_build,
           "metrics": {k: v for k, v in m.items() if k != "stage_seconds"}, "truth": truth,
           "versions": result.versions,
           "calibrate": {"wall_s": cal.wall_s, "cpu_s": cal.cpu_s, "mag_zero": zp, "truth_mag_zero": truth["mag_zero"],
                         "nstars": cal.metrics["nstars"]}}
    RESULTS.write_text(json.dumps(doc, indent=1, default=str))
    console.print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
