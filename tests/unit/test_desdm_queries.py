"""DesdmQueriesOperator's checks when a DAG is parsed (its run is in tests/e2e/test_gw_dags.py)."""
from __future__ import annotations

import pytest

from skyops.errors import UnknownQueryError
from skyops.operators.desdm import DesdmQueriesOperator


def test_an_unknown_query_fails_at_parse_time_naming_it():
    with pytest.raises(UnknownQueryError, match="'raw_exposures'.*known queries"):
        DesdmQueriesOperator(task_id="queries", queries={"raw": ("raw_exposures", {"expnum": 1})})


@pytest.mark.parametrize("spec", ["raw_exposure", ("raw_exposure",), ("raw_exposure", {}, "extra")])
def test_a_malformed_entry_names_the_entry(spec):
    with pytest.raises(ValueError, match=r"queries: query 'raw' must be \(query name, params\)"):
        DesdmQueriesOperator(task_id="queries", queries={"raw": spec})


def test_no_queries_is_an_error():
    with pytest.raises(ValueError, match="at least one query"):
        DesdmQueriesOperator(task_id="queries", queries={})


def test_params_are_templated_and_none_means_no_params():
    op = DesdmQueriesOperator(task_id="queries", queries={"raw": ("raw_exposure", {"expnum": "{{ params.e }}"}),
                                                          "ref": ("reference_catalog", None)})
    assert "queries" in op.template_fields
    assert op.queries == {"raw": ("raw_exposure", {"expnum": "{{ params.e }}"}), "ref": ("reference_catalog", {})}
