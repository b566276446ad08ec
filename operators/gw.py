"""The GW campaign's Airflow shape: one task group per exposure, one task per CCD.

Airflow cannot map a task inside a mapped task group, and 60 CCDs x a night's exposures
would pass its 1,024 mapped-instance limit anyway. So the exposure is the mapped unit and
the CCD is a *static* task inside the group (``se_c05``, ``diff_c05``): a night of N
exposures has N instances of each CCD task, far below the limit, and an operator retries or
clears exactly one CCD of one exposure from the UI. CCDs not selected (``-c``) are skipped,
visibly. The same group serves ``gw_nightly`` (mapped over the night's exposures) and
``gw_exposure`` (one exposure, triggered minutes after the shutter closes; there the group is
not mapped, which keeps the scheduler's work per waiting task in memory: see
:func:`exposure_pipeline`).

Templates that exist only raw (never processed by DESDM) are SE'd before differencing, in
the same shape: each exposure's ``prepare`` also says which raw template CCDs its selected
CCDs overlap (``raw_templates`` query, staged raw headers); ``raw_template_exposures``
merges that over the run's exposures, so a template CCD that several search CCDs or search
exposures share is processed once; a ``template`` group per raw template exposure (mapped,
like ``exposure``) runs ``gw.se_ccd`` on its CCDs (``template.se_c28``, shown as ``521360
c28``); every exposure's ``calibrate`` waits for them and its diff plan hands their outputs to
``gw.diffimg_ccd`` beside the processed templates. See :func:`exposure_pipeline`.

The critical path has as few task starts as the work allows, because each one costs about a
second or two of scheduling and process start on a node that is busy with CCDs: one ``prepare``
task looks up the raw file, calibrations, reference catalogue and templates, stages them and
plans the SE (:class:`PrepareExposureOperator`); ``calibrate`` gathers the SE catalogues
itself and plans the difference imaging (:class:`CalibrateExposureOperator`), and ``ingest``
gathers the candidates (``step_params_from``); the collecting
tasks read one XCom per CCD task (its return value) and the plan's ``planned`` list, not a
key per filetype and per CCD, the CCD tasks push no per-filetype keys, and their ``unit`` and
``destination`` come from the DAG params (:data:`NIGHT`), not from the ``params`` task's XCom:
a 60-CCD exposure makes about 330 XCom reads and 275 writes in all (``bench gw_orchestration``
counts them).

Everything here is wiring; which file goes to which CCD is :mod:`skyops.campaigns.gw.plan`.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from airflow.sdk import BaseOperator, Context, Param, task, task_group

from skyops.campaigns.gw.config import GWNightlyConfig
from skyops.campaigns.gw.params import BANDS, FLAGS
from skyops.campaigns.gw.plan import SE_FILETYPES, TASK_CCDS, ccd_key
from skyops.operators.compute import ComputeOperator
from skyops.operators.desdm import checked_queries

log = logging.getLogger(__name__)

GROUP = "exposure"
#: The group's first task: archive lookups, staging and the SE plan (:class:`PrepareExposureOperator`).
PREPARE = "prepare"
#: The group's fan-in after SE: gw.calibrate and the diff plan (:class:`CalibrateExposureOperator`).
CALIBRATE = "calibrate"
#: The mapped group that SEs the CCDs of one raw-only template exposure.
TEMPLATE_GROUP = "template"
#: A CCD list as a string: numbers 1-62 and ranges of them (``1,3-60,62``), or empty for the default.
_N = r"(?:[1-9]|[1-5][0-9]|6[0-2])"
CCD_LIST_PATTERN = rf"^\s*$|^\s*{_N}(?:\s*-\s*{_N})?(?:\s*,\s*{_N}(?:\s*-\s*{_N})?)*\s*$"
#: Jinja for the run's validated params (pushed by the ``params`` task).
P = "ti.xcom_pull(task_ids='params')"
#: The run's night and destination straight from the DAG params, for the fields of the CCD tasks:
#: no XCom read (the ``P`` form costs one call to the API server per field per task, 240 per
#: 60-CCD exposure). The night follows :func:`resolve_params`' rule (the param, else the night
#: the data interval starts); the params were validated against the DAG's schema at trigger,
#: and no CCD task runs unless the ``params`` task validated them further.
NIGHT = "{{ params.night or (data_interval_start.strftime('%Y%m%d') if data_interval_start else '') }}"
DESTINATION = "{{ params.destination }}"


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
def exposure_of(params: dict[str, Any] | None = None) -> int:
    """The exposure a gw_exposure run processes (its ``expnum`` param).

    It reads the DAG param itself (validated when the run was triggered), not the ``params``
    task's output, so that it runs beside ``params`` instead of after it: one task start fewer
    before the archive queries.
    """
    return int((params or {})["expnum"])


def _pull(ti: Any, task_id: str, key: str, group: str = GROUP) -> Any:
    """An XCom of a task in the same group instance (None when it was skipped)."""
    return ti.xcom_pull(task_ids=f"{group}.{task_id}", key=key, map_indexes=ti.map_index)


def _outputs(ti: Any, task_id: str, group: str = GROUP, map_index: int | None = None) -> dict[str, Any]:
    """A ComputeOperator task's outputs by filetype, from its return value (one XCom read); {} if it did not run."""
    value = ti.xcom_pull(task_ids=f"{group}.{task_id}", map_indexes=ti.map_index if map_index is None else map_index)
    return (value or {}).get("outputs") or {}


