"""ComputeOperator: run one skyops step through the configured executor.

Thin by design: it turns the Airflow context into a :class:`~skyops.provenance.TaskKey`
and a :class:`~skyops.executors.StepSpec`, and hands both to
:func:`skyops.launch.run_recorded`, which runs the step and records the task, the files
it generated and used, and their derivation edges. What goes to XCom is small: the
workdir, the output paths by filetype and scalar metrics. Each output filetype is also
pushed under its own XCom key, so a downstream task can say
``step_params={"image": make.output["selftest_image"]}``.

A fan-in step whose parameters are other tasks' outputs (a calibration over every CCD's
catalogue) can gather them itself with ``step_params_from=callable(context)``, run where the
task runs, instead of a separate collecting task: one task start fewer on the critical path.

Mapped use: ``ComputeOperator.partial(task_id="se", step="gw.se_ccd").expand(step_params=[...])``
with ``map_index_template="{{ task.step_params['ccd'] }}"`` shows the CCD in the UI.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from skyops.config import platform_config
from skyops.steps.groups import check_step_group

if TYPE_CHECKING:
    from skyops.provenance import TaskKey

# Executors, provenance and the step registry are imported where a task runs, not here: every
# DAG file imports this module, and the DAG processor parses each file every 30 s.

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_segment(text: str) -> str:
    """A path segment from a run id or unit name (``manual__2026-11-20T23:00`` -> safe)."""
    return _UNSAFE.sub("_", text).strip("._") or "_"


def task_key(context: Context) -> "TaskKey":
    """The provenance key of the running task try."""
    ti = context["ti"]
    map_index = ti.map_index if ti.map_index is not None else -1
    from skyops.provenance import TaskKey

    return TaskKey(ti.dag_id, ti.run_id, ti.task_id, int(map_index), int(ti.try_number or 1))


class ComputeOperator(BaseOperator):
    """Run the skyops step ``step`` with ``step_params`` and record its provenance.

    :param step: dotted step name (``gw.se_ccd``); validated when the DAG is parsed.
    :param step_params: the step's keyword parameters (templated; may hold XComArgs).
    :param backend: where the step runs: ``local`` (default from the platform config), ``kubernetes``
        or ``htcondor`` (named so because ``executor`` is Airflow's own operator argument).
    :param unit: the provenance unit (tile, night, field) of this run; templated.
    :param resources: overrides of the step's declared cpu/memory_mb/scratch_mb.
    :param workdir: where the step writes; default a per-try folder under the workspace.
    :param destination: ``scratch`` (default) or ``persistent`` workspace for the default workdir.
    :param step_params_from: ``callable(context) -> dict | None`` that builds the step's parameters
        when the task runs (a fan-in: read the upstream tasks' XComs); None skips the task, as a
        None ``step_params`` does. The built parameters are pushed as XCom ``step_params``.
    :param push_outputs: push each output filetype under its own XCom key (default). A task whose
        readers use the return value's ``outputs`` (one read per task instead of one per
        filetype) turns this off: each key is one more call to the API server.

    If ``step_params`` renders to None the task is skipped, visibly, with the reason.
    """

    template_fields: Sequence[str] = ("step_params", "unit", "workdir", "destination")
    template_fields_renderers = {"step_params": "json"}
    ui_color = "#d6e9f8"

    def __init__(self, *, step: str, step_params: Any = None, backend: str | None = None,
                 unit: str = "{{ run_id }}", resources: dict[str, Any] | None = None,
                 workdir: str | None = None, campaign: str | None = None, destination: str = "scratch",
                 step_params_from: Callable[[Context], dict[str, Any] | None] | None = None,
                 push_outputs: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_step_group(step)  # cheap at parse time; the full lookup runs on the worker
        self.step = step
        self.step_params = {} if step_params is None else step_params
        self.backend = backend
        self.unit = unit
        self.step_resources = resources
        self.workdir = workdir
        self.campaign = campaign
        self.destination = destination
        self.step_params_from = step_params_from
        self.push_outputs = push_outputs
        self._backend = None

    def _workdir(self, key: "TaskKey") -> Path:
        if self.workdir:
            return Path(self.workdir)
        ws = platform_config().workspace
        root = ws.persistent if self.destination == "persistent" else ws.scratch
        base = Path(root) / safe_segment(key.dag_id) / safe_segment(key.run_id)
        leaf = key.task_id if key.map_index < 0 else f"{key.task_id}/{key.map_index}"
        return base / leaf / f"try{key.try_number}"

    def execute(self, context: Context) -> dict[str, Any]:
        if self.step_params_from is not None:
            self.step_params = self.step_params_from(context)
            if self.step_params is not None:
                context["ti"].xcom_push(key="step_params", value=self.step_params)
        if self.step_params is None:
            # A planning task decided there is nothing to do here (a CCD not selected with -c):
            # say so visibly in the UI instead of failing or silently succeeding.
            raise AirflowSkipException(f"{self.task_id}: no parameters from upstream, nothing to run for {self.step}")
        from skyops.config import Resources
        from skyops.executors import StepSpec, get_executor
        from skyops.launch import StepFailed, run_recorded
        from skyops.provenance import ProvenanceStore
        from skyops.steps.declared import declared_resources

        cfg = platform_config()
        key = task_key(context)
        store = ProvenanceStore.from_config(cfg)
        attempt_id = store.attempt(self.campaign or key.dag_id, key.run_id, str(self.unit))
        # The step's declared resources with the campaign's overrides, validated (cpu > 0, ...).
        # Read from the step module's source: importing its science here would cost this task
        # process seconds that the step's own process pays again (skyops.steps.declared).
        declared = declared_resources(self.step)
        if declared is None:
            from skyops.steps.registry import get_step

            declared = get_step(self.step).resources
        res = Resources.model_validate({**declared.model_dump(), **(self.step_resources or {})})
        spec = StepSpec(self.step, dict(self.step_params), self._workdir(key), res,
                        labels={"campaign": key.dag_id, "unit": str(self.unit), "step": self.step,
                                "map_index": str(key.map_index)})
        # ---- remote backends (issue 7): kubernetes pod / HTCondor job, deferrable; see operators/remote_step.py
        if (self.backend or cfg.executors.default) != "local":
            from skyops.operators.remote_step import remote_backend

            self._backend = remote_backend(self.backend or cfg.executors.default, cfg)
            return self._backend.start(self, context, spec, attempt_id)  # defers; resumes below
        # ---- end remote backends
        self._backend = get_executor(self.backend or cfg.executors.default, cfg)
        self.log.info("running step %s on %s executor in %s", self.step, self._backend.name, spec.workdir)
        try:
            rec = run_recorded(spec, self._backend, store, key, attempt_id=attempt_id, log_sink=self.log.info)
        except StepFailed as exc:
            # Outputs a failed step did complete (a health check's verdict) stay reachable
            # downstream; the step's own, credential-free message is the failure reason.
            self._push_outputs(context, exc.outcome.result.outputs, push=self.push_outputs)
            raise RuntimeError(str(exc)) from None
        result = rec.outcome.result
        outputs = self._push_outputs(context, result.outputs, push=self.push_outputs)
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
        return {"workdir": str(spec.workdir), "outputs": outputs, "metrics": metrics, "prov_task_id": rec.task_id}

    # ---- remote backends (issue 7): where a deferred pod / Condor job resumes (TaskDeferred method_name)
    def execute_remote_complete(self, context: Context, event: dict[str, Any], **state: Any) -> dict[str, Any]:
        from skyops.operators.remote_step import remote_backend

        self._backend = remote_backend(state["backend"])
        return self._backend.complete(self, context, event, state)
    # ---- end remote backends

    @staticmethod
    def _push_outputs(context: Context, files: list[dict[str, Any]], push: bool = True) -> dict[str, Any]:
        """Output paths by filetype (one path, or a list), each pushed under its own XCom key if ``push``."""
        outputs: dict[str, list[str]] = {}
        for o in files:
            outputs.setdefault(o.get("filetype") or "file", []).append(o["path"])
        flat = {ft: paths[0] if len(paths) == 1 else paths for ft, paths in outputs.items()}
        for ft, value in flat.items() if push else ():
            context["ti"].xcom_push(key=ft, value=value)
        return flat

    def on_kill(self) -> None:
        if self._backend is not None:
            self._backend.kill()
