"""The Balrog campaign's step index (its group module in ``STEP_GROUPS``).

Nothing is imported here: the registry imports only the module of the step being run (a MEDS
task needs neither GalSim's injection stack nor the fitters), or all of them for a listing.
``tests/unit/test_step_index.py`` checks that the index names every step the modules register.
"""
from __future__ import annotations

#: The campaign's step modules, relative to this package, in pipeline order.
STEP_MODULES: tuple[str, ...] = ("prep", "coadd", "meds", "inject", "measure", "match")

#: Step name -> the module that registers it.
STEP_INDEX: dict[str, str] = {
    "balrog.prep": "prep",
    "balrog.coadd_band": "coadd",
    "balrog.detect": "coadd",
    "balrog.coadd": "coadd",
    "balrog.meds": "meds",
    "balrog.inject": "inject",
    "balrog.measure": "measure",
    "balrog.match": "match",
}
