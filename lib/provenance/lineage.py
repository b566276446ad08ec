"""Lineage (where did this file come from) and impact (what did this file feed).

Both walk ``opm_was_derived_from`` with one recursive query (``WITH RECURSIVE``): lineage
from child to parents through the (child, parent) index, impact from parent to children
through the primary key (parent, child). ``UNION`` rather than ``UNION ALL`` makes each
edge appear once however many paths reach it, so a diamond-shaped history costs its number
of edges, not its number of paths, and a (corrupt) cycle still terminates.

The recursive query returns each edge with the file at its far end and that file's
generating task, so a whole tree comes back in one round trip after the lookup of the
starting file.
"""
from __future__ import annotations

import os
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Iterator

import sqlalchemy as sa

from skyops.errors import ProvenanceInputError
from skyops.provenance.records import FileInfo, TaskInfo, split_path, utc
from skyops.provenance.schema import desfile, opm_was_derived_from, task

wdf = opm_was_derived_from

#: How many candidates an "ambiguous file name" error lists.
MAX_CANDIDATES = 20

_FILE_COLS = (
    desfile.c.id,
    desfile.c.path,
    desfile.c.filename,
    desfile.c.filetype,
    desfile.c.filesize,
    desfile.c.md5sum,
    desfile.c.compression,
    desfile.c.wgb_task_id,
)
_TASK_COLS = tuple(
    c.label(f"t_{c.name}")
    for c in (
        task.c.id, task.c.name, task.c.dag_id, task.c.run_id, task.c.task_id, task.c.map_index,
        task.c.try_number, task.c.status, task.c.executor, task.c.host, task.c.start_time, task.c.end_time,
    )
)


@dataclass(eq=False)
class LineageNode:
    """A file in a lineage tree: the file, the task that generated it, and its parents.

    A file reached along several paths (a diamond) is one node shared by its children, so
    the structure is a DAG; :meth:`walk` visits each node once.
    """

    file: FileInfo
    task: TaskInfo | None
    parents: list["LineageNode"] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.file.full_path

    @property
    def is_raw(self) -> bool:
        """A raw input: nothing recorded that it was derived from."""
        return not self.parents

    def walk(self) -> Iterator["LineageNode"]:
        """Every node once, this one first, depth-first in parent order."""
        seen: set[int] = set()
        stack = [self]
        while stack:
            node = stack.pop()
            if node.file.id in seen:
                continue
            seen.add(node.file.id)
            yield node
            stack.extend(reversed(node.parents))

    def ancestors(self) -> set[str]:
        """Full paths of every ancestor file (not this one)."""
        return {n.path for n in self.walk() if n is not self}

    def raw_inputs(self) -> list["LineageNode"]:
        return [n for n in self.walk() if n.is_raw and n is not self]

    def __repr__(self) -> str:
        return f"LineageNode({self.path!r}, parents={len(self.parents)})"


@dataclass(frozen=True)
class ImpactedFile:
    """A descendant file; ``depth`` is its longest distance from the bad file."""

    file: FileInfo
    task: TaskInfo | None
    depth: int

    @property
    def path(self) -> str:
        return self.file.full_path


@dataclass(frozen=True)
class ImpactReport:
    """What to redo if ``file`` was bad: every descendant and the tasks that made them.

    ``files`` are in redo order: each comes after every descendant it was derived from
    (by ``depth``, the longest path from the bad file). ``tasks`` are ordered by the
    shallowest file each generated, so a step's tasks come before the tasks of later steps.
    """

    file: FileInfo
    files: tuple[ImpactedFile, ...]
    tasks: tuple[TaskInfo, ...]

    @property
    def paths(self) -> set[str]:
        return {f.path for f in self.files}


