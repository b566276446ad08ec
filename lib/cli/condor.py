"""``skyops condor dag gw_nightly``: a DAGMan file for sites that run HTCondor's DAGMan directly.

The successor of gw_workflow's ``dag-create.sh``, which wrote ``parallel.dag`` with one job
per CCD for ``jobsub_submit_dag``. Here the archive is queried when the DAG is written (the
exposure's raw file, the night's calibrations, the reference catalog, the templates); the DAG
then has one ``stage`` node (``skyops stage`` of those files into the run folder) and, per
exposure and CCD, a ``gw.se_ccd`` node and its child ``gw.diffimg_ccd`` node, each with its
``params.json`` already written and ``RETRY`` lines. Every node runs the same
``skyops step run`` as an Airflow task would, so results and provenance files are the same.

Not in the DAG: the per-exposure BLISS calibration (``-C``; difference magnitudes then use the
image's own zeropoint keyword), candidate ingestion and the night summary, which Airflow's
``gw_nightly`` runs.

    skyops condor dag gw_nightly --night 20170817 --expnum 668439 --ccds 1,3-10
    condor_submit_dag OUT/gw_nightly_20170817.dag
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skyops.errors import InputError

#: Campaigns ``skyops condor dag`` can write a DAG for.
CAMPAIGNS = ("gw_nightly",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("condor", help="HTCondor: write DAGMan files for sites that run DAGMan directly")
    cs = p.add_subparsers(dest="cmd", required=True, metavar="SUBCOMMAND")
    d = cs.add_parser("dag", help="write a DAGMan file for one campaign run",
                      description="Write a DAGMan file (one job per CCD, with retries) and its submit files and "
                                  "params, ready for condor_submit_dag.")
    d.add_argument("campaign", choices=CAMPAIGNS, help="campaign")
    d.add_argument("--night", "-n", required=True, help="observing night YYYYMMDD (-n)")
    d.add_argument("--expnum", "-E", type=int, action="append", required=True,
                   help="exposure number (-E); repeat for several")
    d.add_argument("--ccds", "-c", default=None, help="CCDs, e.g. 1,3-60,62 (-c; default all live CCDs)")
    d.add_argument("--band", "-b", default=None, help="band (-b; default from configs/gw_nightly.yaml)")
    d.add_argument("--rnum", "-r", type=int, default=None, help="RNUM (-r)")
    d.add_argument("--pnum", "-p", type=int, default=None, help="PNUM (-p)")
    d.add_argument("--fullcopy", "-F", action="store_true", help="keep every diffimg intermediate (-F)")
    d.add_argument("--retries", type=int, default=None,
                   help="DAGMan RETRY per node (default: executors.htcondor.max_retries)")
    d.add_argument("--output", "-o", type=Path, default=None,
                   help="folder for the DAG, submit files and every node's workdir "
                        "(default: WORKSPACE_PERSISTENT/condor/gw_nightly_NIGHT); must be on the shared filesystem")
    d.set_defaults(func=_dag)


def _gw_params(args: argparse.Namespace) -> Any:
    from skyops.campaigns.gw.config import GWNightlyConfig
    from skyops.campaigns.gw.params import validate
    from skyops.config import load_campaign_config

    defaults = load_campaign_config("gw_nightly", GWNightlyConfig).defaults
    raw: dict[str, Any] = {"night": args.night, "expnums": list(args.expnum), "band": args.band or defaults.band,
                           "ccds": args.ccds if args.ccds is not None else defaults.ccds,
                           "rnum": args.rnum or defaults.rnum, "pnum": args.pnum or defaults.pnum,
                           "fullcopy": bool(args.fullcopy)}
    return validate(raw)


def gw_nodes(params: Any, manifests: dict[int, dict[str, Any]], out: Path) -> list[Any]:
    """The DAG's nodes: stage, then per exposure and CCD a gw.se_ccd -> gw.diffimg_ccd pair.

    ``manifests[expnum]`` holds the exposure's ``raw``, ``cal``, ``ref`` and ``tmpl`` manifests.
    Inputs are staged to ``out/staged``; node ``X`` works in ``out/<expnum>/<X>``. SE outputs
    have DESDM names fixed by exposure, band, CCD and run, so the diffimg parameters can name
    them before SE has run.
    """
    from skyops.campaigns.gw.plan import ccd_key, diff_inputs, se_inputs
    from skyops.campaigns.gw.se import product_stem
    from skyops.config import Resources
    from skyops.executors.dagman import DagNode, step_node
    from skyops.executors.base import StepSpec
    from skyops.steps.registry import get_step

    staged = out / "staged"
    labels = {"campaign": "gw_nightly", "unit": params.night}
    stage_spec = StepSpec("stage", {}, out, Resources(cpu=1, memory_mb=1024, scratch_mb=0), labels=labels)
    nodes = [DagNode("stage", stage_spec, argv=["stage", str(out / "inputs.json"), str(staged), "--no-progress"])]
    se_res, diff_res = get_step("gw.se_ccd").resources, get_step("gw.diffimg_ccd").resources
    for expnum in sorted(manifests):
        m = manifests[expnum]
        se = se_inputs(staged, m["raw"], m["cal"], m["ref"], params, expnum)
        run = f"r{params.rnum}p{params.pnum}"
        predicted: dict[int, dict[str, str]] = {}
        for key, p in se.items():
            if p is None:
                continue
            name = f"se_{expnum}_{key}"
            wd = out / str(expnum) / name
            nodes.append(step_node(name, "gw.se_ccd", p, wd, se_res, labels, parents=["stage"]))
            stem = product_stem(int(expnum), params.band, int(p["ccd"]), run)
            predicted[int(p["ccd"])] = {"red_immask": str(wd / f"{stem}_immasked.fits"),
                                        "psfex_model": str(wd / f"{stem}_psfexcat.psf")}
        diff = diff_inputs(staged, predicted, m["tmpl"], {}, params, expnum)
        for ccd, files in sorted(predicted.items()):
            p = diff.get(ccd_key(ccd))
            if p is None:
                continue
            name = f"diff_{expnum}_{ccd_key(ccd)}"
            nodes.append(step_node(name, "gw.diffimg_ccd", p, out / str(expnum) / name, diff_res, labels,
                                   parents=[f"se_{expnum}_{ccd_key(ccd)}"]))
    return nodes


def _query_manifests(params: Any, cfg: Any) -> dict[int, dict[str, Any]]:
    from skyops.archive import ArchiveDB

    out: dict[int, dict[str, Any]] = {}
    with ArchiveDB.from_config(cfg) as db:
        cal = db.query("night_calibrations", nite=params.night, band=params.band)
        ref = db.query("reference_catalog")
        for expnum in params.expnums:
            raw = db.query("raw_exposure", expnum=expnum)
            if not len(raw):
                raise InputError(f"--expnum {expnum}: no raw exposure with this number in the archive; "
                                 f"check the number (-E) and that the night has been ingested")
            out[int(expnum)] = {"raw": raw, "cal": cal, "ref": ref, "tmpl": db.query("templates", expnum=expnum)}
    return out


def _dag(args: argparse.Namespace) -> int:
    from rich.console import Console

    from skyops.config import platform_config
    from skyops.executors.dagman import write_dag
    from skyops.manifest import merge_manifests

    cfg = platform_config()
    params = _gw_params(args)
    out = (args.output or Path(cfg.workspace.persistent) / "condor" / f"gw_nightly_{params.night}").resolve()
    manifests = _query_manifests(params, cfg)
    out.mkdir(parents=True, exist_ok=True)
    merge_manifests([m[k] for m in manifests.values() for k in ("raw", "cal", "ref", "tmpl")]).write(out / "inputs.json")
    nodes = gw_nodes(params, manifests, out)
    if len(nodes) == 1:
        raise InputError(f"night {params.night}, exposures {list(params.expnums)}: no CCD has inputs "
                         f"(selected CCDs {args.ccds or 'default'}); nothing to put in a DAG")
    retries = cfg.executors.htcondor.max_retries if args.retries is None else args.retries
    if retries < 0:
        raise InputError(f"--retries must be 0 or more, got {retries}")
    path = write_dag(nodes, out, f"gw_nightly_{params.night}.dag", cfg, retries=retries)
    n_se = sum(n.spec.step == "gw.se_ccd" for n in nodes)
    n_diff = sum(n.spec.step == "gw.diffimg_ccd" for n in nodes)
    Console().print(f"wrote {path}: stage + {n_se} gw.se_ccd + {n_diff} gw.diffimg_ccd jobs, RETRY {retries}\n"
                    f"submit with: condor_submit_dag {path}")
    return 0
