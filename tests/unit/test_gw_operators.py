"""The GW operators on their own: ``prepare``'s checks when a DAG is parsed, ``calibrate``'s diff plan
after a remote backend resumes it (whole runs are in tests/e2e/test_gw_*.py)."""
from __future__ import annotations

import pytest

from skyops.errors import UnknownQueryError
from skyops.operators.desdm import checked_queries
from skyops.operators import gw
from skyops.operators.compute import ComputeOperator
from skyops.operators.gw import CalibrateExposureOperator, PrepareExposureOperator

LOOKUPS = {"raw": ("raw_exposure", {"expnum": 1}), "calibrations": ("night_calibrations", {"nite": "20190101"}),
           "refcat": ("reference_catalog", {}), "templates": ("templates", {"expnum": 1}),
           "raw_templates": ("raw_templates", {"expnum": 1})}


def prepare(**queries):
    return PrepareExposureOperator(task_id="prepare", expnum=1, unit="n", queries={**LOOKUPS, **queries})


def test_an_unknown_query_fails_at_parse_time_naming_it():
    with pytest.raises(UnknownQueryError, match="'raw_exposures'.*known queries"):
        prepare(raw=("raw_exposures", {"expnum": 1}))


@pytest.mark.parametrize("spec", ["raw_exposure", ("raw_exposure",), ("raw_exposure", {}, "extra")])
def test_a_malformed_entry_names_the_task_and_the_entry(spec):
    with pytest.raises(ValueError, match=r"prepare: query 'raw' must be \(query name, params\)"):
        prepare(raw=spec)


def test_a_missing_lookup_is_named():
    queries = {k: v for k, v in LOOKUPS.items() if k != "refcat"}
    with pytest.raises(ValueError, match=r"prepare: PrepareExposureOperator needs the lookups \['refcat'\]"):
        PrepareExposureOperator(task_id="prepare", expnum=1, unit="n", queries=queries)


def test_no_queries_is_an_error():
    with pytest.raises(ValueError, match="q: needs at least one archive query"):
        checked_queries("q", {})


def test_params_are_templated_and_none_means_no_params():
    op = prepare(raw=("raw_exposure", {"expnum": "{{ params.e }}"}), refcat=("reference_catalog", None))
    assert {"queries", "expnum", "overwrite", "unit"} <= set(op.template_fields)
    assert op.queries["raw"] == ("raw_exposure", {"expnum": "{{ params.e }}"})
    assert op.queries["refcat"] == ("reference_catalog", {})


class FakeTI:
    """The task instance calls the calibrate task makes; XComs in dicts."""

    def __init__(self) -> None:
        self.map_index, self.pushed = -1, {}

    def xcom_push(self, key, value):
        self.pushed[key] = value

    def xcom_pull(self, task_ids, key="return_value", map_indexes=None):
        assert task_ids == "params"
        return {"calibrate": True}


def calibrate(**kw):
    return CalibrateExposureOperator(task_id="calibrate", step="gw.calibrate", expnum=668439, dest="/stage",
                                     queries={"templates": {"manifest": "t.json", "rows": 1}}, **kw)


def test_calibrate_runs_only_gw_calibrate():
    with pytest.raises(ValueError, match="calibrate: CalibrateExposureOperator runs gw.calibrate, not gw.se_ccd"):
        CalibrateExposureOperator(task_id="calibrate", step="gw.se_ccd", expnum=1, dest="d", queries={})


def test_calibrate_plans_the_diffs_when_a_remote_backend_resumes_it(monkeypatch):
    """A pod or Condor job resumes the task in execute_remote_complete: the plan is made there,
    with the zeropoints the remote calibration wrote, and the CCDs with no work are skipped."""
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    result = {"workdir": "/w", "outputs": {"bliss_zeropoint": "/w/zp.fits"}, "metrics": {}, "prov_task_id": 9}
    monkeypatch.setattr(ComputeOperator, "execute_remote_complete", lambda self, context, event, **state: result)
    seen = {}

    def plan_diff(expnum, run, tmpl, dest, zeropoints, ti):
        seen.update(expnum=expnum, tmpl=tmpl, dest=dest, zeropoints=zeropoints)
        return {"c28": {"ccd": 28}, "c40": None}

    monkeypatch.setattr(gw, "_plan_diff", plan_diff)
    ti = FakeTI()
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        calibrate().execute_remote_complete({"ti": ti}, event={"status": "success"}, backend="kubernetes")
    assert seen == {"expnum": 668439, "tmpl": {"manifest": "t.json", "rows": 1}, "dest": "/stage",
                    "zeropoints": "/w/zp.fits"}
    assert skipped.value.tasks == [("exposure.diff_c40", -1)]
    # the calibration's result still reaches XCom although the task ends by raising
    assert ti.pushed == {"return_value": result, "c28": {"ccd": 28}, "c40": None, "planned": [28]}
