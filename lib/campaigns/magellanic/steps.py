"""The step modules of the Magellanic mosaic campaign's steps (listed in ``STEP_GROUPS``).

Each kred stage is a module named for its concept; a module listed here that exists but fails to
import is an error, never skipped.
"""
from __future__ import annotations

import importlib.util

#: The campaign's step modules, relative to this package, in pipeline order.
PLANNED_MODULES: tuple[str, ...] = (
    "mefcheck", "mefsum", "mefprep", "tiles", "mosaic", "overlaps", "backstats", "backcalc", "backsub", "evaluate",
)

#: The modules written so far (the campaign is being built: the registry imports these).
STEP_MODULES: tuple[str, ...] = tuple(
    m for m in PLANNED_MODULES if importlib.util.find_spec(f"{__package__}.{m}") is not None)
