"""Scheduler throughput of the real stack, Celery against Local, and DAG parse times.

(1) Throughput: ``skyops_throughput`` (bench/dags) maps ``--n`` (default 1,000) short skyops steps
    (``selftest.slow_write`` writing nothing: each task is Airflow's dispatch plus skyops' own
    per-task cost: provenance records and the step subprocess). It runs on a real stack
    (:class:`skyops.operators.devstack.AirflowStack`: api-server, scheduler, dag-processor,
    triggerer; metadata and provenance in throwaway PostgreSQL databases) twice, side by side:
    LocalExecutor with ``--slots`` workers, and CeleryExecutor (Redis broker) with one worker of
    ``--slots`` concurrency. Reported: tasks per second over the mapped task's span, wall time
    from trigger to success, and task start latency (queued -> running) percentiles.
(2) Parse time of every DAG file in ``dags/``: ``airflow dags report`` (the DagBag's own
    timing, in a process that has imported Airflow) and, per file, a cold parse in a fresh
    interpreter that has imported only ``airflow.sdk`` (what the dag-processor's parse
    subprocess pays for skyops' imports) and a warm re-parse. Target: under 0.5 s per file.

Results: ``bench/results/airflow_stack.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.stats import parse_ts as _ts, percentiles
from rich.console import Console
from rich.table import Table

from skyops.config import PROJECT_ROOT

RESULTS = Path(__file__).parent / "results" / "airflow_stack.json"
BENCH_DAGS = Path(__file__).parent / "dags"
PARSE_TARGET_S = 0.5
PARSE_SNIPPET = """
import json, runpy, sys, time
import airflow.sdk  # the dag-processor has Airflow imported before it parses
t = time.perf_counter(); runpy.run_path(sys.argv[1]); cold = time.perf_counter() - t
t = time.perf_counter(); runpy.run_path(sys.argv[1]); warm = time.perf_counter() - t
print(json.dumps({"cold_s": cold, "warm_s": warm}))
"""




def throughput(executor: str, n: int, slots: int, home: Path, console: Console) -> dict[str, Any]:
    from skyops.operators.devstack import AirflowStack, pg_database

    with pg_database(prefix="skyops_bench_meta") as meta, pg_database(prefix="skyops_bench_prov") as prov:
        env = {"SKYOPS_PROVENANCE_URL": prov}
        t_up = time.perf_counter()
        with AirflowStack(home, meta, executor=executor, parallelism=slots, triggerer=True, dags_folder=BENCH_DAGS,
                          extra_env=env, start_timeout=300) as stack:
            up = time.perf_counter() - t_up
            subprocess.run([sys.executable, "-m", "skyops.cli.main", "prov", "migrate"], env=stack.env,
                           check=True, capture_output=True)
            stack.wait_dag("skyops_throughput")
            t0 = time.perf_counter()
            run_id = stack.trigger("skyops_throughput", {"n": n})
            run = stack.wait("skyops_throughput", run_id, timeout=6 * 3600, poll=5)
            wall = time.perf_counter() - t0
            tis = [t for t in stack.task_instances("skyops_throughput", run_id) if t["task_id"] == "short"]
    starts = [_ts(t["start_date"]) for t in tis if t.get("start_date")]
    ends = [_ts(t["end_date"]) for t in tis if t.get("end_date")]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")
    lat = [(_ts(t["start_date"]) - _ts(t["queued_when"])).total_seconds()
           for t in tis if t.get("queued_when") and t.get("start_date")]
    ok = sum(t["state"] == "success" for t in tis)
    durations = [float(t["duration"]) for t in tis if t.get("duration")]
    out = {"executor": executor, "n": n, "slots": slots, "state": run["state"], "succeeded": ok, "stack_up_s": up,
           "wall_s": wall, "span_s": span, "tasks_per_s": ok / span if span == span and span > 0 else None,
           "task_duration_s": percentiles(durations), "queued_to_running_s": percentiles(lat)}
    console.print(f"{executor}: {ok}/{n} succeeded in {wall:.0f} s (span {span:.0f} s, "
                  f"{out['tasks_per_s'] or 0:.2f} tasks/s)")
    return out


def parse_times(console: Console) -> dict[str, Any]:
    files = sorted((PROJECT_ROOT / "dags").glob("*.py"))
    env = {**os.environ, "SKYOPS_HOME": tempfile.mkdtemp(prefix="bench_parse_")}
    per_file = {}
    for f in files:
        r = subprocess.run([sys.executable, "-c", PARSE_SNIPPET, str(f)], env=env, capture_output=True, text=True)
        per_file[f.name] = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {"error": r.stderr[-500:]}
    report = None
    with tempfile.TemporaryDirectory(prefix="bench_parse_af_") as af:
        aenv = {k: v for k, v in env.items() if not k.startswith("AIRFLOW_")}
        aenv.update({"AIRFLOW_HOME": af, "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
                     "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=aenv, capture_output=True)
        r = subprocess.run([sys.executable, "-m", "airflow", "dags", "report", "-o", "json"], env=aenv,
                           capture_output=True, text=True)
        if r.returncode == 0:
            try:
                report = json.loads(r.stdout[r.stdout.index("[{"):])
            except ValueError:
                report = None
    if report:
        for row in report:
            name = Path(str(row.get("file", ""))).name
            if name in per_file:
                dur = str(row.get("duration", ""))
                per_file[name]["dags_report"] = dur
    return per_file


def _seconds(text: str) -> float | None:
    """``0:00:00.123456`` (dags report's duration) -> seconds."""
    try:
        h, m, s = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        return None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench airflow_stack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="mapped short steps per run (default 1000)")
    ap.add_argument("--slots", type=int, default=4, help="LocalExecutor workers / Celery concurrency")
    ap.add_argument("--only", choices=["local", "celery", "parse"], help="run one part")
    args = ap.parse_args(argv)
    console = Console(width=max(120, Console().width))
    home = Path(tempfile.mkdtemp(prefix="bench_af_stack_"))
    os.environ["SKYOPS_HOME"] = str(home)
    results: dict[str, Any] = {"benchmark": "airflow_stack", "host": platform.node(), "cpus": os.cpu_count(),
                               "python": platform.python_version(), "when": datetime.now().isoformat(timespec="seconds"),
                               "loadavg_start": os.getloadavg()}
    runs = []
    for name, executor in (("local", "LocalExecutor"), ("celery", "CeleryExecutor")):
        if args.only in (None, name):
            runs.append(throughput(executor, args.n, args.slots, home / name, console))
    results["throughput"] = runs
    if args.only in (None, "parse"):
        results["parse"] = parse_times(console)

    if runs:
        t = Table(title=f"{args.n} mapped short skyops steps, {args.slots} slots, {os.cpu_count()} cores")
        t.add_column("")
        for r in runs:
            t.add_column(r["executor"], justify="right")
        rows = [("state", lambda r: f"{r['state']} ({r['succeeded']}/{r['n']})"),
                ("wall, trigger -> done, s", lambda r: f"{r['wall_s']:.0f}"),
                ("tasks per second", lambda r: f"{r['tasks_per_s']:.2f}" if r["tasks_per_s"] else "-"),
                ("task duration p50 / p90, s", lambda r: f"{r['task_duration_s'].get('p50', 0):.2f} / "
                                                          f"{r['task_duration_s'].get('p90', 0):.2f}"),
                ("queued -> running p50 / p90 / p99, s", lambda r: " / ".join(
                    f"{r['queued_to_running_s'].get(k, 0):.2f}" for k in ("p50", "p90", "p99")))]
        for label, fmt in rows:
            t.add_row(label, *[fmt(r) for r in runs])
        if len(runs) == 2 and runs[0]["tasks_per_s"] and runs[1]["tasks_per_s"]:
            t.add_row("ratio Celery / Local", "", f"{runs[1]['tasks_per_s'] / runs[0]['tasks_per_s']:.2f}")
        console.print(t)
    if results.get("parse"):
        t = Table(title=f"DAG parse time per file (target < {PARSE_TARGET_S} s)")
        for col in ("file", "dags report", "cold (fresh interpreter)", "warm re-parse"):
            t.add_column(col, justify="right" if col != "file" else "left")
        for name, r in results["parse"].items():
            if "error" in r:
                t.add_row(name, "error", r["error"][-60:], "")
                continue
            rep = _seconds(r.get("dags_report", "")) if r.get("dags_report") else None
            t.add_row(name, f"{rep:.3f}" if rep is not None else "-", f"{r['cold_s']:.3f}", f"{r['warm_s']:.3f}")
        console.print(t)
    results["loadavg_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=str))
    console.print(f"results: {RESULTS}")
    return 0 if all(r["state"] == "success" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
