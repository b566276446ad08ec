"""Staging throughput against the tools people would otherwise use: ``cp -r`` and ``curl``.

A bench-preset-like set of files (default 60 x 32 MB of random bytes, DESDM layout) is
staged side by side with the baselines:

* ``file://``: :func:`skyops.staging.stage` (md5-verified, ``.part`` + rename, 4 workers)
  without and with the shared cache, against ``cp -r`` of the same tree (no verification).
  Target: at least 0.9x the throughput of ``cp -r``.
* ``http://`` on loopback: staging from :class:`~skyops.staging.server.ArchiveServer` (basic
  auth, ``sendfile``, in its own process) against ``curl`` fetching the files one after
  another (one ``curl`` per file, as a shell loop would). Target: faster than sequential
  curl, by parallelism. Unpaced loopback has no latency to hide and is CPU-bound (copies +
  md5 on a shared 2-core machine), so a second case paces each transfer to ``--wan-mbps``,
  as one TCP stream to DESDM over a wide-area link would be; there parallel transfers pay.
* a rerun over a staged destination (everything "verified in place" from the xattr stamps).

Conditions: the page cache cannot be dropped here, so every source file is warm in memory
(it was just written): the figures measure CPU and memory bandwidth (copy + md5), not disk.
Each case runs ``--repeat`` times on a fresh destination; the median is reported. The
machine is shared, so expect noise. Results go to ``bench/results/staging.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.table import Table

from skyops.manifest import FILE_COLUMNS, Manifest
from skyops.staging import stage

RESULTS = Path(__file__).parent / "results" / "staging.json"
USER, PASSWORD = "bench", "bench-Pa55"


def make_files(root: Path, n: int, size: int) -> Manifest:
    """``n`` files of ``size`` random bytes in a DESDM-like layout, and their manifest."""
    rows = []
    for i in range(n):
        path = f"OPS/finalcut/Y6A1/r4000/D{5000 + i // 10:08d}/p01/red/immask"
        name = f"D{5000 + i // 10:08d}_g_c{i % 62 + 1:02d}_r4000p01_immasked.fits"
        data = os.urandom(size)
        f = root / path / (name + ".fz")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        rows.append((name, path, ".fz", hashlib.md5(data).hexdigest(), size, "red_immask"))
    return Manifest(columns=list(FILE_COLUMNS), rows=rows, query="bench_staging")


def timed(fn: Callable[[], object], repeat: int, reset: Callable[[], None]) -> list[float]:
    """Wall-clock seconds of ``fn`` over ``repeat`` runs, ``reset`` before each."""
    times = []
    for _ in range(repeat):
        reset()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def rmtree(*paths: Path) -> Callable[[], None]:
    def reset() -> None:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)
    return reset


@contextlib.contextmanager
def serve(root: Path, rate: float | None = None) -> Iterator[str]:
    """Run an :class:`ArchiveServer` in a separate process (so that it does not share the
    stager's GIL, as a real server would not); yields its URL."""
    cmd = [sys.executable, "-m", "skyops.staging.server", str(root), "--user", USER]
    if rate:
        cmd += ["--rate", str(rate)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "SKYOPS_ARCHIVE_SERVER_PASSWORD": PASSWORD})
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"archive server did not start (exit {proc.poll()})")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def curl_sequential(urls: list[tuple[str, Path]], netrc: Path) -> None:
    for url, out in urls:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["curl", "-sSf", "--netrc-file", str(netrc), "-o", str(out), url], check=True)


