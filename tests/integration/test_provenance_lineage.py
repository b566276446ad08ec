"""Lineage and impact on a recorded history, against an independent expectation.

A seeded synthetic campaign of more than 10,000 files (fan-in, fan-out, five levels,
hundreds of tasks, both "all" and finer derivations) is recorded through the public API
on SQLite and on PostgreSQL; the expected ancestors and descendants of sample files are
computed here by breadth-first search over the edges the generator says it recorded.
"""
from __future__ import annotations

import random
from collections import defaultdict, deque

import pytest

from skyops.errors import ProvenanceInputError
from skyops.provenance import ProvenanceStore, TaskKey
from skyops.provenance.synthetic import SynthParams, record, synthetic_tasks


def bfs(start: str, graph: dict[str, set[str]]) -> set[str]:
    """Every node reachable from ``start`` (not ``start`` itself)."""
    seen: set[str] = set()
    queue = deque([start])
    while queue:
        for nxt in graph.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    seen.discard(start)
    return seen


@pytest.fixture
def store(db_url: str):
    s = ProvenanceStore(db_url)
    s.migrate()
    yield s
    s.close()


def test_lineage_and_impact_of_a_10k_file_history_match_bfs(store: ProvenanceStore) -> None:
    tasks = list(synthetic_tasks(SynthParams(n_files=12_000, seed=20240105, generated_per_task=(2, 60))))
    parents: dict[str, set[str]] = defaultdict(set)
    children: dict[str, set[str]] = defaultdict(set)
    maker: dict[str, tuple[str, TaskKey]] = {}
    files: set[str] = set()
    attempt = store.attempt("synthetic", "synthetic__run", "tile_0001")
    for t in tasks:
        record(store, t, attempt)
        files.update(t.used)
        for path in t.generated_paths:
            files.add(path)
            maker[path] = (t.name, t.key)
        for parent, child in t.edges():
            parents[child].add(parent)
            children[parent].add(child)

    counts = store.status()["counts"]
    assert counts["desfile"] == len(files) >= 10_000
    assert counts["opm_was_derived_from"] == sum(len(p) for p in parents.values())
    assert counts["task"] == len(tasks)

    rng = random.Random(7)
    levels = defaultdict(list)
    for path in sorted(files):
        levels[path.split("/")[2]].append(path)
    sample = [p for name in sorted(levels) for p in rng.sample(levels[name], 6)]
    for path in sample:
        expected_up = bfs(path, parents)
        expected_down = bfs(path, children)

        assert store.ancestors(path) == expected_up, path
        tree = store.lineage(path)
        nodes = list(tree.walk())
        assert {n.path for n in nodes} == expected_up | {path}
        assert len(nodes) == len(expected_up) + 1  # each file once, however many paths reach it
        for node in nodes:
            assert {p.path for p in node.parents} == parents.get(node.path, set())
            if node.path in maker:
                assert (node.task.name, node.task.key) == maker[node.path]
            else:
                assert node.task is None  # a raw file only ever used
        assert {n.path for n in tree.raw_inputs()} == {a for a in expected_up if not parents.get(a)}

        assert store.descendants(path) == expected_down, path
        report = store.impact(path)
        assert report.paths == expected_down
        assert {t.key for t in report.tasks} == {maker[d][1] for d in expected_down}
        depth = {f.path: f.depth for f in report.files}
        for f in report.files:  # redo order: every file after the descendants it came from
            assert all(depth[p] < f.depth for p in parents[f.path] if p in depth)


def test_shared_ancestor_is_one_node(store: ProvenanceStore) -> None:
    """A diamond: both branches point at the same raw node object."""
    t1 = store.task_started(TaskKey("d", "r", "split"), name="split")
    store.record_files(t1, generated=[{"path": "/w/a.fits"}, {"path": "/w/b.fits"}], used=[{"path": "/w/raw.fits"}])
    t2 = store.task_started(TaskKey("d", "r", "join"), name="join")
    store.record_files(t2, generated=[{"path": "/w/out.fits"}], used=[{"path": "/w/a.fits"}, {"path": "/w/b.fits"}])
    tree = store.lineage("/w/out.fits")
    a, b = tree.parents
    assert (a.path, b.path) == ("/w/a.fits", "/w/b.fits")
    assert a.parents[0] is b.parents[0]
    assert [n.path for n in tree.walk()] == ["/w/out.fits", "/w/a.fits", "/w/raw.fits", "/w/b.fits"]
    report = store.impact("raw.fits")
    assert [(f.path, f.depth) for f in report.files] == [("/w/a.fits", 1), ("/w/b.fits", 1), ("/w/out.fits", 2)]
    assert [t.name for t in report.tasks] == ["split", "join"]


def test_unknown_and_ambiguous_files_are_named(store: ProvenanceStore) -> None:
    t = store.task_started(TaskKey("d", "r", "t"), name="t")
    store.record_files(t, generated=[{"path": "/x/one/c.fits"}, {"path": "/x/two/c.fits"}])
    where = store.redacted_url
    with pytest.raises(ProvenanceInputError) as err:
        store.lineage("c.fits")
    assert str(err.value) == (
        f"file name 'c.fits' is ambiguous in the provenance database at {where}: 2 recorded files have it "
        "(/x/one/c.fits, /x/two/c.fits); give the full path"
    )
    with pytest.raises(ProvenanceInputError) as err:
        store.impact("/x/three/c.fits")
    assert str(err.value) == (
        f"file '/x/three/c.fits' is not recorded in the provenance database at {where}; "
        "give the full path as recorded or a bare file name"
    )
    assert err.value.exit_code == 2
    assert store.lineage("/x//one/./c.fits").path == "/x/one/c.fits"  # normalised like recorded paths


def test_relative_path_is_looked_up_from_the_current_folder(
    store: ProvenanceStore, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = store.task_started(TaskKey("d", "r", "t"), name="t")
    store.record_files(t, generated=[{"path": str(tmp_path / "red" / "x.fits")}])
    monkeypatch.chdir(tmp_path)
    assert store.lineage("red/x.fits").path == str(tmp_path / "red" / "x.fits")
