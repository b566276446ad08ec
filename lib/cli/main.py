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

#: Command-group modules, in the order ``skyops --help`` lists them.
GROUPS = ("config", "step", "prov", "archive", "stage", "sim")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyops",
        description="skyops: survey production campaigns (DESDM archive, staging, steps, provenance).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for name in GROUPS:
        importlib.import_module(f"skyops.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
