"""The GW campaign's Airflow shape: one task group per exposure, one task per CCD.

Airflow cannot map a task inside a mapped task group, and 60 CCDs x a night's exposures
would pass its 1,024 mapped-instance limit anyway. So the exposure is the mapped unit and
the CCD is a *static* task inside the group (``se_c05``, ``diff_c05``): a night of N
exposures has N instances of each CCD task, far below the limit, and an operator retries or
clears exactly one CCD of one exposure from the UI. CCDs not selected (``-c``) are skipped,
visibly. The same group serves ``gw_nightly`` (mapped over the night's exposures) and
``gw_exposure`` (one exposure, triggered minutes after the shutter closes).

Templates that exist only raw (never processed by DESDM) are SE'd before differencing, in
the same shape: each exposure's ``plan_se`` also says which raw template CCDs its selected
CCDs overlap (``raw_templates`` query, staged raw headers); ``raw_template_exposures``
merges that over the run's exposures, so a template CCD that several search CCDs or search
exposures share is processed once; a ``template`` group per raw template exposure (mapped,
like ``exposure``) runs ``gw.se_ccd`` on its CCDs (``template.se_c28``, shown as ``521360
c28``); every exposure's ``plan_diff`` waits for them and hands their outputs to
``gw.diffimg_ccd`` beside the processed templates. See :func:`exposure_pipeline`.

Everything here is wiring; which file goes to which CCD is :mod:`skyops.campaigns.gw.plan`.
"""
from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Param, task, task_group

from skyops.campaigns.gw.config import GWNightlyConfig
from skyops.campaigns.gw.params import BANDS, FLAGS
from skyops.campaigns.gw.plan import SE_FILETYPES, TASK_CCDS, ccd_key
from skyops.operators.compute import ComputeOperator
from skyops.operators.desdm import DesdmQueryOperator
from skyops.operators.stage import StageFilesOperator

log = logging.getLogger(__name__)

GROUP = "exposure"
#: The mapped group that SEs the CCDs of one raw-only template exposure.
TEMPLATE_GROUP = "template"
#: A CCD list as a string: numbers 1-62 and ranges of them (``1,3-60,62``), or empty for the default.
_N = r"(?:[1-9]|[1-5][0-9]|6[0-2])"
CCD_LIST_PATTERN = rf"^\s*$|^\s*{_N}(?:\s*-\s*{_N})?(?:\s*,\s*{_N}(?:\s*-\s*{_N})?)*\s*$"
#: Jinja for the run's validated params (pushed by the ``params`` task).
P = "ti.xcom_pull(task_ids='params')"


def dag_params(cfg: GWNightlyConfig, *, night_required: bool = False, expnum: bool = False) -> dict[str, Param]:
    """The DAG params, JSON-schema validated when a run is triggered (before any task runs)."""
    d = cfg.defaults
    desc = {k: f"{flag} {text}".strip() for k, (flag, text) in FLAGS.items()}
    params = {
        "night": Param("" if not night_required else None, type="string" if night_required else ["string", "null"],
                       pattern=r"^$|^(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])$", description=desc["night"]),
        "band": Param(d.band, type="string", enum=list(BANDS), description=desc["band"]),
        "ccds": Param(d.ccds, type=["string", "array"], pattern=CCD_LIST_PATTERN,
                      items={"type": "integer", "minimum": 1, "maximum": 62}, description=desc["ccds"]),
        "rnum": Param(d.rnum, type="integer", minimum=1, description=desc["rnum"]),
        "pnum": Param(d.pnum, type="integer", minimum=1, description=desc["pnum"]),
        "season": Param(d.season, type="string", pattern=r"^[A-Za-z0-9_-]{1,16}$", description=desc["season"]),
        "destination": Param(d.destination, type="string", enum=["scratch", "persistent"], description=desc["destination"]),
        "schema": Param(d.schema_, type="string", enum=["gw", "wsdiff"], description=desc["schema"]),
        "calibrate": Param(d.calibrate, type="boolean", description=desc["calibrate"]),
        "skip_se": Param(False, type="boolean", description=desc["skip_se"]),
        "overwrite": Param(False, type="boolean", description=desc["overwrite"]),
        "template_mode": Param(False, type="boolean", description=desc["template_mode"]),
        "diffimg_version": Param(d.diffimg_version, type="string", description=desc["diffimg_version"]),
        "fullcopy": Param(False, type="boolean", description=desc["fullcopy"]),
        "program": Param(d.program, type="string", description=desc["program"]),
    }
    if expnum:
        params["expnum"] = Param(None, type="integer", minimum=1, description="-E the exposure to process")
    else:
        params["expnums"] = Param([], type="array", items={"type": "integer", "minimum": 1}, description=desc["expnums"])
    return params


