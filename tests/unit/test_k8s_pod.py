"""The pod skyops builds for a real step (gw.se_ccd), field by field, without a cluster.

The request is serialised exactly as the Kubernetes client sends it to the API server
(``ApiClient().sanitize_for_serialization``), and no credential -- from the environment,
the platform config or the step -- may appear anywhere in it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from skyops.config import PlatformConfig
from skyops.errors import ExecutorError
from skyops.executors.base import StepSpec
from skyops.executors.kubernetes import (BASE_CONTAINER, build_pod_request, cpu_quantity, label_value,
                                         resource_requirements)
from skyops.steps.registry import get_step

SECRETS = ("Pr0v-S3cret!", "Arch1ve-S3cret!", "DesdmPassw0rd")
UNIT = "manual__2026-11-20T23:00:00+00:00"
WORKDIR = "/skyops/scratch/gw_nightly/manual__2026-11-20T23_00_00_00_00/exposure.se_c05/17/try1"
LABEL_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def platform(**kube: object) -> PlatformConfig:
    """A site config: workspace under /skyops, file archive, credentials in the config itself."""
    return PlatformConfig.model_validate({
        "databases": {"provenance": f"postgresql+psycopg2://skyops:{SECRETS[0]}@db:5432/skyops_prov",
                      "archive": f"oracle+oracledb://desdm:{SECRETS[2]}@desdb:1521/?service_name=dessci"},
        "archive": {"root": "file:///archive/files"},
        "workspace": {"scratch": "/skyops/scratch", "persistent": "/skyops/persistent", "cache": "/skyops/cache"},
        "executors": {"kubernetes": {"image": "registry.example.org/skyops-compute:0.1.0", "namespace": "survey",
                                     "service_account": "skyops-runner", **kube}},
    })


@pytest.fixture()
def se_spec(monkeypatch: pytest.MonkeyPatch) -> StepSpec:
    # credentials the worker has in its environment must not travel into the pod spec
    monkeypatch.setenv("SKYOPS_PROVENANCE_URL", f"postgresql+psycopg2://skyops:{SECRETS[0]}@db/skyops_prov")
    monkeypatch.setenv("SKYOPS_ARCHIVE_URL", f"sqlite:////x?password={SECRETS[1]}")
    sdef = get_step("gw.se_ccd")
    return StepSpec("gw.se_ccd", {"ccd": 5, "raw": "/skyops/persistent/staged/raw.fits.fz"}, Path(WORKDIR),
                    sdef.resources, labels={"campaign": "gw_nightly", "unit": UNIT, "step": "gw.se_ccd",
                                            "map_index": "17"})


def test_se_ccd_pod_field_by_field(se_spec: StepSpec) -> None:
    assert (se_spec.resources.cpu, se_spec.resources.memory_mb, se_spec.resources.scratch_mb) == (1, 3072, 1024)
    pod = build_pod_request(se_spec, platform()).to_pod()
    assert (pod.metadata.namespace, pod.metadata.name) == ("survey", "skyops-gw-se-ccd")
    assert pod.spec.restart_policy == "Never" and pod.spec.service_account_name == "skyops-runner"
    (c,) = pod.spec.containers
    assert c.name == BASE_CONTAINER and c.image == "registry.example.org/skyops-compute:0.1.0"
    assert c.image_pull_policy == "IfNotPresent"
    assert c.command == ["skyops"]
    assert c.args == ["step", "run", "gw.se_ccd", "--params", f"{WORKDIR}/params.json", "--workdir", WORKDIR]
    # requests = limits from the step's declared resources: Guaranteed QoS
    want = {"cpu": "1", "memory": "3072Mi", "ephemeral-storage": "1024Mi"}
    assert c.resources.requests == want and c.resources.limits == want
    # mounts: workspace read-write at the workers' path, archive read-only, sized scratch
    mounts = {m.name: m for m in c.volume_mounts}
    vols = {v.name: v for v in pod.spec.volumes}
    assert (mounts["workspace"].mount_path, mounts["workspace"].read_only) == ("/skyops", False)
    assert vols["workspace"].persistent_volume_claim.claim_name == "skyops-workspace"
    assert (mounts["archive"].mount_path, mounts["archive"].read_only) == ("/archive/files", True)
    assert vols["archive"].persistent_volume_claim.claim_name == "skyops-archive"
    assert vols["archive"].persistent_volume_claim.read_only is True
    assert vols["scratch"].empty_dir.size_limit == "1024Mi" and mounts["scratch"].mount_path == "/scratch"
    assert WORKDIR.startswith(mounts["workspace"].mount_path + "/")
    # environment: plain values, and the credentials only as secretKeyRef
    env = {e.name: e for e in c.env}
    assert env["OMP_NUM_THREADS"].value == "1" and env["TMPDIR"].value == "/scratch"
    assert env["SKYOPS_HOME"].value == os.environ["SKYOPS_HOME"]
    assert env["SKYOPS_ARCHIVE_ROOT"].value == "file:///archive/files"
    for var, key in (("SKYOPS_PROVENANCE_URL", "provenance-url"), ("SKYOPS_ARCHIVE_URL", "archive-url")):
        assert env[var].value is None
        ref = env[var].value_from.secret_key_ref
        assert (ref.name, ref.key) == ("skyops-credentials", key)
    # labels: campaign, unit, step, map index -- label syntax; the raw unit in an annotation
    labels = pod.metadata.labels
    assert labels["skyops/campaign"] == "gw_nightly" and labels["skyops/step"] == "gw.se_ccd"
    assert labels["skyops/map-index"] == "17"
    assert labels["skyops/unit"].startswith("manual__2026-11-20T23-00-00") and labels["skyops/unit"] != UNIT
    assert all(LABEL_RE.match(v) and len(v) <= 63 for v in labels.values())
    assert pod.metadata.annotations["skyops/unit"] == UNIT
    assert pod.metadata.annotations["skyops/workdir"] == WORKDIR
    assert pod.metadata.annotations["skyops/map-index"] == "17"
    # the container runs unprivileged, as the image's user
    assert c.security_context.run_as_user == 1000 and c.security_context.allow_privilege_escalation is False


def test_pod_serialises_through_the_client_without_any_secret(se_spec: StepSpec) -> None:
    body = ApiClient().sanitize_for_serialization(build_pod_request(se_spec, platform()).to_pod())
    text = json.dumps(body)
    for secret in SECRETS:
        assert secret not in text
    assert "password" not in text.lower()
    c = body["spec"]["containers"][0]
    refs = [e for e in c["env"] if "valueFrom" in e]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in refs} == {
        "SKYOPS_ARCHIVE_URL": {"name": "skyops-credentials", "key": "archive-url"},
        "SKYOPS_PROVENANCE_URL": {"name": "skyops-credentials", "key": "provenance-url"}}
    assert all("value" not in e for e in refs)
    assert c["resources"]["limits"]["memory"] == "3072Mi" and c["volumeMounts"][-1]["readOnly"] is True
    # round trip: the API's JSON deserialises back into the same model
    again = ApiClient()._ApiClient__deserialize(body, "V1Pod")
    assert isinstance(again, k8s.V1Pod) and again.spec.containers[0].args == c["args"]


def test_unmapped_task_has_no_map_index_label_and_config_map_mount(se_spec: StepSpec) -> None:
    se_spec.labels["map_index"] = "-1"
    req = build_pod_request(se_spec, platform(config_map="skyops-configs", node_selector={"pool": "compute"}))
    assert "skyops/map-index" not in req.labels
    pod = req.to_pod()
    assert pod.spec.node_selector == {"pool": "compute"}
    mounts = {m.name: m for m in pod.spec.containers[0].volume_mounts}
    assert mounts["config"].mount_path == "/etc/skyops" and mounts["config"].read_only
    assert {e.name: e.value for e in req.env}["SKYOPS_CONFIG_DIR"] == "/etc/skyops"


def test_a_credential_in_the_step_env_is_refused_without_echoing_it(se_spec: StepSpec) -> None:
    se_spec.env = {"DB_URL": f"postgresql://u:{SECRETS[0]}@h/db"}
    with pytest.raises(ExecutorError, match="DB_URL looks like a credential") as info:
        build_pod_request(se_spec, platform())
    assert SECRETS[0] not in str(info.value) and "secret_env" in str(info.value)
    se_spec.env = {"SKYOPS_PROVENANCE_URL": "sqlite:///x"}
    with pytest.raises(ExecutorError, match="both as a plain value and from the Secret"):
        build_pod_request(se_spec, platform())


def test_workdir_off_the_shared_workspace_is_refused(se_spec: StepSpec) -> None:
    se_spec.workdir = Path("/home/someone/work")
    with pytest.raises(ExecutorError, match="not on the shared workspace mounted in pods at /skyops"):
        build_pod_request(se_spec, platform())


@pytest.mark.parametrize(("text", "ok"), [("gw_nightly", True), ("20170817", True), ("-1", False),
                                          ("a" * 80, False), ("manual__2026-11-20T23:00:00+00:00", False)])
def test_label_values_are_valid_and_distinct(text: str, ok: bool) -> None:
    v = label_value(text)
    assert LABEL_RE.match(v) and len(v) <= 63
    assert (v == text) is ok
    assert label_value(text + "x") != v


def test_quantities() -> None:
    assert [cpu_quantity(c) for c in (1.0, 0.5, 2, 0.1, 1.25)] == ["1", "500m", "2", "100m", "1250m"]
    from skyops.config import Resources

    r = resource_requirements(Resources(cpu=0.1, memory_mb=256, scratch_mb=0))
    assert r.requests == {"cpu": "100m", "memory": "256Mi"} == r.limits