def resolve_file(conn: sa.Connection, file: str | os.PathLike[str], where: str) -> sa.Row:
    """The ``desfile`` row (with its task's columns) for a full path or a unique bare name."""
    text = os.fspath(file)
    base = sa.select(*_FILE_COLS, *_TASK_COLS).outerjoin(task, task.c.id == desfile.c.wgb_task_id)
    if os.sep in text or "/" in text:
        for folder, name in _path_candidates(text):
            row = conn.execute(base.where(desfile.c.path == folder, desfile.c.filename == name)).first()
            if row is not None:
                return row
        raise _not_recorded(text, where)
    rows = conn.execute(
        base.where(desfile.c.filename == text).order_by(desfile.c.path).limit(MAX_CANDIDATES + 1)
    ).all()
    if not rows:
        raise _not_recorded(text, where)
    if len(rows) > 1:
        raise _ambiguous(text, rows, where)
    return rows[0]


def _path_candidates(text: str) -> list[tuple[str, str]]:
    """The path as given and, for a relative path, as seen from the current directory."""
    keys = [split_path(text)]
    if not os.path.isabs(text):
        keys.append(split_path(os.path.abspath(text)))
    return keys


def _not_recorded(text: str, where: str) -> ProvenanceInputError:
    return ProvenanceInputError(
        f"file {text!r} is not recorded in the provenance database at {where}; "
        "give the full path as recorded or a bare file name"
    )


def _ambiguous(text: str, rows: list[sa.Row], where: str) -> ProvenanceInputError:
    paths = [file_info(r).full_path for r in rows[:MAX_CANDIDATES]]
    count = f"more than {MAX_CANDIDATES}" if len(rows) > MAX_CANDIDATES else str(len(rows))
    return ProvenanceInputError(
        f"file name {text!r} is ambiguous in the provenance database at {where}: {count} recorded "
        f"files have it ({', '.join(paths)}); give the full path"
    )


def file_info(row: sa.Row) -> FileInfo:
    return FileInfo(
        id=row.id, path=row.path, filename=row.filename, filetype=row.filetype, filesize=row.filesize,
        md5sum=row.md5sum, compression=row.compression, wgb_task_id=row.wgb_task_id,
    )


def task_info(row: sa.Row) -> TaskInfo | None:
    """The generating task of a row from the queries here (None for a raw input)."""
    if row.t_id is None:
        return None
    return TaskInfo(
        id=row.t_id, name=row.t_name, dag_id=row.t_dag_id, run_id=row.t_run_id, task_id=row.t_task_id,
        map_index=row.t_map_index, try_number=row.t_try_number, status=row.t_status,
        executor=row.t_executor, host=row.t_host, start_time=utc(row.t_start_time), end_time=utc(row.t_end_time),
    )