@task(task_id="params", multiple_outputs=True)
def resolve_params(params: dict[str, Any] | None = None, data_interval_start: Any = None) -> dict[str, Any]:
    """Validate the run's params (the night defaults to the one that just ended)."""
    from skyops.campaigns.gw.params import validate

    raw = {k: v for k, v in (params or {}).items() if k not in ("expnum",)}
    if not raw.get("night") and data_interval_start is not None:
        raw["night"] = data_interval_start.strftime("%Y%m%d")
    if (params or {}).get("expnum"):
        raw["expnums"] = [int(params["expnum"])]
    return validate(raw).as_dict()


@task
def exposures_of(run: dict[str, Any]) -> list[int]:
    """The exposures a gw_exposure run processes (its one ``expnum``)."""
    return list(run["expnums"])


def _pull(ti: Any, task_id: str, key: str, group: str = GROUP) -> Any:
    """An XCom of a task in the same group instance (None when it was skipped)."""
    return ti.xcom_pull(task_ids=f"{group}.{task_id}", key=key, map_indexes=ti.map_index)


def _se_outputs(ti: Any, run: dict[str, Any]) -> dict[int, dict[str, str]]:
    """CCD -> gw.se_ccd outputs by filetype: this run's SE tasks, or (``-j``) earlier runs'."""
    if run["skip_se"]:
        return {int(c): o for c, o in (_pull(ti, "plan_se", "previous") or {}).items()}
    out = {}
    for c in _planned(ti, "plan_se"):
        files = {ft: _pull(ti, f"se_{ccd_key(c)}", ft) for ft in SE_FILETYPES}
        if all(files.values()):
            out[c] = files
    return out


def _planned(ti: Any, plan_task: str) -> list[int]:
    """The CCDs a plan task gave work to (the others were skipped: no XCom to look for)."""
    return [c for c in TASK_CCDS if _pull(ti, plan_task, ccd_key(c))]


def _push_and_skip(ti: Any, prefix: str, planned: dict[str, Any], group: str = GROUP) -> None:
    """Push each CCD's params under its own key, and skip the CCD tasks that have no work.

    The planner skips them itself (this exposure's instances only), so that no task process
    starts just to find it has nothing to do: a 2-CCD run of a 60-CCD exposure would otherwise
    start 116 of them. (A branch operator cannot do this inside a mapped task group: Airflow
    3.3 looks for its decision under the wrong map index and runs every CCD task.)

    Airflow creates a mapped group's task instances lazily, though: a skip finds nothing to
    skip when the CCD tasks are expanded only after the planner ran. That happens to the diff
    tasks when plan_diff's last upstream to finish is outside the group (a raw template's SE).
    So the plan tasks are ``multiple_outputs``: a key with no work then resolves to None, and
    such a CCD task skips itself (ComputeOperator), visibly, at the cost of starting.
    """
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    for key, value in planned.items():
        ti.xcom_push(key=key, value=value)
    idle = [(f"{group}.{prefix}_{key}", ti.map_index) for key, value in planned.items()
            if key.startswith("c") and not value]
    if idle:
        raise DownstreamTasksSkipped(tasks=idle)


