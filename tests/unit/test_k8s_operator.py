"""ComputeOperator's kubernetes backend through the provider's KubernetesPodOperator, no cluster.

As the provider's own tests do, only the Kubernetes API boundary is replaced (a fake cluster
behind ``KubernetesHook`` and ``PodManager``); everything above it is the provider's real code:
building the pod request, persisting the pod identity in ``task_state_store`` (durable),
deferring to ``KubernetesPodTrigger``, re-entry, log reading and cleanup. The step itself
runs for real (``run_step``), as it would in the pod, so provenance is recorded from a
genuine ``result.json``.
"""
from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger
from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager
from airflow.sdk.exceptions import TaskDeferred
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from skyops.config import PlatformConfig, platform_config
from skyops.executors.base import StepSpec
from skyops.executors.kubernetes import WORKDIR_ANNOTATION, build_pod_request
from skyops.operators.compute import ComputeOperator
from skyops.operators.kubernetes import StepPodOperator, pod_operator_args
from skyops.operators.remote_step import RESUME_METHOD
from skyops.provenance import ProvenanceStore
from skyops.steps.runner import run_step

SECRET = "Pr0v-S3cret!"


class FakeStateStore:
    """The task_state_store accessor's interface (get/set/delete), kept in a dict."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self.data.get(key, default))

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        assert value is not None
        json.dumps(value)  # the store only takes JSON values
        self.data[key] = copy.deepcopy(value)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class FakeTI:
    def __init__(self, try_number: int = 1, map_index: int = 7) -> None:
        self.dag_id, self.run_id, self.task_id = "k8s_demo", "manual__2026-11-20T23:00:00+00:00", "make"
        self.map_index, self.try_number = map_index, try_number
        self.start_date = datetime.now(timezone.utc)
        self.xcom: dict[str, Any] = {}
        self.stats_tags: dict[str, str] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def context(store: FakeStateStore, ti: FakeTI) -> dict[str, Any]:
    return {"ti": ti, "run_id": ti.run_id, "dag": SimpleNamespace(), "task_state_store": store}


class FakeCluster:
    """Pods by (namespace, name); what the Kubernetes API would hold."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], k8s.V1Pod] = {}
        self.created: list[k8s.V1Pod] = []
        self.deleted: list[str] = []
        self.log_lines = [b"step gw: started\n", b"step gw: wrote outputs\n"]

    def create(self, pod: k8s.V1Pod) -> k8s.V1Pod:
        body = ApiClient().sanitize_for_serialization(pod)
        assert SECRET not in json.dumps(body)  # what the API server would store
        stored = copy.deepcopy(pod)
        stored.status = k8s.V1PodStatus(phase="Pending")
        self.pods[(pod.metadata.namespace, pod.metadata.name)] = stored
        self.created.append(pod)
        return pod

    def finish(self, pod_name: str, exit_code: int) -> None:
        (pod,) = [p for (_, n), p in self.pods.items() if n == pod_name]
        pod.status = k8s.V1PodStatus(
            phase="Succeeded" if exit_code == 0 else "Failed",
            container_statuses=[k8s.V1ContainerStatus(
                name="base", image="x", image_id="", ready=False, restart_count=0,
                state=k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(
                    exit_code=exit_code, reason="Completed" if exit_code == 0 else "Error")))])

    def running(self, pod: k8s.V1Pod) -> k8s.V1Pod:
        pod = copy.deepcopy(pod)
        pod.status = k8s.V1PodStatus(phase="Running", container_statuses=[k8s.V1ContainerStatus(
            name="base", image="x", image_id="", ready=True, restart_count=0,
            state=k8s.V1ContainerState(running=k8s.V1ContainerStateRunning()))])
        self.pods[(pod.metadata.namespace, pod.metadata.name)] = pod
        return pod

    # the CoreV1Api calls the provider makes
    def get_pod(self, name: str, namespace: str) -> k8s.V1Pod:
        return copy.deepcopy(self.pods[(namespace, name)])

    def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> k8s.V1Pod:
        return self.get_pod(name, namespace)

    def list_namespaced_pod(self, namespace: str, label_selector: str = "", **_: Any) -> Any:
        return SimpleNamespace(items=[])

    def read_namespaced_pod_log(self, **_: Any) -> list[bytes]:
        return list(self.log_lines)

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> None:
        self.deleted.append(name)

    def patch_namespaced_pod(self, name: str, namespace: str, body: dict, **_: Any) -> None:
        self.pods[(namespace, name)].metadata.labels.update(body["metadata"]["labels"])

    def list_namespaced_event(self, **_: Any) -> Any:
        return SimpleNamespace(items=[])