def prefer_index_lookups(conn: sa.Connection) -> None:
    """Make PostgreSQL walk the graph through its indexes for the rest of this transaction.

    The planner cannot know how many rows a recursive step returns; it guesses from the
    average fan-out of the whole table, which a file read by a thousand tasks inflates, and
    then hashes the entire edge and file tables for a walk that touches ten rows (tens of
    milliseconds at 10^5 files, hundreds at 10^6). Without hash and merge joins every step
    is an index lookup, which is what a walk wants even when it reaches many files. The
    same overestimate would have the query JIT-compiled, which costs more than the walk.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off")


def ancestor_edges(root_id: int) -> sa.CTE:
    """Recursive CTE of (parent_id, child_id) edges from ``root_id`` back to raw inputs."""
    edges = (
        sa.select(wdf.c.parent_desfile_id.label("parent_id"), wdf.c.child_desfile_id.label("child_id"))
        .where(wdf.c.child_desfile_id == root_id)
        .cte("lineage_edges", recursive=True)
    )
    step = sa.select(wdf.c.parent_desfile_id, wdf.c.child_desfile_id).join(
        edges, wdf.c.child_desfile_id == edges.c.parent_id
    )
    return edges.union(step)


def descendant_edges(root_id: int) -> sa.CTE:
    """Recursive CTE of (parent_id, child_id) edges from ``root_id`` forward to final products."""
    edges = (
        sa.select(wdf.c.parent_desfile_id.label("parent_id"), wdf.c.child_desfile_id.label("child_id"))
        .where(wdf.c.parent_desfile_id == root_id)
        .cte("impact_edges", recursive=True)
    )
    step = sa.select(wdf.c.parent_desfile_id, wdf.c.child_desfile_id).join(
        edges, wdf.c.parent_desfile_id == edges.c.child_id
    )
    return edges.union(step)


def lineage(conn: sa.Connection, root: sa.Row) -> LineageNode:
    """The lineage tree of a resolved file, from one recursive query."""
    prefer_index_lookups(conn)
    edges = ancestor_edges(root.id)
    query = (
        sa.select(edges.c.child_id, *_FILE_COLS, *_TASK_COLS)
        .join(desfile, desfile.c.id == edges.c.parent_id)
        .outerjoin(task, task.c.id == desfile.c.wgb_task_id)
    )
    rows = conn.execute(query).all()
    nodes = {root.id: LineageNode(file_info(root), task_info(root))}
    for row in rows:
        if row.id not in nodes:
            nodes[row.id] = LineageNode(file_info(row), task_info(row))
    for row in rows:
        nodes[row.child_id].parents.append(nodes[row.id])
    for node in nodes.values():
        node.parents.sort(key=lambda n: n.path)
    return nodes[root.id]


def related_paths(conn: sa.Connection, root_id: int, *, direction: str) -> set[str]:
    """Full paths of every ancestor (``direction="up"``) or descendant (``"down"``)."""
    prefer_index_lookups(conn)
    if direction == "up":
        edges = ancestor_edges(root_id)
        far = edges.c.parent_id
    else:
        edges = descendant_edges(root_id)
        far = edges.c.child_id
    query = sa.select(desfile.c.path, desfile.c.filename).where(desfile.c.id.in_(sa.select(far)))
    return {FileInfo(0, p, f).full_path for p, f in conn.execute(query)}


def impact(conn: sa.Connection, root: sa.Row) -> ImpactReport:
    """Every descendant of a resolved file with its generating task, in redo order."""
    prefer_index_lookups(conn)
    edges = descendant_edges(root.id)
    query = (
        sa.select(edges.c.parent_id, *_FILE_COLS, *_TASK_COLS)
        .join(desfile, desfile.c.id == edges.c.child_id)
        .outerjoin(task, task.c.id == desfile.c.wgb_task_id)
    )
    rows = conn.execute(query).all()
    depth = longest_depths(root.id, [(r.parent_id, r.id) for r in rows])
    files: dict[int, ImpactedFile] = {}
    for row in rows:
        files.setdefault(row.id, ImpactedFile(file_info(row), task_info(row), depth[row.id]))
    ordered = sorted(files.values(), key=lambda f: (f.depth, f.path))
    return ImpactReport(file_info(root), tuple(ordered), _tasks_in_order(ordered))


def _tasks_in_order(files: list[ImpactedFile]) -> tuple[TaskInfo, ...]:
    """Distinct generating tasks, by the smallest depth of their files, then by key."""
    first: dict[int, tuple[int, TaskInfo]] = {}
    for f in files:
        if f.task is not None and f.task.id not in first:
            first[f.task.id] = (f.depth, f.task)
    ranked = sorted(first.values(), key=lambda dt: (dt[0], dt[1].dag_id, dt[1].run_id, dt[1].task_id,
                                                    dt[1].map_index, dt[1].try_number))
    return tuple(t for _, t in ranked)


def longest_depths(root: int, edges: list[tuple[int, int]]) -> dict[int, int]:
    """Longest distance from ``root`` of every node reached by ``edges`` (Kahn's order).

    Nodes on a cycle (which a correct history never has) get one more than the deepest
    node that could be ordered, rather than looping.
    """
    children: dict[int, set[int]] = defaultdict(set)
    indegree: dict[int, int] = defaultdict(int)
    for parent, child in set(edges):
        if child not in children[parent]:
            children[parent].add(child)
            indegree[child] += 1
    depth = {root: 0}
    ready = deque([root])
    while ready:
        node = ready.popleft()
        for child in children.get(node, ()):
            depth[child] = max(depth.get(child, 0), depth[node] + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    deepest = max(depth.values())
    for node in indegree:
        depth.setdefault(node, deepest + 1)
    return depth
