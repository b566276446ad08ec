"""CPU seconds by kind of process while a benchmark runs, sampled from /proc (Linux).

Where an orchestrator's overhead goes is mostly CPU taken from the steps by its daemons
(the api-server answering XCom reads and heartbeats, the scheduler's loop, the database), so
the benches sample every process once a second and sum ``utime + stime`` per kind. A process
that lives less than a second between samples is missed (its CPU is not counted anywhere), and
CPU spent before sampling started is not counted. Use::

    with ProcCpu() as cpu:
        ...
    cpu.totals  # {"api-server": 12.3, "step": 402.1, ...}
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

#: /proc/PID/stat flags bit of a kernel thread (include/linux/sched.h).
_PF_KTHREAD = 0x00200000
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


_KTHREAD_INSTANCE = re.compile(r"[/:].*$|\d+$")


def kernel_kind(comm: str) -> str:
    """A kernel thread's kind: its name without the instance (``kworker/u4:2`` -> ``kernel: kworker``)."""
    return f"kernel: {_KTHREAD_INSTANCE.sub('', comm) or comm}"


def kind(cmd: list[str], comm: str = "") -> str:
    """A process's kind from its command line (Airflow daemons, steps, tools, database).

    An exited process (a zombie until its parent reaps it) has no command line any more; it
    keeps the kind it was first seen with (see :class:`ProcCpu`), else it is named by ``comm``.
    """
    if not cmd:  # a process that exited and awaits its parent (a zombie): its command line is gone
        return f"other ({comm[:24]})"
    c = " ".join(cmd)
    exe = os.path.basename(cmd[0])
    for needle, name in (("api-server", "api-server"), ("api_server", "api-server"), ("scheduler", "scheduler"),
                         ("dag-processor", "dag-processor"), ("dag_processor", "dag-processor"),
                         ("triggerer", "triggerer"), ("skyops.cli.main step run", "step")):
        if needle in c:
            return name
    if exe.startswith("postgres") or "postgres:" in c:
        return "postgres"
    if exe in ("sex", "source-extractor", "psfex", "swarp", "SWarp", "scamp"):
        return "step (C tool)"
    if exe.startswith("airflow") or "-m airflow" in c:  # executor workers, task supervisors and task processes
        return "airflow task/supervisor"
    if "-m bench" in c:
        return "bench (this process, its pool workers)"
    return f"other ({exe[:24]})"


class ProcCpu:
    """Sum the CPU time of every process by :func:`kind` while the ``with`` block runs."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._seen: dict[tuple[str, str], list] = {}  # (pid, starttime) -> [kind, cpu_first, cpu_last, cmd]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.totals: dict[str, float] = {}

    def _sample(self, first: bool = False) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
                cmd = [a.decode(errors="replace") for a in Path(entry.path, "cmdline").read_bytes().split(b"\0") if a]
            except OSError:
                continue
            comm = stat[stat.find("(") + 1:stat.rfind(")")]
            fields = stat[stat.rfind(")") + 2:].split()
            kthread = int(fields[6]) & _PF_KTHREAD
            cpu = (int(fields[11]) + int(fields[12])) / _HZ
            key = (entry.name, fields[19])
            rec = self._seen.get(key)
            if rec is None:  # a process born since the last sample counts from zero
                name = kernel_kind(comm) if kthread else kind(cmd, comm)
                self._seen[key] = [name, cpu if first else 0.0, cpu, cmd]
            else:
                if cmd and rec[3] != cmd:  # a fork that exec'd since: classify by what it runs now
                    rec[0], rec[3] = kind(cmd, comm), cmd
                rec[2] = cpu  # (an exited process keeps its kind: its command line reads empty)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "ProcCpu":
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, name="proc-cpu", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()
        totals: dict[str, float] = {}
        for k, first, last, _ in self._seen.values():
            totals[k] = totals.get(k, 0.0) + max(0.0, last - first)
        self.totals = {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


#: /proc/vmstat counters that say whether a run was short of page cache: pages read from and
#: written to disk (KiB), pages the kernel scanned and reclaimed in the background (kswapd) and
#: in the writers' own time (direct reclaim), and the stalls direct reclaim caused.
VMSTAT_KEYS = ("pgpgin", "pgpgout", "pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct",
               "allocstall_normal", "allocstall_movable")


def vmstat() -> dict[str, int]:
    """The :data:`VMSTAT_KEYS` counters now (empty where /proc/vmstat is not there)."""
    try:
        lines = Path("/proc/vmstat").read_text().splitlines()
    except OSError:
        return {}
    values = dict(line.split() for line in lines if line.split()[0] in VMSTAT_KEYS)
    return {k: int(v) for k, v in values.items()}


def vmstat_delta(before: dict[str, int]) -> dict[str, int]:
    """The counters' growth since ``before`` (``pgpgin``/``pgpgout`` in KiB, the rest in pages or events)."""
    now = vmstat()
    return {k: now[k] - before.get(k, 0) for k in now}
