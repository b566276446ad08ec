"""Provenance database benchmark: batched inserts and recursive lineage at scale.

For each backend (SQLite file, throwaway PostgreSQL database) and each size (files):

1. build a synthetic campaign history of that many files through the public API
   (``record_files`` with about a thousand files per task, finer edges through
   ``add_derivations``) and time the file recording: batched files/s;
2. insert a smaller sample of rows shaped like the history's into ``desfile`` with one
   INSERT statement per row (the way a naive recorder would) in one transaction:
   row-by-row files/s, and the ratio;
3. embed a 10-deep chain (raw -> step 1 -> ... -> step 10) and time ``lineage()`` of its
   last file (the whole API: name lookup, one recursive query, tree building), ``ancestors()``
   and ``impact()`` of its first file, each the median of repeated runs after a warm-up.

Rates are reported as the median of per-call rates (per ``record_files`` call, per 1000
rows of the baseline) beside the overall rate: on a shared machine the median is the
figure that other people's jobs disturb least. Both are in the JSON.

Tables are ANALYZEd after loading, as autovacuum (PostgreSQL) would soon do on its own.
Results go to ``bench/results/provenance.json`` and a rich table.

    python -m bench.bench_provenance [--sizes 100000,1000000] [--backends sqlite,postgresql]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from skyops.provenance import ProvenanceStore, TaskKey
from skyops.provenance.records import now
from skyops.provenance.schema import desfile
from skyops.provenance.synthetic import SynthParams, synthetic_tasks

RESULTS = Path(__file__).resolve().parent / "results" / "provenance.json"
PG_ADMIN_URL = os.environ.get("SKYOPS_BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
CHAIN_DEPTH = 10
console = Console(stderr=True)


@dataclass
class Result:
    backend: str
    size: int
    files: int = 0
    edges: int = 0
    tasks: int = 0
    records: int = 0
    record_seconds: float = 0.0
    batched_files_per_s: float = 0.0
    batched_call_rates: list[float] = field(default_factory=list)
    batched_median_files_per_s: float = 0.0
    derivation_seconds: float = 0.0
    edges_per_s: float = 0.0
    baseline_rows: int = 0
    row_by_row_files_per_s: float = 0.0
    row_by_row_chunk_rates: list[float] = field(default_factory=list)
    row_by_row_median_files_per_s: float = 0.0
    ratio: float = 0.0
    lineage_ms: list[float] = field(default_factory=list)
    ancestors_ms: list[float] = field(default_factory=list)
    impact_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "lineage_median_ms": statistics.median(self.lineage_ms),
            "ancestors_median_ms": statistics.median(self.ancestors_ms),
            "impact_median_ms": statistics.median(self.impact_ms),
        }


# -- databases ------------------------------------------------------------------------


def throwaway_database(backend: str) -> tuple[str, Callable[[], None]]:
    """A fresh empty database for one run and the function that removes it."""
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="skyops_bench_prov_")
        return f"sqlite:///{folder}/provenance.sqlite", lambda: shutil.rmtree(folder, ignore_errors=True)
    name = f"skyops_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", drop


def analyze(store: ProvenanceStore) -> None:
    with store.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


# -- workload -------------------------------------------------------------------------


def bench_params(size: int) -> SynthParams:
    """Production-like tasks: ~1000 outputs each, 10-30 inputs, 1-2 parents per output."""
    return SynthParams(
        n_files=size, seed=size, levels=5, raw_fraction=0.25, ingested_every=1, ingest_batch=1000,
        used_per_task=(10, 30), generated_per_task=(500, 1500), parents_per_file=(1, 2),
        all_fraction=0.0, root="/bench", dag_id="bench", run_id="bench__run",
    )


def build_history(store: ProvenanceStore, size: int, result: Result) -> None:
    """Record the synthetic history, timing record_files and add_derivations apart."""
    attempt = store.attempt("bench", "bench__run", f"size_{size}")
    with _progress() as progress:
        bar = progress.add_task(f"{result.backend} {size:,} files", total=size)
        for task in synthetic_tasks(bench_params(size)):
            tid = store.task_started(task.key, name=task.name, attempt_id=attempt, host="bench")
            t0 = time.perf_counter()
            store.record_files(tid, generated=list(task.generated), used=task.used_records(), derivation="none")
            t1 = time.perf_counter()
            if task.finer_edges:
                store.add_derivations(list(task.finer_edges))
            t2 = time.perf_counter()
            store.task_finished(tid, status="success", exit_status=0)
            result.record_seconds += t1 - t0
            result.batched_call_rates.append((len(task.generated) + len(task.used)) / (t1 - t0))
            result.derivation_seconds += t2 - t1
            result.tasks += 1
            result.records += len(task.generated) + len(task.used)
            progress.update(bar, advance=len(task.generated))


def build_chain(store: ProvenanceStore) -> tuple[str, str]:
    """raw -> step01 -> ... -> step10, one task per step; returns (first, last) paths."""
    paths = [f"/bench/chain/step{i:02d}.fits" for i in range(CHAIN_DEPTH + 1)]
    for i in range(1, CHAIN_DEPTH + 1):
        tid = store.task_started(TaskKey("bench", "bench__run", "chain", map_index=i), name=f"bench.chain{i}")
        store.record_files(tid, generated=[{"path": paths[i], "md5": f"{i:032x}", "size": i, "filetype": "chain"}],
                           used=[{"path": paths[i - 1]}])
        store.task_finished(tid, status="success", exit_status=0)
    return paths[0], paths[-1]


def row_by_row(store: ProvenanceStore, n: int) -> tuple[float, list[float]]:
    """Files/s inserting ``n`` desfile rows with one INSERT statement each, in one transaction;
    also the rate of each chunk of 1000 rows (as the batched side reports per call)."""
    stmt = sa.insert(desfile)
    created = now()
    # same shape as the history's outputs: ~1000 files per folder, names shared across folders
    rows = ({"path": f"/bench/baseline/t{i // 1000:06d}", "filename": f"p1_{i % 1000:04d}.fits",
             "md5sum": f"{i:032x}", "filesize": i, "filetype": "baseline", "created": created} for i in range(n))
    chunks: list[float] = []
    with store.engine.begin() as conn:
        t0 = tc = time.perf_counter()
        for i, row in enumerate(rows, 1):
            conn.execute(stmt, row)
            if i % 1000 == 0:
                now_ = time.perf_counter()
                chunks.append(1000 / (now_ - tc))
                tc = now_
        elapsed = time.perf_counter() - t0
    return n / elapsed, chunks


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def run_one(backend: str, size: int, baseline_rows: int, repeats: int) -> Result:
    result = Result(backend=backend, size=size, baseline_rows=baseline_rows)
    url, drop = throwaway_database(backend)
    try:
        store = ProvenanceStore(url)
        store.migrate()
        build_history(store, size, result)
        first, last = build_chain(store)
        analyze(store)
        counts = store.status()["counts"]
        result.files, result.edges = counts["desfile"], counts["opm_was_derived_from"]
        result.batched_files_per_s = result.records / result.record_seconds
        result.batched_median_files_per_s = statistics.median(result.batched_call_rates)
        result.edges_per_s = (result.edges - CHAIN_DEPTH) / result.derivation_seconds if result.derivation_seconds else 0
        assert len(store.lineage(last).ancestors()) == CHAIN_DEPTH
        result.lineage_ms = timed(lambda: store.lineage(last), repeats)
        result.ancestors_ms = timed(lambda: store.ancestors(last), repeats)
        result.impact_ms = timed(lambda: store.impact(first), repeats)
        result.row_by_row_files_per_s, result.row_by_row_chunk_rates = row_by_row(store, baseline_rows)
        result.row_by_row_median_files_per_s = statistics.median(result.row_by_row_chunk_rates)
        result.ratio = result.batched_median_files_per_s / result.row_by_row_median_files_per_s
        store.close()
    finally:
        drop()
    return result


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                    TimeElapsedColumn(), console=console, transient=True)


# -- report ---------------------------------------------------------------------------


def report(results: list[Result]) -> Table:
    table = Table(
        title="provenance: batched record_files vs one INSERT per row (median of per-call rates; overall in "
        "brackets), lineage/ancestors of a 10-deep chain and impact of its raw file (median ms)"
    )
    for col in ("backend", "files", "edges", "batched files/s", "(overall)", "row-by-row files/s", "(overall)",
                "ratio", "edges/s", "lineage ms", "ancestors ms", "impact ms"):
        table.add_column(col, justify="right")
    for r in results:
        s = r.summary()
        table.add_row(
            r.backend, f"{r.files:,}", f"{r.edges:,}", f"{r.batched_median_files_per_s:,.0f}",
            f"{r.batched_files_per_s:,.0f}", f"{r.row_by_row_median_files_per_s:,.0f}",
            f"{r.row_by_row_files_per_s:,.0f}", f"{r.ratio:.1f}x", f"{r.edges_per_s:,.0f}",
            f"{s['lineage_median_ms']:.2f}", f"{s['ancestors_median_ms']:.2f}", f"{s['impact_median_ms']:.2f}",
        )
    return table


def environment(backends: list[str]) -> dict[str, object]:
    env: dict[str, object] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "sqlalchemy": sa.__version__,
        "sqlite": sqlite3.sqlite_version,
        "load_average_1_5_15": os.getloadavg(),
    }
    if "postgresql" in backends:
        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect() as c:
            env["postgresql"] = c.execute(sa.text("SHOW server_version")).scalar()
        engine.dispose()
    return env


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_provenance", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100000,1000000", help="comma-separated history sizes in files")
    p.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--baseline-rows", type=int, default=10_000, help="rows inserted one statement at a time")
    p.add_argument("--repeats", type=int, default=50, help="timed lineage queries per case")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(argv or []))
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        console.print(f"unknown backend(s) {', '.join(sorted(unknown))}; use sqlite and/or postgresql")
        return 2
    results = []
    for backend in backends:
        for size in sizes:
            t0 = time.perf_counter()
            results.append(run_one(backend, size, args.baseline_rows, args.repeats))
            console.print(f"{backend} {size:,} files: done in {time.perf_counter() - t0:,.0f} s")
    out = Console() if sys.stdout.isatty() else Console(width=200)
    out.print(report(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "environment": environment(backends),
        "chain_depth": CHAIN_DEPTH,
        "results": [{**asdict(r), **r.summary()} for r in results],
    }
    args.out.write_text(json.dumps(payload, indent=2))
    out.print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
