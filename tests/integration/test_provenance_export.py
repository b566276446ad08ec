"""PROV-JSON export of an attempt: it parses back with ``prov`` and says what was recorded."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from prov.model import (
    PROV_ATTR_ACTIVITY,
    PROV_ATTR_AGENT,
    PROV_ATTR_DELEGATE,
    PROV_ATTR_ENTITY,
    PROV_ATTR_GENERATED_ENTITY,
    PROV_ATTR_RESPONSIBLE,
    PROV_ATTR_USED_ENTITY,
    ProvActivity,
    ProvAgent,
    ProvAssociation,
    ProvDelegation,
    ProvDerivation,
    ProvDocument,
    ProvEntity,
    ProvGeneration,
    ProvUsage,
)

from skyops.provenance import ProvenanceStore, TaskKey

T0 = datetime(2024, 1, 5, 3, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(db_url: str):
    s = ProvenanceStore(db_url)
    s.migrate()
    yield s
    s.close()


def test_export_round_trips_and_holds_entities_activities_relations(store: ProvenanceStore) -> None:
    att = store.attempt("gw_nightly", "run_1", "20240105", reqnum=7)
    se = store.task_started(TaskKey("gw_nightly", "run_1", "se_ccd", 3), name="gw.se_ccd", attempt_id=att,
                            host="node1", start_time=T0)
    ids = store.record_files(
        se,
        generated=[{"path": "/w/red/c3.fits", "md5": "a" * 32, "size": 123, "filetype": "red_immask"}],
        used=[{"path": "/a/raw/c3.fits.fz", "md5": "b" * 32, "size": 99, "filetype": "raw"}],
    )
    store.task_finished(se, status="success", exit_status=0, end_time=T0 + timedelta(minutes=2))
    co = store.task_started(TaskKey("gw_nightly", "run_1", "coadd"), name="gw.coadd", attempt_id=att, start_time=T0)
    ids |= store.record_files(co, generated=[{"path": "/w/co/co.fits", "md5": "c" * 32}], used=[{"path": "/w/red/c3.fits"}])
    store.task_finished(co, status="failed", exit_status=1, end_time=T0 + timedelta(minutes=9))
    store.attempt("gw_nightly", "run_1", "20240106")  # another unit of the run: not exported

    text = store.export_prov_json(att)
    doc = ProvDocument.deserialize(content=text, format="json")
    assert doc == ProvDocument.deserialize(content=store.export_prov_json("20240105"), format="json")

    entities = {str(r.identifier): r for r in doc.get_records(ProvEntity)}
    assert set(entities) == {f"desfile:{i}" for i in ids.values()}
    red = dict((str(k), v) for k, v in entities[f"desfile:{ids['/w/red/c3.fits']}"].attributes)
    assert red == {"prov:label": "c3.fits", "skyops:path": "/w/red/c3.fits", "skyops:md5sum": "a" * 32,
                   "skyops:filesize": 123, "skyops:filetype": "red_immask"}

    activities = {str(r.identifier): r for r in doc.get_records(ProvActivity)}
    assert set(activities) == {f"skyops:task/{se}", f"skyops:task/{co}"}
    se_act = activities[f"skyops:task/{se}"]
    assert (se_act.get_startTime(), se_act.get_endTime()) == (T0, T0 + timedelta(minutes=2))
    attrs = {str(k): v for k, v in se_act.attributes}
    assert (attrs["prov:label"], attrs["skyops:status"], attrs["skyops:map_index"], attrs["skyops:host"]) == (
        "gw.se_ccd", "success", 3, "node1")

    def pairs(cls, a, b) -> set[tuple[str, str]]:
        return {(str(r.get_attribute(a).pop()), str(r.get_attribute(b).pop())) for r in doc.get_records(cls)}

    f = {p: f"desfile:{i}" for p, i in ids.items()}
    assert pairs(ProvGeneration, PROV_ATTR_ENTITY, PROV_ATTR_ACTIVITY) == {
        (f["/w/red/c3.fits"], f"skyops:task/{se}"), (f["/w/co/co.fits"], f"skyops:task/{co}")}
    assert pairs(ProvUsage, PROV_ATTR_ACTIVITY, PROV_ATTR_ENTITY) == {
        (f"skyops:task/{se}", f["/a/raw/c3.fits.fz"]), (f"skyops:task/{co}", f["/w/red/c3.fits"])}
    assert pairs(ProvDerivation, PROV_ATTR_GENERATED_ENTITY, PROV_ATTR_USED_ENTITY) == {
        (f["/w/red/c3.fits"], f["/a/raw/c3.fits.fz"]), (f["/w/co/co.fits"], f["/w/red/c3.fits"])}

    agents = {str(r.identifier) for r in doc.get_records(ProvAgent)}
    assert agents == {f"skyops:attempt/{att}", "skyops:campaign/gw_nightly"}
    assert pairs(ProvAssociation, PROV_ATTR_ACTIVITY, PROV_ATTR_AGENT) == {
        (f"skyops:task/{se}", f"skyops:attempt/{att}"), (f"skyops:task/{co}", f"skyops:attempt/{att}")}
    assert pairs(ProvDelegation, PROV_ATTR_DELEGATE, PROV_ATTR_RESPONSIBLE) == {
        (f"skyops:attempt/{att}", "skyops:campaign/gw_nightly")}
    assert {ns.prefix: ns.uri for ns in doc.namespaces} == {"skyops": "urn:skyops:", "desfile": "urn:skyops:desfile:"}
