"""A DAGMan file for skyops steps, written with the bindings' DAG writer (``htcondor2.dags``).

For sites that run HTCondor's DAGMan directly rather than Airflow, as gw_workflow's
``dag-create.sh`` wrote ``parallel.dag`` for ``jobsub_submit_dag``. Each node is one
``skyops step run`` in its own workdir (its ``params.json`` written next to it); nodes of the
same step share one submit file whose paths are ``$(workdir)`` macros, filled per node by a
``VARS`` line. Retries are DAGMan's (``RETRY node N UNLESS-EXIT 2``: a bad-input exit is not
retried), so the submit files carry no ``max_retries`` of their own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from htcondor2 import dags

from skyops.config import PlatformConfig, Resources
from skyops.errors import InputError
from skyops.executors.base import StepSpec
from skyops.executors.htcondor import BAD_INPUT_EXIT, submit_keys

_NODE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
WORKDIR_MACRO = "$(workdir)"


@dataclass
class DagNode:
    """One DAGMan node: a step with its parameters and workdir, or a plain skyops command."""

    name: str
    spec: StepSpec
    parents: list[str] = field(default_factory=list)
    #: a command other than ``skyops step run`` (arguments after ``skyops``), e.g. ``stage ...``
    argv: list[str] | None = None

    @property
    def kind(self) -> str:
        """Nodes of one kind share a submit file."""
        return self.spec.step


class _NodeNames(dags.NodeNameFormatter):
    """Node name = layer name: every layer here holds exactly one node (one CCD, one step)."""

    def generate(self, layer_name: str, node_index: int) -> str:
        return layer_name

    def parse(self, node_name: str) -> tuple[str, int]:
        return node_name, 0


def _submit_file(node: DagNode, cfg: PlatformConfig, dag_dir: Path) -> Path:
    """Write the shared submit file of ``node``'s kind (paths as $(workdir) macros)."""
    import htcondor2

    template = StepSpec(node.spec.step, {}, Path(WORKDIR_MACRO), node.spec.resources,
                        labels={k: v for k, v in node.spec.labels.items() if k != "map_index"})
    argv = None
    if node.argv is not None:
        argv = [a.replace(str(node.spec.workdir), WORKDIR_MACRO) for a in node.argv]
    text = str(htcondor2.Submit(submit_keys(template, cfg, argv=argv, retries=False)))
    path = dag_dir / f"{node.kind}.sub"
    path.write_text(text)
    return path


def write_dag(nodes: list[DagNode], dag_dir: Path, dag_file: str, cfg: PlatformConfig, *,
              retries: int = 2) -> Path:
    """Write ``dag_dir/dag_file``, one submit file per node kind and every node's params.json."""
    dag_dir = Path(dag_dir).resolve()
    names = [n.name for n in nodes]
    bad = [n for n in names if not _NODE_NAME.match(n)]
    if bad or len(set(names)) != len(names):
        raise InputError(f"DAG nodes {bad or sorted({n for n in names if names.count(n) > 1})}: node names must "
                         f"be unique and use only letters, digits and _ . + -")
    for n in nodes:
        if any(c in str(n.spec.workdir) for c in " \t\"'"):
            raise InputError(f"DAG node {n.name}: workdir {n.spec.workdir} contains a space or a quote, which "
                             f"DAGMan VARS cannot carry; choose an output folder without them")
    dag_dir.mkdir(parents=True, exist_ok=True)
    submit_files: dict[str, Path] = {}
    dag = dags.DAG()
    layers: dict[str, Any] = {}
    for n in nodes:
        if n.kind not in submit_files:
            submit_files[n.kind] = _submit_file(n, cfg, dag_dir)
        if n.argv is None:
            n.spec.write_params()
        else:
            Path(n.spec.workdir).mkdir(parents=True, exist_ok=True)
        layers[n.name] = dag.layer(
            name=n.name, submit_description=submit_files[n.kind], vars=[{"workdir": str(n.spec.workdir)}],
            retries=retries, retry_unless_exit=BAD_INPUT_EXIT)
    for n in nodes:
        for parent in n.parents:
            if parent not in layers:
                raise InputError(f"DAG node {n.name}: parent {parent!r} is not a node of this DAG")
            layers[parent].add_children(layers[n.name])
    return dags.write_dag(dag, dag_dir, dag_file_name=dag_file, node_name_formatter=_NodeNames())


def step_node(name: str, step: str, params: dict[str, Any], workdir: Path, resources: Resources,
              labels: dict[str, str], parents: list[str] | None = None) -> DagNode:
    """A ``skyops step run`` node."""
    return DagNode(name, StepSpec(step, params, Path(workdir), resources, labels=dict(labels)), list(parents or []))


__all__ = ["DagNode", "write_dag", "step_node"]
