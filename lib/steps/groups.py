"""Step groups: which module registers the steps of each name prefix (``gw.``, ``balrog.`` ...).

Kept apart from :mod:`skyops.steps.registry` (pydantic models, signatures) so that DAG files
can check a step name at parse time for the price of a dict lookup.
"""
from __future__ import annotations

from skyops.errors import UnknownStepError

#: Step-name prefix -> the module registering that group's steps, so that running one step
#: imports only its own campaign (a task's start-up time is paid thousands of times a night).
STEP_GROUPS: dict[str, str] = {
    "health": "skyops.steps.builtin",
    "selftest": "skyops.steps.builtin",
    "gw": "skyops.campaigns.gw.steps",
    "balrog": "skyops.campaigns.balrog.steps",
    "magellanic": "skyops.campaigns.magellanic.steps",
}


def check_step_group(name: str) -> None:
    """Fail fast on a step name no module could register, without importing any step module.

    DAG files call this at parse time: importing a campaign's science (GalSim, SciPy) there
    would cost seconds per parse. The full lookup happens when the task runs.
    """
    group = name.split(".")[0]
    if "." not in name or group not in STEP_GROUPS:
        raise UnknownStepError(
            f"no step named '{name}': step names are '<group>.<name>' with group one of "
            f"{', '.join(sorted(STEP_GROUPS))}; run `skyops step list` to see all steps"
        )
