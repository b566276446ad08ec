"""Importing this module registers the Balrog campaign's steps (listed in ``STEP_GROUPS``).

Each step lives in the module named for its concept; a module listed here that exists but fails
to import is an error, never skipped.
"""
from __future__ import annotations

import importlib
import importlib.util

#: The campaign's step modules, relative to this package, in pipeline order.
BALROG_STEP_MODULES: tuple[str, ...] = ("prep", "coadd", "meds", "inject", "measure", "match")

for _name in BALROG_STEP_MODULES:
    _mod = f"{__package__}.{_name}"
    if importlib.util.find_spec(_mod) is not None:
        importlib.import_module(_mod)
