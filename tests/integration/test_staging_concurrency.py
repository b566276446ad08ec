"""Parallel stagers sharing one cache: eight separate processes, and threads of one process,
staging overlapping manifests from one HTTP archive fetch every file exactly once."""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from skyops.fileio import md5sum
from skyops.manifest import FILE_COLUMNS, Manifest
from skyops.staging import stage
from skyops.staging.server import ArchiveServer

N_FILES = 16
N_STAGERS = 8

#: One stager process: waits for the start gate so that all eight start together, then stages.
CHILD = r"""
import json, sys, time
from pathlib import Path
from skyops.staging import stage
args = json.loads(sys.argv[1])
gate = Path(args["gate"])
deadline = time.monotonic() + 120
while not gate.exists() and time.monotonic() < deadline:
    time.sleep(0.005)
report = stage(args["manifest"], args["dest"], root=args["root"], cache=args["cache"], workers=4,
               retries=2, backoff=0.05)
Path(args["out"]).write_text(json.dumps(report.to_dict()))
"""


def make_archive(root: Path, n: int) -> Manifest:
    rng = random.Random(11)
    rows = []
    for i in range(n):
        path = f"OPS/finalcut/Y6A1/r4001/D{3000 + i:08d}/p01/red/immask"
        name = f"D{3000 + i:08d}_i_c{i + 1:02d}_r4001p01_immasked.fits"
        data = rng.randbytes(400_000 + 997 * i)
        f = root / path / (name + ".fz")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        rows.append((name, path, ".fz", hashlib.md5(data).hexdigest(), len(data), "red_immask"))
    return Manifest(columns=list(FILE_COLUMNS), rows=rows)


def overlapping(manifest: Manifest, k: int) -> Manifest:
    """Stager ``k``'s share: 10 of the 16 files, each file wanted by several stagers."""
    rows = [manifest.rows[(k * 2 + j) % N_FILES] for j in range(10)]
    random.Random(k).shuffle(rows)
    return Manifest(columns=manifest.columns, rows=rows)


def test_eight_processes_fetch_each_file_once(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    manifest = make_archive(root, N_FILES)
    gate = tmp_path / "go"
    with ArchiveServer(root, chunk_delay=0.003) as srv:  # slowed, so transfers overlap
        procs, outs = [], []
        for k in range(N_STAGERS):
            mpath = overlapping(manifest, k).write(tmp_path / f"m{k}.json")
            out = tmp_path / f"report{k}.json"
            args = {"gate": str(gate), "manifest": str(mpath), "dest": str(tmp_path / f"dest{k}"),
                    "root": srv.url, "cache": str(tmp_path / "cache"), "out": str(out)}
            procs.append(subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)],
                                          stderr=subprocess.PIPE, text=True))
            outs.append(out)
        time.sleep(0.5)  # let the interpreters start; correctness does not depend on it
        gate.touch()
        errors = [p.communicate(timeout=240)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * N_STAGERS, errors
        hits = dict(srv.hits)

    wanted = {Manifest.relpath(r) for k in range(N_STAGERS) for r in overlapping(manifest, k).records()}
    assert len(wanted) == N_FILES
    assert hits == {rel: 1 for rel in wanted}, "a file was requested more than once"

    reports = [json.loads(o.read_text()) for o in outs]
    assert sum(r["fetched"] for r in reports) == N_FILES
    assert sum(r["cached"] for r in reports) == N_STAGERS * 10 - N_FILES
    for k, rep in enumerate(reports):
        for f in rep["files"]:
            assert Path(f["path"]).is_relative_to(tmp_path / f"dest{k}")
            assert md5sum(f["path"]) == f["md5"]
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_threads_sharing_a_cache_fetch_each_file_once(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    manifest = make_archive(root, N_FILES)
    reports: dict[int, object] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run(k: int) -> None:
        try:
            barrier.wait()
            reports[k] = stage(overlapping(manifest, k), tmp_path / f"dest{k}", root=srv.url,
                               cache=tmp_path / "cache", workers=3)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with ArchiveServer(root, chunk_delay=0.002) as srv:
        threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        hits = dict(srv.hits)
    assert errors == []
    assert set(hits.values()) == {1}
    assert sum(r.fetched for r in reports.values()) == len(hits)
    for k, rep in reports.items():
        assert all(md5sum(f.path) == f.md5 for f in rep.files)
        assert all(os.path.samefile(f.path, tmp_path / "cache" / "objects" / f.md5[:2] / f.md5)
                   for f in rep.files)


@pytest.mark.parametrize("workers", [1, 3])
def test_workers_bound_parallel_transfers(tmp_path: Path, workers: int) -> None:
    root = tmp_path / "archive"
    manifest = make_archive(root, N_FILES)
    with ArchiveServer(root, chunk_delay=0.002) as srv:
        report = stage(manifest, tmp_path / "d", root=srv.url, cache=False, workers=workers)
        peak = srv.peak_active
    assert report.fetched == N_FILES
    assert 1 <= peak <= workers
