"""The local executor: ``skyops step run`` as a subprocess of the Airflow worker.

The step's process starts only once its declared cores are free on this host
(:mod:`skyops.executors.core_slots`), so Airflow may run more task slots than there are
cores without the steps time-sharing them.

The child runs in its own session so that killing the task (Airflow's on_kill, a
SIGTERM to the worker) takes the whole process group, tools included. Its stdout and
stderr are streamed line by line into the caller's log and into ``WORKDIR/step.log``.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from skyops.executors.base import ExecutionOutcome, Executor, LogSink, StepSpec, outcome_from_workdir
from skyops.executors.core_slots import CoreSlots

STEP_LOG = "step.log"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, python: str | None = None, slots: CoreSlots | None = None) -> None:
        """:param slots: the host's core slots to hold while a step runs; None: no limit."""
        self.python = python or sys.executable
        self.slots = slots
        self._proc: subprocess.Popen[str] | None = None

    def argv(self, spec: StepSpec) -> list[str]:
        # `python -m skyops.cli.main` rather than the console script: same interpreter, no PATH games.
        return [self.python, "-m", "skyops.cli.main"] + spec.command()[1:]

    def run(self, spec: StepSpec, log: LogSink | None = None) -> ExecutionOutcome:
        spec.write_params()
        # Numerical libraries size their thread pools from the step's declared CPUs, not from
        # the machine: N concurrent one-core steps must not each start N BLAS threads.
        threads = str(max(1, int(spec.resources.cpu)))
        env = {**os.environ, **{v: threads for v in THREAD_VARS}, **spec.env, "PYTHONUNBUFFERED": "1"}
        log_path = Path(spec.workdir) / STEP_LOG
        with self._cores(spec, log), open(log_path, "a") as logf:
            self._proc = subprocess.Popen(
                self.argv(spec), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env=env, cwd=spec.workdir, start_new_session=True, bufsize=1,
            )
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                logf.write(line)
                if log:
                    log(line.rstrip("\n"))
            rc = self._proc.wait()
        self._proc = None
        return outcome_from_workdir(spec, rc, socket.gethostname())

    def _cores(self, spec: StepSpec, log: LogSink | None) -> contextlib.AbstractContextManager[object]:
        if self.slots is None:
            return contextlib.nullcontext()
        return self.slots.hold(spec.resources.cpu, log)

    def kill(self) -> None:
        proc = self._proc
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
