"""Airflow's orchestration overhead on one GW search exposure (60 CCDs), against a plain process pool.

The gw-demo archive (seed 42, 256x512 CCDs; ``--preset bench`` for full-size 2048x4096 CCDs, the
size the issue asks for) is built in a temporary SKYOPS_HOME; then search exposure 668439 of night
20170817 is processed on all 60 CCDs (``1,3-60,62``; ``--ccds`` for fewer) two ways:

(b) pool: the archive queries and staging once in-process (:mod:`skyops.archive`,
    :func:`skyops.staging.stage` through the staging cache, as the DAG's prepare task does, so
    that from the second run on both place hard links; :func:`skyops.campaigns.gw.plan.se_inputs`), then 60x
    ``gw.se_ccd`` on a ``ProcessPoolExecutor(2)``, ``gw.calibrate``, 60x ``gw.diffimg_ccd`` on the
    pool, ``gw.ingest_candidates``. Every step runs as ``python -m skyops.cli.main step run``, the
    same subprocess the DAG's local compute backend starts, so the difference is orchestration.
(a) Airflow: a real stack (:class:`skyops.operators.devstack.AirflowStack`: api-server, scheduler
    with the LocalExecutor at parallelism 2, dag-processor; metadata in a fresh PostgreSQL DB)
    runs ``gw_exposure`` with conf ``{"expnum": 668439, "night": "20170817"}``; wall time from the
    trigger to run success. Task start latency (queued -> running) comes from the REST API.
    Before the trigger the bench reads the DAG's tasks over REST, so that the api-server holds
    the deserialized DAG, as a service that has run an exposure since its start does.

The ratio Airflow / pool is the overhead (the issue's target: <= 1.10). Both record the CPU
seconds of every process by kind (:mod:`bench.proc_cpu`: steps, api-server, scheduler,
PostgreSQL...), which is where an orchestrator's overhead shows on a busy node. Results:
``bench/results/gw_orchestration.json``. Run on an otherwise idle machine; the VM's speed
drifts between identical runs, so alternate the two (``--skip-pool`` / ``--skip-airflow``
with ``--keep``/``--no-build``) and compare medians. ``--workers`` sets the pool's size (default 2,
the cores); ``--slots`` Airflow's (default 3) and ``--cores`` how many steps compute at once
under Airflow (:mod:`skyops.executors.core_slots`; default 2).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.proc_cpu import ProcCpu, vmstat, vmstat_delta  # noqa: E402
from bench.stats import parse_ts as _ts, percentiles  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS_DIR = Path(__file__).parent / "results"
RESULTS = RESULTS_DIR / "gw_orchestration.json"
EXPNUM, NIGHT, CCDS = 668439, "20170817", "1,3-60,62"
TARGET_RATIO = 1.10
WORKERS = 2
#: Full-size (2048x4096) per-CCD CPU seconds measured by bench_gw_se / bench_gw_diffimg, for the
#: 60-core extrapolation at production size (read from their results when present).
FULL_SIZE_FALLBACK = {"gw_se": 8.0, "gw_diffimg": 12.9}


def run_cli_step(step: str, params: dict[str, Any], workdir: str) -> dict[str, Any]:
    """One step as the local backend runs it: ``python -m skyops.cli.main step run`` in a subprocess."""
    from skyops.steps.runner import StepResult

    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    pfile = wd.parent / f"{wd.name}.params.json"
    pfile.write_text(json.dumps(params))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "skyops.cli.main", "step", "run", step, "--params", str(pfile),
                        "--workdir", str(wd)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    res = StepResult.load(wd)
    if p.returncode != 0 or res is None or not res.ok:
        raise RuntimeError(f"{step} in {wd} failed (exit {p.returncode}): {p.stdout[-2000:]}")
    return {"outputs": res.outputs, "proc_wall_s": wall, "step_wall_s": res.wall_s, "cpu_s": res.cpu_s}


def _paths(r: dict[str, Any], filetype: str) -> list[str]:
    return [o["path"] for o in r["outputs"] if o.get("filetype") == filetype]


def run_pool(work: Path, console: Console, workers: int = WORKERS) -> dict[str, Any]:
    """(b): the gw_exposure steps in dependency order, CCD steps on a process pool of ``workers``."""
    vm0 = vmstat()
    with ProcCpu() as cpu:
        out = _run_pool(work, console, workers)
    out["cpu_s_by_kind"], out["vmstat"] = cpu.totals, vmstat_delta(vm0)
    console.print(f"(b) vmstat: {out['vmstat']}")
    console.print("(b) CPU s by process kind: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.totals.items()))
    return out


def _run_pool(work: Path, console: Console, workers: int) -> dict[str, Any]:
    from skyops.archive import ArchiveDB
    from skyops.campaigns.gw.params import validate
    from skyops.campaigns.gw.plan import diff_inputs, read_zeropoints, se_inputs
    from skyops.campaigns.gw.plan import staged as staged_path
    from skyops.config import platform_config
    from skyops.manifest import merge_manifests
    from skyops.staging import stage

    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    cfg = platform_config()
    p = validate({"night": NIGHT, "ccds": CCDS, "expnums": [EXPNUM]})
    db = ArchiveDB.from_config(cfg)
    try:
        raw = db.query("raw_exposure", expnum=EXPNUM)
        cal = db.query("night_calibrations", nite=NIGHT, band=p.band)
        ref = db.query("reference_catalog")
        tmpl = db.query("templates", expnum=EXPNUM)
        raw_tmpl = db.query("raw_templates", expnum=EXPNUM)  # none in this survey; the DAG asks too
    finally:
        db.dispose()
    dest = work / "staged"
    # the staging cache, as the DAG's prepare task uses it: after the first run, staging is hard links
    stage(merge_manifests([raw, cal, ref, tmpl, raw_tmpl]), dest, root=cfg.archive.root, cache=cfg.workspace.cache, workers=4)
    se_plan = {k: v for k, v in se_inputs(dest, raw, cal, ref, p, EXPNUM).items() if v}
    phases["query+stage+plan"] = time.perf_counter() - t0

    with ProcessPoolExecutor(workers) as pool:
        t = time.perf_counter()
        futs = {int(v["ccd"]): pool.submit(run_cli_step, "gw.se_ccd", v, str(work / "se" / k)) for k, v in se_plan.items()}
        se = {c: f.result() for c, f in futs.items()}
        phases["se_ccd x%d" % len(se)] = time.perf_counter() - t

        t = time.perf_counter()
        cats = [c for r in se.values() for c in _paths(r, "cat_finalcut")]
        refcat = staged_path(dest, list(ref.records())[-1])
        calib = run_cli_step("gw.calibrate", {"catalogs": cats, "refcat": refcat, "band": p.band},
                             str(work / "calibrate"))
        zps = read_zeropoints((_paths(calib, "bliss_zeropoint") or [None])[0])
        se_out = {c: {"red_immask": _paths(r, "red_immask")[0], "psfex_model": (_paths(r, "psfex_model") or [None])[0]}
                  for c, r in se.items()}
        diff_plan = {k: v for k, v in diff_inputs(dest, se_out, tmpl, zps, p, EXPNUM).items() if v}
        phases["calibrate+plan"] = time.perf_counter() - t

        t = time.perf_counter()
        futs = {int(v["ccd"]): pool.submit(run_cli_step, "gw.diffimg_ccd", v, str(work / "diff" / k))
                for k, v in diff_plan.items()}
        diff = {c: f.result() for c, f in futs.items()}
        phases["diffimg_ccd x%d" % len(diff)] = time.perf_counter() - t

    t = time.perf_counter()
    cands = [c for r in diff.values() for c in _paths(r, "gw_diff_candidates")]
    run = p.as_dict()
    ingest = run_cli_step("gw.ingest_candidates", {"candidates": cands, "night": run["night"], "schema": run["schema"],
                                                   "band": run["band"], "diffimg_version": run["diffimg_version"]},
                          str(work / "ingest"))
    phases["ingest"] = time.perf_counter() - t
    wall = time.perf_counter() - t0
    console.print(f"(b) pool: {wall:.1f} s  " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))

    def stats(rs: dict[int, dict[str, Any]]) -> dict[str, float]:
        return {"n": len(rs), "mean_proc_wall_s": statistics.mean(r["proc_wall_s"] for r in rs.values()),
                "mean_step_wall_s": statistics.mean(r["step_wall_s"] for r in rs.values()),
                "mean_cpu_s": statistics.mean(r["cpu_s"] for r in rs.values()),
                "max_proc_wall_s": max(r["proc_wall_s"] for r in rs.values())}

    return {"wall_s": wall, "workers": workers, "phases_s": phases, "se": stats(se), "diff": stats(diff),
            "calibrate_proc_wall_s": calib["proc_wall_s"], "ingest_proc_wall_s": ingest["proc_wall_s"],
            "n_candidate_files": len(cands)}




_ACCESS = re.compile(r"duration_us=(\d+).*?method=(\w+) path=(\S+)")
_UUID = re.compile(r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def api_requests(log: Path, offset: int = 0) -> dict[str, dict[str, float]]:
    """The api-server's requests by kind from its access log (from byte ``offset``): count and mean ms.

    Heartbeats (``PUT /execution/task-instances/<id>/heartbeat``), XCom reads and writes,
    state changes: the traffic each running task puts on the api-server and its database.
    """
    counts: dict[str, list[float]] = {}
    if not log.is_file():
        return {}
    with log.open("rb") as f:
        f.seek(offset)
        for raw in f:
            line = raw.decode(errors="replace")
            m = _ACCESS.search(line) if "http.access" in line else None
            if not m:
                continue
            parts = _UUID.sub("/<id>", m.group(3)).split("/")
            if parts[1:3] == ["execution", "xcoms"]:
                path = "/execution/xcoms"
            elif parts[1:3] == ["execution", "task-instances"]:
                path = "/".join(parts[:5])
            else:
                path = "/".join(parts[:4])
            counts.setdefault(f"{m.group(2)} {path}", []).append(int(m.group(1)) / 1000)
    return {k: {"n": len(v), "mean_ms": round(statistics.mean(v), 1)}
            for k, v in sorted(counts.items(), key=lambda kv: -len(kv[1]))}


def pg_wal_stats() -> dict[str, float]:
    """The PostgreSQL cluster's WAL counters (``pg_stat_wal``: records, bytes, writes, fsyncs) and commits.

    Every commit of the scheduler, api-server and tasks is a WAL flush (an fdatasync) on the
    disk the steps write to; {} when the server cannot be asked.
    """
    import sqlalchemy as sa

    from skyops.operators.devstack import PG_ADMIN_URL

    try:
        eng = sa.create_engine(PG_ADMIN_URL)
        with eng.connect() as c:
            wal = c.execute(sa.text("SELECT wal_records, wal_bytes, wal_write, wal_sync FROM pg_stat_wal")).one()
            commits = c.execute(sa.text("SELECT sum(xact_commit) FROM pg_stat_database")).scalar()
        eng.dispose()
    except Exception:  # noqa: BLE001 - a diagnostic, not the measurement
        return {}
    return {"wal_records": int(wal[0]), "wal_bytes": int(wal[1]), "wal_write": int(wal[2]),
            "wal_sync": int(wal[3]), "commits": int(commits or 0)}


_GOT_CORES = re.compile(r"got cores \[[\d, ]*\] after ([\d.]+) s")


def core_waits(run_logs: Path) -> dict[str, float]:
    """Seconds each task of a run waited for a core, by task id, from its task logs.

    ``run_logs`` is Airflow's ``.../dag_id=D/run_id=R`` folder. The local executor logs
    ``got cores [..] after X s`` when a step had to wait (:mod:`skyops.executors.core_slots`);
    a task without that line did not wait. The wait is part of the task's duration, not of
    its cost: the task was started early so that its step could begin the moment a core freed.
    """
    out: dict[str, float] = {}
    for f in sorted(run_logs.glob("task_id=*/attempt=*.log")):
        task = f.parent.name.removeprefix("task_id=")
        with f.open(errors="replace") as lines:
            for line in lines:
                if "got cores" in line and (m := _GOT_CORES.search(line)):
                    out[task] = out.get(task, 0.0) + float(m.group(1))
    return out


def slot_gaps(spans: list[tuple[datetime, datetime]]) -> list[float]:
    """For each task start, seconds since the last task end before it: how long a freed slot sat idle.

    With every slot busy and work ready (120 CCD tasks on 2 slots), this is the dispatch latency;
    queued -> running also counts the wait for a free slot, which is not overhead.
    """
    ends = sorted(e for _, e in spans)
    gaps = []
    for start, _ in sorted(spans)[1:]:
        before = [e for e in ends if e <= start]
        if before:
            gaps.append((start - before[-1]).total_seconds())
    return gaps


def wait_quietly(stack: Any, dag_id: str, run_id: str, timeout: float, poll: float = 2.0) -> dict[str, Any]:
    """Wait for a run's end reading its state from the metadata DB, then fetch the run over REST once.

    A REST poll of the run took the api-server 54-69 ms on average (69-76 polls, 15 s apart,
    in runs of 965-1,085 s on a busy 2-core VM): load that a nightly run does not have, and it
    was counted as Airflow's. One indexed query on ``dag_run`` costs PostgreSQL about a millisecond.
    """
    import sqlalchemy as sa

    from skyops.operators.devstack import TERMINAL_STATES, StackError

    engine = sa.create_engine(stack.metadata_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    query = sa.text("SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r")
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as c:
            while c.execute(query, {"d": dag_id, "r": run_id}).scalar() not in TERMINAL_STATES:
                stack.check_alive()
                if time.monotonic() > deadline:
                    raise StackError(f"run {run_id} of {dag_id} not finished after {timeout:.0f} s")
                time.sleep(poll)
    finally:
        engine.dispose()
    return stack.dag_run(dag_id, run_id)


def run_airflow(home: Path, console: Console, slots: int = WORKERS,
                extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """(a): gw_exposure on a real scheduler + LocalExecutor (parallelism ``slots``, default WORKERS)."""
    from skyops.operators.devstack import AirflowStack, pg_database

    t_up = time.perf_counter()
    with pg_database(prefix="skyops_bench") as url, \
            AirflowStack(home, url, parallelism=slots, extra_env=extra_env) as stack:
        up_s = time.perf_counter() - t_up
        stack.wait_dag("gw_exposure")
        # Steady state: a night's service has the DAG deserialized in its api-server already (cached per DAG
        # version, [api] dag_cache_ttl). A fresh api-server does that, with its first imports, on the first task
        # start: 2.9 s in which the first two tasks waited. Reading the DAG's tasks over REST does it now.
        t_warm = time.perf_counter()
        stack.api("GET", "/dags/gw_exposure/tasks")
        warm_s = time.perf_counter() - t_warm
        console.print(f"(a) Airflow stack up in {up_s:.1f} s at {stack.base_url} (logs {stack.log_dir}); "
                      f"DAG loaded by the api-server in {warm_s:.1f} s")
        api_log = stack.log_dir / "api-server.log"  # appended to by every stack in this home
        api_offset = api_log.stat().st_size if api_log.is_file() else 0
        t0 = time.perf_counter()
        vm0, wal0 = vmstat(), pg_wal_stats()
        with ProcCpu() as cpu:
            run_id = stack.trigger("gw_exposure", {"expnum": EXPNUM, "night": NIGHT, "ccds": CCDS})
            # The wall time comes from the run's own dates (from the trigger, queued, to the run's end),
            # so it does not depend on how the end is noticed; see wait_quietly for why not over REST.
            run = wait_quietly(stack, "gw_exposure", run_id, timeout=7200)
        wall_polled = time.perf_counter() - t0
        vm, wal = vmstat_delta(vm0), {k: v - wal0.get(k, 0) for k, v in pg_wal_stats().items()}
        try:
            wall = (_ts(run["end_date"]) - _ts(run.get("queued_at") or run["start_date"])).total_seconds()
        except (KeyError, TypeError, ValueError):
            wall = wall_polled
        tis = stack.task_instances("gw_exposure", run_id)
    api = api_requests(api_log, api_offset)
    if api:
        console.print("(a) api-server requests: " + ", ".join(f"{k} {v['n']} ({v['mean_ms']:.0f} ms)"
                                                         for k, v in list(api.items())[:6]))
    latency = [(_ts(t["start_date"]) - _ts(t["queued_when"])).total_seconds()
               for t in tis if t.get("queued_when") and t.get("start_date")]
    states: dict[str, int] = {}
    for t in tis:
        states[t["state"] or "none"] = states.get(t["state"] or "none", 0) + 1

    def durations(prefix: str) -> list[float]:
        return [float(t["duration"]) for t in tis
                if t["task_id"].startswith(f"exposure.{prefix}") and t["state"] == "success" and t.get("duration")]

    se_d, diff_d = durations("se_c"), durations("diff_c")
    waits = core_waits(stack.log_dir.parent / "dag_id=gw_exposure" / f"run_id={run_id}")

    def mean_wait(prefix: str) -> float | None:
        ids = [t["task_id"] for t in tis if t["task_id"].startswith(f"exposure.{prefix}") and t["state"] == "success"]
        return statistics.mean(waits.get(i, 0.0) for i in ids) if ids else None
    ran = [t for t in tis if t.get("start_date") and t.get("end_date")]
    gaps = slot_gaps([(_ts(t["start_date"]), _ts(t["end_date"])) for t in ran])
    busy = sum(float(t["duration"] or 0) for t in ran)
    console.print(f"(a) Airflow: run {run['state']} in {wall:.1f} s; task states {states}")
    console.print("(a) CPU s by process kind: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.totals.items()))
    console.print(f"(a) vmstat: {vm}; PostgreSQL WAL (whole cluster): {wal}")
    return {"wall_s": wall, "cpu_s_by_kind": cpu.totals, "vmstat": vm, "pg_wal": wal, "api_requests": api, "state": run["state"], "run_id": run_id, "stack_up_s": up_s, "api_dag_warmup_s": warm_s, "task_states": states,
            "n_tasks_ran": len(ran), "task_busy_s": busy,
            "queued_to_running_s": percentiles(latency), "slot_free_to_start_s": percentiles(gaps),
            "task_instances": [{k: t.get(k) for k in ("task_id", "map_index", "state", "queued_when", "start_date",
                                                      "end_date", "duration")} for t in tis],
            "se_task_mean_s": statistics.mean(se_d) if se_d else None,
            "diff_task_mean_s": statistics.mean(diff_d) if diff_d else None,
            "se_core_wait_mean_s": mean_wait("se_c"), "diff_core_wait_mean_s": mean_wait("diff_c"),
            "core_wait_total_s": sum(waits.values()), "n_tasks_waited_for_a_core": len(waits),
            "n_se": len(se_d), "n_diff": len(diff_d)}


def full_size_cpu() -> dict[str, float]:
    out = dict(FULL_SIZE_FALLBACK)
    for name in out:
        f = RESULTS.parent / f"{name}.json"
        if f.is_file():
            out[name] = float(json.loads(f.read_text()).get("total_cpu_s") or out[name])
    return out


def extrapolate(b: dict[str, Any], a: dict[str, Any] | None) -> dict[str, Any]:
    """What 60 cores would give: every CCD at once, so the critical path is one CCD of each kind.

    Pool: the serial part (query, stage, calibrate, ingest) + the slowest SE CCD + the slowest
    difference-imaging CCD. Full size: the per-CCD CPU of bench_gw_se / bench_gw_diffimg on a
    2048x4096 CCD plus each step's process start-up; the serial part at its demo value (lower
    bound) and x64 (the pixel ratio; upper bound). Airflow: the pool's time plus, for each of the
    ~12 tasks on the critical path, the median slot-to-start gap and the mean fixed cost of a
    CCD task beyond its step (both measured here on 2 busy cores, so pessimistic for 60).
    """
    serial = b["phases_s"]["query+stage+plan"] + b["calibrate_proc_wall_s"] + b["ingest_proc_wall_s"]
    pool60 = serial + b["se"]["max_proc_wall_s"] + b["diff"]["max_proc_wall_s"]
    full = full_size_cpu()
    startup = sum(b[k]["mean_proc_wall_s"] - b[k]["mean_step_wall_s"] for k in ("se", "diff"))
    full_ccd = full["gw_se"] + full["gw_diffimg"] + startup
    out = {"demo_per_ccd_cpu_s": b["se"]["mean_cpu_s"] + b["diff"]["mean_cpu_s"], "demo_60core_pool_s": pool60,
           "demo_serial_part_s": serial, "step_process_startup_s": startup,
           "full_size_per_ccd_cpu_s": full["gw_se"] + full["gw_diffimg"],
           "full_size_60core_pool_s": serial + full_ccd, "full_size_60core_pool_s_upper": serial * 64 + full_ccd}
    if a and a.get("slot_free_to_start_s") and a.get("se_task_mean_s") and a.get("diff_task_mean_s"):
        # a task's time waiting for a core (core slots) is not a cost: 60 cores never wait
        fixed = ((a["se_task_mean_s"] - (a.get("se_core_wait_mean_s") or 0.0) - b["se"]["mean_proc_wall_s"])
                 + (a["diff_task_mean_s"] - (a.get("diff_core_wait_mean_s") or 0.0)
                    - b["diff"]["mean_proc_wall_s"])) / 2
        per_task = a["slot_free_to_start_s"]["p50"] + max(0.0, fixed)
        out.update(airflow_task_fixed_cost_s=fixed, airflow_per_task_on_critical_path_s=per_task,
                   airflow_critical_path_tasks=12,
                   demo_60core_airflow_s=pool60 + 12 * per_task,
                   full_size_60core_airflow_s=out["full_size_60core_pool_s"] + 12 * per_task,
                   full_size_60core_airflow_s_upper=out["full_size_60core_pool_s_upper"] + 12 * per_task)
    return out


def main(argv: list[str]) -> int:
    global CCDS, RESULTS
    ap = argparse.ArgumentParser(prog="python -m bench gw_orchestration", description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, help="work in this SKYOPS_HOME and keep it")
    ap.add_argument("--skip-airflow", action="store_true", help="only the pool baseline (b)")
    ap.add_argument("--preset", default="gw-demo", help="sim preset: gw-demo (256x512 CCDs) or bench (2048x4096)")
    ap.add_argument("--ccds", default=CCDS, help="the search CCDs to process (default: all 60)")
    ap.add_argument("--workers", type=int, default=WORKERS,
                    help=f"the process pool's workers (default {WORKERS}, the machine's cores)")
    ap.add_argument("--slots", type=int, default=WORKERS + 1,
                    help=f"Airflow LocalExecutor parallelism (default {WORKERS + 1}: one more than the pool's "
                         "workers; the core slots keep the steps at --cores)")
    ap.add_argument("--cores", type=int, default=WORKERS,
                    help=f"executors.local.cores for the Airflow side: steps computing at once (default "
                         f"{WORKERS}, the pool's workers; 0: no limit, as before core slots)")
    ap.add_argument("--airflow-env", action="append", default=[], metavar="AIRFLOW__SECTION__KEY=VALUE",
                    help="extra Airflow setting for the stack (repeatable), e.g. scheduler tuning")
    ap.add_argument("--no-build", action="store_true",
                    help="reuse the archive already built in the --keep home (same preset and CCDs)")
    ap.add_argument("--skip-pool", action="store_true",
                    help="reuse the pool baseline (b) of the last results file of this preset and CCDs")
    args = ap.parse_args(argv)
    if args.no_build and not args.keep:
        ap.error("--no-build needs --keep HOME (the home holding the built archive)")
    airflow_env = {"SKYOPS_LOCAL_CORES": str(args.cores), **dict(kv.split("=", 1) for kv in args.airflow_env)}
    CCDS = args.ccds
    if args.preset != "gw-demo":
        RESULTS = RESULTS_DIR / f"gw_orchestration-{args.preset}.json"
    console = Console(width=max(120, Console().width))
    home = (args.keep or Path(tempfile.mkdtemp(prefix="bench_gw_orch_"))).resolve()
    os.environ["SKYOPS_HOME"] = str(home)
    for var in ("SKYOPS_CONFIG", "SKYOPS_PROVENANCE_URL", "SKYOPS_ARCHIVE_URL", "SKYOPS_ARCHIVE_ROOT"):
        os.environ.pop(var, None)
    rc = 1
    try:
        from skyops.config import platform_config
        from skyops.provenance import ProvenanceStore
        from skyops.sim import create_archive

        ProvenanceStore.from_config().migrate()
        load0 = os.getloadavg()
        if load0[0] > 0.5 * (os.cpu_count() or 1):
            console.print(f"[yellow]load average {load0[0]:.1f} on {os.cpu_count()} cores: the timings will be noisy[/]")
        t = time.perf_counter()
        from skyops.campaigns.gw.params import parse_ccds

        if args.no_build:
            t_archive = None
            console.print(f"reusing the archive in {home}")
        else:
            # The search CCDs plus every CCD that can hold their templates (the template exposures
            # are dithered by arcseconds, so the same CCD numbers cover the same sky).
            summary = create_archive(preset=args.preset, seed=42, config=platform_config(), workers=WORKERS,
                                     ccds=None if CCDS == "1,3-60,62" else parse_ccds(CCDS))
            t_archive = time.perf_counter() - t
            console.print(f"{args.preset} archive in {home}: {summary.n_files} files, "
                          f"{summary.n_bytes / 1e6:.0f} MB, built in {t_archive:.1f} s")

        if args.skip_pool:
            prev = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
            if prev.get("ccds") != CCDS or not prev.get("pool") or prev["pool"].get("workers", WORKERS) != args.workers:
                console.print(f"[red]--skip-pool: {RESULTS} holds no pool run for CCDs {CCDS} on {args.workers} workers[/]")
                return 2
            b = prev["pool"]
            console.print(f"(b) pool: reusing {b['wall_s']:.1f} s from {prev.get('when')}")
        else:
            shutil.rmtree(home / "pool", ignore_errors=True)
            b = run_pool(home / "pool", console, workers=args.workers)
        a, a_error = None, None
        if not args.skip_airflow:
            try:
                a = run_airflow(home, console, slots=args.slots, extra_env=airflow_env)
            except Exception as exc:  # noqa: BLE001 - report (b) and what blocked (a)
                a_error = f"{type(exc).__name__}: {exc}"
                console.print(f"[red](a) Airflow failed:[/] {a_error}")
        ratio = a["wall_s"] / b["wall_s"] if a and a["state"] == "success" else None
        ext = extrapolate(b, a)

        table = Table(title=f"gw_exposure {EXPNUM} ({NIGHT}), CCDs {CCDS}: Airflow vs a process pool, "
                            f"{args.workers} workers, {args.preset} CCDs")
        for col in ("", f"(a) Airflow LocalExecutor ({args.slots} slots, {args.cores or 'unlimited'} cores)", f"(b) ProcessPool({args.workers})"):
            table.add_column(col, justify="left" if not col else "right")
        table.add_row("wall time, s", f"{a['wall_s']:.1f}" if a else "-", f"{b['wall_s']:.1f}")
        table.add_row("gw.se_ccd mean per CCD, s", f"{a['se_task_mean_s']:.2f} (task, {a.get('se_core_wait_mean_s') or 0:.1f} waiting for a core)" if a and a["se_task_mean_s"]
                      else "-", f"{b['se']['mean_proc_wall_s']:.2f} (cpu {b['se']['mean_cpu_s']:.2f})")
        table.add_row("gw.diffimg_ccd mean per CCD, s", f"{a['diff_task_mean_s']:.2f} (task, {a.get('diff_core_wait_mean_s') or 0:.1f} waiting for a core)"
                      if a and a["diff_task_mean_s"] else "-",
                      f"{b['diff']['mean_proc_wall_s']:.2f} (cpu {b['diff']['mean_cpu_s']:.2f})")
        if a:
            table.add_row("tasks run / states", f"{a['n_tasks_ran']} / {a['task_states']}",
                          f"{b['se']['n'] + b['diff']['n'] + 2} steps")
            for label, key in (("queued -> running, s (p50/p90/p99/max)", "queued_to_running_s"),
                               ("slot free -> next task start, s", "slot_free_to_start_s")):
                lat = a.get(key)
                if lat:
                    table.add_row(label, f"{lat['p50']:.2f} / {lat['p90']:.2f} / {lat['p99']:.2f} / {lat['max']:.2f}",
                                  "-")
        ok = ratio is not None and ratio <= TARGET_RATIO
        table.add_row("ratio Airflow / pool (target <= 1.10)",
                      (f"[{'green' if ok else 'red'}]{ratio:.2f}[/]" if ratio else "-"), "1.00")
        console.print(table)
        size = "these full-size CCDs" if args.preset == "bench" else "demo size"
        console.print(
            f"60 cores (every CCD at once): {size} pool ~{ext['demo_60core_pool_s']:.0f} s"
            + (f", Airflow ~{ext['demo_60core_airflow_s']:.0f} s (upper bound: task costs measured on "
               f"{args.slots} slots over {os.cpu_count()} cores)" if "demo_60core_airflow_s" in ext else "")
            + (" to candidates; DESGW O3: under an hour per exposure on a grid." if args.preset == "bench" else "")
        )
        if args.preset != "bench":
            console.print(
                f"Full-size CCDs (2048x4096, {ext['full_size_per_ccd_cpu_s']:.0f} CPU s per CCD SE+diff): "
                f"~{ext['full_size_60core_pool_s']:.0f}-{ext['full_size_60core_pool_s_upper']:.0f} s pool"
                + (f", ~{ext['full_size_60core_airflow_s']:.0f}-{ext['full_size_60core_airflow_s_upper']:.0f} s "
                   "Airflow" if "full_size_60core_airflow_s" in ext else "")
                + " to candidates; DESGW O3: under an hour per exposure on a grid.")

        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({
            "benchmark": "gw_orchestration", "host": platform.node(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "when": datetime.now().isoformat(timespec="seconds"),
            "expnum": EXPNUM, "night": NIGHT, "ccds": CCDS, "workers": args.workers, "airflow_slots": args.slots, "airflow_cores": args.cores,
            "airflow_env": airflow_env, "preset": args.preset, "seed": 42,
            "archive_build_s": None if t_archive is None else round(t_archive, 2), "loadavg_start": load0, "loadavg_end": os.getloadavg(), "pool": b, "airflow": a, "airflow_error": a_error,
            "ratio_airflow_over_pool": ratio, "target_ratio": TARGET_RATIO, "extrapolation_60_cores": ext,
        }, indent=1, default=str))
        console.print(f"results: {RESULTS}")
        rc = 0 if ratio is not None else 1
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