@task(task_id="plan_se", multiple_outputs=True)
def plan_se(expnum: int, run: dict[str, Any], raw: dict, cal: dict, ref: dict, raw_tmpl: dict, staged: dict,
            ti: Any = None) -> None:
    """Per-CCD gw.se_ccd parameters (XCom keys c01..c62); CCDs without work are skipped.

    Also (XCom key ``raw_templates``) the raw-only template CCDs the selected CCDs need:
    :meth:`~skyops.campaigns.gw.plan.RawTemplatePlan.as_xcom`.
    """
    _push_and_skip(ti, "se", _plan_se(expnum, run, raw, cal, ref, raw_tmpl, staged))


def _plan_se(expnum: int, run: dict[str, Any], raw: dict, cal: dict, ref: dict, raw_tmpl: dict,
             staged: dict) -> dict[str, Any]:
    from skyops.campaigns.gw.params import validate
    from skyops.campaigns.gw.plan import plan_raw_templates
    from skyops.manifest import Manifest

    p = validate({k: v for k, v in run.items()})
    raw_m, ref_m = Manifest.read(raw["manifest"]), Manifest.read(ref["manifest"])
    templates = plan_raw_templates(staged["dest"], raw_m, Manifest.read(raw_tmpl["manifest"]), ref_m, p, expnum)
    return {**_plan_search_se(expnum, p, raw_m, cal, ref_m, staged), "raw_templates": templates.as_xcom()}


def _plan_search_se(expnum: int, p: Any, raw: Any, cal: dict, ref: Any, staged: dict) -> dict[str, Any]:
    from skyops.manifest import Manifest

    if p.skip_se:  # -j: no SE now; calibration and diffimg use the last successful SE of each CCD
        from skyops.campaigns.gw.plan import previous_se_outputs
        from skyops.provenance import ProvenanceStore

        store = ProvenanceStore.from_config()
        try:
            previous = previous_se_outputs(store.engine, expnum, p.live_ccds)
        finally:
            store.close()
        return {**{ccd_key(c): None for c in TASK_CCDS}, "previous": {str(c): o for c, o in previous.items()}}
    from skyops.campaigns.gw.plan import se_inputs

    return se_inputs(staged["dest"], raw, Manifest.read(cal["manifest"]), ref, p, expnum)


@task(trigger_rule="none_failed")
def collect_catalogs(run: dict[str, Any], ref: dict, staged: dict, ti: Any = None) -> dict[str, Any] | None:
    """The exposure's SE catalogs for one BLISS calibration (None when -C is off or nothing ran)."""
    from skyops.campaigns.gw.plan import staged as staged_path
    from skyops.manifest import Manifest

    cats = [o["cat_finalcut"] for _, o in sorted(_se_outputs(ti, run).items())]
    if not run["calibrate"] or not cats:
        return None
    refcat = staged_path(staged["dest"], list(Manifest.read(ref["manifest"]).records())[-1])
    return {"catalogs": cats, "refcat": refcat, "band": run["band"]}


@task(task_id="plan_diff", trigger_rule="none_failed", multiple_outputs=True)
def plan_diff(expnum: int, run: dict[str, Any], tmpl: dict, staged: dict, ti: Any = None) -> None:
    """Per-CCD gw.diffimg_ccd parameters (XCom keys): SE outputs, templates and the CCD's zeropoint."""
    _push_and_skip(ti, "diff", _plan_diff(expnum, run, tmpl, staged, ti))


def _plan_diff(expnum: int, run: dict[str, Any], tmpl: dict, staged: dict, ti: Any) -> dict[str, Any]:
    from skyops.campaigns.gw.params import validate
    from skyops.campaigns.gw.plan import diff_inputs, read_zeropoints
    from skyops.manifest import Manifest

    se = _se_outputs(ti, run)
    zps = read_zeropoints(_pull(ti, "calibrate", "bliss_zeropoint") if run["calibrate"] else None)
    return diff_inputs(staged["dest"], se, Manifest.read(tmpl["manifest"]), zps, validate(run), expnum,
                       raw_templates=_raw_template_images(ti, expnum))


