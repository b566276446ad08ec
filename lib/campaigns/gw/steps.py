"""The GW campaign's step index (its group module in ``STEP_GROUPS``).

Nothing is imported here: the registry imports only the module of the step being run
(``gw.se_ccd`` needs neither SciPy's signal package nor the diffimg stack), or all of them
for a listing. ``tests/unit/test_step_index.py`` checks that the index names every step the
modules register.
"""
from __future__ import annotations

#: The campaign's step modules, relative to this package, in pipeline order.
STEP_MODULES: tuple[str, ...] = ("se", "calibrate", "diffimg", "ingest", "summary")

#: Step name -> the module that registers it.
STEP_INDEX: dict[str, str] = {
    "gw.se_ccd": "se",
    "gw.calibrate": "calibrate",
    "gw.diffimg_ccd": "diffimg",
    "gw.ingest_candidates": "ingest",
    "gw.night_summary": "summary",
}
