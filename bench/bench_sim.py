"""skyops.sim speed: one full-size DECam CCD, and the whole demo preset.

1. One 2048 x 4096 CCD of the ``bench`` preset (search exposure 668439, CCD 28 = S4, raw
   included), with the breakdown ``render_ccd`` records: drawing stars, galaxies and
   transients with GalSim stamps, detector + noise, reduction, then writing the red_immask
   file and the raw HDU. The scene (catalogs over the 3 deg^2 footprint) is timed apart:
   it is built once per exposure, not per CCD.
2. The stamp drawing against a naive baseline that evaluates each star's profile over the
   full CCD frame with numpy (measured on a few stars, per star).
3. ``create_archive("demo")`` end to end: files + SQLite registration, in a temporary folder;
   then with every part (``parts="all"``: + DES tiles with SExtractor/PSFEx products, + the
   kred field), with the time of each part.
4. The tile products of one exposure: SExtractor + PSFEx run once over all its CCDs (what
   ``skyops.sim.tileproducts`` does) against the baseline of one run of each tool per CCD.
   Tool CPU is the children's CPU (``RUSAGE_CHILDREN``).

CPU seconds (``time.process_time``) are the figures to compare: the machine is shared, and
wall-clock time is printed beside them. Target: a full CCD with a few thousand sources in a
few seconds. Results: ``bench/results/sim.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import galsim
import numpy as np
from rich.console import Console
from rich.table import Table

from skyops.config import ArchiveConfig, DatabasesConfig, PlatformConfig
from skyops.sim import Survey, create_archive, products
from skyops.sim.draw import STAR

RESULTS = Path(__file__).parent / "results" / "sim.json"


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> "Clock":
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0


class ToolClock(Clock):
    """Wall, own CPU and child-process CPU (the Astromatic tools) of a block."""

    @staticmethod
    def _children() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def __enter__(self) -> "ToolClock":
        super().__enter__()
        self.k0 = self._children()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.tools = self._children() - self.k0


def full_ccd(seed: int, expnum: int, ccdnum: int, workdir: Path, **overrides: Any) -> dict[str, Any]:
    s = Survey("bench", seed, **overrides)
    with Clock() as t_cat:
        _ = s.stars, s.galaxies, s.transients(s.exposure(expnum).nite)
    with Clock() as t_scene:
        scene = s.scene(expnum)
    with Clock() as t_render:
        prod = s.render_ccd(expnum, ccdnum, raw=True)
    with Clock() as t_write:
        products.write_red_immask(workdir, s.exposure(expnum), prod)
        w = products.RawWriter(workdir, s.exposure(expnum))
        w.add(products.raw_hdu(s.exposure(expnum), prod))
        w.close()
    o = prod.objects
    n = {k: int((o["kind"] == k.encode()).sum()) for k in ("star", "galaxy", "transient")}
    tm = prod.timings
    steps = {
        "stars (GalSim stamps)": tm.get("draw_star", 0.0),
        "galaxies (GalSim stamps)": tm.get("draw_galaxy", 0.0),
        "transients": tm.get("draw_transient", 0.0),
        "draw bookkeeping (apertures, blending)": tm["draw"] - sum(tm.get(f"draw_{k}", 0.0) for k in n),
        "detector + Poisson/read noise": tm["noise"],
        "reduce (flat, sky, mask, weight, raw digitise)": tm["reduce"] + tm["setup"],
        "write red_immask + raw HDU (+ md5)": t_write.cpu,
    }
    return {
        "ccd_shape": list(s.fp.ccd_shape), "expnum": expnum, "ccdnum": ccdnum, "sources": n,
        "sources_total": int(len(o)), "steps_cpu_s": steps,
        "render_cpu_s": t_render.cpu, "render_wall_s": t_render.wall,
        "write_cpu_s": t_write.cpu, "write_wall_s": t_write.wall,
        "ccd_total_cpu_s": t_render.cpu + t_write.cpu, "ccd_total_wall_s": t_render.wall + t_write.wall,
        "catalogs_cpu_s": t_cat.cpu, "scene_cpu_s": t_scene.cpu,
        "footprint_sources": {"stars": int(len(s.stars)), "galaxies": int(len(s.galaxies))},
        "per_source_draw_ms": 1e3 * tm["draw"] / max(1, len(o)),
        "scene": scene,
    }


def naive_baseline(scene: Any, ccdnum: int, n_stars: int = 3) -> dict[str, float]:
    """CPU per star: a GalSim stamp (what sim does) versus evaluating the star on the full frame.

    The baseline is the obvious vectorised numpy version: one Moffat evaluated on all 8.4 M
    pixels of the CCD per star.
    """
    ccd = scene.fp.ccd(ccdnum)
    idx = np.flatnonzero(scene.fp.ccds_near(scene.u, scene.v, ccdnum, 0.0) & (scene.kind == STAR))[:n_stars]
    jac = galsim.JacobianWCS(0.0, -scene.fp.pixel_scale, -scene.fp.pixel_scale, 0.0)
    full = galsim.ImageD(ccd.nx, ccd.ny, xmin=1, ymin=1)
    stars = [(float(scene.fwhm[i]) / scene.fp.pixel_scale, *(float(v) for v in ccd.to_xy(scene.u[i], scene.v[i])),
              scene.psf.profile(scene.fwhm[i], scene.g1[i], scene.g2[i]).withFlux(1e5)) for i in idx]
    beta = scene.psf.beta
    yy, xx = np.mgrid[1:ccd.ny + 1, 1:ccd.nx + 1].astype(np.float64)
    frame = np.zeros((ccd.ny, ccd.nx))
    with Clock() as naive:
        for fwhm, x, y, _ in stars:
            rd = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
            r2 = ((xx - x) ** 2 + (yy - y) ** 2) / rd**2
            frame += 1e5 * (beta - 1.0) / (np.pi * rd * rd) * (1.0 + r2) ** (-beta)
    with Clock() as stamp:
        for _ in range(20):
            for _, x, y, prof in stars:
                st = prof.drawImage(nx=41, ny=41, wcs=jac, center=galsim.PositionD(x, y))
                b = st.bounds & full.bounds
                full[b] += st[b]
    per_naive = naive.cpu / len(stars)
    per_stamp = stamp.cpu / (20 * len(stars))
    return {"naive_full_frame_ms_per_star": 1e3 * per_naive, "stamp_ms_per_star": 1e3 * per_stamp,
            "speedup": per_naive / per_stamp}


def demo_preset(seed: int, workdir: Path, parts: str | None = None) -> dict[str, Any]:
    cfg = PlatformConfig(databases=DatabasesConfig(archive=f"sqlite:///{workdir / 'desdm.sqlite'}"),
                         archive=ArchiveConfig(root=(workdir / "archive").as_uri()))
    with ToolClock() as t:
        summary = create_archive("demo", seed, cfg, parts=parts)
    return {"parts": summary.parts, "wall_s": t.wall, "cpu_s": t.cpu, "tools_cpu_s": t.tools,
            "n_files": summary.n_files, "mbytes": summary.n_bytes / 1e6,
            "files_by_filetype": summary.files_by_filetype, "rows": summary.rows, "timings": summary.timings}


def tile_aux(seed: int, workdir: Path) -> dict[str, Any]:
    """SExtractor + PSFEx over one tile exposure's CCDs: batched per exposure vs once per CCD."""
    from skyops.sim.tileproducts import AuxBatch
    from skyops.sim.tilesurvey import TileSurvey

    ts = TileSurvey("demo", seed)
    expnum = min(ts.tile_of)
    spec = ts.survey.exposure(expnum)
    prods = [ts.survey.render_ccd(expnum, c) for c in ts.candidate_ccds(expnum)]
    with ToolClock() as batched:
        b = AuxBatch(spec)
        for p in prods:
            b.add(p, f"c{p.ccdnum}.fits")
        b.run(workdir / "batched")
    with ToolClock() as single:
        for p in prods:
            b = AuxBatch(spec)
            b.add(p, f"c{p.ccdnum}.fits")
            b.run(workdir / "single")
    n = len(prods)
    return {"expnum": expnum, "ccds": n, "ccd_shape": list(ts.fp.ccd_shape),
            "batched_wall_s": batched.wall, "batched_cpu_s": batched.cpu + batched.tools,
            "per_ccd_wall_s": single.wall, "per_ccd_cpu_s": single.cpu + single.tools,
            "speedup_cpu": (single.cpu + single.tools) / max(1e-9, batched.cpu + batched.tools),
            "speedup_wall": single.wall / max(1e-9, batched.wall)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--skip-demo", action="store_true", help="only the full-size CCD")
    ap.add_argument("--skip-parts", action="store_true", help="no all-parts demo build, no tile-products timing")
    ap.add_argument("--galaxy-density", type=float, help="galaxies per deg^2 (bench preset: 30000)")
    args = ap.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench_sim_") as tmp:
        work = Path(tmp)
        extra = {"galaxy_density": args.galaxy_density} if args.galaxy_density else {}
        ccd = full_ccd(args.seed, 668439, args.ccd, work / "ccd", **extra)
        base = naive_baseline(ccd.pop("scene"), args.ccd)
        demo = None if args.skip_demo else demo_preset(args.seed, work / "demo")
        demo_all = None if args.skip_demo or args.skip_parts else demo_preset(args.seed, work / "demo_all", "all")
        aux = None if args.skip_parts else tile_aux(args.seed, work / "aux")

    t = Table(title=f"skyops.sim: one {ccd['ccd_shape'][0]}x{ccd['ccd_shape'][1]} CCD "
                    f"({ccd['sources']['star']} stars, {ccd['sources']['galaxy']} galaxies, "
                    f"{ccd['sources']['transient']} transients)")
    t.add_column("step")
    t.add_column("CPU s", justify="right")
    for step, sec in ccd["steps_cpu_s"].items():
        t.add_row(step, f"{sec:.2f}")
    t.add_row("[bold]total per CCD[/]", f"[bold]{ccd['ccd_total_cpu_s']:.2f}[/] (wall {ccd['ccd_total_wall_s']:.2f})")
    t.add_row("scene for the exposure (once, not per CCD)", f"{ccd['scene_cpu_s']:.2f}")
    t.add_row("catalogs for the footprint (once per survey)", f"{ccd['catalogs_cpu_s']:.2f}")
    console.print(t)
    b = Table(title="drawing a star: stamp vs naive full frame")
    b.add_column("method")
    b.add_column("ms / star", justify="right")
    b.add_row("numpy Moffat on the full frame (baseline)", f"{base['naive_full_frame_ms_per_star']:.1f}")
    b.add_row("GalSim stamp + add (skyops.sim)", f"{base['stamp_ms_per_star']:.2f}")
    b.add_row("[bold]ratio[/]", f"[bold]{base['speedup']:.0f}x[/]")
    console.print(b)
    if demo:
        console.print(f"demo preset (create_archive, 5 exposures x 62 CCDs + raw + calibrations, SQLite): "
                      f"[bold]{demo['wall_s']:.1f} s wall[/], {demo['cpu_s']:.1f} s CPU, {demo['n_files']} files, "
                      f"{demo['mbytes']:.0f} MB")
    if demo_all:
        tm = demo_all["timings"]
        console.print(f"demo preset, every part ({' + '.join(demo_all['parts'])}): "
                      f"[bold]{demo_all['wall_s']:.1f} s wall[/], {demo_all['cpu_s']:.1f} s CPU + "
                      f"{demo_all['tools_cpu_s']:.1f} s in SExtractor/PSFEx; gw {tm.get('build_gw', 0):.1f} s, tiles "
                      f"{tm.get('build_tiles', 0):.1f} s, kred {tm.get('build_kred', 0):.1f} s, register "
                      f"{tm['register']:.1f} s; {demo_all['n_files']} files, {demo_all['mbytes']:.0f} MB")
    if aux:
        a = Table(title=f"tile products of one exposure ({aux['ccds']} CCDs of {aux['ccd_shape'][0]}x"
                        f"{aux['ccd_shape'][1]}): SExtractor + PSFEx")
        a.add_column("how")
        a.add_column("CPU s", justify="right")
        a.add_column("wall s", justify="right")
        a.add_row("one run of each tool per CCD (baseline)", f"{aux['per_ccd_cpu_s']:.2f}",
                  f"{aux['per_ccd_wall_s']:.2f}")
        a.add_row("one run per exposure, split per CCD (skyops.sim)", f"{aux['batched_cpu_s']:.2f}",
                  f"{aux['batched_wall_s']:.2f}")
        a.add_row("[bold]ratio[/]", f"[bold]{aux['speedup_cpu']:.1f}x[/]", f"{aux['speedup_wall']:.1f}x")
        console.print(a)
    if extra:
        console.print(f"[yellow]galaxy density overridden ({args.galaxy_density:g}/deg^2): results not written[/]")
        return 0
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "sim", "host": platform.node(), "python": platform.python_version(),
           "galsim": galsim.__version__, "numpy": np.__version__, "full_ccd": ccd, "draw_baseline": base,
           "demo_preset": demo, "demo_all_parts": demo_all, "tile_products": aux,
           "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    RESULTS.write_text(json.dumps(doc, indent=1, default=str))
    console.print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
