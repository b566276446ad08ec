"""The environment a step gets when it runs away from the Airflow worker (a pod, a Condor job).

Both remote backends write the environment into an object other people can read: the pod
spec (stored by the API server, printed by ``kubectl get pod -o yaml``) and the job ClassAd
(printed by ``condor_q -l`` for anyone on the pool). So only plain, non-secret values go in:
thread counts sized from the step's CPUs, where skyops' home and archive are. A value that
looks like a credential is refused with a message saying where it should come from instead.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from skyops.config import PlatformConfig, skyops_home
from skyops.errors import ExecutorError
from skyops.executors.base import StepSpec
from skyops.executors.local import THREAD_VARS

_SECRET_NAME = re.compile(r"(?i)(passw|secret|token|credential|apikey|api_key)")


def looks_like_credential(name: str, value: str) -> bool:
    """True for ``*PASSWORD*``/``*TOKEN*``-style names and URLs carrying a password."""
    if _SECRET_NAME.search(name):
        return True
    try:
        return urlsplit(value).password is not None
    except ValueError:
        return False


def check_plain(env: dict[str, str], where: str, hint: str) -> dict[str, str]:
    """Return ``env`` unchanged, or raise ExecutorError naming the first credential-like variable."""
    for name, value in env.items():
        if looks_like_credential(name, str(value)):
            raise ExecutorError(f"{where}: environment variable {name} looks like a credential and would be "
                                f"written in clear into an object others can read; {hint}")
    return env


def base_environment(spec: StepSpec, cfg: PlatformConfig) -> dict[str, str]:
    """The plain variables every remote step gets, then the spec's own (``spec.env``).

    Numerical libraries size their thread pools from the step's declared CPUs (as the local
    executor does); ``SKYOPS_HOME`` and ``SKYOPS_ARCHIVE_ROOT`` make the job's config resolve
    to the same workspace and archive paths as the worker's.
    """
    threads = str(max(1, int(spec.resources.cpu)))
    env = {v: threads for v in THREAD_VARS}
    env.update({"PYTHONUNBUFFERED": "1", "SKYOPS_HOME": str(skyops_home()), "SKYOPS_ARCHIVE_ROOT": cfg.archive.root})
    env.update({k: str(v) for k, v in spec.env.items()})
    return env


__all__ = ["base_environment", "check_plain", "looks_like_credential"]