def _se_outputs(ti: Any, run: dict[str, Any]) -> dict[int, dict[str, str]]:
    """CCD -> gw.se_ccd outputs by filetype: this run's SE tasks, or (``-j``) earlier runs'."""
    if run["skip_se"]:
        return {int(c): o for c, o in (_pull(ti, PREPARE, "previous") or {}).items()}
    out = {}
    for c in _planned(ti, PREPARE):
        outputs = _outputs(ti, f"se_{ccd_key(c)}")
        files = {ft: outputs.get(ft) for ft in SE_FILETYPES}
        if all(files.values()):
            out[c] = files
    return out


def _planned(ti: Any, plan_task: str) -> list[int]:
    """The CCDs a plan task gave work to (its ``planned`` XCom; the others were skipped)."""
    planned = _pull(ti, plan_task, "planned")
    if planned is None:  # a plan task from before ``planned`` existed: one read per CCD key
        return [c for c in TASK_CCDS if _pull(ti, plan_task, ccd_key(c))]
    return [int(c) for c in planned]


def _push_and_skip(ti: Any, prefix: str, planned: dict[str, Any], group: str = GROUP) -> None:
    """Push each CCD's params under its own key, and skip the CCD tasks that have no work.

    The planner skips them itself (this exposure's instances only), so that no task process
    starts just to find it has nothing to do: a 2-CCD run of a 60-CCD exposure would otherwise
    start 116 of them. (A branch operator cannot do this inside a mapped task group: Airflow
    3.3 looks for its decision under the wrong map index and runs every CCD task.)

    Airflow creates a mapped group's task instances lazily, though: a skip finds nothing to
    skip when the CCD tasks are expanded only after the planner ran. That happens to the diff
    tasks when calibrate's last upstream to finish is outside the group (a raw template's SE).
    So the plan tasks are ``multiple_outputs``: a key with no work then resolves to None, and
    such a CCD task skips itself (ComputeOperator), visibly, at the cost of starting.
    """
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    for key, value in planned.items():
        ti.xcom_push(key=key, value=value)
    ti.xcom_push(key="planned", value=sorted(int(key[1:]) for key, value in planned.items()
                                             if key.startswith("c") and value))
    idle = [(f"{group}.{prefix}_{key}", ti.map_index) for key, value in planned.items()
            if key.startswith("c") and not value]
    if idle:
        raise DownstreamTasksSkipped(tasks=idle)