def _raw_template_images(ti: Any, expnum: int) -> dict[int, list[str]]:
    """Search CCD -> red_immask files the template group's gw.se_ccd made from raw template CCDs."""
    needs = (_pull(ti, "plan_se", "raw_templates") or {}).get("needs") or {}
    if not needs:
        return {}
    units = ti.xcom_pull(task_ids="raw_template_exposures") or []  # an unmapped task: its one value
    index = {int(u["expnum"]): i for i, u in enumerate(units)}
    out: dict[int, list[str]] = {}
    for key, pairs in needs.items():
        for texp, tccd in pairs:
            path = None
            if int(texp) in index:
                path = ti.xcom_pull(task_ids=f"{TEMPLATE_GROUP}.se_{ccd_key(tccd)}", key="red_immask",
                                    map_indexes=index[int(texp)])
            if not path:
                log.warning("exposure %s %s: raw template %s CCD %d has no SE output; it is left out",
                            expnum, key, texp, tccd)
                continue
            out.setdefault(int(key[1:]), []).append(path)
    return out


@task(trigger_rule="none_failed")
def collect_candidates(run: dict[str, Any], ti: Any = None) -> dict[str, Any] | None:
    """The exposure's candidate files for ingestion into <schema>_candidate."""
    cands = [c for c in (_pull(ti, f"diff_{ccd_key(c)}", "gw_diff_candidates") for c in _planned(ti, "plan_diff")) if c]
    if not cands:
        return None
    return {"candidates": cands, "night": run["night"], "schema": run["schema"], "season": run["season"],
            "band": run["band"], "diffimg_version": run["diffimg_version"]}


@task(trigger_rule="all_done")
def raw_template_exposures(expnums: list[int], ti: Any = None) -> list[dict[str, Any]]:
    """The raw-only template exposures to SE in this run, each with its CCDs' gw.se_ccd parameters.

    Merged over every exposure's ``plan_se``: a template CCD that several search CCDs or
    search exposures overlap is SE'd once. An exposure whose planning failed adds nothing.
    """
    plans = ti.xcom_pull(task_ids=f"{GROUP}.plan_se", key="raw_templates",
                         map_indexes=list(range(len(expnums or [])))) or []
    units: dict[int, dict[str, Any]] = {}
    for plan in plans:
        for texp, ccds in ((plan or {}).get("se") or {}).items():
            unit = units.setdefault(int(texp), {"expnum": int(texp), "ccds": {}})
            for key, params in ccds.items():
                unit["ccds"].setdefault(key, params)
    return [units[e] for e in sorted(units)]


@task(task_id="plan_se", multiple_outputs=True)
def plan_template_se(unit: dict[str, Any], ti: Any = None) -> None:
    """Per-CCD gw.se_ccd parameters of one raw template exposure; the CCDs nobody needs are skipped."""
    _push_and_skip(ti, "se", {ccd_key(c): unit["ccds"].get(ccd_key(c)) for c in TASK_CCDS}, group=TEMPLATE_GROUP)


def _compute(cfg: GWNightlyConfig, step: str, **kw: Any) -> ComputeOperator:
    s = cfg.step_settings(step)
    return ComputeOperator(
        step=step, backend=s.executor or cfg.executor,
        resources=s.resources.model_dump() if s.resources else None,
        unit="{{ " + P + "['night'] }}", destination="{{ " + P + "['destination'] }}",
        campaign=cfg.campaign, **({"retries": s.retries} if s.retries is not None else {}),
        **({"pool": s.pool} if s.pool else {}), **kw)


