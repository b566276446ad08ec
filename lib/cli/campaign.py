"""``skyops campaign status|submit``: a campaign's units from provenance, and tile-list submission.

``status balrog [--tiles FILE] [--tile T ...]`` prints each tile's latest attempt (done, failed,
running, not started) from the provenance database, as the ``balrog_campaign`` report does.
``submit balrog --tiles FILE`` triggers one ``balrog_tile`` run per tile through Airflow's REST
API (the run id names the tile), skipping tiles provenance calls complete unless ``--force``.
"""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from skyops.errors import InputError

#: campaign name on the command line -> (the DAG of one unit, what a unit is)
CAMPAIGNS = {"balrog": ("balrog_tile", "tile")}
STATE_STYLE = {"done": "green", "failed": "red", "running": "blue", "not started": "dim"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaign", help="campaign status from provenance; submit a tile list")
    ps = p.add_subparsers(dest="cmd", required=True, metavar="SUBCOMMAND")
    st = ps.add_parser("status", help="each unit's latest attempt: done, failed, running, not started")
    st.add_argument("campaign", choices=sorted(CAMPAIGNS))
    _tile_args(st, required=False)
    st.set_defaults(func=_status)
    sm = ps.add_parser("submit", help="trigger one run per tile through the Airflow REST API")
    sm.add_argument("campaign", choices=sorted(CAMPAIGNS))
    _tile_args(sm, required=True)
    sm.add_argument("--force", action="store_true", help="also re-run tiles that are complete")
    sm.add_argument("--mode", type=int, help="-m blocks bitmask (default: the config's, 63)")
    sm.add_argument("--realizations", type=int, help="number of realizations")
    sm.add_argument("--measure", help="comma list of sof, mof, metacal")
    sm.add_argument("--medsconf", help="-c medsconf under configs/balrog/")
    sm.add_argument("--api-url", help="Airflow api-server (default $SKYOPS_AIRFLOW_API or http://127.0.0.1:8080)")
    sm.add_argument("--user", help="Airflow user (default $SKYOPS_AIRFLOW_USER or admin)")
    sm.add_argument("--password-file", help="file holding the password, mode 600 (or $SKYOPS_AIRFLOW_PASSWORD)")
    sm.add_argument("--dry-run", action="store_true", help="say what would be triggered, trigger nothing")
    sm.set_defaults(func=_submit)


def _tile_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--tiles", metavar="FILE", help="a tile list: one tile per line, # comments")
    p.add_argument("--tile", action="append", default=[], help="a tile (repeatable)")
    p.set_defaults(_tiles_required=required)


def _tiles(args: argparse.Namespace) -> list[str] | None:
    from skyops.campaigns.balrog.tilelist import read_tile_file, resolve_tiles

    listed = list(args.tile)
    if args.tiles:
        path = Path(args.tiles).expanduser().resolve()
        listed += read_tile_file(path.name, root=path.parent)
    if not listed:
        if args._tiles_required:
            raise InputError("no tiles given: use --tiles FILE (one tile per line) or --tile DES0239+0216")
        return None
    return resolve_tiles(listed)


def _status(args: argparse.Namespace) -> int:
    from skyops.campaigns.balrog.tilelist import report
    from skyops.provenance import ProvenanceStore

    dag_id, unit = CAMPAIGNS[args.campaign]
    tiles = _tiles(args)
    with ProvenanceStore.from_config() as store:
        status = store.unit_status(dag_id, tiles)
    names = tiles if tiles is not None else sorted(status)
    by_state = report(names, status)
    state_of = {t: s for s, ts in by_state.items() for t in ts}
    table = Table(title=f"{args.campaign}: {len(names)} {unit}s ({dag_id})")
    for col in (unit, "state", "attempt", "run id", "started", "ended"):
        table.add_column(col)
    for t in names:
        st, info = state_of[t], status.get(t) or {}
        table.add_row(t, f"[{STATE_STYLE[st]}]{st}[/]", str(info.get("attnum") or ""), info.get("run_id") or "",
                      _when(info.get("start_time")), _when(info.get("end_time")))
    console = Console()
    console.print(table)
    console.print("  ".join(f"{s}: {len(ts)}" for s, ts in by_state.items()))
    return 1 if by_state["failed"] else 0


def _when(t: Any) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if isinstance(t, datetime) else ""


def _submit(args: argparse.Namespace) -> int:
    from skyops.airflow_api import AirflowAPI
    from skyops.campaigns.balrog.params import parse_measure
    from skyops.campaigns.balrog.tilelist import run_id_for, select_tiles
    from skyops.provenance import ProvenanceStore

    dag_id, unit = CAMPAIGNS[args.campaign]
    tiles = _tiles(args) or []
    with ProvenanceStore.from_config() as store:
        status = store.unit_status(dag_id, tiles)
    todo, done = select_tiles(tiles, status, args.force)
    conf: dict[str, Any] = {}
    for key in ("mode", "realizations", "medsconf"):
        if getattr(args, key) is not None:
            conf[key] = getattr(args, key)
    if args.measure:
        conf["measure"] = list(parse_measure(args.measure.split(",")))
    console = Console()
    if done:
        console.print(f"skipping {len(done)} complete {unit}s (--force to redo): {' '.join(done)}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    if args.dry_run:
        for t in todo:
            console.print(f"would trigger {dag_id} {run_id_for(t, stamp)} conf {dict(conf, tile=t)}")
        return 0
    api = AirflowAPI.from_env(args.api_url, args.user, args.password_file)
    if todo:
        api.unpause(dag_id)
    for t in todo:
        run_id = api.trigger(dag_id, {**conf, "tile": t}, run_id_for(t, stamp))
        print(f"{t}\t{run_id}", flush=True)
    console.print(f"triggered {len(todo)} {dag_id} runs; follow them with `skyops campaign status {args.campaign}`")
    return 0
