"""The pod that runs one step on Kubernetes: a pure builder, no cluster and no Airflow.

:func:`build_pod_request` turns a :class:`~skyops.executors.base.StepSpec` and the platform
config's ``executors.kubernetes`` section into a :class:`PodRequest`: the container (the
compute image, ``skyops step run NAME --params ... --workdir ...``, requests and limits from
the step's declared resources), the volumes (the workspace PVC read-write at the same path
the Airflow workers see, the archive PVC read-only, a sized scratch ``emptyDir``), labels and
annotations naming campaign, unit, step and map index, and the environment.

Credentials never appear in the pod spec: database URLs and DESDM credentials are
``secretKeyRef`` references to the Kubernetes Secret named in the config, resolved by the
kubelet when the container starts. A value that looks like a credential is refused here
rather than written into an object that the API server stores and ``kubectl`` prints.

The Airflow side (:mod:`skyops.operators.kubernetes`) hands the request's parts to the
cncf.kubernetes provider's KubernetesPodOperator; :meth:`PodRequest.to_pod` gives the same
pod as a ``V1Pod`` for tests and ``kubectl``-style inspection.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from kubernetes.client import models as k8s

from skyops.config import PlatformConfig, Resources
from skyops.errors import ExecutorError
from skyops.executors.base import StepSpec
from skyops.executors.environment import base_environment, check_plain

#: The step's container; the provider's KubernetesPodOperator reads the log of the container
#: with this name (its ``base_container_name`` default).
BASE_CONTAINER = "base"
#: Label and annotation key prefix (a DNS label, so a valid Kubernetes key prefix).
PREFIX = "skyops"
#: Where the scratch ``emptyDir`` is mounted; TMPDIR points there.
SCRATCH_MOUNT = "/scratch"
#: Where the config ConfigMap is mounted (when one is configured).
CONFIG_MOUNT = "/etc/skyops"

_LABEL_OK = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
MAX_LABEL = 63


def label_value(text: str) -> str:
    """``text`` as a valid label value (63 characters of ``[-A-Za-z0-9_.]``, alphanumeric ends).

    A value that had to change keeps a short hash of the original, so two different units
    never collapse onto one label; the original value is kept in an annotation.
    """
    text = str(text)
    if _LABEL_OK.match(text):
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    cleaned = re.sub(r"[^-A-Za-z0-9_.]+", "-", text).strip("-_.")
    return f"{cleaned[: MAX_LABEL - len(digest) - 1].rstrip('-_.')}-{digest}".lstrip("-")


def pod_base_name(step: str) -> str:
    """A DNS-1123 name stem for the step's pod (the operator adds a unique suffix)."""
    stem = re.sub(r"[^a-z0-9]+", "-", f"skyops-{step}".lower()).strip("-")
    return stem[:50].rstrip("-")


def cpu_quantity(cpu: float) -> str:
    """Cores as a Kubernetes quantity: ``1.0`` -> ``"1"``, ``0.5`` -> ``"500m"``."""
    milli = round(cpu * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def resource_requirements(res: Resources) -> k8s.V1ResourceRequirements:
    """Requests equal to limits: the pod gets the Guaranteed QoS class, and a step that
    outgrows its declared memory is OOM-killed visibly rather than starving its neighbours."""
    amounts = {"cpu": cpu_quantity(res.cpu), "memory": f"{res.memory_mb}Mi"}
    if res.scratch_mb:
        amounts["ephemeral-storage"] = f"{res.scratch_mb}Mi"
    return k8s.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))


@dataclass
class PodRequest:
    """Everything the pod of one step is made of, as Kubernetes client models."""

    name: str
    namespace: str
    image: str
    image_pull_policy: str
    cmds: list[str]
    args: list[str]
    env: list[k8s.V1EnvVar]
    resources: k8s.V1ResourceRequirements
    volumes: list[k8s.V1Volume]
    volume_mounts: list[k8s.V1VolumeMount]
    labels: dict[str, str]
    annotations: dict[str, str]
    service_account: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    security_context: k8s.V1SecurityContext | None = None
    pod_security_context: k8s.V1PodSecurityContext | None = None

    def container(self) -> k8s.V1Container:
        return k8s.V1Container(
            name=BASE_CONTAINER, image=self.image, image_pull_policy=self.image_pull_policy,
            command=list(self.cmds), args=list(self.args), env=list(self.env), resources=self.resources,
            volume_mounts=list(self.volume_mounts), security_context=self.security_context,
            termination_message_policy="FallbackToLogsOnError")

    def to_pod(self) -> k8s.V1Pod:
        """The request as one ``V1Pod`` (what ``kubectl get pod -o yaml`` would show, minus status)."""
        return k8s.V1Pod(
            api_version="v1", kind="Pod",
            metadata=k8s.V1ObjectMeta(name=self.name, namespace=self.namespace, labels=dict(self.labels),
                                      annotations=dict(self.annotations)),
            spec=k8s.V1PodSpec(containers=[self.container()], volumes=list(self.volumes), restart_policy="Never",
                               service_account_name=self.service_account,
                               node_selector=dict(self.node_selector) or None,
                               security_context=self.pod_security_context))


def workspace_mount_path(cfg: PlatformConfig) -> str:
    """Where the workspace PVC goes: configured, or the common parent of the workspace folders."""
    kc = cfg.executors.kubernetes
    if kc.workspace_mount:
        return kc.workspace_mount
    ws = cfg.workspace
    return os.path.commonpath([str(ws.scratch), str(ws.persistent), str(ws.cache)])


