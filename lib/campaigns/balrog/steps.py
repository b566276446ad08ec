"""The step modules of the Balrog campaign's steps (listed in ``STEP_GROUPS``).

Each step lives in the module named for its concept; a module listed here that exists but fails
to import is an error, never skipped.
"""
from __future__ import annotations

import importlib.util

#: The campaign's step modules, relative to this package, in pipeline order.
PLANNED_MODULES: tuple[str, ...] = ("prep", "coadd", "meds", "inject", "measure", "match")

#: The modules written so far (the campaign is being built: the registry imports these).
STEP_MODULES: tuple[str, ...] = tuple(
    m for m in PLANNED_MODULES if importlib.util.find_spec(f"{__package__}.{m}") is not None)
