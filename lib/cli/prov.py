"""``skyops prov``: the provenance database from the command line.

``migrate`` and ``status`` look after the schema; ``lineage FILE`` shows where a file came
from, back to its raw inputs; ``impact FILE`` lists what was derived from a file and the
tasks to redo if it was bad; ``show RUN`` summarises an attempt; ``export RUN`` writes it as
W3C PROV-JSON. Every command takes ``--url`` to use another database than the one in
``configs/skyops.yaml``.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from skyops.fileio import atomic_open
from skyops.provenance import ImpactReport, LineageNode, ProvenanceStore, TaskInfo

STATUS_STYLES = {"success": "green", "failed": "red", "up_for_retry": "yellow", "running": "blue",
                 "queued": "cyan", "skipped": "magenta", "upstream_failed": "red"}
FORMATS = ("prov-json",)


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="provenance database URL (default: databases.provenance of the platform config)")
    p = sub.add_parser("prov", help="provenance: lineage, impact, runs, PROV-JSON export")
    ps = p.add_subparsers(dest="cmd", required=True, metavar="SUBCOMMAND")

    ps.add_parser("migrate", parents=[common], help="create or upgrade the provenance schema").set_defaults(func=_migrate)
    ps.add_parser("status", parents=[common], help="schema revision and row counts").set_defaults(func=_status)

    lin = ps.add_parser("lineage", parents=[common], help="where a file came from, back to raw inputs")
    lin.add_argument("file", metavar="FILE", help="full path as recorded, or a unique file name")
    lin.set_defaults(func=_lineage)

    imp = ps.add_parser("impact", parents=[common], help="what was derived from a file, and the tasks to redo")
    imp.add_argument("file", metavar="FILE", help="full path as recorded, or a unique file name")
    imp.set_defaults(func=_impact)

    show = ps.add_parser("show", parents=[common], help="an attempt and the tries of its tasks")
    show.add_argument("run", metavar="RUN", help="attempt id, Airflow run id, or unit name (latest attempt)")
    show.set_defaults(func=_show)

    exp = ps.add_parser("export", parents=[common], help="an attempt as W3C PROV-JSON")
    exp.add_argument("run", metavar="RUN", help="attempt id, Airflow run id, or unit name (latest attempt)")
    exp.add_argument("--format", choices=FORMATS, default="prov-json", help="output format (default: prov-json)")
    exp.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    exp.set_defaults(func=_export)


def _store(args: argparse.Namespace) -> ProvenanceStore:
    return ProvenanceStore(args.url) if args.url else ProvenanceStore.from_config()


# -- commands -------------------------------------------------------------------------


def _migrate(args: argparse.Namespace) -> int:
    with _store(args) as store:
        before = store.status()["revision"]
        store.migrate()
        after = store.status()
    if before == after["revision"]:
        Console().print(f"provenance database at {after['url']} is already at revision {before} (head)")
    else:
        Console().print(f"provenance database at {after['url']} migrated from revision {before} to {after['revision']}")
    return 0


def _status(args: argparse.Namespace) -> int:
    with _store(args) as store:
        st = store.status()
    grid = Table.grid(padding=(0, 2))
    grid.add_row("database", st["url"])
    state = Text("current", style="green") if st["current"] else Text("needs `skyops prov migrate`", style="red")
    grid.add_row("revision", Text.assemble(f"{st['revision']} (head {st['head']}) ", state))
    for table, count in st["counts"].items():
        grid.add_row(table, f"{count:,} rows")
    Console().print(grid)
    return 0 if st["current"] else 1


def _lineage(args: argparse.Namespace) -> int:
    with _store(args) as store:
        root = store.lineage(args.file)
    Console().print(lineage_tree(root))
    return 0


def _impact(args: argparse.Namespace) -> int:
    with _store(args) as store:
        report = store.impact(args.file)
    console = Console()
    if not report.files:
        console.print(f"nothing recorded was derived from {report.file.full_path}")
        return 0
    console.print(
        f"{len(report.files)} files derived from {report.file.full_path}; "
        f"{len(report.tasks)} tasks to redo"
    )
    console.print(impact_files_table(report))
    console.print(impact_tasks_table(report))
    return 0


def _show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        info = store.show_attempt(args.run)
    console = Console()
    console.print(attempt_grid(info))
    console.print(tasks_table(info))
    return 0


def _export(args: argparse.Namespace) -> int:
    with _store(args) as store:
        text = store.export_prov_json(args.run)
    if args.output:
        with atomic_open(args.output, "w") as f:
            f.write(text)
        Console(stderr=True).print(f"wrote PROV-JSON of run {args.run} to {args.output}")
    else:
        sys.stdout.write(text + "\n")
    return 0


# -- rendering ------------------------------------------------------------------------


def lineage_tree(root: LineageNode) -> Tree:
    """A rich Tree of a lineage: each file with md5, generating task and status.

    A file reached along several paths is expanded once and marked "(shown above)" after
    that, so a diamond-shaped history prints in its size, not its number of paths.
    """
    shown: set[int] = set()
    tree = Tree(_file_label(root))
    shown.add(root.file.id)
    stack = [(tree, p) for p in reversed(root.parents)]
    while stack:
        branch, node = stack.pop()
        if node.file.id in shown:
            branch.add(Text.assemble(_file_text(node), ("  (shown above)", "dim")))
            continue
        shown.add(node.file.id)
        child = branch.add(_file_label(node))
        stack.extend((child, p) for p in reversed(node.parents))
    return tree


def _file_text(node: LineageNode) -> Text:
    return Text.assemble((node.file.filename, "bold"), (f"  {node.file.path or '.'}", "dim"))


def _file_label(node: LineageNode) -> Text:
    md5 = (node.file.md5sum or "-")[:8]
    label = Text.assemble(_file_text(node), f"  md5 {md5}")
    if node.task is not None:
        label.append(f"  {_task_text(node.task)} ")
        label.append(node.task.status, style=STATUS_STYLES.get(node.task.status, ""))
    elif node.is_raw:
        label.append("  raw input", style="cyan")
    else:
        label.append("  no generating task recorded", style="yellow")
    return label


def _task_text(t: TaskInfo) -> str:
    return f"{t.name} ({t.label}, {t.dag_id} {t.run_id})"


def impact_files_table(report: ImpactReport) -> Table:
    table = Table(title="files to redo", title_justify="left")
    for col in ("depth", "file", "type", "md5", "generated by", "status"):
        table.add_column(col, overflow="fold")
    for f in report.files:
        status = Text(f.task.status, style=STATUS_STYLES.get(f.task.status, "")) if f.task else Text("-")
        table.add_row(
            str(f.depth), f.path, f.file.filetype or "-", (f.file.md5sum or "-")[:8],
            f"{f.task.name} ({f.task.label})" if f.task else "-", status,
        )
    return table


def impact_tasks_table(report: ImpactReport) -> Table:
    table = Table(title="tasks to redo, in order", title_justify="left")
    for col in ("#", "name", "dag", "run", "task", "status"):
        table.add_column(col, overflow="fold")
    for i, t in enumerate(report.tasks, 1):
        table.add_row(str(i), t.name, t.dag_id, t.run_id, t.label, Text(t.status, style=STATUS_STYLES.get(t.status, "")))
    return table


def attempt_grid(info: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_row("attempt", f"{info['id']}: {info['campaign']} {info['unitname']} attempt {info['attnum']}")
    grid.add_row("run", info["run_id"])
    grid.add_row("reqnum", str(info["reqnum"]) if info["reqnum"] is not None else "-")
    grid.add_row("status", Text(info["status"], style=STATUS_STYLES.get(info["status"], "")))
    grid.add_row("start", _time(info["start_time"]))
    grid.add_row("end", _time(info["end_time"]))
    grid.add_row("files", f"{info['files']['generated']} generated, {info['files']['used']} used")
    return grid


def tasks_table(info: dict[str, Any]) -> Table:
    table = Table(title=f"{len(info['tasks'])} task tries", title_justify="left")
    for col in ("task", "try", "name", "status", "executor", "host", "start", "end", "exit", "gen", "used"):
        table.add_column(col, overflow="fold")
    for t in info["tasks"]:
        mapped = f"[{t['map_index']}]" if t["map_index"] >= 0 else ""
        table.add_row(
            f"{t['task_id']}{mapped}", str(t["try_number"]), t["name"],
            Text(t["status"], style=STATUS_STYLES.get(t["status"], "")), t["executor"] or "-", t["host"] or "-",
            _time(t["start_time"]), _time(t["end_time"]),
            "-" if t["exit_status"] is None else str(t["exit_status"]),
            str(t["files_generated"]), str(t["files_used"]),
        )
    return table


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"
