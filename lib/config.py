"""Platform and campaign configuration, validated by pydantic.

The platform config (``configs/skyops.yaml``) names the databases, the archive roots, the
workspace and the executors. Each campaign has its own YAML validated by a subclass of
:class:`CampaignConfig`. A wrong key, a wrong type or a missing file raises
:class:`~skyops.errors.ConfigError` naming the file, the key and what was expected, so a
mistake fails at DAG-parse time rather than halfway through a night.

Values may use ``${VAR}`` and ``${VAR:-default}``; ``SKYOPS_HOME`` always resolves (to
``<project>/.skyops`` unless set), so the embedded default needs no environment at all.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from skyops.errors import ConfigError

#: The repository root when skyops runs from a checkout (lib/ is the package).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: ``${VAR}`` or ``${VAR:-default}``; defaults may nest (innermost expands first).
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^${}]*))?\}")


def skyops_home() -> Path:
    """Where embedded state lives (SQLite databases, demo archive, workspace)."""
    return Path(os.environ.get("SKYOPS_HOME") or PROJECT_ROOT / ".skyops").resolve()


def config_dir() -> Path:
    """The folder holding ``skyops.yaml`` and the campaign configs (``SKYOPS_CONFIG_DIR``)."""
    return Path(os.environ.get("SKYOPS_CONFIG_DIR") or PROJECT_ROOT / "configs").resolve()


def expand_vars(text: str, source: str = "<string>") -> str:
    """Expand ``${VAR}`` / ``${VAR:-default}``; an unset variable without default is an error."""

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name == "SKYOPS_HOME":
            return str(skyops_home())
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{source}: environment variable ${{{name}}} is not set and has no default; "
            f"set it or write ${{{name}:-value}}"
        )

    for _ in range(8):
        expanded = _VAR.sub(repl, text)
        if expanded == text:
            break
        text = expanded
    return text


class SkyopsModel(BaseModel):
    """Base of every config model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class Resources(SkyopsModel):
    """What one step needs from an executor; requests and limits derive from these."""

    cpu: float = Field(1.0, gt=0, description="cores")
    memory_mb: int = Field(1024, gt=0, description="resident memory, MiB")
    scratch_mb: int = Field(1024, ge=0, description="local scratch disk, MiB")


class DatabasesConfig(SkyopsModel):
    """SQLAlchemy URLs. The provenance DB is skyops' own, never Airflow's metadata DB."""

    provenance: str = "sqlite:///${SKYOPS_HOME}/provenance.sqlite"
    archive: str = "sqlite:///${SKYOPS_HOME}/archive/desdm.sqlite"
    #: Read DESDM credentials from this desservices file and section instead of ``archive``.
    desservices_file: str | None = None
    desservices_section: str | None = None
    #: Oracle schema owner or release prefix (``PROD``, ``Y3A2_``) for the archive's tables.
    archive_schema: str | None = None


class ArchiveConfig(SkyopsModel):
    """Where the archive's files are: a ``file://`` root or an ``https://`` server."""

    root: str = "file://${SKYOPS_HOME}/archive/files"
    name: str = "desar2home"
    netrc: str | None = None


class WorkspaceConfig(SkyopsModel):
    """The filesystem shared by Airflow workers and jobs."""

    scratch: Path = Path("${SKYOPS_HOME}/scratch")
    persistent: Path = Path("${SKYOPS_HOME}/persistent")
    cache: Path = Path("${SKYOPS_HOME}/cache")
    min_free_gb: float = Field(1.0, ge=0)


class LocalExecutorConfig(SkyopsModel):
    """Steps as subprocesses of the Airflow task (:mod:`skyops.executors.local`)."""

    cores: int | None = Field(
        None, ge=0,
        description="cores the local steps of this host may hold at once (skyops.executors.core_slots); "
                    "default: the cores this process may use; 0: no limit")
    slot_dir: Path | None = Field(None, description="node-local folder for the core locks; default: the temp dir")
    python: str | None = Field(None, description="interpreter for `skyops step run`; default: this one")

    @field_validator("cores", "slot_dir", mode="before")
    @classmethod
    def _unset_when_empty(cls, v: object) -> object:
        """``${SKYOPS_LOCAL_CORES:-}`` with the variable unset means: the default."""
        return None if v == "" else v


class KubernetesExecutorConfig(SkyopsModel):
    """Where and how a step's pod runs (see :mod:`skyops.executors.kubernetes`)."""

    image: str = "skyops-compute:0.1.0"
    namespace: str = "skyops"
    workspace_pvc: str = "skyops-workspace"
    archive_pvc: str = "skyops-archive"
    secret_name: str = "skyops-credentials"
    service_account: str | None = None
    # --- issue 7: pod details (all optional; the defaults suit the Helm values in docker/helm) ---
    #: Airflow connection of the cluster (None: in-cluster or the worker's kube config).
    conn_id: str | None = "kubernetes_default"
    in_cluster: bool | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    #: Where the workspace PVC is mounted in the pod; default: the common parent of the
    #: workspace folders, so a workdir has the same absolute path on workers and in pods.
    workspace_mount: str | None = None
    #: Where the archive PVC is mounted read-only; default: the ``file://`` archive root.
    archive_mount: str | None = None
    #: Environment variable -> key in ``secret_name``: database URLs and DESDM credentials
    #: reach the pod as secretKeyRef, never as values in the pod spec.
    secret_env: dict[str, str] = {"SKYOPS_PROVENANCE_URL": "provenance-url", "SKYOPS_ARCHIVE_URL": "archive-url"}
    #: A ConfigMap holding skyops.yaml and the campaign configs, mounted as SKYOPS_CONFIG_DIR
    #: (default: the configs baked into the image).
    config_map: str | None = None
    run_as_user: int = Field(1000, ge=0)
    node_selector: dict[str, str] = {}
    startup_timeout_seconds: int = Field(600, gt=0)
    poll_interval_seconds: float = Field(10.0, gt=0)
    on_finish_action: Literal["delete_pod", "delete_succeeded_pod", "keep_pod"] = "delete_succeeded_pod"


