"""gw.diffimg_ccd speed on one full-size DECam CCD (2048 x 4096), stage by stage, on one core.

The ``bench`` preset of :mod:`skyops.sim` renders one red_immask CCD of search exposure 668439
(with its transients) and the same CCD of the two template exposures (header WCS exact, as the
GW SE step leaves it); then ``gw.diffimg_ccd`` runs through
:func:`skyops.steps.runner.run_step` (the real contract: validation, md5 of inputs and outputs,
atomic outputs, result.json) with every thread pool pinned to one thread (SWarp and SExtractor
run with NTHREADS 1). The step records wall and CPU seconds per stage (CPU includes the tools'
child processes): reading, SWarp (flux scaling, resampling, co-adding), the kernel fit (PSF
sizes, stamps, Alard-Lupton fit), convolution, subtraction (+ variance, masks, systematic,
writing the difference image), detection (SExtractor on D and -D), photometry, stamps.

The budget: single epoch + difference imaging of a CCD in under 30 s. The SE part comes from
``bench/results/gw_se.json`` when it is there. Results: ``bench/results/gw_diffimg.json``. The
science is checked in the tests; the bench prints the recovered transients, false candidates
and the chi2 on static stars as a sanity check.
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

import fitsio  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from skyops.sim import Survey, layout  # noqa: E402
from skyops.steps.runner import run_step  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "gw_diffimg.json"
SE_RESULTS = Path(__file__).parent / "results" / "gw_se.json"
SEARCH, TEMPLATES = 668439, (521360, 521361)
BUDGET_S = 30.0
STAGES = {"read": "read search + templates (and md5 for provenance)",
          "swarp": "template flux scales + SWarp resample/co-add",
          "kernel_fit": "PSF sizes, stamps, Alard-Lupton kernel fit",
          "convolution": "convolve (spatially varying kernel, FFT) + variance",
          "subtraction": "subtract, masks, matching systematic, write D",
          "detection": "SExtractor on D and -D",
          "photometry": "PSF, noise scale, forced photometry, candidate table",
          "stamps": "PNG stamps"}


def build_inputs(seed: int, ccd: int, root: Path) -> tuple[dict[str, Any], dict[str, Any], float]:
    """One full-size search CCD and its two templates; the step parameters and the truth."""
    t0 = time.perf_counter()
    s = Survey("bench", seed, astrometric_offset_sigma=0.0)
    res = {e: s.make_exposure(e, root, ccds=[ccd], raw=False) for e in (SEARCH,) + TEMPLATES}
    t = res[SEARCH].ccds[0]
    params = {"search": str(root / layout.red_immask(s.exposure(SEARCH), ccd).relpath),
              "templates": [str(root / layout.red_immask(s.exposure(e), ccd).relpath) for e in TEMPLATES],
              "zeropoint": float(t["mag_zero"])}
    truth = {"psf_fwhm_search": float(t["psf_fwhm"]),
             "psf_fwhm_templates": [float(res[e].ccds[0]["psf_fwhm"]) for e in TEMPLATES],
             "mag_zero": float(t["mag_zero"]), "n_stars": int(t["n_stars"]), "n_galaxies": int(t["n_galaxies"]),
             "transients": res[SEARCH].transients[res[SEARCH].transients["in_bounds"]],
             "objects": res[SEARCH].objects}
    return params, truth, time.perf_counter() - t0


def science(result: Any, truth: dict[str, Any]) -> dict[str, Any]:
    """Transients recovered (1"), false candidates and chi2 per pixel on static stars (2 FWHM)."""
    cand = fitsio.read(result.output_paths("gw_diff_candidates")[0], ext="CANDIDATES")
    tr = truth["transients"]
    cosd = np.cos(np.radians(np.mean(tr["dec"]) if len(tr) else 0.0))
    found = np.zeros(len(tr), dtype=bool)
    real = np.zeros(len(cand), dtype=bool)
    dmag = np.full(len(tr), np.nan)
    if len(tr) and len(cand):
        sep = np.hypot((tr["ra"][:, None] - cand["ra"][None]) * cosd, tr["dec"][:, None] - cand["dec"][None]) * 3600
        j = sep.argmin(axis=1)
        found = sep[np.arange(len(tr)), j] < 1.0
        dmag = np.where(found, cand["mag"][j] - tr["mag"], np.nan)
        real = (sep < 1.0).any(axis=0)
    with fitsio.FITS(result.output_paths("gw_diff_image")[0]) as f:
        sci, msk, wgt = f["SCI"].read(), f["MSK"].read(), f["WGT"].read()
    fwhm = truth["psf_fwhm_search"] / 0.263
    o = truth["objects"]
    stars = o[(o["kind"] == b"star") & o["in_bounds"] & ~o["saturated"]]
    if len(tr):
        d = np.hypot(stars["x_image"][:, None] - tr["x_image"][None], stars["y_image"][:, None] - tr["y_image"][None])
        stars = stars[d.min(axis=1) > 4 * fwhm]
    r = 2 * fwhm
    chi2, npix = 0.0, 0
    g = np.arange(-int(r) - 1, int(r) + 2)
    for x, y in zip(stars["x_image"] - 1, stars["y_image"] - 1):
        ix, iy = int(round(x)), int(round(y))
        if ix + g[0] < 0 or iy + g[0] < 0 or ix + g[-1] >= sci.shape[1] or iy + g[-1] >= sci.shape[0]:
            continue
        sl = (slice(iy + g[0], iy + g[-1] + 1), slice(ix + g[0], ix + g[-1] + 1))
        disk = ((g[None, :] + ix - x) ** 2 + (g[:, None] + iy - y) ** 2 <= r * r) & (wgt[sl] > 0)
        disk &= (msk[sl] & 24) == 0  # not near saturation, all templates
        chi2 += float((sci[sl][disk].astype(float) ** 2 * wgt[sl][disk]).sum())
        npix += int(disk.sum())
    snr = tr["snr_expected"]
    return {"n_transients": int(len(tr)), "recovered_snr_ge_10": [int(found[snr >= 10].sum()), int((snr >= 10).sum())],
            "recovered_snr_5_10": [int(found[(snr >= 5) & (snr < 10)].sum()), int(((snr >= 5) & (snr < 10)).sum())],
            "median_abs_dmag_snr_ge_20": float(np.nanmedian(np.abs(dmag[(snr >= 20) & found])))
            if ((snr >= 20) & found).any() else None,
            "n_candidates": int(len(cand)), "n_false": int((~real).sum()),
            "chi2_per_pixel_static_stars": chi2 / max(npix, 1), "n_star_pixels": npix}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench gw_diffimg", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--keep", type=Path, help="keep the inputs and outputs in this folder")
    args = ap.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench_gw_diffimg_") as tmp:
        root = args.keep or Path(tmp)
        params, truth, t_build = build_inputs(args.seed, args.ccd, root / "archive")
        console.print(f"inputs: one 2048x4096 search CCD ({truth['n_stars']} stars, {truth['n_galaxies']} galaxies, "
                      f"{len(truth['transients'])} transients) and 2 templates, rendered in {t_build:.1f} s")
        result = run_step("gw.diffimg_ccd", params, root / "diffimg")
        if not result.ok:
            console.print(f"[red]gw.diffimg_ccd failed: {result.error['message']}[/]")
            return 1
        sci = science(result, truth)
        sizes: dict[str, int] = {}
        for o in result.outputs:
            sizes[o["filetype"]] = sizes.get(o["filetype"], 0) + int(o["size"])
    m = result.metrics
    stages = {k: {"wall_s": m[f"time_{k}_wall_s"], "cpu_s": m[f"time_{k}_cpu_s"]} for k in STAGES
              if f"time_{k}_wall_s" in m}
    se = json.loads(SE_RESULTS.read_text()) if SE_RESULTS.is_file() else None
    t = Table(title=f"gw.diffimg_ccd on one 2048x4096 CCD (exposure {SEARCH}, CCD {args.ccd}), one core")
    for col, just in (("stage", "left"), ("wall s", "right"), ("CPU s", "right")):
        t.add_column(col, justify=just)
    for key, label in STAGES.items():
        if key in stages:
            t.add_row(label, f"{stages[key]['wall_s']:.2f}", f"{stages[key]['cpu_s']:.2f}")
    other_w = result.wall_s - sum(v["wall_s"] for v in stages.values())
    other_c = result.cpu_s - sum(v["cpu_s"] for v in stages.values())
    t.add_row("other (validation, md5 of outputs, result.json)", f"{other_w:.2f}", f"{other_c:.2f}")
    t.add_row("[bold]total (run_step)[/]", f"[bold]{result.wall_s:.2f}[/]", f"[bold]{result.cpu_s:.2f}[/]")
    combined = None
    if se:
        combined = {"wall_s": se["total_wall_s"] + result.wall_s, "cpu_s": se["total_cpu_s"] + result.cpu_s}
        t.add_row("gw.se_ccd (bench/results/gw_se.json)", f"{se['total_wall_s']:.2f}", f"{se['total_cpu_s']:.2f}")
        t.add_row(f"[bold]SE + diffimg vs the {BUDGET_S:.0f} s budget[/]",
                  f"[bold]{combined['wall_s']:.2f} ({combined['wall_s'] / BUDGET_S:.0%})[/]",
                  f"[bold]{combined['cpu_s']:.2f} ({combined['cpu_s'] / BUDGET_S:.0%})[/]")
    console.print(t)
    console.print(f"convolved {m['convolved']}: FWHM search {m['fwhm_search_pix']:.2f} px, template "
                  f"{m['fwhm_template_pix']:.2f} px (truth {truth['psf_fwhm_search'] / 0.263:.2f}, "
                  f"{', '.join(f'{f / 0.263:.2f}' for f in truth['psf_fwhm_templates'])} px before the pixel); "
                  f"kernel chi2 {m['kernel_chi2']:.3f} on {m['n_fit_stamps_used']} stamps; peak RSS "
                  f"{result.peak_rss_mb:.0f} MiB")
    console.print(f"candidates {sci['n_candidates']} ({sci['n_false']} false) of {m['n_detections']} detections; "
                  f"transients recovered: S/N>=10 {sci['recovered_snr_ge_10'][0]}/{sci['recovered_snr_ge_10'][1]}, "
                  f"5-10 {sci['recovered_snr_5_10'][0]}/{sci['recovered_snr_5_10'][1]}; median |dmag| (S/N>=20) "
                  f"{sci['median_abs_dmag_snr_ge_20']}; chi2/pixel on static stars "
                  f"{sci['chi2_per_pixel_static_stars']:.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "gw_diffimg", "host": platform.node(), "python": platform.python_version(),
           "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "ccd_shape": [2048, 4096], "expnum": SEARCH,
           "templates": list(TEMPLATES), "ccdnum": args.ccd, "seed": args.seed, "stages": stages,
           "total_wall_s": result.wall_s, "total_cpu_s": result.cpu_s, "peak_rss_mb": result.peak_rss_mb,
           "budget_s": BUDGET_S, "se_plus_diffimg": combined, "output_bytes": sizes, "inputs_build_s": t_build,
           "metrics": {k: v for k, v in m.items() if not k.startswith("time_")}, "science": sci,
           "versions": result.versions}
    RESULTS.write_text(json.dumps(doc, indent=1, default=str))
    console.print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
