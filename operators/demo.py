"""``make demo``: run the main job on the embedded default and print what it did.

Sets up the embedded deployment under ``$SKYOPS_HOME`` (Airflow metadata and provenance
in SQLite, the synthetic demo archive, the local executor), runs the main DAG for real
with ``dag.test()``, and prints a summary read back from provenance: every task with its
state, duration and headline figures, then the job's report.

Usage: ``python -m skyops.operators.demo [--dag DAG_ID] [--verbose]``
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path

from skyops import airflow_env
from skyops.config import PROJECT_ROOT, platform_config, skyops_home

#: The main job: the GW nightly campaign on the demo night (the canary runs with --dag).
MAIN_DAG = "gw_nightly"
#: Run conf per DAG for the demo: the demo night, on a few CCDs so that it takes minutes.
DEMO_CONF = {"gw_nightly": {"night": "20170817", "ccds": "5,28,40"}}
#: The synthetic survey the demo builds (the demo survey at the GW campaign's CCD size).
DEMO_PRESET = "gw-demo"


def prepare(console) -> None:
    """Airflow metadata DB, provenance DB and the demo archive, each only if missing."""
    af_home = Path(os.environ["AIRFLOW_HOME"])
    if not (af_home / "airflow.db").exists():
        with console.status("creating the Airflow metadata database (SQLite)"):
            subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from skyops.provenance import ProvenanceStore

    ProvenanceStore.from_config().migrate()
    cfg = platform_config()
    archive_db = cfg.databases.archive
    if archive_db.startswith("sqlite:///") and not Path(archive_db[len("sqlite:///"):]).exists():
        from skyops.sim import create_archive

        with console.status(f"building the synthetic demo archive ({DEMO_PRESET}, seed 42)"):
            t0 = time.perf_counter()
            summary = create_archive(preset=DEMO_PRESET, seed=42, config=cfg)
        console.print(f"[green]demo archive[/] built in {time.perf_counter() - t0:.1f} s: "
                      f"{summary.n_files} files, {summary.n_bytes / 1e6:.0f} MB, {summary.exposures} exposures")


def run_dag(dag_id: str, conf: dict | None = None):
    """Load ``dags/<dag_id>.py`` and run it once with ``dag.test()``."""
    path = PROJECT_ROOT / "dags" / f"{dag_id}.py"
    dag = runpy.run_path(str(path))["dag"]
    return dag.test(run_conf=conf)


#: The filetype of each DAG's human-readable report, printed after the task table.
REPORT_FILETYPES = {"skyops_healthcheck": "health_report", "gw_nightly": "gw_night_summary"}


#: Metrics worth a glance in the demo's task table (the report has the rest).
HEADLINE_METRICS = ("summary", "rows", "files", "bytes", "astrom_rms_arcsec", "psf_fwhm_arcsec", "n_detections",
                    "exposure_mag_zero", "n_candidates", "candidates", "night_total", "exposures", "recovered",
                    "injected", "completeness", "checks")


def group_tasks(tasks: list[dict]) -> dict[str, list[dict]]:
    """Tasks grouped by name with the CCD collapsed (``exposure.se_c05`` -> ``exposure.se_cNN``)."""
    groups: dict[str, list[dict]] = {}
    for t in tasks:
        groups.setdefault(re.sub(r"_c\d\d$", "_cNN", t["task_id"]), []).append(t)
    return groups


def _seconds(start, end) -> float | None:
    """Task duration from provenance timestamps (datetimes or ISO strings)."""
    from datetime import datetime

    if not start or not end:
        return None
    s, e = (v if isinstance(v, datetime) else datetime.fromisoformat(str(v)) for v in (start, end))
    return (e - s).total_seconds()


def summarise(console, dag_run) -> int:
    from rich.markdown import Markdown
    from rich.table import Table

    from skyops.provenance import ProvenanceStore

    store = ProvenanceStore.from_config()
    info = store.show_attempt(dag_run.run_id)
    table = Table(title=f"{dag_run.dag_id}  run {dag_run.run_id}: {dag_run.state}")
    for col in ("task", "tries", "ok", "failed", "skipped", "seconds", "headline (first success)"):
        table.add_column(col, overflow="fold", justify="left" if col in ("task", "headline (first success)") else "right")
    for name, rows in group_tasks(info["tasks"]).items():
        ok = [t for t in rows if t["status"] == "success"]
        secs = sum(_seconds(t.get("start_time"), t.get("end_time")) or 0.0 for t in rows if t["status"] != "skipped")
        metrics = (ok[0].get("metrics") or {}) if ok else {}
        headline = metrics.get("summary") or ", ".join(
            f"{k}={v}" for k, v in metrics.items() if k in HEADLINE_METRICS)
        failed = sum(t["status"] == "failed" for t in rows)
        table.add_row(name, str(len(rows)), f"[green]{len(ok)}[/]", f"[red]{failed}[/]" if failed else "0",
                      str(sum(t["status"] == "skipped" for t in rows)), f"{secs:.1f}", str(headline)[:160])
    console.print(table)
    for path in store.run_files(dag_run.run_id, filetype=REPORT_FILETYPES.get(dag_run.dag_id, "")):
        if path.endswith(".md") and Path(path).is_file():
            console.print(Markdown(Path(path).read_text()))
            console.print(f"[dim]report: {path}[/]")
    console.print(f"provenance: {store.status()['url']}\n"
                  f"  skyops prov show '{dag_run.run_id}'\n  skyops prov lineage FILE | skyops prov impact FILE")
    return 0 if str(dag_run.state) in ("success", "DagRunState.SUCCESS") else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dag", default=MAIN_DAG, help=f"DAG to run (default {MAIN_DAG})")
    parser.add_argument("--verbose", action="store_true", help="show Airflow's own task logs")
    parser.add_argument("--ccds", help="GW demo: CCDs to process (default 5,28,40; 1,3-60,62 for all)")
    args = parser.parse_args(argv)
    airflow_env.apply()
    if not args.verbose:
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.rule(f"skyops demo: {args.dag}  (SKYOPS_HOME={skyops_home()})")
    prepare(console)
    t0 = time.perf_counter()
    with console.status(f"running {args.dag} with dag.test() on the local executor"):
        if not args.verbose:
            logging.disable(logging.INFO)
        conf = dict(DEMO_CONF.get(args.dag, {}))
        if args.ccds and args.dag == "gw_nightly":
            conf["ccds"] = args.ccds
        dag_run = run_dag(args.dag, conf or None)
        logging.disable(logging.NOTSET)
    console.print(f"{args.dag} finished in {time.perf_counter() - t0:.1f} s")
    return summarise(console, dag_run)


if __name__ == "__main__":
    sys.exit(main())
