"""``skyops archive``: the DESDM-compatible archive database from the command line.

``queries`` lists the named queries and their parameters; ``query NAME --param k=v`` runs one
and prints its manifest (``--output`` writes it as JSON for staging); ``init`` creates the
tables; ``create --preset demo|bench --seed N`` fills a synthetic archive through
``skyops.sim.create_archive``. ``--url`` overrides the platform config's archive URL; URLs are
printed with their password masked.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from skyops.errors import InputError, SkyopsError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="query and build the DESDM-compatible archive database")
    cs = p.add_subparsers(dest="cmd", required=True, metavar="SUBCOMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--url", help="archive database URL (default: databases.archive of the platform config)")
        sp.add_argument("--config", help="platform config file (default: configs/skyops.yaml or $SKYOPS_CONFIG)")

    ls = cs.add_parser("queries", help="list the named queries and their parameters")
    ls.set_defaults(func=_queries)

    q = cs.add_parser("query", help="run a named query and print (or write) its manifest")
    q.add_argument("name", metavar="NAME", help="query name (see: skyops archive queries)")
    q.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="query parameter; repeat for several; a list as a,b,c or by repeating its key")
    q.add_argument("--output", "-o", metavar="FILE", help="write the manifest as JSON to FILE")
    q.add_argument("--limit", type=int, default=50, help="rows to print (0: all; default 50)")
    q.add_argument("--wide", action="store_true", help="print every column, not just the main ones")
    common(q)
    q.set_defaults(func=_query)

    init = cs.add_parser("init", help="create the archive tables and indexes (idempotent)")
    init.add_argument("--no-indexes", action="store_true", help="create tables only (bulk loads)")
    common(init)
    init.set_defaults(func=_init)

    create = cs.add_parser("create", help="fill a synthetic archive (skyops.sim)")
    create.add_argument("--preset", choices=("demo", "bench"), default="demo", help="size of the survey")
    create.add_argument("--seed", type=int, default=42, help="random seed (same seed, same archive; default 42)")
    common(create)
    create.set_defaults(func=_create)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["a=1", "bands=g", "bands=r,i"]`` -> ``{"a": "1", "bands": "g,r,i"}``.

    A repeated key adds to a comma-separated list, which list parameters split.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--param {item!r}: expected KEY=VALUE, e.g. --param tilename=DES0239+0216")
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def _platform(args: argparse.Namespace) -> Any:
    from skyops.config import load_platform_config, platform_config

    return load_platform_config(args.config) if args.config else platform_config()


def _db(args: argparse.Namespace) -> Any:
    from skyops.archive import ArchiveDB

    return ArchiveDB.from_config(_platform(args), url=args.url)


def _queries(args: argparse.Namespace) -> int:
    from skyops.archive import QUERIES

    table = Table(title="named archive queries", show_lines=True)
    table.add_column("query", style="bold")
    table.add_column("parameters")
    table.add_column("description")
    for q in QUERIES.values():
        params = "\n".join(
            p.describe() + ("" if p.required else f" = {p.default!r}") for p in q.params
        )
        table.add_row(q.name, params, q.description)
    Console().print(table)
    return 0


def _query(args: argparse.Namespace) -> int:
    from skyops.archive import get_query

    get_query(args.name)  # unknown name: fail before connecting
    params = parse_params(args.param)
    with _db(args) as db:
        manifest = db.query(args.name, **params)
    console = Console()
    shown = manifest.rows if args.limit <= 0 else manifest.rows[: args.limit]
    console.print(_vertical(args.name, manifest) if len(manifest) == 1
                  else _horizontal(args.name, manifest, shown, args.wide))
    if len(shown) < len(manifest):
        console.print(f"... {len(manifest) - len(shown)} more rows (use --limit 0 to print all, --output to save)")
    if args.output:
        path = manifest.write(args.output)
        console.print(f"manifest written to {path}")
    return 0


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _horizontal(name: str, manifest: Any, rows: list[tuple[Any, ...]], wide: bool) -> Table:
    """The file name and the query's display columns (every column with ``--wide``)."""
    from skyops.archive import get_query

    cols = list(manifest.columns)
    shown = cols if wide else ["filename"] + [c for c in get_query(name).display if c in cols]
    idx = [cols.index(c) for c in shown]
    table = Table(title=f"{name}: {len(manifest)} rows", show_edge=False,
                  caption=None if wide else "more columns: --wide, or all of them in --output FILE")
    for col in shown:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row[i]) for i in idx))
    return table


def _vertical(name: str, manifest: Any) -> Table:
    """One row (a tile's geometry, say) reads better as column/value pairs."""
    table = Table(title=f"{name}: 1 row", show_edge=False)
    table.add_column("column", style="bold")
    table.add_column("value", overflow="fold")
    for col, value in zip(manifest.columns, manifest.rows[0]):
        table.add_row(col, _cell(value))
    return table


def _init(args: argparse.Namespace) -> int:
    with _db(args) as db:
        db.create_schema(indexes=not args.no_indexes)
        Console().print(f"archive tables ready in {db.url}")
    return 0


def _summary_items(result: Any) -> list[tuple[str, Any]]:
    """What create_archive returned (a dict or a dataclass), scalars shown, collections counted."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        items = [(f.name, getattr(result, f.name)) for f in dataclasses.fields(result)]
    elif isinstance(result, dict):
        items = list(result.items())
    else:
        return []
    def show(v: Any) -> Any:
        if v is None or isinstance(v, (str, int, float, Path)) or (isinstance(v, dict) and len(v) <= 16):
            return v
        return f"{len(v)} entries" if hasattr(v, "__len__") else v

    return [(k, show(v)) for k, v in items]


def _create(args: argparse.Namespace) -> int:
    try:
        from skyops.sim import create_archive  # written alongside; imported only when used
    except ImportError as exc:
        raise SkyopsError(
            f"skyops archive create needs skyops.sim.create_archive, which is not available "
            f"({exc}); install or update skyops with the synthetic-survey generator, or load an "
            f"archive another way (skyops archive init, then ArchiveDB.insert_rows)"
        ) from None
    config = _platform(args)
    if args.url:
        config = config.model_copy(update={"databases": config.databases.model_copy(update={"archive": args.url})})
    result = create_archive(preset=args.preset, seed=args.seed, config=config)
    console = Console()
    for key, value in _summary_items(result):
        console.print(f"{key}: {value}")
    console.print(f"archive created (preset {args.preset}, seed {args.seed})")
    return 0
