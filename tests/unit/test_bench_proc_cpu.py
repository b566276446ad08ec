"""bench.proc_cpu: a step's CPU stays a step's after it exits (its command line reads empty then).

An exited process that its parent has not reaped yet (a zombie) has an empty
``/proc/PID/cmdline``; it used to be counted as a kernel thread, with all its CPU.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.proc_cpu import ProcCpu, kind

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"


def test_an_exited_step_keeps_its_kind_and_its_cpu():
    with ProcCpu(interval=0.1) as cpu:
        child = subprocess.Popen([sys.executable, "-c", BUSY, "skyops.cli.main step run"])
        deadline = time.monotonic() + 30
        while b"skyops.cli.main" not in Path(f"/proc/{child.pid}/cmdline").read_bytes() \
                and time.monotonic() < deadline:
            time.sleep(0.01)  # until it has exec'd
        cpu._sample()  # seen alive, running the step, whatever the sampler thread's timing
        while Path(f"/proc/{child.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)  # until it has exited: a zombie, unreaped, with an empty command line
        cpu._sample()  # sampled (at least) twice as a zombie, whatever the sampler thread's timing
        cpu._sample()
        child.wait()
    # the child's own record (other workers' steps and the kernel's threads share the totals)
    mine = [rec for (pid, _), rec in cpu._seen.items() if pid == str(child.pid)]
    assert len(mine) == 1, mine
    name, first, last, _ = mine[0]
    assert name == "step" and last - first >= 0.5, mine
    assert cpu.totals.get("step", 0) >= 0.5, cpu.totals


def test_kinds_from_command_lines():
    assert kind(["/venv/bin/python", "-m", "skyops.cli.main", "step", "run", "gw.se_ccd"]) == "step"
    assert kind(["sex", "img.fits"]) == "step (C tool)"
    assert kind(["/venv/bin/airflow", "scheduler"]) == "scheduler"
    assert kind([], "python") == "other (python)"
