"""A step's declared resources, read from its module's source without importing it.

The Airflow task that launches a step needs the step's declared resources (threads to pin,
a pod's requests, a Condor job's request_memory) but none of its science: importing
``skyops.campaigns.gw.se`` to read ``resources={"cpu": 1, ...}`` off its ``@step`` decorator
costs the task process about 1.5 s of astropy, SciPy and fitsio, on every CCD of every
exposure, while the step's own subprocess pays the same imports again. Here the decorator
stays the single place a step declares its resources, and :func:`declared_resources` reads
the literal from the module's syntax tree (a few milliseconds), the way packaging tools read
metadata without executing code.

Only literals are read. A step whose resources are not a literal dict (or ``Resources(...)``
of literal keywords), or whose group has no ``STEP_INDEX``, gives ``None`` and the caller falls
back to importing it (:func:`skyops.steps.registry.get_step`). ``tests/unit/test_step_index.py``
checks that every registered step reads back the same resources both ways.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from skyops.config import Resources
from skyops.steps.groups import STEP_GROUPS


def _module_file(step: str) -> Path | None:
    """The source file of the module registering ``step``, from its group's index (no science imported)."""
    group = step.split(".")[0]
    if group not in STEP_GROUPS:
        return None
    index_mod = importlib.import_module(STEP_GROUPS[group])  # index modules are import-light by contract
    index: dict[str, str] = getattr(index_mod, "STEP_INDEX", {})
    if step in index:
        name = index[step]
        module = name if "." in name else f"{index_mod.__package__}.{name}"
    elif not hasattr(index_mod, "STEP_INDEX"):
        module = index_mod.__name__  # a group that registers its steps in its own module
    else:
        return None
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _literal_resources(node: ast.expr) -> dict[str, Any] | None:
    """``{"cpu": 1, ...}`` or ``Resources(cpu=1, ...)`` as a dict; None for anything computed."""
    try:
        if isinstance(node, ast.Dict):
            value = ast.literal_eval(node)
            return value if isinstance(value, dict) else None
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Resources" \
                and not node.args:
            return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
    except ValueError:
        return None
    return None


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "literal"`` assignments (a step named through a constant)."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return out


def _decorator_resources(tree: ast.Module, step: str) -> dict[str, Any] | None:
    constants = _string_constants(tree)

    def names_step(arg: ast.expr) -> bool:
        if isinstance(arg, ast.Constant):
            return arg.value == step
        return isinstance(arg, ast.Name) and constants.get(arg.id) == step

    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for deco in node.decorator_list:
            if not (isinstance(deco, ast.Call) and getattr(deco.func, "id", getattr(deco.func, "attr", None)) == "step"
                    and deco.args and names_step(deco.args[0])):
                continue
            for kw in deco.keywords:
                if kw.arg == "resources":
                    return _literal_resources(kw.value)
            return {}  # declared no resources: the defaults
    return None


@lru_cache(maxsize=None)
def declared_resources(step: str) -> Resources | None:
    """The resources ``step``'s decorator declares, or None when they cannot be read statically."""
    path = _module_file(step)
    if path is None:
        return None
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError):
        return None
    found = _decorator_resources(tree, step)
    return None if found is None else Resources(**found)


__all__ = ["declared_resources"]
