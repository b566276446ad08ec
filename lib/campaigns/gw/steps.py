"""Importing this module registers the GW campaign's steps (it is listed in ``STEP_MODULES``).

``gw.se_ccd`` (:mod:`.se`) and ``gw.calibrate`` (:mod:`.calibrate`) always; the difference-imaging
module (:mod:`.diffimg`, written separately) when it is installed. A module that exists but
fails to import is an error, never skipped.
"""
from __future__ import annotations

import importlib
import importlib.util

#: The campaign's step modules, relative to this package.
GW_STEP_MODULES: tuple[str, ...] = ("se", "calibrate", "diffimg", "ingest", "summary")

for _name in GW_STEP_MODULES:
    _mod = f"{__package__}.{_name}"
    if importlib.util.find_spec(_mod) is not None:
        importlib.import_module(_mod)
import skyops.campaigns.gw.diffimg  # noqa: F401
