"""Command line for the synthetic survey: ``python -m skyops.sim`` (or ``skyops sim``).

``build`` (the default) runs :func:`~skyops.sim.create_archive` for a preset and seed, with
a rich progress bar, and prints what was written and registered; ``presets`` lists the
presets. ``register(subparsers)`` adds the same commands to the ``skyops`` CLI.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from skyops.errors import SimulationError, SkyopsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="demo", help="survey preset (demo, bench; default demo)")
    p.add_argument("--seed", type=int, default=42, help="random seed: same seed, same bytes (default 42)")
    p.add_argument("--root", help="archive root folder (default: archive.root of the platform config)")
    p.add_argument("--config", help="platform config file (default: configs/skyops.yaml or $SKYOPS_CONFIG)")
    p.add_argument("--url", help="archive database URL (default: databases.archive of the config)")
    p.add_argument("--no-register", action="store_true", help="write files only; no archive database rows")
    p.add_argument("--noiseless", action="store_true", help="no Poisson/read noise (truth tests)")
    p.add_argument("--ccd-shape", metavar="NXxNY", help="override the preset's CCD size, e.g. 64x128")
    p.add_argument("--raw-only-templates", action="store_true",
                   help="GW templates as raw exposures + calibrations, without finalcut products")
    p.add_argument("--workers", type=int, default=1, help="processes rendering CCDs in parallel (default 1)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="build the synthetic DECam survey (skyops.sim)")
    cs = p.add_subparsers(dest="cmd", required=True, metavar="SUBCOMMAND")
    b = cs.add_parser("build", help="build a preset's survey under the archive root and register it")
    add_arguments(b)
    b.set_defaults(func=run_build)
    ls = cs.add_parser("presets", help="list the presets")
    ls.set_defaults(func=run_presets)


def run_presets(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from skyops.sim.presets import PRESETS

    t = Table("preset", "CCD size", "exposures", "description")
    for p in PRESETS.values():
        n_exp = sum(len(n.expnums) for n in p.nights)
        t.add_row(p.name, f"{p.ccd_shape[0]}x{p.ccd_shape[1]}", str(n_exp), p.description)
    Console().print(t)
    return 0


def run_build(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from skyops.config import load_platform_config
    from skyops.sim.build import create_archive

    cfg = load_platform_config(args.config)
    if args.url:
        cfg = cfg.model_copy(update={"databases": cfg.databases.model_copy(update={"archive": args.url})})
    overrides: dict[str, object] = {"noise": False} if args.noiseless else {}
    if args.ccd_shape:
        try:
            nx, ny = (int(v) for v in args.ccd_shape.lower().split("x"))
        except ValueError:
            raise SimulationError(f"--ccd-shape {args.ccd_shape!r}: expected NXxNY, e.g. 128x256") from None
        overrides["ccd_shape"] = (nx, ny)
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        summary = create_archive(args.preset, args.seed, cfg, args.root, progress, workers=args.workers,
                                 register=not args.no_register, raw_only_templates=args.raw_only_templates,
                                 **overrides)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=1, default=str))
        return 0
    out = Console()
    out.print(f"[bold]skyops.sim[/] preset {summary.preset}, seed {summary.seed}: {summary.n_files} files, "
              f"{summary.n_bytes / 1e6:.1f} MB in {summary.elapsed_s:.1f} s under {summary.root}")
    out.print("files: " + ", ".join(f"{k} {v}" for k, v in summary.files_by_filetype.items()))
    if summary.rows:
        out.print(f"registered in {summary.database}: " + ", ".join(f"{k} {v}" for k, v in summary.rows.items()))
    out.print(f"truth: {summary.truth_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyops.sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="cmd", metavar="SUBCOMMAND")
    b = sub.add_parser("build", help="build a preset (default)")
    add_arguments(b)
    b.set_defaults(func=run_build)
    ls = sub.add_parser("presets", help="list the presets")
    ls.set_defaults(func=run_presets)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "-v", "-vv", "--verbose"):
        argv = ["build", *argv]
    args = parser.parse_args(argv)
    if args.cmd is None:
        args = parser.parse_args(["build", *argv])
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except SkyopsError as exc:
        print(f"skyops.sim: error: {exc}", file=sys.stderr)
        return exc.exit_code
