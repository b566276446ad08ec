"""Executors: where a step runs. See :mod:`skyops.executors.base` for the contract."""
from __future__ import annotations

from skyops.config import PlatformConfig
from skyops.errors import ExecutorError
from skyops.executors.base import ExecutionOutcome, Executor, StepSpec, describe_returncode
from skyops.executors.core_slots import CoreSlots, available_cores
from skyops.executors.local import LocalExecutor


def get_executor(name: str, cfg: PlatformConfig | None = None) -> Executor:
    """The executor backend called ``name`` (``local`` now; kubernetes/htcondor plug in here)."""
    if name == "local":
        if cfg is None:
            return LocalExecutor()
        local = cfg.executors.local
        slots = None if local.cores == 0 else CoreSlots(local.cores or available_cores(), local.slot_dir)
        return LocalExecutor(python=local.python, slots=slots)
    raise ExecutorError(
        f"executor {name!r} has no in-process backend; the Airflow operator runs it "
        f"(kubernetes: KubernetesPodOperator, htcondor: the Condor trigger). Expected 'local' here."
    )


__all__ = ["Executor", "ExecutionOutcome", "StepSpec", "LocalExecutor", "CoreSlots", "get_executor", "describe_returncode"]
