"""The GW CCD tasks' ``unit`` and ``destination`` fields, rendered from the DAG params without an XCom read.

They must give what the ``params`` task resolves (:func:`skyops.operators.gw.resolve_params`):
the night param, else the night the data interval starts (a scheduled or backfilled night).
Rendered here with Airflow's own template environment and the ParamsDict a task sees.
"""
from __future__ import annotations

import pendulum
import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.definitions._internal.templater import SandboxedEnvironment

from skyops.operators.gw import DESTINATION, NIGHT, resolve_params


def render(template: str, **context) -> str:
    return SandboxedEnvironment().from_string(template).render(**context)


@pytest.mark.parametrize("night, start, expected", [
    ("20170817", None, "20170817"),  # given (-n), a manual or gw_watch-triggered run
    ("20170817", pendulum.datetime(2019, 1, 2, 23, tz="UTC"), "20170817"),  # given wins over the schedule
    ("", pendulum.datetime(2019, 1, 2, 23, tz="UTC"), "20190102"),  # a scheduled or backfilled night
])
def test_night_is_what_the_params_task_resolves(night, start, expected):
    params = ParamsDict({"night": night, "destination": "persistent", "band": "i", "ccds": "28"})
    assert render(NIGHT, params=params, data_interval_start=start) == expected
    resolved = resolve_params.function(params=dict(params), data_interval_start=start)
    assert resolved["night"] == expected
    assert render(DESTINATION, params=params) == resolved["destination"] == "persistent"


def test_no_night_and_no_interval_renders_empty():
    """The params task fails such a run first (night is required); the field does not raise."""
    assert render(NIGHT, params=ParamsDict({"night": ""}), data_interval_start=None) == ""