def md5_ceiling(threads: int, seconds: float = 1.0) -> float:
    """Bytes/s this machine hashes with md5 on ``threads`` threads, from memory: the upper
    bound of any md5-verified copy, whatever the disk or network."""
    block = os.urandom(1 << 20)
    done = [0] * threads

    def work(i: int) -> None:
        h = hashlib.md5(usedforsecurity=False)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(16):
                h.update(block)
            done[i] += 16 << 20

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_staging", description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--size-mb", type=float, default=32)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--wan-mbps", type=float, default=40, help="per-transfer pace of the WAN case, MB/s")
    ap.add_argument("--wan-files", type=int, default=16, help="files in the WAN case")
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: system temp)")
    args = ap.parse_args(argv)
    console = Console()
    size = int(args.size_mb * 1_000_000)
    total = args.files * size
    results: dict[str, dict] = {}

    with tempfile.TemporaryDirectory(prefix="bench_staging_", dir=args.tmp) as tmp_s:
        tmp = Path(tmp_s)
        archive, dest, cache = tmp / "archive", tmp / "dest", tmp / "cache"
        console.print(f"generating {args.files} x {size / 1e6:.0f} MB of random files in {tmp} ...")
        manifest = make_files(archive, args.files, size)
        netrc = tmp / "netrc"
        netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
        netrc.chmod(0o600)

        def record(name: str, times: list[float], nbytes: int = total) -> None:
            med = statistics.median(times)
            results[name] = {"seconds": times, "median_s": med, "bytes": nbytes, "mb_per_s": nbytes / med / 1e6}
            console.print(f"  {name:<28} {med:6.2f} s  {nbytes / med / 1e6:8.1f} MB/s")

        ceiling = statistics.median(md5_ceiling(args.workers) for _ in range(3))
        results["md5 ceiling"] = {"seconds": [total / ceiling], "median_s": total / ceiling,
                                  "mb_per_s": ceiling / 1e6}
        console.print(f"md5 alone, {args.workers} threads, from memory: {ceiling / 1e6:.0f} MB/s")
        console.print("file:// (warm page cache)")
        record("cp -r", timed(lambda: subprocess.run(["cp", "-r", str(archive), str(dest)], check=True),
                              args.repeat, rmtree(dest)))
        record("stage file:// no cache", timed(
            lambda: stage(manifest, dest, root=archive.as_uri(), cache=False, workers=args.workers),
            args.repeat, rmtree(dest)))
        record("stage file:// fresh cache", timed(
            lambda: stage(manifest, dest, root=archive.as_uri(), cache=cache, workers=args.workers),
            args.repeat, rmtree(dest, cache)))
        record("stage rerun (verified)", timed(
            lambda: stage(manifest, dest, root=archive.as_uri(), cache=cache, workers=args.workers),
            args.repeat, lambda: None))
        rmtree(dest, cache)()

        console.print("http:// loopback (ArchiveServer in its own process, basic auth, sendfile)")
        with serve(archive) as url:
            urls = [(url + Manifest.relpath(r), dest / Manifest.relpath(r)) for r in manifest.records()]
            record("curl sequential", timed(lambda: curl_sequential(urls, netrc), args.repeat, rmtree(dest)))
            record("stage http:// no cache", timed(
                lambda: stage(manifest, dest, root=url, cache=False, workers=args.workers, netrc=netrc),
                args.repeat, rmtree(dest)))
            record("stage http:// fresh cache", timed(
                lambda: stage(manifest, dest, root=url, cache=cache, workers=args.workers, netrc=netrc),
                args.repeat, rmtree(dest, cache)))
        rmtree(dest, cache)()

        wan = Manifest(columns=manifest.columns, rows=manifest.rows[:args.wan_files])
        wan_total = sum(r[4] for r in wan.rows)
        console.print(f"http:// paced to {args.wan_mbps:.0f} MB/s per transfer (a wide-area stream), "
                      f"{len(wan)} files")
        with serve(archive, rate=args.wan_mbps * 1e6) as url:
            urls = [(url + Manifest.relpath(r), dest / Manifest.relpath(r)) for r in wan.records()]
            record("curl sequential (WAN)", timed(lambda: curl_sequential(urls, netrc), args.repeat,
                                                  rmtree(dest)), wan_total)
            record("stage http:// (WAN)", timed(
                lambda: stage(wan, dest, root=url, cache=False, workers=args.workers, netrc=netrc),
                args.repeat, rmtree(dest)), wan_total)
        rmtree(dest, cache)()

    comparisons = [
        ("stage file:// no cache", "cp -r", 0.9),
        ("stage file:// fresh cache", "cp -r", 0.9),
        ("stage http:// no cache", "curl sequential", 1.0),
        ("stage http:// fresh cache", "curl sequential", 1.0),
        ("stage http:// (WAN)", "curl sequential (WAN)", 1.0),
        ("stage file:// no cache", "md5 ceiling", None),
        ("stage http:// no cache", "md5 ceiling", None),
    ]
    table = Table(title=f"staging {args.files} x {size / 1e6:.0f} MB ({total / 1e9:.2f} GB), "
                        f"{args.workers} workers, median of {args.repeat}, warm page cache")
    for col in ("case", "median s", "MB/s", "baseline", "ratio", "target", "met"):
        table.add_column(col, justify="left" if col in ("case", "baseline") else "right")
    ratios = {}
    for case, base, target in comparisons:
        ratio = results[case]["mb_per_s"] / results[base]["mb_per_s"]
        met = None if target is None else ratio >= target
        ratios[f"{case} / {base}"] = {"case": case, "baseline": base, "ratio": ratio, "target": target, "met": met}
        table.add_row(case, f"{results[case]['median_s']:.2f}", f"{results[case]['mb_per_s']:.0f}", base,
                      f"{ratio:.2f}x", f">= {target}x" if target else "", {True: "yes", False: "NO"}.get(met, ""))
    for name in ("cp -r", "curl sequential", "curl sequential (WAN)", "md5 ceiling", "stage rerun (verified)"):
        table.add_row(name, f"{results[name]['median_s']:.2f}", f"{results[name]['mb_per_s']:.0f}", "", "", "", "")
    console.print(table)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "staging", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "files": args.files, "file_bytes": size, "total_bytes": total, "workers": args.workers,
           "repeat": args.repeat, "conditions": "warm page cache (cannot drop caches here); shared machine",
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
           "results": results, "ratios": ratios}
    RESULTS.write_text(json.dumps(doc, indent=1))
    console.print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
