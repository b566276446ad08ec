"""The Kubernetes backend of ComputeOperator: the step's pod through KubernetesPodOperator.

The pod itself is built Airflow-free by :func:`skyops.executors.kubernetes.build_pod_request`;
this module hands its parts to the cncf.kubernetes provider's ``KubernetesPodOperator``
(:class:`StepPodOperator`) with:

* ``deferrable=True``: once the pod is created the task defers to the provider's
  ``KubernetesPodTrigger`` and frees its worker slot; the pod's log is written to the task
  log when the task resumes (``get_logs=True``);
* ``durable=True`` (Airflow 3.3): the provider persists the pod's name and namespace in the
  task's ``task_state_store`` right after creating it, and a retry of the task reads it back
  and reattaches to the pod while it still runs instead of starting a duplicate. A reattached
  pod may belong to an earlier try, so the workdir its result is read from is taken from the
  pod's own ``skyops/workdir`` annotation, not from the new try's default.

When the pod has finished, :func:`skyops.operators.remote_step.finish` reads ``result.json``
from the shared workspace and records provenance exactly as the local executor path does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import TaskDeferred

from skyops.config import KubernetesExecutorConfig, PlatformConfig
from skyops.executors.base import StepSpec
from skyops.executors.kubernetes import BASE_CONTAINER, WORKDIR_ANNOTATION, PodRequest, build_pod_request
from skyops.operators.remote_step import RESUME_METHOD, RemoteBackend, finish, spec_from_state, spec_state

if TYPE_CHECKING:
    from airflow.sdk import Context
    from kubernetes.client import models as k8s

    from skyops.operators.compute import ComputeOperator


def pod_operator_args(request: PodRequest, kube: KubernetesExecutorConfig) -> dict[str, Any]:
    """KubernetesPodOperator keyword arguments for ``request`` on the cluster of ``kube``."""
    return {
        "kubernetes_conn_id": kube.conn_id, "in_cluster": kube.in_cluster,
        "namespace": request.namespace, "name": request.name, "random_name_suffix": True,
        "image": request.image, "image_pull_policy": request.image_pull_policy,
        "cmds": list(request.cmds), "arguments": list(request.args),
        "env_vars": list(request.env), "container_resources": request.resources,
        "volumes": list(request.volumes), "volume_mounts": list(request.volume_mounts),
        "labels": dict(request.labels), "annotations": dict(request.annotations),
        "service_account_name": request.service_account, "node_selector": dict(request.node_selector) or None,
        "container_security_context": request.security_context, "security_context": request.pod_security_context,
        "base_container_name": BASE_CONTAINER, "termination_message_policy": "FallbackToLogsOnError",
        "deferrable": True, "durable": True, "get_logs": True, "logging_interval": None,
        "poll_interval": kube.poll_interval_seconds, "startup_timeout_seconds": kube.startup_timeout_seconds,
        "on_finish_action": kube.on_finish_action, "log_events_on_failure": True,
        # the failure message is the step's own (from result.json), not a dump of the remote pod
        "log_pod_spec_on_failure": False, "do_xcom_push": False,
    }


class StepPodOperator(KubernetesPodOperator):
    """A KubernetesPodOperator whose pod is the one skyops builds for a step.

    Usable on its own (``StepPodOperator(task_id=..., request=build_pod_request(spec, cfg),
    kube=cfg.executors.kubernetes)``), and used by ComputeOperator's ``kubernetes`` backend,
    which passes ``resume_method``/``resume_kwargs`` so that the provider's deferral resumes
    in ComputeOperator (where provenance is recorded) rather than in this operator.
    """

    def __init__(self, *, request: PodRequest, kube: KubernetesExecutorConfig, resume_method: str | None = None,
                 resume_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**{**pod_operator_args(request, kube), **kwargs})
        self.request = request
        self.resume_method = resume_method
        self.resume_kwargs = dict(resume_kwargs or {})
        #: the workdir of the pod actually running (a reattached pod may be an earlier try's)
        self.step_workdir: str | None = request.annotations.get(WORKDIR_ANNOTATION)

    def get_or_create_pod(self, pod_request_obj: "k8s.V1Pod", context: "Context") -> "k8s.V1Pod":
        pod = super().get_or_create_pod(pod_request_obj, context)
        workdir = ((pod.metadata.annotations or {}) if pod.metadata else {}).get(WORKDIR_ANNOTATION)
        if workdir and workdir != self.step_workdir:
            self.log.info("reattached to the running pod %s of an earlier try; its workdir is %s",
                          pod.metadata.name, workdir)
            self.step_workdir = workdir
        return pod

    def defer(self, *, trigger: Any, method_name: str, kwargs: dict[str, Any] | None = None,
              timeout: Any = None) -> NoReturn:
        if self.resume_method is None:
            super().defer(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)
        state = {**self.resume_kwargs, **(kwargs or {})}
        if self.step_workdir:
            state["workdir"] = self.step_workdir
        super().defer(trigger=trigger, method_name=self.resume_method, kwargs=state, timeout=timeout)


def container_exit(pod: "k8s.V1Pod | None", container: str = BASE_CONTAINER) -> tuple[int | None, str]:
    """The step container's exit code and termination reason (``OOMKilled``...), if it ended."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    for st in statuses:
        if st.name == container and st.state and st.state.terminated:
            return st.state.terminated.exit_code, st.state.terminated.reason or ""
    return None, ""