@pytest.fixture()
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster()
    monkeypatch.setattr(KubernetesHook, "core_v1_client", property(lambda self: fake))
    monkeypatch.setattr(KubernetesHook, "is_in_cluster", property(lambda self: False))
    monkeypatch.setattr(KubernetesHook, "get_pod", lambda self, name, namespace: fake.get_pod(name, namespace))
    monkeypatch.setattr(PodManager, "create_pod", lambda self, pod: fake.create(pod))
    monkeypatch.setattr(PodManager, "await_pod_completion",
                        lambda self, pod, *a, **k: fake.get_pod(pod.metadata.name, pod.metadata.namespace))
    return fake


@pytest.fixture()
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skyops_home: Path) -> PlatformConfig:
    """A platform config whose kubernetes section needs no Airflow connection."""
    cfg_file = tmp_path / "skyops.yaml"
    cfg_file.write_text(
        "executors:\n  kubernetes: {conn_id: null, image: 'skyops-compute:test', namespace: survey}\n")
    monkeypatch.setenv("SKYOPS_CONFIG", str(cfg_file))
    monkeypatch.setenv("SKYOPS_PROVENANCE_PASSWORD_CANARY", SECRET)  # in the worker env only
    cfg = platform_config()
    ProvenanceStore.from_config(cfg).migrate()
    return cfg


def test_operator_args_are_deferrable_durable_and_log_the_pod(site: PlatformConfig) -> None:
    spec = StepSpec("gw.se_ccd", {}, Path(site.workspace.scratch) / "w", labels={"map_index": "3"})
    req = build_pod_request(spec, site)
    args = pod_operator_args(req, site.executors.kubernetes)
    assert args["deferrable"] is True and args["durable"] is True and args["get_logs"] is True
    assert args["logging_interval"] is None and args["do_xcom_push"] is False
    op = StepPodOperator(task_id="se", request=req, kube=site.executors.kubernetes)
    # the provider's own reading of them (3.3: durable replaces reattach_on_restart)
    assert op.deferrable and op.durable and op.reattach_on_restart and op.get_logs
    assert op.base_container_name == "base" and op.on_finish_action.value == "delete_succeeded_pod"
    assert (op.namespace, op.image, op.cmds) == ("survey", "skyops-compute:test", ["skyops"])
    assert op.arguments == spec.command()[1:]
    assert op.container_resources.limits == {"cpu": "1", "memory": "1024Mi", "ephemeral-storage": "1024Mi"}
    assert op.labels["skyops/map-index"] == "3" and op.kubernetes_conn_id is None


def test_provider_builds_the_same_container_as_skyops(site: PlatformConfig, cluster: FakeCluster) -> None:
    spec = StepSpec("gw.se_ccd", {}, Path(site.workspace.scratch) / "w",
                    labels={"campaign": "k8s_demo", "unit": "u1", "step": "gw.se_ccd", "map_index": "7"})
    req = build_pod_request(spec, site)
    op = StepPodOperator(task_id="make", request=req, kube=site.executors.kubernetes)
    pod = op.build_pod_request_obj(context(FakeStateStore(), FakeTI()), dry_run=True)
    client = ApiClient()
    built = client.sanitize_for_serialization(pod)["spec"]["containers"][0]
    ours = client.sanitize_for_serialization(req.container())
    for field in ("name", "image", "command", "args", "env", "resources", "volumeMounts", "securityContext"):
        assert built[field] == ours[field], field
    # skyops' labels plus the provider's task-instance labels (used for reattach by label search)
    assert pod.metadata.labels["skyops/campaign"] == "k8s_demo"
    assert (pod.metadata.labels["dag_id"], pod.metadata.labels["map_index"]) == ("k8s_demo", "7")
    assert pod.metadata.annotations[WORKDIR_ANNOTATION] == str(spec.workdir)


