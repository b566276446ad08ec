"""The step groups' indexes: running one step imports only its module, and no step is unlisted."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from skyops.steps import registry


@pytest.mark.parametrize("group", sorted(registry.STEP_GROUPS))
def test_index_names_every_registered_step(group: str) -> None:
    mod = importlib.import_module(registry.STEP_GROUPS[group])
    registry.load_group(group)
    registered = {n for n in registry._REGISTRY if n.split(".")[0] == group}
    index = getattr(mod, "STEP_INDEX", None)
    if index is None:
        return  # a group without an index imports all its modules for any of its steps
    assert set(index) == registered, f"{mod.__name__}.STEP_INDEX is out of date"
    for name, module in index.items():
        full = module if "." in module else f"{mod.__package__}.{module}"
        assert registry._REGISTRY[name].func.__module__ == full


def test_running_one_gw_step_imports_only_its_module() -> None:
    code = ("import sys, json; from skyops.steps.registry import get_step; get_step('gw.ingest_candidates'); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('skyops.campaigns', 'scipy.signal')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.splitlines()[-1])
    assert "skyops.campaigns.gw.ingest" in loaded
    for heavy in ("skyops.campaigns.gw.diffimg", "skyops.campaigns.gw.se", "scipy.signal"):
        assert heavy not in loaded


def test_unknown_step_in_a_group_lists_that_groups_steps() -> None:
    with pytest.raises(registry.UnknownStepError, match="gw.se_ccd"):
        registry.get_step("gw.se_cdd")


def test_declared_resources_read_statically_match_the_registered_ones() -> None:
    from skyops.steps.declared import declared_resources

    steps = registry.all_steps()
    assert len(steps) > 20
    unread = []
    for sdef in steps:
        static = declared_resources(sdef.name)
        if static is None:
            unread.append(sdef.name)
        else:
            assert static == sdef.resources, f"{sdef.name}: read {static}, registered {sdef.resources}"
    # every campaign step declares literal resources; only test-only extra modules may not
    assert not [n for n in unread if n.split(".")[0] in ("gw", "balrog", "magellanic")], unread


def test_declared_resources_import_no_science() -> None:
    code = ("import sys, json; from skyops.steps.declared import declared_resources; "
            "r = declared_resources('gw.diffimg_ccd'); "
            "print(json.dumps([r.memory_mb, sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'scipy', 'astropy', 'fitsio', 'galsim') or m.startswith('skyops.campaigns.gw.'))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    memory_mb, loaded = json.loads(out.splitlines()[-1])
    assert memory_mb == 4096
    assert loaded == ["skyops.campaigns.gw.steps"]
