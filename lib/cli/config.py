"""``skyops config show``: the platform config as skyops resolved it."""
from __future__ import annotations

import argparse

import yaml
from rich.console import Console
from rich.syntax import Syntax

from skyops.config import load_platform_config
from skyops.secrets import redact_url


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the platform configuration")
    cs = p.add_subparsers(dest="cmd", required=True, metavar="SUBCOMMAND")
    show = cs.add_parser("show", help="print the resolved platform config (credentials redacted)")
    show.add_argument("--file", help="config file (default: configs/skyops.yaml or $SKYOPS_CONFIG)")
    show.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    cfg = load_platform_config(args.file)
    data = cfg.model_dump(mode="json")
    for key in ("provenance", "archive"):
        data["databases"][key] = redact_url(data["databases"][key])
    data["archive"]["root"] = redact_url(data["archive"]["root"])
    Console().print(Syntax(yaml.safe_dump(data, sort_keys=False), "yaml"))
    return 0
