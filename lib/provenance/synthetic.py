"""A seeded synthetic provenance history, for tests and benchmarks.

It has the shape of a survey campaign: raw files (by default half ingested by tasks, half
known only because a task used them), then levels of processing in which each task uses a few files
from the level below (sometimes from further down) and generates many. Files are shared
between tasks (fan-out) and each task reads several (fan-in). Half the tasks declare no
finer edges (``derivation="all"``); the others name, for each output, the inputs it came
from (``add_derivations``).

The generator is a pure function of its arguments: the same seed gives the same history,
so a test can compute the expected lineage independently from :meth:`SynthTask.edges`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import product
from typing import Any, Iterator

from skyops.provenance.records import TaskKey


@dataclass(frozen=True)
class SynthTask:
    """One try of one task of the synthetic history and what it records."""

    key: TaskKey
    name: str
    generated: tuple[dict[str, Any], ...]
    used: tuple[str, ...]
    derivation: str
    finer_edges: tuple[tuple[str, str], ...] = ()

    @property
    def generated_paths(self) -> list[str]:
        return [f["path"] for f in self.generated]

    def used_records(self) -> list[dict[str, Any]]:
        return [{"path": p} for p in self.used]

    def edges(self) -> Iterator[tuple[str, str]]:
        """The (parent, child) edges recording this task creates."""
        if self.derivation == "all":
            yield from product(self.used, self.generated_paths)
        else:
            yield from self.finer_edges


@dataclass(frozen=True)
class SynthParams:
    """Shape of the history; the defaults make a test-sized graph with small tasks."""

    n_files: int = 12_000
    seed: int = 0
    levels: int = 5
    raw_fraction: float = 0.25
    #: Raw files ingested by a task; the others are recorded only when a task uses them.
    ingested_every: int = 2
    ingest_batch: int = 200
    used_per_task: tuple[int, int] = (1, 8)
    generated_per_task: tuple[int, int] = (1, 20)
    parents_per_file: tuple[int, int] = (1, 3)
    all_fraction: float = 0.5
    deep_fraction: float = 0.3
    root: str = "/survey"
    dag_id: str = "synthetic"
    run_id: str = "synthetic__run"


def synthetic_tasks(params: SynthParams = SynthParams()) -> Iterator[SynthTask]:
    """The tasks of the history, in an order in which they can be recorded."""
    rng = random.Random(params.seed)
    n_raw = max(2, int(params.n_files * params.raw_fraction))
    raw = [f"{params.root}/raw/{i // 1000:04d}/raw_{i:07d}.fits.fz" for i in range(n_raw)]
    yield from _ingest_tasks(params, rng, raw[:: params.ingested_every])
    pools: list[list[str]] = [raw]
    for level, quota in enumerate(_quotas(params, n_raw), start=1):
        pools.append([])
        index = 0
        while quota > 0:
            task = _processing_task(params, rng, pools, level, index, quota)
            pools[level].extend(task.generated_paths)
            quota -= len(task.generated)
            index += 1
            yield task


def _quotas(params: SynthParams, n_raw: int) -> list[int]:
    remaining = max(0, params.n_files - n_raw)
    per_level = remaining // (params.levels - 1)
    quotas = [per_level] * (params.levels - 1)
    quotas[-1] += remaining - per_level * (params.levels - 1)
    return quotas


def _ingest_tasks(params: SynthParams, rng: random.Random, paths: list[str]) -> Iterator[SynthTask]:
    for index in range(0, len(paths), params.ingest_batch):
        batch = paths[index : index + params.ingest_batch]
        yield SynthTask(
            key=TaskKey(params.dag_id, params.run_id, "ingest", map_index=index // params.ingest_batch),
            name="synth.ingest",
            generated=tuple(_file(rng, p, "raw") for p in batch),
            used=(),
            derivation="none",
        )


def _processing_task(
    params: SynthParams, rng: random.Random, pools: list[list[str]], level: int, index: int, quota: int
) -> SynthTask:
    source = pools[level - 1] if rng.random() >= params.deep_fraction else pools[rng.randrange(level)]
    n_used = min(rng.randint(*params.used_per_task), len(source))
    used = tuple(rng.sample(source, n_used))
    n_gen = min(rng.randint(*params.generated_per_task), quota)
    folder = f"{params.root}/L{level}/t{index:06d}"
    generated = tuple(_file(rng, f"{folder}/p{level}_{j:04d}.fits", f"synth_l{level}") for j in range(n_gen))
    if rng.random() < params.all_fraction:
        return SynthTask(_key(params, level, index), f"synth.level{level}", generated, used, "all")
    lo, hi = params.parents_per_file
    edges = tuple(
        (parent, f["path"])
        for f in generated
        for parent in rng.sample(used, rng.randint(min(lo, len(used)), min(hi, len(used))))
    )
    return SynthTask(_key(params, level, index), f"synth.level{level}", generated, used, "none", edges)


def _key(params: SynthParams, level: int, index: int) -> TaskKey:
    return TaskKey(params.dag_id, params.run_id, f"level{level}", map_index=index)


def _file(rng: random.Random, path: str, filetype: str) -> dict[str, Any]:
    return {"path": path, "md5": f"{rng.getrandbits(128):032x}", "size": rng.randint(10_000, 100_000_000),
            "filetype": filetype}


def record(store: Any, task: SynthTask, attempt_id: int | None = None) -> int:
    """Record one synthetic task the way the ComputeOperator would; returns its task id."""
    task_id = store.task_started(task.key, name=task.name, attempt_id=attempt_id, host="synthetic")
    store.record_files(task_id, generated=list(task.generated), used=task.used_records(),
                       derivation=task.derivation)
    if task.finer_edges:
        store.add_derivations(list(task.finer_edges))
    store.task_finished(task_id, status="success", exit_status=0)
    return task_id