class PrepareExposureOperator(BaseOperator):
    """One exposure's archive lookups, staging and per-CCD SE plan, in one task (``prepare``).

    The three used to be tasks of their own (``queries``, ``stage``, ``plan_se``); each hop
    between tasks on an exposure's critical path costs about 2 s of scheduling and process
    start before the first CCD can start, and none of the three is worth retrying alone: the
    lookups take milliseconds, the staging of a retry finds what is already in place (md5
    verified) and the plan is pure bookkeeping. Errors still name their stage: a query
    failure names the query, a transfer the file.

    One provenance row (``query.<lookups>+stage``) records the manifests as generated files,
    every staged file as used, the row counts and the transfer totals.

    XCom: ``queries`` (``{name: {"manifest", "rows"}}``, the lookups' manifests), ``dest``
    (where the files were staged), and the plan: per CCD its ``gw.se_ccd`` parameters
    (keys ``c01``..``c62``, None when it has no work; those CCD tasks are skipped),
    ``planned`` (the CCDs with work), ``raw_templates`` (the raw-only template CCDs the
    selected CCDs need: :meth:`~skyops.campaigns.gw.plan.RawTemplatePlan.as_xcom`) and, with
    ``-j``, ``previous`` (the last SE outputs of each CCD).

    :param expnum: the search exposure (templated; an XComArg or the mapped group's argument).
    :param queries: ``{name: (query, params)}``, the archive lookups (params templated; checked
        when the DAG is parsed by :func:`~skyops.operators.desdm.checked_queries`); ``raw``,
        ``calibrations``, ``refcat``, ``templates`` and ``raw_templates`` are needed.
    :param unit: the provenance unit (the night); templated.
    :param overwrite: fetch every file again (``-O``); templated.
    """

    NEEDED = ("raw", "calibrations", "refcat", "templates", "raw_templates")
    template_fields: Sequence[str] = ("expnum", "queries", "unit", "overwrite")
    template_fields_renderers = {"queries": "json"}
    ui_color = "#e8f4e0"

    def __init__(self, *, expnum: Any, queries: dict[str, tuple[str, dict[str, Any]]], unit: str,
                 overwrite: Any = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        missing = [name for name in self.NEEDED if name not in queries]
        if missing:
            raise ValueError(f"{kwargs.get('task_id')}: PrepareExposureOperator needs the lookups {missing}")
        self.queries = checked_queries(kwargs.get("task_id"), queries)
        self.expnum = expnum
        self.unit = unit
        self.overwrite = overwrite

    def execute(self, context: Context) -> None:
        from skyops.config import platform_config
        from skyops.launch import recorded_task
        from skyops.operators.compute import task_key
        from skyops.operators.desdm import query_manifests
        from skyops.operators.stage import default_dest, stage_manifests
        from skyops.provenance import ProvenanceStore

        ti = context["ti"]
        run = ti.xcom_pull(task_ids="params")
        cfg = platform_config()
        key = task_key(context)
        dest = default_dest(cfg, key)
        store = ProvenanceStore.from_config(cfg)
        attempt_id = store.attempt(key.dag_id, key.run_id, str(self.unit))
        name = "query." + "+".join(q for q, _ in self.queries.values()) + "+stage"
        with recorded_task(store, key, name[:250], attempt_id=attempt_id) as rec:
            got = query_manifests(self, context, {n: (q, dict(p)) for n, (q, p) in self.queries.items()}, rec)
            stage_manifests(self, context, [v["manifest"] for v in got.values()], dest, rec,
                            overwrite=self.overwrite)
        ti.xcom_push(key="queries", value=got)
        ti.xcom_push(key="dest", value=str(dest))
        _push_and_skip(ti, "se", _plan_se(int(self.expnum), run, got["raw"], got["calibrations"], got["refcat"],
                                          got["raw_templates"], {"dest": str(dest)}))


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


def calibrate_params(context: Any) -> dict[str, Any] | None:
    """``gw.calibrate``'s parameters, gathered when it runs: the exposure's SE catalogs and the
    staged reference catalogue (None, a skip, when -C is off or no CCD was SE'd)."""
    from skyops.campaigns.gw.plan import staged as staged_path
    from skyops.manifest import Manifest

    ti = context["ti"]
    run = ti.xcom_pull(task_ids="params")
    if not run["calibrate"]:
        return None
    cats = [o["cat_finalcut"] for _, o in sorted(_se_outputs(ti, run).items())]
    if not cats:
        return None
    ref, staged = _pull(ti, PREPARE, "queries")["refcat"], _pull(ti, PREPARE, "dest")
    refcat = staged_path(staged, list(Manifest.read(ref["manifest"]).records())[-1])
    return {"catalogs": cats, "refcat": refcat, "band": run["band"]}


class CalibrateExposureOperator(ComputeOperator):
    """One exposure's ``gw.calibrate`` and its per-CCD ``gw.diffimg_ccd`` plan, in one task (``calibrate``).

    The plan used to be a task of its own (``plan_diff``) between calibration and the CCDs'
    difference imaging; that hop cost about 2 s of scheduling and process start on the
    exposure's critical path, and the plan is bookkeeping over what calibration has just
    made (the zeropoints) and what the SE tasks made, so a retry or a clear of ``calibrate``
    re-plans too. With ``-C`` off, or when no CCD was SE'd, there is nothing to calibrate:
    the task still plans (without zeropoints) and ends ``success``, saying so in its log.

    It waits for the raw templates' SE as well (:func:`exposure_pipeline`): their outputs are
    part of the plan. XCom: the calibration's return value (as :class:`ComputeOperator`), its
    ``step_params``, and the plan: per CCD its ``gw.diffimg_ccd`` parameters (keys
    ``c01``..``c62``, None when it has no work; those CCD tasks are skipped) and ``planned``.

    :param expnum: the search exposure (templated; the group's argument).
    :param queries: ``prepare``'s lookups (``{name: {"manifest", "rows"}}``; templated): the diff
        plan reads ``templates``.
    :param dest: ``prepare``'s staging folder (templated).
    Everything else as :class:`ComputeOperator` (``step`` is ``gw.calibrate``).
    """

    template_fields: Sequence[str] = (*ComputeOperator.template_fields, "expnum", "queries", "dest")

    def __init__(self, *, expnum: Any, queries: Any, dest: Any, **kwargs: Any) -> None:
        super().__init__(step_params_from=calibrate_params, **kwargs)
        if self.step != "gw.calibrate":
            raise ValueError(f"{self.task_id}: CalibrateExposureOperator runs gw.calibrate, not {self.step}")
        self.expnum = expnum
        self.queries = queries
        self.dest = dest

    def execute(self, context: Context) -> None:
        params = calibrate_params(context)
        if params is None:
            self.log.info("exposure %s: nothing to calibrate (-C off, or no CCD was SE'd); "
                          "planning the difference imaging without zeropoints", self.expnum)
            return self._plan(context, None)
        self.step_params_from = None  # gathered once, here
        self.step_params = params
        context["ti"].xcom_push(key="step_params", value=params)
        return self._plan(context, super().execute(context))  # a remote backend defers here

    def execute_remote_complete(self, context: Context, event: dict[str, Any], **state: Any) -> None:
        return self._plan(context, super().execute_remote_complete(context, event, **state))

    def _plan(self, context: Context, result: dict[str, Any] | None) -> None:
        """Push the calibration's result and the diff plan; skip the CCD tasks with no work."""
        ti = context["ti"]
        if result is not None:
            # pushed here, not returned: _push_and_skip ends the task by raising, and a
            # return value would then never reach XCom
            ti.xcom_push(key="return_value", value=result)
        zeropoints = ((result or {}).get("outputs") or {}).get("bliss_zeropoint")
        run = ti.xcom_pull(task_ids="params")
        _push_and_skip(ti, "diff", _plan_diff(int(self.expnum), run, self.queries["templates"], str(self.dest),
                                              zeropoints, ti))


def _plan_diff(expnum: int, run: dict[str, Any], tmpl: dict, dest: str, zeropoints: str | None,
               ti: Any) -> dict[str, Any]:
    from skyops.campaigns.gw.params import validate
    from skyops.campaigns.gw.plan import diff_inputs, read_zeropoints
    from skyops.manifest import Manifest

    se = _se_outputs(ti, run)
    zps = read_zeropoints(zeropoints if run["calibrate"] else None)
    return diff_inputs(dest, se, Manifest.read(tmpl["manifest"]), zps, validate(run), expnum,
                       raw_templates=_raw_template_images(ti, expnum))


def _raw_template_images(ti: Any, expnum: int) -> dict[int, list[str]]:
    """Search CCD -> red_immask files the template group's gw.se_ccd made from raw template CCDs."""
    needs = (_pull(ti, PREPARE, "raw_templates") or {}).get("needs") or {}
    if not needs:
        return {}
    units = ti.xcom_pull(task_ids="raw_template_exposures") or []  # an unmapped task: its one value
    index = {int(u["expnum"]): i for i, u in enumerate(units)}
    out: dict[int, list[str]] = {}
    for key, pairs in needs.items():
        for texp, tccd in pairs:
            path = None
            if int(texp) in index:
                path = _outputs(ti, f"se_{ccd_key(tccd)}", TEMPLATE_GROUP, index[int(texp)]).get("red_immask")
            if not path:
                log.warning("exposure %s %s: raw template %s CCD %d has no SE output; it is left out",
                            expnum, key, texp, tccd)
                continue
            out.setdefault(int(key[1:]), []).append(path)
    return out


def ingest_params(context: Any) -> dict[str, Any] | None:
    """``gw.ingest_candidates``' parameters, gathered when it runs: the exposure's candidate files
    for <schema>_candidate (None, a skip, when no CCD produced any)."""
    ti = context["ti"]
    run = ti.xcom_pull(task_ids="params")
    cands = [c for c in (_outputs(ti, f"diff_{ccd_key(c)}").get("gw_diff_candidates")
                         for c in _planned(ti, CALIBRATE)) if c]
    if not cands:
        return None
    return {"candidates": cands, "night": run["night"], "schema": run["schema"], "season": run["season"],
            "band": run["band"], "diffimg_version": run["diffimg_version"]}


@task(trigger_rule="all_done")
def raw_template_exposures(expnums: list[int] | int, ti: Any = None) -> list[dict[str, Any]]:
    """The raw-only template exposures to SE in this run, each with its CCDs' gw.se_ccd parameters.

    Merged over every exposure's ``prepare``: a template CCD that several search CCDs or
    search exposures overlap is SE'd once. An exposure whose planning failed adds nothing.
    ``expnums``: the list the exposure group is mapped over, or one exposure number when the
    group is not mapped (``gw_exposure``).
    """
    if isinstance(expnums, int):
        plans = [ti.xcom_pull(task_ids=f"{GROUP}.{PREPARE}", key="raw_templates", map_indexes=-1)]
    else:
        plans = ti.xcom_pull(task_ids=f"{GROUP}.{PREPARE}", key="raw_templates",
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


def _compute(cfg: GWNightlyConfig, step: str, cls: type[ComputeOperator] = ComputeOperator,
             **kw: Any) -> ComputeOperator:
    """A ``cls`` task running ``step`` with the campaign's executor, resources, retries and pool for it."""
    s = cfg.step_settings(step)
    return cls(
        step=step, backend=s.executor or cfg.executor,
        resources=s.resources.model_dump() if s.resources else None,
        unit=NIGHT, destination=DESTINATION,
        campaign=cfg.campaign, push_outputs=False, **({"retries": s.retries} if s.retries is not None else {}),
        **({"pool": s.pool} if s.pool else {}), **kw)


def exposure_group(cfg: GWNightlyConfig, run: Any):
    """The per-exposure task group (call ``.expand(expnum=...)`` on the result)."""

    @task_group(group_id=GROUP)
    def exposure(expnum: int):
        night = "{{ " + P + "['night'] }}"
        unit = night
        # One task for the five lookups, the staging and the SE plan: one task start, not three.
        prep = PrepareExposureOperator(task_id=PREPARE, expnum=expnum, unit=unit, queries={
            "raw": ("raw_exposure", {"expnum": expnum}),
            "calibrations": ("night_calibrations", {"nite": night, "band": "{{ " + P + "['band'] }}"}),
            "refcat": ("reference_catalog", {}),
            "templates": ("templates", {"expnum": expnum}),
            "raw_templates": ("raw_templates", {"expnum": expnum}),
        }, overwrite="{{ " + P + "['overwrite'] }}")
        run >> prep  # its templates read the validated params (gw_exposure maps without waiting for them)
        se_plan = prep.output
        ses = [_compute(cfg, "gw.se_ccd", task_id=f"se_{ccd_key(c)}", step_params=se_plan[ccd_key(c)],
                        map_index_template="{{ task.step_params['expnum'] if task.step_params else '' }}")
               for c in TASK_CCDS]
        # gw.calibrate and the diff plan in one task: one task start fewer between SE and diff
        calibrate = _compute(cfg, "gw.calibrate", cls=CalibrateExposureOperator, task_id=CALIBRATE,
                             expnum=expnum, queries=prep.output["queries"],
                             dest=prep.output["dest"], trigger_rule="none_failed")
        ses >> calibrate
        diff_plan = calibrate.output
        diffs = [_compute(cfg, "gw.diffimg_ccd", task_id=f"diff_{ccd_key(c)}", step_params=diff_plan[ccd_key(c)],
                          map_index_template="{{ task.step_params['expnum'] if task.step_params else '' }}")
                 for c in TASK_CCDS]
        ingest = _compute(cfg, "gw.ingest_candidates", task_id="ingest", step_params_from=ingest_params,
                          trigger_rule="none_failed")
        diffs >> ingest
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


def exposure_pipeline(cfg: GWNightlyConfig, run: Any, expnums: Any = None, *, expnum: Any = None):
    """Per search exposure, the ``exposure`` group; per raw-only template exposure, a ``template`` group.

    ``expnums`` (a night: the group is mapped over them) or ``expnum`` (``gw_exposure``: one
    exposure, so the group is not mapped at all). The difference matters to the scheduler:
    for every waiting task of a *mapped* group, Airflow 3.3 looks the group's length up in
    the database each time it evaluates the task's trigger rule, about once a second. With
    120 CCD tasks waiting that took a fifth of a core for a whole exposure; an unmapped group's
    rules are evaluated in memory.

    The templates' SE starts once every exposure has planned (each one's ``prepare`` says which
    template CCDs it overlaps) and runs beside the search exposures' SE; each exposure's
    ``calibrate`` (which plans the difference imaging) waits for it (so a template CCD that
    fails after its retries holds back the night's calibration and difference imaging until it
    is cleared, as a failed search CCD holds back its
    exposure's). Both groups have one static task per CCD, so neither depends on Airflow's
    mapped-instance limit. Returns the exposure group's last task (ingest).
    """
    if (expnums is None) == (expnum is None):
        raise ValueError("exposure_pipeline: give expnums (a mapped group) or expnum (one exposure)")
    group = exposure_group(cfg, run)
    ingest = group.expand(expnum=expnums) if expnum is None else group(expnum=expnum)
    tasks = ingest.task_group.children
    units = raw_template_exposures(expnums if expnum is None else expnum)
    tasks[f"{GROUP}.{PREPARE}"] >> units
    template_ses = template_group(cfg).expand(unit=units)
    template_ses >> tasks[f"{GROUP}.{CALIBRATE}"]
    return ingest