def exposure_group(cfg: GWNightlyConfig, run: Any):
    """The per-exposure task group (call ``.expand(expnum=...)`` on the result)."""

    @task_group(group_id=GROUP)
    def exposure(expnum: int):
        night = "{{ " + P + "['night'] }}"
        unit = night
        q_raw = DesdmQueryOperator(task_id="q_raw", query="raw_exposure", query_params={"expnum": expnum}, unit=unit)
        q_cal = DesdmQueryOperator(task_id="q_calibrations", query="night_calibrations",
                                   query_params={"nite": night, "band": "{{ " + P + "['band'] }}"}, unit=unit)
        q_ref = DesdmQueryOperator(task_id="q_refcat", query="reference_catalog", unit=unit)
        q_tmpl = DesdmQueryOperator(task_id="q_templates", query="templates", query_params={"expnum": expnum}, unit=unit)
        q_raw_tmpl = DesdmQueryOperator(task_id="q_raw_templates", query="raw_templates",
                                        query_params={"expnum": expnum}, unit=unit)
        stage = StageFilesOperator(task_id="stage", manifest=[q.output["manifest"] for q in (
                                   q_raw, q_cal, q_ref, q_tmpl, q_raw_tmpl)],
                                   overwrite="{{ " + P + "['overwrite'] }}", unit=unit)
        se_plan = plan_se(expnum, run, q_raw.output, q_cal.output, q_ref.output, q_raw_tmpl.output, stage.output)
        ses = [_compute(cfg, "gw.se_ccd", task_id=f"se_{ccd_key(c)}", step_params=se_plan[ccd_key(c)],
                        map_index_template="{{ task.step_params['expnum'] if task.step_params else '' }}")
               for c in TASK_CCDS]
        cal_params = collect_catalogs(run, q_ref.output, stage.output)
        calibrate = _compute(cfg, "gw.calibrate", task_id="calibrate", step_params=cal_params,
                             trigger_rule="none_failed")
        ses >> cal_params
        diff_plan = plan_diff(expnum, run, q_tmpl.output, stage.output)
        calibrate >> diff_plan
        diffs = [_compute(cfg, "gw.diffimg_ccd", task_id=f"diff_{ccd_key(c)}", step_params=diff_plan[ccd_key(c)],
                          map_index_template="{{ task.step_params['expnum'] if task.step_params else '' }}")
                 for c in TASK_CCDS]
        cands = collect_candidates(run)
        diffs >> cands
        ingest = _compute(cfg, "gw.ingest_candidates", task_id="ingest", step_params=cands,
                          trigger_rule="none_failed")
        return ingest

    return exposure


def template_group(cfg: GWNightlyConfig):
    """The per-raw-template-exposure task group (``.expand(unit=raw_template_exposures(...))``)."""

    @task_group(group_id=TEMPLATE_GROUP)
    def template(unit: dict[str, Any]):
        plan = plan_template_se(unit)
        return [_compute(cfg, "gw.se_ccd", task_id=f"se_{ccd_key(c)}", step_params=plan[ccd_key(c)],
                         map_index_template="{{ '%d c%02d'|format(task.step_params['expnum'], task.step_params['ccd'])"
                                            " if task.step_params else '' }}")
                for c in TASK_CCDS]

    return template


def exposure_pipeline(cfg: GWNightlyConfig, run: Any, expnums: Any):
    """Per search exposure, the ``exposure`` group; per raw-only template exposure, a ``template`` group.

    The templates' SE starts once every exposure has planned (their ``plan_se`` say which
    template CCDs they overlap) and runs beside the search exposures' SE; each exposure's
    ``plan_diff`` waits for it (so a template CCD that fails after its retries holds back
    the night's difference imaging until it is cleared, as a failed search CCD holds back its
    exposure's). Both groups are mapped over exposures with one static task per CCD, so
    neither depends on Airflow's mapped-instance limit. Returns the exposure group's last
    task (ingest), as ``exposure_group(...).expand(...)`` does.
    """
    ingest = exposure_group(cfg, run).expand(expnum=expnums)
    tasks = ingest.task_group.children
    units = raw_template_exposures(expnums)
    tasks[f"{GROUP}.plan_se"] >> units
    template_ses = template_group(cfg).expand(unit=units)
    template_ses >> tasks[f"{GROUP}.plan_diff"]
    return ingest