class KubernetesBackend(RemoteBackend):
    """ComputeOperator's ``kubernetes`` backend (see the module docstring)."""

    name = "kubernetes"

    def __init__(self, cfg: PlatformConfig) -> None:
        super().__init__(cfg)
        self._pod_op: StepPodOperator | None = None

    def pod_operator(self, op: "ComputeOperator", spec: StepSpec, state: dict[str, Any]) -> StepPodOperator:
        """The provider operator that creates, follows and cleans up the step's pod."""
        request = build_pod_request(spec, self.cfg)
        self._pod_op = StepPodOperator(task_id=op.task_id, request=request, kube=self.cfg.executors.kubernetes,
                                       resume_method=RESUME_METHOD, resume_kwargs=state,
                                       execution_timeout=op.execution_timeout)
        return self._pod_op

    def start(self, op: "ComputeOperator", context: "Context", spec: StepSpec,
              attempt_id: int | None) -> dict[str, Any]:
        spec.write_params()
        state = spec_state(spec, self.name, attempt_id)
        pod_op = self.pod_operator(op, spec, state)
        pod_op.name = pod_op._set_name(pod_op.name)
        # execute_async, not execute: this runs inside ComputeOperator's own execute, and the
        # provider's execute is guarded against nested calls. It creates the pod (or reattaches
        # through task_state_store) and defers -- or, for a pod that already ended, resumes at once.
        failure: Exception | None = None
        try:
            pod_op.execute_async(context)
        except TaskDeferred:
            raise
        except Exception as exc:
            failure = exc
        return self._collect(op, context, {**state, "workdir": pod_op.step_workdir or state["workdir"]}, pod_op,
                             failure=failure)

    def complete(self, op: "ComputeOperator", context: "Context", event: dict[str, Any],
                 state: dict[str, Any]) -> dict[str, Any]:
        spec = spec_from_state(state)
        pod_op = self.pod_operator(op, spec, state)
        failure: Exception | None = None
        try:
            pod_op.trigger_reentry(context, event)  # pod log -> task log; cleanup per on_finish_action
        except TaskDeferred:
            raise
        except Exception as exc:  # the provider's verdict; the step's own reason is in result.json
            failure = exc
        return self._collect(op, context, state, pod_op, failure=failure)

    def _collect(self, op: "ComputeOperator", context: "Context", state: dict[str, Any], pod_op: StepPodOperator,
                 failure: Exception | None = None) -> dict[str, Any]:
        spec = spec_from_state(state)
        code, reason = container_exit(pod_op.pod)
        if code is None:
            code = 1 if failure is not None else 0
        if failure is not None:
            op.log.warning("pod of step %s failed (%s): %s", spec.step, reason or f"exit code {code}", failure)
        elif reason and code:
            op.log.warning("pod of step %s ended %s (exit code %s)", spec.step, reason, code)
        host = pod_op.pod.metadata.name if pod_op.pod is not None and pod_op.pod.metadata else ""
        how = f"pod {host or '?'} ended {reason} (exit code {code})" if reason and code else None
        return finish(op, context, spec, executor=self.name, returncode=code, host=host,
                      attempt_id=state.get("attempt_id"), reason=how)

    def kill(self) -> None:
        if self._pod_op is not None:
            self._pod_op.on_kill()


__all__ = ["StepPodOperator", "KubernetesBackend", "pod_operator_args", "container_exit"]
