"""The production stack's files (docker/) are consistent, without a Docker engine.

The compose file and the Helm values are parsed as YAML (compose's anchors and merge keys
included) and checked against each other, the Dockerfiles and skyops' own config: one image
for every Airflow service, the commands Airflow 3.3 has, CeleryExecutor everywhere, every
credential a secret reference and never a literal, the same Secret and PVC names as the
Kubernetes executor's pods use.
"""
from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
import yaml

from skyops.config import load_platform_config
from skyops.executors.htcondor import IMAGE_PROGRAM

DOCKER = Path(__file__).resolve().parents[2] / "docker"
AIRFLOW_SERVICES = {"airflow-init", "api-server", "scheduler", "dag-processor", "triggerer", "worker"}
COMMANDS = {"api-server": ["api-server"], "scheduler": ["scheduler"], "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"], "worker": ["celery", "worker"]}
SECRETISH = re.compile(r"(?i)(password|passwd|secret|token|fernet|jwt)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "helm" / "values.yaml").read_text())


def strings(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (key path, string value) in a YAML tree."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from strings(v, f"{path}[{i}]")
    elif isinstance(obj, str):
        yield path, obj


def assert_no_literal_credentials(tree: Any) -> None:
    for where, value in strings(tree):
        try:
            assert urlsplit(value).password is None, f"{where}: URL with a password"
        except ValueError:
            pass
        key = where.rsplit(".", 1)[-1]
        if "[" in key:  # a list item (a secret's name in `secrets:`), not a key holding a value
            continue
        if SECRETISH.search(key) and not key.endswith(("_FILE", "_CMD", "SecretName", "secretName", "secretKey")):
            raise AssertionError(f"{where}: a credential-looking key holds a literal value")


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return env if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_compose_has_the_stack_on_one_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == AIRFLOW_SERVICES | {"postgres", "redis"}
    images = {services[s]["image"] for s in AIRFLOW_SERVICES}
    assert images == {"${SKYOPS_AIRFLOW_IMAGE:-skyops-airflow:0.1.0}"}
    for name, cmd in COMMANDS.items():
        assert services[name]["command"] == cmd
    for name in AIRFLOW_SERVICES:
        env = env_of(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert "workspace:/skyops" in services[name]["volumes"] and "archive:/archive:ro" in services[name]["volumes"]
        for dep in services[name]["depends_on"]:
            assert dep in services
        if name != "airflow-init":
            assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert "airflow db migrate" in " ".join(services["airflow-init"]["command"])
    assert "skyops prov migrate" in " ".join(services["airflow-init"]["command"])
    assert set(compose["volumes"]) >= {"workspace", "archive", "postgres-data"}


def test_compose_credentials_are_secret_references(compose: dict[str, Any]) -> None:
    assert_no_literal_credentials(compose["services"])
    declared = set(compose["secrets"])
    for name, svc in compose["services"].items():
        mounted = set(svc.get("secrets", []))
        assert mounted <= declared, name
        text = yaml.safe_dump(svc)
        for used in re.findall(r"/run/secrets/([a-z_]+)", text):
            assert used in mounted, f"{name} reads secret {used} it does not mount"
        for key, value in env_of(svc).items():
            if key.endswith("_CMD"):
                assert re.fullmatch(r"cat /run/secrets/[a-z_]+", value), key
    for spec in compose["secrets"].values():
        assert spec["file"].startswith("./secrets/")
    ignore = (DOCKER / "secrets" / ".gitignore").read_text().split()
    assert ignore[0] == "*"  # secret files are never committed
    # libpq takes the provenance password from PGPASSFILE: the URL carries none
    env = env_of(compose["services"]["worker"])
    assert urlsplit(env["SKYOPS_PROVENANCE_URL"]).password is None and env["PGPASSFILE"].startswith("/run/secrets/")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"


def test_helm_values_match_the_kubernetes_executor(values: dict[str, Any]) -> None:
    kube = load_platform_config().executors.kubernetes
    assert values["executor"] in ("CeleryExecutor", "KubernetesExecutor")
    assert values["airflowVersion"] == version("apache-airflow") == "3.3.2"
    assert values["images"]["airflow"]["tag"] == values["defaultAirflowTag"] == "0.1.0"
    assert_no_literal_credentials(values)
    # credentials: chart-managed Secrets by name, skyops' as secretKeyRef from the executor's Secret
    for key in ("metadataSecretName", "resultBackendSecretName", "brokerUrlSecretName"):
        assert values["data"][key]
    assert values["fernetKeySecretName"] and values["apiSecretKeySecretName"] and values["jwtSecretName"]
    refs = {s["envName"]: (s["secretName"], s["secretKey"]) for s in values["secret"]}
    assert refs == {var: (kube.secret_name, key) for var, key in kube.secret_env.items()}
    assert not any(e["name"] in refs or SECRETISH.search(e["name"]) for e in values["env"])
    # the same PVCs as the step pods, at the same paths; the archive read-only
    claims = {v["name"]: v["persistentVolumeClaim"] for v in values["volumes"]}
    mounts = {m["name"]: m for m in values["volumeMounts"]}
    assert claims["workspace"]["claimName"] == kube.workspace_pvc
    assert claims["archive"]["claimName"] == kube.archive_pvc and claims["archive"]["readOnly"] is True
    assert mounts["archive"]["readOnly"] is True
    env = {e["name"]: e["value"] for e in values["env"]}
    assert mounts["workspace"]["mountPath"] == env["SKYOPS_HOME"]
    assert env["SKYOPS_ARCHIVE_ROOT"] == "file://" + mounts["archive"]["mountPath"]
    assert values["allowPodLaunching"] is True  # workers create the step pods
    assert values["dagProcessor"]["enabled"] and values["triggerer"]["enabled"]


def test_dockerfiles_agree_with_the_stack(compose: dict[str, Any]) -> None:
    airflow = (DOCKER / "Dockerfile.airflow").read_text()
    compute = (DOCKER / "Dockerfile.compute").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11$", airflow, re.M)
    for df in (airflow, compute):
        assert re.search(r"apt-get install .*\\\n\s+source-extractor swarp psfex scamp", df)
        assert "SKYOPS_HOME=/skyops" in df
    assert 'ENTRYPOINT ["skyops"]' in compute
    assert "pip install --no-cache-dir --no-deps ." in compute and IMAGE_PROGRAM == "/usr/local/bin/skyops"
    kube = load_platform_config().executors.kubernetes
    assert f"USER {kube.run_as_user}" in compute and f"--uid {kube.run_as_user}" in compute
    assert "COPY --chown=airflow:root dags /opt/airflow/dags" in airflow
    # skyops' default compute image tag is the one the compose/helm images are versioned with
    assert kube.image.endswith(":0.1.0") and compose["x-airflow-common"]["image"].endswith(":0.1.0}")
    init = (DOCKER / "postgres" / "init-databases.sh").read_text()
    assert "/run/secrets/airflow_db_password" in init and "skyops_prov" in init


#: The Airflow settings measured for nodes that run CPU-bound steps (bench gw_orchestration; README).
NODE_TUNING = {("workers", "min_heartbeat_interval"): "1", ("dag_processor", "min_file_process_interval"): "1800",
               ("scheduler", "scheduler_idle_sleep_time"): "2"}


def test_the_node_tuning_is_the_same_in_compose_helm_and_the_devstack(compose: dict[str, Any],
                                                                       values: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    """What was measured is what every deployment runs: the devstack, compose and Helm agree."""
    from skyops.operators.devstack import AirflowStack

    dev = AirflowStack(tmp_path, "postgresql+psycopg2://u@localhost/x").make_env()
    for service in AIRFLOW_SERVICES - {"airflow-init"}:
        env = env_of(compose["services"][service])
        for (section, key), value in NODE_TUNING.items():
            name = f"AIRFLOW__{section.upper()}__{key.upper()}"
            assert env.get(name) == value, f"compose {service}: {name}"
            assert dev[name] == value, f"devstack: {name}"
            assert str(values["config"][section][key]) == value, f"helm config.{section}.{key}"


def test_helm_workers_compute_as_many_local_steps_as_the_cores_they_request(values: dict[str, Any]) -> None:
    """Celery may run more tasks than cores; the core slots must stop at the pod's CPU request."""
    env = {e["name"]: e.get("value") for e in values["env"]}
    assert env["SKYOPS_LOCAL_CORES"] == str(values["workers"]["resources"]["requests"]["cpu"])
    assert int(env["SKYOPS_LOCAL_CORES"]) < values["config"]["celery"]["worker_concurrency"]
