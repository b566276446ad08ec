"""Platform steps: the health checks and the self-test pair.

``health.check`` / ``health.report`` are what the ``skyops_healthcheck`` DAG runs.
``selftest.make_image`` -> ``selftest.measure`` is the smallest real science chain: a
seeded image of Gaussian stars with a truth table, measured by the real SExtractor and
matched back to the truth. It proves a deployment end to end (executor, tool, provenance
edges) in seconds. ``selftest.slow_write`` writes slowly on purpose, so that tests can
kill a step mid-write and check that nothing half-written survives.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import fitsio
import numpy as np

from skyops.config import config_dir
from skyops.errors import ProcessingError, StepParameterError
from skyops.health import CHECKS
from skyops.steps.context import StepContext
from skyops.steps.registry import step


@step("health.check", resources={"cpu": 0.1, "memory_mb": 256}, outputs=["health_check"])
def health_check(ctx: StepContext, *, check: str) -> dict:
    """Run one health check (provenance, archive, tools, workspace); fail if it fails."""
    if check not in CHECKS:
        raise StepParameterError(f"parameter 'check': unknown check {check!r}; expected one of {', '.join(CHECKS)}")
    res = CHECKS[check](ctx.config)
    with ctx.output(f"health_{check}.json", filetype="health_check") as tmp:
        tmp.write_text(json.dumps(res.as_dict(), indent=1, default=str))
    if check == "tools":
        ctx.tool_versions.update(res.details.get("versions", {}))
    ctx.log.info("%s: %s: %s", check, "OK" if res.ok else "FAILED", res.summary)
    if not res.ok:
        raise ProcessingError(f"health check '{check}' failed: {res.summary}")
    return {"ok": True, "summary": res.summary, "seconds": res.seconds}


@step("health.report", resources={"cpu": 0.1, "memory_mb": 256}, outputs=["health_report"])
def health_report(ctx: StepContext, *, checks: list[str]) -> dict:
    """Gather the checks' JSON files into one Markdown report; fail if any check failed."""
    rows = []
    for path in checks:
        p = ctx.use(path, filetype="health_check")
        rows.append(json.loads(p.read_text()))
    lines = ["# skyops health report", "", "| check | ok | seconds | summary |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {'yes' if r['ok'] else 'NO'} | {r['seconds']:.3f} | {r['summary']} |" for r in rows]
    with ctx.output("health_report.md", filetype="health_report") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    failed = [r["name"] for r in rows if not r["ok"]]
    if failed:  # the report is written either way; the canary run must still turn red
        raise ProcessingError(f"{len(failed)} of {len(rows)} health checks failed: {', '.join(failed)}")
    return {"checks": len(rows), "ok": True}


@step("selftest.make_image", resources={"cpu": 1, "memory_mb": 512}, outputs=["selftest_image", "selftest_truth"])
def make_image(ctx: StepContext, *, nstars: int = 40, size: int = 256, seed: int = 1,
               fwhm_pix: float = 3.0, sky: float = 100.0) -> dict:
    """A seeded image of Gaussian stars on a flat sky with Poisson noise, and its truth table."""
    if nstars < 1 or size < 32:
        raise StepParameterError(f"nstars must be >= 1 and size >= 32 (got nstars={nstars}, size={size})")
    rng = np.random.default_rng(seed)
    margin = 12
    x = rng.uniform(margin, size - margin, nstars)
    y = rng.uniform(margin, size - margin, nstars)
    flux = 10 ** rng.uniform(4.0, 5.0, nstars)
    sigma = fwhm_pix / 2.3548
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.full((size, size), sky)
    for xi, yi, fi in zip(x, y, flux):  # small n: a stamp loop is clearer than a big broadcast
        x0, x1 = int(max(xi - 6 * sigma, 0)), int(min(xi + 6 * sigma + 1, size))
        y0, y1 = int(max(yi - 6 * sigma, 0)), int(min(yi + 6 * sigma + 1, size))
        r2 = (xx[y0:y1, x0:x1] - xi) ** 2 + (yy[y0:y1, x0:x1] - yi) ** 2
        img[y0:y1, x0:x1] += fi / (2 * np.pi * sigma**2) * np.exp(-0.5 * r2 / sigma**2)
    img = rng.poisson(img).astype(np.float32) - np.float32(sky)
    with ctx.output("selftest_image.fits", filetype="selftest_image") as tmp:
        fitsio.write(str(tmp), img, header={"SEED": seed, "FWHMPIX": fwhm_pix}, clobber=True)
    truth = np.zeros(nstars, dtype=[("id", "i4"), ("x", "f8"), ("y", "f8"), ("flux", "f8")])
    # FITS pixel convention: the centre of the first pixel is 1.0
    truth["id"], truth["x"], truth["y"], truth["flux"] = np.arange(nstars), x + 1, y + 1, flux
    with ctx.output("selftest_truth.fits", filetype="selftest_truth") as tmp:
        fitsio.write(str(tmp), truth, clobber=True)
    return {"nstars": nstars}


