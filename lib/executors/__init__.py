"""Executors: where a step runs. See :mod:`skyops.executors.base` for the contract."""
from __future__ import annotations

from skyops.config import PlatformConfig
from skyops.errors import ExecutorError
from skyops.executors.base import ExecutionOutcome, Executor, StepSpec, describe_returncode
from skyops.executors.local import LocalExecutor


def get_executor(name: str, cfg: PlatformConfig | None = None) -> Executor:
    """The executor backend called ``name`` (``local`` now; kubernetes/htcondor plug in here)."""
    if name == "local":
        return LocalExecutor(python=cfg.executors.local.python if cfg else None)
    raise ExecutorError(
        f"executor {name!r} has no in-process backend; the Airflow operator runs it "
        f"(kubernetes: KubernetesPodOperator, htcondor: the Condor trigger). Expected 'local' here."
    )


__all__ = ["Executor", "ExecutionOutcome", "StepSpec", "LocalExecutor", "get_executor", "describe_returncode"]
