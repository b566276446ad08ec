"""The GW ``prepare`` task's checks when a DAG is parsed (its runs are in tests/e2e/test_gw_*.py)."""
from __future__ import annotations

import pytest

from skyops.errors import UnknownQueryError
from skyops.operators.desdm import checked_queries
from skyops.operators.gw import PrepareExposureOperator

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
