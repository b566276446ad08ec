"""The executor interface: run ``skyops step run`` somewhere and hand back result.json.

Every backend runs the same command (:meth:`StepSpec.command`) with the parameters
written to ``WORKDIR/params.json`` on the shared workspace, and reads
``WORKDIR/result.json`` when it ends. Backends differ only in where the process runs:
a local subprocess, a Kubernetes pod, an HTCondor job.
"""
from __future__ import annotations

import hashlib
import json
import logging
import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from skyops.config import Resources
from skyops.fileio import PART_SUFFIX, atomic_open
from skyops.steps.runner import PARAMS_FILE, StepResult

LogSink = Callable[[str], None]
log = logging.getLogger(__name__)


@dataclass
class StepSpec:
    """Everything an executor needs to run one step once."""

    step: str
    params: dict[str, Any]
    workdir: Path
    resources: Resources = field(default_factory=Resources)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def params_file(self) -> Path:
        return Path(self.workdir) / PARAMS_FILE

    def write_params(self) -> Path:
        """Write params.json into the workdir (atomically) and return its path."""
        Path(self.workdir).mkdir(parents=True, exist_ok=True)
        with atomic_open(self.params_file, "w") as f:
            json.dump(self.params, f, indent=1, sort_keys=True, default=str)
        return self.params_file

    def command(self, program: str = "skyops") -> list[str]:
        """The command line every backend runs."""
        return [program, "step", "run", self.step, "--params", str(self.params_file), "--workdir", str(self.workdir)]

    def config_digest(self) -> str:
        """A stable digest of step + parameters, recorded in provenance to spot config drift."""
        blob = json.dumps({"step": self.step, "params": self.params}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class ExecutionOutcome:
    """How the run ended: the process's return code and the parsed result (if any)."""

    returncode: int
    result: StepResult

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result.ok


def describe_returncode(rc: int) -> str:
    """``-9`` -> ``killed by signal 9 (SIGKILL)``; ``2`` -> ``exit status 2``."""
    if rc < 0:
        try:
            return f"killed by signal {-rc} ({signal.Signals(-rc).name})"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def remove_partials(workdir: Path) -> int:
    """Delete the temporary ``.*.part`` files a killed step left behind; returns how many."""
    n = 0
    for p in workdir.rglob(f".*{PART_SUFFIX}"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def outcome_from_workdir(spec: StepSpec, returncode: int, host: str = "") -> ExecutionOutcome:
    """Read result.json; when the step died before writing it, synthesise a failed result."""
    result = StepResult.load(spec.workdir)
    if result is None:
        removed = remove_partials(Path(spec.workdir))
        if removed:
            log.info("removed %d partial file(s) left by the dead step in %s", removed, spec.workdir)
    if result is None or (returncode != 0 and result.ok):
        result = StepResult(step=spec.step, status="failed", exit_code=returncode if returncode > 0 else 1,
                            params=spec.params, host=host,
                            error={"type": "StepDied",
                                   "message": f"step {spec.step} {describe_returncode(returncode)} "
                                              f"before writing result.json in {spec.workdir}"})
    return ExecutionOutcome(returncode, result)


class Executor(ABC):
    """A place to run steps."""

    name: str = "abstract"

    @abstractmethod
    def run(self, spec: StepSpec, log: LogSink | None = None) -> ExecutionOutcome:
        """Run the step to completion, streaming its log lines to ``log``."""

    def kill(self) -> None:  # pragma: no cover - backends override
        """Stop the step currently running (Airflow's on_kill)."""
