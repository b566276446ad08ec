"""``skyops step run|list``: run one registered step, or list them all with parameters."""
from __future__ import annotations

import argparse
import logging
import sys

from rich.console import Console
from rich.table import Table

from skyops.steps.registry import all_steps
from skyops.steps.runner import parse_param_args, run_step


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("step", help="run or list compute steps")
    ss = p.add_subparsers(dest="cmd", required=True, metavar="SUBCOMMAND")
    run = ss.add_parser("run", help="run one step and write WORKDIR/result.json (exit 0 ok, 2 bad input, 1 failure)")
    run.add_argument("name", help="dotted step name, e.g. gw.se_ccd")
    run.add_argument("--params", nargs="+", action="extend", default=[], metavar="FILE|k=v",
                     help="a JSON/YAML file of parameters and/or key=value pairs (values parsed as JSON when they can be)")
    run.add_argument("--workdir", required=True, help="folder for the step's outputs and result.json")
    run.set_defaults(func=_run)
    ls = ss.add_parser("list", help="list every registered step with its parameters")
    ls.add_argument("--group", help="only steps whose name starts with this (e.g. gw)")
    ls.set_defaults(func=_list)


def _run(args: argparse.Namespace) -> int:
    # Step logs go to stderr line by line: executors stream them into the task log.
    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))
    for h in root.handlers:
        h.setLevel(logging.INFO)
        h.setStream(sys.stderr) if isinstance(h, logging.StreamHandler) else None
    params = parse_param_args(args.params)
    result = run_step(args.name, params, args.workdir)
    if not result.ok:
        print(f"skyops: step {args.name} failed (exit {result.exit_code}): {result.error['message']}", file=sys.stderr)
    return result.exit_code


def _list(args: argparse.Namespace) -> int:
    table = Table(title="skyops steps", show_lines=False)
    for col in ("step", "parameters", "outputs", "resources", "description"):
        table.add_column(col, overflow="fold")
    for s in all_steps():
        if args.group and not s.name.startswith(args.group):
            continue
        r = s.resources
        table.add_row(s.name, "\n".join(p.describe() for p in s.params) or "-", ", ".join(s.outputs) or "-",
                      f"{r.cpu:g} cpu, {r.memory_mb} MiB", s.description)
    Console(width=160).print(table)
    return 0