class HTCondorExecutorConfig(SkyopsModel):
    """How a step becomes an HTCondor job (see :mod:`skyops.executors.htcondor`)."""

    universe: Literal["vanilla", "container"] = "vanilla"
    image: str | None = None
    schedd: str | None = None
    max_retries: int = Field(2, ge=0)
    # --- issue 7: job details (all optional) ---
    #: Collector to locate ``schedd`` through (None: the pool's configured collector).
    collector: str | None = None
    #: The ``skyops`` program on the execute nodes (vanilla universe, shared filesystem; the
    #: container universe runs the image's /usr/local/bin/skyops).
    program: str = "skyops"
    #: Hold (rather than retry) a job killed by a signal: out of memory, preempted by an admin.
    hold_on_signal: bool = True
    #: A ClassAd expression releasing held jobs (``periodic_release``); None: holds are final.
    periodic_release: str | None = None
    #: How long a held job may wait for ``periodic_release`` before the task fails.
    hold_grace_seconds: float = Field(600.0, ge=0)
    poll_interval_seconds: float = Field(15.0, gt=0)
    accounting_group: str | None = None


class ExecutorsConfig(SkyopsModel):
    default: Literal["local", "kubernetes", "htcondor"] = "local"
    local: LocalExecutorConfig = LocalExecutorConfig()
    kubernetes: KubernetesExecutorConfig = KubernetesExecutorConfig()
    htcondor: HTCondorExecutorConfig = HTCondorExecutorConfig()


class PlatformConfig(SkyopsModel):
    """``configs/skyops.yaml``: everything that is the same for every campaign."""

    databases: DatabasesConfig = DatabasesConfig()
    archive: ArchiveConfig = ArchiveConfig()
    workspace: WorkspaceConfig = WorkspaceConfig()
    executors: ExecutorsConfig = ExecutorsConfig()
    tools: list[str] = ["source-extractor", "SWarp", "psfex", "scamp"]

    def resolved(self, source: str) -> "PlatformConfig":
        """Expand ``${VAR}`` in every string and path value."""
        data = _expand_tree(self.model_dump(mode="json"), source)
        return PlatformConfig.model_validate(data)


class StepSettings(SkyopsModel):
    """Per-step overrides in a campaign config: where it runs and what it needs."""

    executor: Literal["local", "kubernetes", "htcondor"] | None = None
    resources: Resources | None = None
    retries: int | None = Field(None, ge=0)
    #: An Airflow pool to run the step's tasks in: caps how many run at once across every run
    #: (say, archive-heavy steps during a backfill). The pool must exist in Airflow.
    pool: str | None = None


class CampaignConfig(SkyopsModel):
    """Base of every campaign's YAML (``configs/<campaign>.yaml``)."""

    campaign: str
    description: str = ""
    executor: Literal["local", "kubernetes", "htcondor"] = "local"
    steps: dict[str, StepSettings] = {}
    retries: int = Field(1, ge=0)
    retry_delay_seconds: float = Field(60.0, ge=0)

    def step_settings(self, step: str) -> StepSettings:
        return self.steps.get(step, StepSettings())


def _expand_tree(obj: Any, source: str) -> Any:
    if isinstance(obj, str):
        return expand_vars(obj, source)
    if isinstance(obj, dict):
        return {k: _expand_tree(v, source) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand_tree(v, source) for v in obj]
    return obj


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``file: key 'a.b': what was wrong (expected ...)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<top level>"
        kind = err["type"]
        if kind == "extra_forbidden":
            lines.append(f"{source}: key '{loc}': unknown key; remove it or check its spelling")
        elif kind == "missing":
            lines.append(f"{source}: key '{loc}': required key is missing")
        else:
            got = err.get("input")
            got_s = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
            lines.append(f"{source}: key '{loc}': {err['msg']}{got_s}")
    return "\n".join(lines)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with variables expanded, or raise ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; create it or set SKYOPS_CONFIG_DIR")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return _expand_tree(data, str(path))


M = TypeVar("M", bound=BaseModel)


def load_model(path: Path, model: type[M]) -> M:
    """Validate a YAML file against ``model``; errors name the file and every bad key."""
    data = read_yaml(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None


def load_platform_config(path: Path | None = None) -> PlatformConfig:
    """Load ``configs/skyops.yaml`` (or ``SKYOPS_CONFIG``), with defaults for what it omits."""
    path = Path(path or os.environ.get("SKYOPS_CONFIG") or config_dir() / "skyops.yaml")
    cfg = load_model(path, PlatformConfig)
    return cfg.resolved(str(path))


@lru_cache(maxsize=8)
def _cached_platform(path: str, mtime: float, env: tuple[tuple[str, str], ...]) -> PlatformConfig:
    return load_platform_config(Path(path))


def platform_config() -> PlatformConfig:
    """The platform config, cached per file version and per value of the SKYOPS_* variables."""
    path = Path(os.environ.get("SKYOPS_CONFIG") or config_dir() / "skyops.yaml")
    mtime = path.stat().st_mtime if path.exists() else 0.0
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("SKYOPS_")))
    return _cached_platform(str(path), mtime, env)


def load_campaign_config(name_or_path: str | Path, model: type[M] = CampaignConfig) -> M:  # type: ignore[assignment]
    """Load ``configs/<name>.yaml`` (or a path) validated against a campaign model."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = config_dir() / f"{name_or_path}.yaml"
    return load_model(p, model)
