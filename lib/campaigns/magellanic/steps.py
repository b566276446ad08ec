"""The Magellanic mosaic campaign's step index (its group module in ``STEP_GROUPS``).

Nothing is imported here: the registry imports only the module of the step being run (MefSum
needs neither SciPy's sparse solvers nor matplotlib), or all of them for a listing. Each kred
stage is a module named for its concept; ``tests/unit/test_step_index.py`` checks that the index
names every step the modules register.
"""
from __future__ import annotations

#: The campaign's step modules, relative to this package, in pipeline order.
STEP_MODULES: tuple[str, ...] = (
    "mefcheck", "mefsum", "summary", "mefprep", "tiles", "mosaic", "overlaps", "backstats", "backcalc", "backsub",
    "evaluate",
)

#: Step name -> the module that registers it (kred's program in the comment).
STEP_INDEX: dict[str, str] = {
    "magellanic.mef_check": "mefcheck",  # MefCheck.py
    "magellanic.mef_sum": "mefsum",  # MefSum.py (per MEF)
    "magellanic.mef_tables": "summary",  # MefSum.py / MefCheck.py (the field's tables)
    "magellanic.mef_prep": "mefprep",  # MefPrep.py
    "magellanic.setup_tile": "tiles",  # SetupTile.py
    "magellanic.swarp_setup": "mosaic",  # SwarpSetup.py
    "magellanic.swarp": "mosaic",  # Swarp.py
    "magellanic.find_overlaps": "overlaps",  # FindOverlaps.py
    "magellanic.back_stats": "backstats",  # BackPrep.py + BackStats.py
    "magellanic.back_calc": "backcalc",  # BackCalc.py
    "magellanic.back_sub": "backsub",  # BackSub.py
    "magellanic.swarp_eval": "evaluate",  # SwarpEval.py
}