@step("selftest.measure", resources={"cpu": 1, "memory_mb": 512}, outputs=["selftest_catalog"])
def measure(ctx: StepContext, *, image: str, truth: str, match_radius: float = 2.0) -> dict:
    """Detect and measure the self-test image with SExtractor; match to the truth."""
    img, tru = ctx.use(image, "selftest_image"), ctx.use(truth, "selftest_truth")
    conf = config_dir() / "astromatic"
    with ctx.output("selftest_catalog.fits", filetype="selftest_catalog") as tmp:
        ctx.tool("source-extractor", [img, "-c", conf / "selftest.sex", "-PARAMETERS_NAME",
                                      conf / "selftest.param", "-CATALOG_NAME", tmp])
    cat = fitsio.read(ctx.outputs[-1].path, ext=1)
    t = fitsio.read(str(tru))
    d2 = (cat["XWIN_IMAGE"][:, None] - t["x"][None, :]) ** 2 + (cat["YWIN_IMAGE"][:, None] - t["y"][None, :]) ** 2
    best = np.argmin(d2, axis=0)
    dist = np.sqrt(d2[best, np.arange(len(t))])
    ok = dist < match_radius
    # Accuracy is judged on isolated stars: a blend's centroid is not the truth of either star.
    sep2 = (t["x"][:, None] - t["x"][None, :]) ** 2 + (t["y"][:, None] - t["y"][None, :]) ** 2
    np.fill_diagonal(sep2, np.inf)
    iso = ok & (sep2.min(axis=1) > (4 * 3.0) ** 2)
    flux_ratio = cat["FLUX_AUTO"][best[iso]] / t["flux"][iso]
    return {
        "detected": int(len(cat)),
        "matched": int(ok.sum()),
        "completeness": float(ok.mean()),
        "isolated": int(iso.sum()),
        "pos_rms_pix": float(np.sqrt(np.mean(dist[iso] ** 2))) if iso.any() else None,
        "flux_ratio_median": float(np.median(flux_ratio)) if iso.any() else None,
    }


@step("selftest.slow_write", resources={"cpu": 0.1, "memory_mb": 128}, outputs=["selftest_blob"])
def slow_write(ctx: StepContext, *, megabytes: int = 8, seconds: float = 4.0, name: str = "blob.bin") -> dict:
    """Write ``megabytes`` of data over ``seconds``, for kill and interruption tests."""
    chunk = b"\xa5" * (1 << 20)
    with ctx.output(name, filetype="selftest_blob") as tmp:
        with open(tmp, "wb") as f:
            for _ in range(megabytes):
                f.write(chunk)
                f.flush()
                time.sleep(seconds / max(megabytes, 1))
    return {"megabytes": megabytes, "path": str(Path(ctx.outputs[-1].path))}
