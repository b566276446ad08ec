"""Importing this module registers the Magellanic mosaic campaign's steps (listed in ``STEP_GROUPS``).

Each kred stage is a module named for its concept; a module listed here that exists but fails to
import is an error, never skipped.
"""
from __future__ import annotations

import importlib
import importlib.util

#: The campaign's step modules, relative to this package, in pipeline order.
MAGELLANIC_STEP_MODULES: tuple[str, ...] = (
    "mefcheck", "mefsum", "mefprep", "tiles", "mosaic", "overlaps", "backstats", "backcalc", "backsub", "evaluate",
)

for _name in MAGELLANIC_STEP_MODULES:
    _mod = f"{__package__}.{_name}"
    if importlib.util.find_spec(_mod) is not None:
        importlib.import_module(_mod)