def archive_mount_path(cfg: PlatformConfig) -> str | None:
    """Where the archive PVC goes: configured, or the ``file://`` archive root (None for https)."""
    kc = cfg.executors.kubernetes
    if kc.archive_mount:
        return kc.archive_mount
    root = cfg.archive.root
    return root.removeprefix("file://") if root.startswith("file://") else None


def _under(path: str, root: str) -> bool:
    return PurePosixPath(path) == PurePosixPath(root) or PurePosixPath(root) in PurePosixPath(path).parents


def _environment(spec: StepSpec, cfg: PlatformConfig) -> list[k8s.V1EnvVar]:
    """Plain variables (refused if credential-like), then the secretKeyRef ones."""
    kc = cfg.executors.kubernetes
    where = f"step {spec.step} pod"
    plain = base_environment(spec, cfg)
    plain["TMPDIR"] = SCRATCH_MOUNT
    if kc.config_map:
        plain["SKYOPS_CONFIG_DIR"] = CONFIG_MOUNT
    check_plain(plain, where, f"put it in the Kubernetes Secret {kc.secret_name} and list it under "
                              f"executors.kubernetes.secret_env instead")
    clash = sorted(set(plain) & set(kc.secret_env))
    if clash:
        raise ExecutorError(f"{where}: {', '.join(clash)} set both as a plain value and from the Secret "
                            f"{kc.secret_name}; remove the plain value")
    env = [k8s.V1EnvVar(name=k, value=v) for k, v in plain.items()]
    env += [k8s.V1EnvVar(name=var, value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name=kc.secret_name, key=key)))
            for var, key in sorted(kc.secret_env.items())]
    return env


def _volumes(spec: StepSpec, cfg: PlatformConfig) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
    kc = cfg.executors.kubernetes
    ws_mount = workspace_mount_path(cfg)
    workdir = str(spec.workdir)
    if not _under(workdir, ws_mount):
        raise ExecutorError(
            f"step {spec.step}: workdir {workdir} is not on the shared workspace mounted in pods at {ws_mount}; "
            f"set workspace.scratch/persistent under it or executors.kubernetes.workspace_mount")
    volumes = [k8s.V1Volume(name="workspace", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                   claim_name=kc.workspace_pvc, read_only=False)),
               k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(
                   size_limit=f"{spec.resources.scratch_mb}Mi" if spec.resources.scratch_mb else None))]
    mounts = [k8s.V1VolumeMount(name="workspace", mount_path=ws_mount, read_only=False),
              k8s.V1VolumeMount(name="scratch", mount_path=SCRATCH_MOUNT)]
    archive = archive_mount_path(cfg)
    if archive:
        volumes.append(k8s.V1Volume(name="archive", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=kc.archive_pvc, read_only=True)))
        mounts.append(k8s.V1VolumeMount(name="archive", mount_path=archive, read_only=True))
    if kc.config_map:
        volumes.append(k8s.V1Volume(name="config", config_map=k8s.V1ConfigMapVolumeSource(name=kc.config_map)))
        mounts.append(k8s.V1VolumeMount(name="config", mount_path=CONFIG_MOUNT, read_only=True))
    return volumes, mounts


def step_labels(spec: StepSpec) -> dict[str, str]:
    """Selectable labels: campaign, unit, step and (mapped tasks) map index, label-safe."""
    raw = {"campaign": spec.labels.get("campaign", ""), "unit": spec.labels.get("unit", ""), "step": spec.step}
    labels = {"app.kubernetes.io/name": "skyops", "app.kubernetes.io/component": "step"}
    labels.update({f"{PREFIX}/{k}": label_value(v) for k, v in raw.items() if v})
    map_index = str(spec.labels.get("map_index", "-1"))
    if map_index.lstrip("-").isdigit() and int(map_index) >= 0:
        labels[f"{PREFIX}/map-index"] = map_index
    return labels


def step_annotations(spec: StepSpec) -> dict[str, str]:
    """Free-form metadata: the unsanitised names, the workdir (a retry reattaching to this pod
    reads its result from there) and the parameters' digest."""
    ann = {f"{PREFIX}/{k.replace('_', '-')}": str(v) for k, v in spec.labels.items() if v not in (None, "")}
    ann.update({f"{PREFIX}/step": spec.step, f"{PREFIX}/workdir": str(spec.workdir),
                f"{PREFIX}/config-digest": spec.config_digest()})
    return ann


WORKDIR_ANNOTATION = f"{PREFIX}/workdir"


def build_pod_request(spec: StepSpec, cfg: PlatformConfig) -> PodRequest:
    """The pod that runs ``spec`` on the cluster described by ``cfg.executors.kubernetes``."""
    kc = cfg.executors.kubernetes
    volumes, mounts = _volumes(spec, cfg)
    argv = spec.command("skyops")
    return PodRequest(
        name=pod_base_name(spec.step), namespace=kc.namespace, image=kc.image,
        image_pull_policy=kc.image_pull_policy, cmds=argv[:1], args=argv[1:], env=_environment(spec, cfg),
        resources=resource_requirements(spec.resources), volumes=volumes, volume_mounts=mounts,
        labels=step_labels(spec), annotations=step_annotations(spec), service_account=kc.service_account,
        node_selector=dict(kc.node_selector),
        security_context=k8s.V1SecurityContext(allow_privilege_escalation=False, run_as_non_root=True,
                                               run_as_user=kc.run_as_user,
                                               capabilities=k8s.V1Capabilities(drop=["ALL"])),
        pod_security_context=k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=kc.run_as_user))


__all__ = ["BASE_CONTAINER", "PodRequest", "build_pod_request", "label_value", "cpu_quantity",
           "resource_requirements", "step_labels", "workspace_mount_path", "archive_mount_path",
           "WORKDIR_ANNOTATION"]
