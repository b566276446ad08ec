"""``skyops``: the command line of the platform.

Each command group lives in its own module under :mod:`skyops.cli` and exposes
``register(subparsers)``; this module only assembles them and turns a
:class:`~skyops.errors.SkyopsError` into a one-paragraph message and its exit code
(2 for bad input, 1 for a failure) instead of a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from skyops.errors import SkyopsError

#: Command groups (module ``skyops.cli.<name>``) and their one-line help, in listing order.
#: Only the group being run is imported: ``skyops step run`` starts every task, and must not
#: pay for importing GalSim because ``skyops sim`` exists.
GROUPS = {
    "config": "show the platform configuration",
    "step": "run or list compute steps",
    "prov": "provenance: lineage, impact, runs, PROV-JSON export",
    "archive": "query and build the DESDM-compatible archive database",
    "stage": "copy a manifest's files from the archive into a folder, verified",
    "sim": "build the synthetic DECam survey (skyops.sim)",
    "condor": "HTCondor: write DAGMan files for sites that run DAGMan directly",
    "campaign": "campaign status from provenance; submit a tile list through the Airflow API",
}


def _selected_group(argv: list[str]) -> str | None:
    for a in argv:
        if not a.startswith("-"):
            return a if a in GROUPS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one with just that group's subcommands loaded."""
    parser = argparse.ArgumentParser(
        prog="skyops",
        description="skyops: survey production campaigns (DESDM archive, staging, steps, provenance).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for name, help_text in GROUPS.items():
        if only is None or name == only:
            importlib.import_module(f"skyops.cli.{name}").register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_selected_group(argv))
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except SkyopsError as exc:
        print(f"skyops: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("skyops: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
