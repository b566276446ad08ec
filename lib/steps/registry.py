"""The step registry: science functions by dotted name, with typed parameters.

A step is a plain function ``f(ctx, *, a: int, b: str = "x")`` registered with
:func:`step`. Its keyword parameters and their type hints *are* its parameter schema:
the registry builds a pydantic model from the signature so that ``skyops step run``,
the Airflow operator and a Condor job all validate parameters the same way, and a wrong
one fails before any work starts with a message naming it.

Steps live in campaign modules found through :data:`STEP_GROUPS` (imported on first lookup),
so a pod or a Condor job needs nothing but the step's name. A group module may declare
``STEP_INDEX`` (step name -> module) and ``STEP_MODULES`` (all its modules): then running one
step imports only that step's module. Every step run pays its imports, thousands of times a
night, and the GW group's science modules together cost seconds (SciPy's signal and spatial
packages, astropy.wcs) where one step needs a fraction of them.
"""
from __future__ import annotations

import importlib
import inspect
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from skyops.config import Resources
from skyops.errors import StepParameterError, UnknownStepError

from skyops.steps.groups import STEP_GROUPS, check_step_group  # noqa: F401  (re-exported)

_REGISTRY: dict[str, "StepDef"] = {}
_loaded = False


@dataclass(frozen=True)
class ParamSpec:
    """One keyword parameter of a step, for listings and error messages."""

    name: str
    type: str
    default: Any
    required: bool

    def describe(self) -> str:
        return f"{self.name} ({self.type}{'' if self.required else f', default {self.default!r}'})"


@dataclass(frozen=True)
class StepDef:
    """A registered step: the function, its parameter model, resources and outputs."""

    name: str
    func: Callable[..., Any]
    resources: Resources
    outputs: tuple[str, ...]
    description: str
    params: tuple[ParamSpec, ...]
    model: type[BaseModel] = field(repr=False)

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Check and coerce parameters; StepParameterError names every bad one."""
        known = {p.name for p in self.params}
        unknown = sorted(set(params) - known)
        if unknown:
            takes = ", ".join(p.describe() for p in self.params) or "no parameters"
            raise StepParameterError(
                f"step '{self.name}': unknown parameter{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(u) for u in unknown)}; it takes: {takes}"
            )
        try:
            return self.model.model_validate(params).model_dump()
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                pname = ".".join(str(x) for x in err["loc"])
                spec = next((p for p in self.params if p.name == err["loc"][0]), None)
                expected = f"; expected {spec.type}" if spec else ""
                if err["type"] == "missing":
                    problems.append(f"parameter '{pname}' is required{expected}")
                else:
                    problems.append(f"parameter '{pname}': {err['msg']} (got {err.get('input')!r}){expected}")
            raise StepParameterError(f"step '{self.name}': " + "; ".join(problems)) from None


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def step(
    name: str,
    *,
    resources: Resources | dict[str, Any] | None = None,
    outputs: tuple[str, ...] | list[str] = (),
    description: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``func(ctx, **params)`` as step ``name`` (e.g. ``"gw.se_ccd"``).

    ``outputs`` lists the filetypes the step promises to produce (its output contract);
    ``resources`` what it needs from an executor (cpu, memory_mb, scratch_mb).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(func)
        fields: dict[str, Any] = {}
        specs = []
        for i, (pname, p) in enumerate(sig.parameters.items()):
            if i == 0:
                continue  # the StepContext
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"step {name}: parameter {pname} must be keyword-only (after '*')")
            ann = Any if p.annotation is inspect.Parameter.empty else p.annotation
            required = p.default is inspect.Parameter.empty
            fields[pname] = (ann, ... if required else p.default)
            specs.append(ParamSpec(pname, _type_name(p.annotation), None if required else p.default, required))
        with warnings.catch_warnings():  # a parameter may be called "schema" (the GW -m flag)
            warnings.simplefilter("ignore", UserWarning)
            model = create_model(  # type: ignore[call-overload]
                f"Params_{name.replace('.', '_')}", __config__=ConfigDict(extra="forbid"), **fields
            )
        res = resources if isinstance(resources, Resources) else Resources(**(resources or {}))
        doc = description or (inspect.getdoc(func) or "").split("\n\n")[0].replace("\n", " ")
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise ValueError(f"step {name!r} registered twice ({_REGISTRY[name].func.__module__} and {func.__module__})")
        _REGISTRY[name] = StepDef(name, func, res, tuple(outputs), doc, tuple(specs), model)
        return func

    return decorate


def _module_name(group_module: Any, name: str) -> str:
    """A module named in a group's index, absolute or relative to the group's package."""
    return name if "." in name else f"{group_module.__package__}.{name}"


def load_group(group: str, step_name: str | None = None) -> None:
    """Import the modules registering ``group``'s steps: only ``step_name``'s when indexed."""
    mod = importlib.import_module(STEP_GROUPS[group])
    index: dict[str, str] = getattr(mod, "STEP_INDEX", {})
    if step_name is not None and step_name in index:
        importlib.import_module(_module_name(mod, index[step_name]))
        return
    for sub in getattr(mod, "STEP_MODULES", ()):
        importlib.import_module(_module_name(mod, sub))


def _load() -> None:
    global _loaded
    if _loaded:
        return
    extra = [m for m in os.environ.get("SKYOPS_STEP_MODULES", "").split(",") if m]
    for group in STEP_GROUPS:
        load_group(group)
    for mod in extra:
        importlib.import_module(mod)
    _loaded = True


def get_step(name: str) -> StepDef:
    """The step registered as ``name``, or UnknownStepError listing close names."""
    if name not in _REGISTRY and name.split(".")[0] in STEP_GROUPS:
        load_group(name.split(".")[0], name)
    if name not in _REGISTRY:
        _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        group = name.split(".")[0]
        near = sorted(n for n in _REGISTRY if n.startswith(group + "."))
        hint = f"; steps in '{group}': {', '.join(near)}" if near else "; run `skyops step list` to see all steps"
        raise UnknownStepError(f"no step named '{name}'{hint}") from None


def all_steps() -> list[StepDef]:
    """Every registered step, sorted by name."""
    _load()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]
