"""Run one step and write ``result.json``: the contract every executor relies on.

``skyops step run NAME --params FILE|k=v ... --workdir DIR`` is the same command in a
subprocess, a Kubernetes pod or an HTCondor job. It validates the parameters, runs the
step, and writes ``DIR/result.json`` (atomically) with the outputs (path, md5, size,
filetype), the inputs used, metrics, software versions including each external tool's
own version string, host, wall and CPU time and peak RSS. Exit status: 0 success,
2 bad input, 1 failure; the reason is in ``result.json`` too, so a caller that cannot
see the process (a pod, a Condor job) still learns why.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from skyops.errors import InputError, SkyopsError, StepParameterError
from skyops.fileio import atomic_open
from skyops.secrets import redact_text
from skyops.steps.context import FileEntry, StepContext
from skyops.steps.registry import get_step
from skyops.versions import core_versions

RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """The parsed ``result.json`` of one step run."""

    step: str
    status: str  # "success" | "failed"
    exit_code: int
    params: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    used: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    host: str = ""
    pid: int = 0
    started: str = ""
    finished: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    error: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def output_paths(self, filetype: str | None = None) -> list[str]:
        return [o["path"] for o in self.outputs if filetype is None or o.get("filetype") == filetype]

    @classmethod
    def load(cls, workdir: str | os.PathLike[str]) -> "StepResult | None":
        """Read ``workdir/result.json``; None when the step never wrote one (killed)."""
        p = Path(workdir) / RESULT_FILE
        if not p.is_file():
            return None
        data = json.loads(p.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def write(self, workdir: Path) -> Path:
        path = Path(workdir) / RESULT_FILE
        with atomic_open(path, "w") as f:
            json.dump(asdict(self), f, indent=1, default=str)
        return path


def parse_param_args(items: list[str]) -> dict[str, Any]:
    """Parameters from ``--params`` values: files (JSON/YAML) and ``key=value`` pairs.

    A value is read as JSON when it parses (``n=3`` is an int, ``ccds=[1,3]`` a list,
    ``flag=true`` a bool) and as a string otherwise (``band=i``). Later items override.
    """
    params: dict[str, Any] = {}
    for item in items:
        if "=" in item and not Path(item).is_file():
            key, _, raw = item.partition("=")
            if not key.isidentifier():
                raise StepParameterError(f"--params {item!r}: '{key}' is not a valid parameter name")
            try:
                params[key] = json.loads(raw)
            except json.JSONDecodeError:
                params[key] = raw
            continue
        p = Path(item)
        if not p.is_file():
            raise StepParameterError(f"--params {item!r}: neither a file nor key=value")
        try:
            data = yaml.safe_load(p.read_text())  # JSON is YAML
        except yaml.YAMLError as exc:
            raise StepParameterError(f"{p}: not valid JSON/YAML ({exc})") from None
        if not isinstance(data, dict):
            raise StepParameterError(f"{p}: expected a mapping of parameter names to values")
        params.update(data)
    return params


def _rusage() -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of this process and its finished children (tools)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return cpu, max(me.ru_maxrss, kids.ru_maxrss) / 1024.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def run_step(name: str, params: dict[str, Any], workdir: str | os.PathLike[str]) -> StepResult:
    """Run step ``name`` in ``workdir`` and write ``result.json``; never raises for step errors.

    Bad input (unknown step, bad parameters, InputError from the step) gives exit code 2;
    any other exception exit code 1. Either way the result is written and returned.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    t0, (cpu0, _) = time.perf_counter(), _rusage()
    result = StepResult(step=name, status="failed", exit_code=1, params=params, host=socket.gethostname(),
                        pid=os.getpid(), started=_now(), versions=core_versions())
    ctx: StepContext | None = None
    try:
        sdef = get_step(name)
        clean = sdef.validate(params)
        result.params = clean
        ctx = StepContext(step=name, workdir=workdir, params=clean, log=logging.getLogger(f"skyops.step.{name}"))
        log.info("step %s starting in %s", name, workdir)
        ret = sdef.func(ctx, **clean)
        if isinstance(ret, dict):
            ctx.metrics.update(ret)
        missing = [ft for ft in sdef.outputs if all(o.filetype != ft for o in ctx.outputs)]
        if missing:
            raise SkyopsError(f"step '{name}' finished without producing its declared outputs: {', '.join(missing)}")
        result.status, result.exit_code = "success", 0
    except InputError as exc:
        result.exit_code = 2
        result.error = {"type": type(exc).__name__, "message": redact_text(str(exc))}
        log.error("%s", result.error["message"])
    except Exception as exc:  # noqa: BLE001 - every failure must reach result.json
        result.exit_code = 1
        result.error = {"type": type(exc).__name__, "message": redact_text(str(exc)),
                        "traceback": redact_text(traceback.format_exc(limit=20))}
        log.error("step %s failed: %s: %s", name, type(exc).__name__, result.error["message"])
    if ctx is not None:
        result.outputs = [asdict(o) for o in ctx.outputs]
        result.used = [asdict(u) for u in ctx.used]
        result.metrics = ctx.metrics
        result.versions.update(ctx.tool_versions)
    cpu1, rss = _rusage()
    result.finished, result.wall_s = _now(), round(time.perf_counter() - t0, 4)
    result.cpu_s, result.peak_rss_mb = round(cpu1 - cpu0, 4), round(rss, 1)
    result.write(workdir)
    log.info("step %s %s in %.2f s (cpu %.2f s, peak rss %.0f MiB)", name, result.status,
             result.wall_s, result.cpu_s, result.peak_rss_mb)
    return result


__all__ = ["FileEntry", "StepResult", "run_step", "parse_param_args", "RESULT_FILE", "PARAMS_FILE"]
