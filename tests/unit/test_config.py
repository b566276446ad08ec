"""Platform and campaign config: defaults, variables, and the exact error texts."""
from __future__ import annotations

from pathlib import Path

import pytest

from skyops.config import CampaignConfig, load_campaign_config, load_platform_config
from skyops.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "skyops.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_resolve_under_skyops_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SKYOPS_HOME", str(tmp_path / "home"))
    cfg = load_platform_config(write(tmp_path, "{}\n"))
    assert cfg.databases.provenance == f"sqlite:///{tmp_path}/home/provenance.sqlite"
    assert cfg.workspace.scratch == tmp_path / "home" / "scratch"
    assert cfg.executors.default == "local"


def test_nested_default_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("SKYOPS_HOME", str(tmp_path))
    monkeypatch.delenv("PROV_URL", raising=False)
    text = "databases:\n  provenance: ${PROV_URL:-sqlite:///${SKYOPS_HOME}/p.db}  # ${NOT_EXPANDED_IN_COMMENTS}\n"
    assert load_platform_config(write(tmp_path, text)).databases.provenance == f"sqlite:///{tmp_path}/p.db"
    monkeypatch.setenv("PROV_URL", "postgresql+psycopg2://postgres@127.0.0.1/x")
    assert load_platform_config(write(tmp_path, text)).databases.provenance.startswith("postgresql")


def test_repo_config_loads():
    cfg = load_platform_config()
    assert cfg.databases.archive.startswith("sqlite:///")


def test_unknown_key_names_file_and_key(tmp_path):
    p = write(tmp_path, "databases:\n  provenanse: sqlite:///x\n")
    with pytest.raises(ConfigError) as e:
        load_platform_config(p)
    assert str(e.value) == f"{p}: key 'databases.provenanse': unknown key; remove it or check its spelling"


def test_wrong_type_names_key_and_expectation(tmp_path):
    p = write(tmp_path, "executors:\n  local:\n    cores: lots\n")
    with pytest.raises(ConfigError) as e:
        load_platform_config(p)
    assert str(e.value) == (f"{p}: key 'executors.local.cores': Input should be a valid integer, "
                            "unable to parse string as an integer (got 'lots')")


def test_bad_executor_choice(tmp_path):
    p = write(tmp_path, "executors:\n  default: slurm\n")
    with pytest.raises(ConfigError) as e:
        load_platform_config(p)
    assert str(e.value) == (f"{p}: key 'executors.default': Input should be 'local', 'kubernetes' "
                            "or 'htcondor' (got 'slurm')")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_platform_config(tmp_path / "nope.yaml")
    assert str(e.value) == f"{tmp_path}/nope.yaml: config file not found; create it or set SKYOPS_CONFIG_DIR"


def test_unset_variable_without_default(tmp_path, monkeypatch):
    monkeypatch.delenv("SKYOPS_NO_SUCH_VAR", raising=False)
    p = write(tmp_path, "archive:\n  root: ${SKYOPS_NO_SUCH_VAR}\n")
    with pytest.raises(ConfigError) as e:
        load_platform_config(p)
    assert str(e.value) == (f"{p}: environment variable ${{SKYOPS_NO_SUCH_VAR}} is not set and has no default; "
                            "set it or write ${SKYOPS_NO_SUCH_VAR:-value}")


def test_not_a_mapping(tmp_path):
    p = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of keys at the top level, got list"):
        load_platform_config(p)


def test_campaign_config_missing_key_and_step_settings(tmp_path):
    p = write(tmp_path, "description: x\n", "c.yaml")
    with pytest.raises(ConfigError) as e:
        load_campaign_config(p)
    assert str(e.value) == f"{p}: key 'campaign': required key is missing"
    p2 = write(tmp_path, "campaign: demo\nsteps:\n  gw.se_ccd:\n    executor: kubernetes\n    resources: {cpu: 2}\n",
               "d.yaml")
    c = load_campaign_config(p2, CampaignConfig)
    assert c.step_settings("gw.se_ccd").executor == "kubernetes"
    assert c.step_settings("gw.se_ccd").resources.cpu == 2
    assert c.step_settings("other").executor is None