def test_execute_defers_then_records_the_step_in_provenance(site: PlatformConfig, cluster: FakeCluster) -> None:
    store, ti = FakeStateStore(), FakeTI()
    op = ComputeOperator(task_id="make", step="selftest.make_image", backend="kubernetes",
                         step_params={"size": 48, "nstars": 4, "seed": 3}, unit="u1")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context(store, ti))
    d = deferred.value
    assert d.method_name == RESUME_METHOD == "execute_remote_complete"
    assert isinstance(d.trigger, KubernetesPodTrigger)
    (created,) = cluster.created
    assert (d.trigger.pod_name, d.trigger.pod_namespace) == (created.metadata.name, "survey")
    # durable: the provider persisted the pod's identity for a later try
    assert store.data["pod_identifier"] == {"name": created.metadata.name, "namespace": "survey"}
    kw = d.kwargs
    assert kw["backend"] == "kubernetes" and kw["step"] == "selftest.make_image"
    workdir = Path(kw["workdir"])
    assert workdir.name == "try1" and (workdir / "params.json").is_file()
    assert json.loads((workdir / "params.json").read_text()) == {"size": 48, "nstars": 4, "seed": 3}
    assert SECRET not in json.dumps(kw) and "params" not in kw
    # ... the pod runs `skyops step run` (here: the same runner, in-process) ...
    assert created.spec.containers[0].args == ["step", "run", "selftest.make_image", "--params",
                                               str(workdir / "params.json"), "--workdir", str(workdir)]
    assert run_step("selftest.make_image", {"size": 48, "nstars": 4, "seed": 3}, workdir).ok
    cluster.finish(created.metadata.name, 0)
    # ... and the trigger fires; Airflow resumes the task in ComputeOperator
    event = {"status": "success", "name": created.metadata.name, "namespace": "survey", "message": "done"}
    resumed = ComputeOperator(task_id="make", step="selftest.make_image", backend="kubernetes", unit="u1")
    out = resumed.execute_remote_complete(context(store, ti), event=event, **kw)
    assert out["workdir"] == str(workdir)
    assert Path(out["outputs"]["selftest_image"]).is_file() and ti.xcom["selftest_image"] == out["outputs"]["selftest_image"]
    assert cluster.deleted == [created.metadata.name]  # delete_succeeded_pod
    with ProvenanceStore.from_config(site).engine.connect() as c:
        row = c.execute(sa.text("SELECT name, status, executor, exit_status, host FROM task WHERE id = :i"),
                        {"i": out["prov_task_id"]}).one()
        n_files = c.execute(sa.text("SELECT count(*) FROM desfile WHERE wgb_task_id = :i"),
                            {"i": out["prov_task_id"]}).scalar()
    assert tuple(row[:4]) == ("selftest.make_image", "success", "kubernetes", 0)
    assert n_files == 2


def test_failed_pod_records_the_step_reason(site: PlatformConfig, cluster: FakeCluster) -> None:
    store, ti = FakeStateStore(), FakeTI(map_index=8)
    op = ComputeOperator(task_id="make", step="selftest.make_image", backend="kubernetes",
                         step_params={"size": -5}, unit="u1")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context(store, ti))
    kw, (created,) = deferred.value.kwargs, cluster.created
    result = run_step("selftest.make_image", {"size": -5}, kw["workdir"])
    assert not result.ok
    cluster.finish(created.metadata.name, result.exit_code)
    event = {"status": "failed", "name": created.metadata.name, "namespace": "survey", "message": "Container failed"}
    with pytest.raises(RuntimeError, match="step selftest.make_image failed") as info:
        op.execute_remote_complete(context(store, ti), event=event, **kw)
    assert "Pod" not in str(info.value)  # the step's own reason, not the provider's pod dump
    assert cluster.deleted == []  # a failed pod is kept for inspection
    with ProvenanceStore.from_config(site).engine.connect() as c:
        status, executor, exit_status = c.execute(sa.text(
            "SELECT status, executor, exit_status FROM task WHERE map_index = 8")).one()
    assert (status, executor, exit_status) == ("failed", "kubernetes", result.exit_code)


def test_retry_reattaches_to_the_running_pod_of_an_earlier_try(site: PlatformConfig, cluster: FakeCluster) -> None:
    store = FakeStateStore()
    first = ComputeOperator(task_id="make", step="selftest.make_image", backend="kubernetes",
                            step_params={"size": 48}, unit="u1")
    with pytest.raises(TaskDeferred) as d1:
        first.execute(context(store, FakeTI(try_number=1)))
    (created,) = cluster.created
    cluster.running(created)  # the worker died; the pod is still running
    second = ComputeOperator(task_id="make", step="selftest.make_image", backend="kubernetes",
                             step_params={"size": 48}, unit="u1")
    with pytest.raises(TaskDeferred) as d2:
        second.execute(context(store, FakeTI(try_number=2)))
    assert len(cluster.created) == 1  # no duplicate pod
    assert d2.value.trigger.pod_name == created.metadata.name
    # the result is read from the pod's own workdir (try1), not the new try's
    assert d2.value.kwargs["workdir"] == d1.value.kwargs["workdir"]
    assert d2.value.kwargs["workdir"].endswith("try1")
