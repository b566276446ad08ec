"""A step as an HTCondor job: the submit description, the schedd, and the job's event log.

Four parts, each usable without Airflow:

* :func:`submit_keys` / :func:`submit_description` turn a
  :class:`~skyops.executors.base.StepSpec` into an ``htcondor2.Submit``: the same
  ``skyops step run NAME --params ... --workdir ...`` command every executor runs, the step's
  resources as ``request_cpus``/``request_memory``/``request_disk``, the ``vanilla`` universe
  on the shared filesystem or the ``container`` universe with the compute image, the event
  log and stdout/stderr in the workdir, and the retry policy: ``max_retries`` for failures,
  no retry for bad input (exit 2, retrying cannot help), and a hold with a reason for a job
  killed by a signal (out of memory, preempted) so that the pool's ``periodic_release`` policy,
  or a person, decides.
* :class:`CondorPool` is the only code that talks to HTCondor daemons: it submits through
  ``htcondor2.Schedd`` and removes jobs. :func:`locate_schedd`, :func:`query_job` and
  :func:`remove_job` are the same boundary for callers that hold only plain values (the
  trigger, which is rebuilt from its serialised keyword arguments).
* :func:`read_status` reads the job's event log (``htcondor2.JobEventLog``) and classifies
  where the job is: submitted, running, idle again (evicted/released), held (with the hold
  reason), terminated normally (exit code) or abnormally (signal), aborted. The event log is
  the record that survives the job leaving the queue, so a retry of the Airflow task can tell
  a finished job from a running one without the schedd's history.
* :func:`status_from_ad` classifies a job ClassAd from the schedd's queue or history the same
  way, so that the schedd can vouch for a job whose event log lags or is not visible here.

No credential goes into the submit description (a job ClassAd is readable by everyone on the
pool): jobs read database URLs and DESDM credentials from the config and desservices files on
the shared filesystem, as the Airflow workers do.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

from skyops.config import PlatformConfig, config_dir
from skyops.errors import ExecutorError
from skyops.executors.base import StepSpec
from skyops.executors.environment import base_environment, check_plain
from skyops.secrets import redact_text

log = logging.getLogger(__name__)

EVENT_LOG = "condor.log"
STDOUT = "condor.out"
STDERR = "condor.err"
#: The skyops console script in the compute image (docker/Dockerfile.compute pip-installs it there).
IMAGE_PROGRAM = "/usr/local/bin/skyops"
#: Exit status of ``skyops step run`` for bad input: the same job would fail the same way again.
BAD_INPUT_EXIT = 2
#: Variables forwarded from the submitting worker when set: where config and credentials files are.
FORWARDED = ("SKYOPS_CONFIG", "DES_SERVICES", "NETRC")


def quote_argument(arg: str) -> str:
    """One argument in the submit language's new syntax (inside the double-quoted list)."""
    arg = str(arg).replace('"', '""')
    if arg and not any(c in arg for c in " \t'"):
        return arg
    return "'" + arg.replace("'", "''") + "'"


def arguments_value(argv: list[str]) -> str:
    """``arguments = "step run gw.se_ccd --params '/a b/params.json' ..."``."""
    return '"' + " ".join(quote_argument(a) for a in argv) + '"'


def environment_value(env: dict[str, str]) -> str:
    """``environment = "A=1 B='with space'"`` (the submit language's new syntax)."""
    return '"' + " ".join(f"{k}={quote_argument(v)}" for k, v in env.items()) + '"'


def classad_string(text: str) -> str:
    """A ClassAd string literal."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def job_environment(spec: StepSpec, cfg: PlatformConfig) -> dict[str, str]:
    """The job's environment: plain values only (see :mod:`skyops.executors.environment`)."""
    env = base_environment(spec, cfg)
    env.setdefault("SKYOPS_CONFIG_DIR", str(config_dir()))
    for var in FORWARDED:
        if os.environ.get(var):
            env.setdefault(var, os.environ[var])
    return check_plain(env, f"step {spec.step} Condor job",
                       "jobs read credentials from files on the shared filesystem (the platform config's "
                       "desservices file, chmod 600), never from the job ad")


def executable(cfg: PlatformConfig) -> str:
    """The program the job runs: in the image (container) or on the shared software stack (vanilla)."""
    hc = cfg.executors.htcondor
    if hc.universe == "container":
        return IMAGE_PROGRAM  # ``program`` names the shared software stack's copy (vanilla)
    if os.path.isabs(hc.program):
        return hc.program
    found = shutil.which(hc.program)
    if not found:
        raise ExecutorError(f"executors.htcondor.program: {hc.program!r} is not on this worker's PATH; set it to "
                            f"the absolute path of skyops on the execute nodes' shared software area")
    return found


def container_image(cfg: PlatformConfig) -> str:
    """``container_image`` for the container universe: a docker:// reference or a .sif path."""
    image = cfg.executors.htcondor.image
    if not image:
        raise ExecutorError("executors.htcondor: universe 'container' needs image (the compute image built from "
                            "docker/Dockerfile.compute, e.g. docker://registry/skyops-compute:0.1.0)")
    if "://" in image or image.endswith(".sif") or image.startswith("/"):
        return image
    return f"docker://{image}"


def submit_keys(spec: StepSpec, cfg: PlatformConfig, *, argv: list[str] | None = None,
                retries: bool = True) -> dict[str, str]:
    """The submit description of ``spec`` as ordered key -> value text.

    ``argv`` replaces ``skyops step run ...`` (a DAGMan stage node runs ``skyops stage``);
    ``retries=False`` leaves retrying to the caller (DAGMan's ``RETRY`` lines).
    """
    hc = cfg.executors.htcondor
    workdir = str(spec.workdir)
    res = spec.resources
    keys: dict[str, str] = {"universe": hc.universe}
    if hc.universe == "container":
        keys["container_image"] = container_image(cfg)
    keys.update({
        "executable": executable(cfg),
        "transfer_executable": "false",
        "arguments": arguments_value(argv if argv is not None else spec.command()[1:]),
        "initialdir": workdir,
        # the workspace is a shared filesystem: nothing to transfer, the job works in place
        "should_transfer_files": "NO",
        "log": str(Path(workdir) / EVENT_LOG),
        "output": str(Path(workdir) / STDOUT),
        "error": str(Path(workdir) / STDERR),
        "request_cpus": str(max(1, math.ceil(res.cpu))),
        "request_memory": str(res.memory_mb),          # MiB
        "request_disk": str(max(1, res.scratch_mb) * 1024),  # KiB
        "environment": environment_value(job_environment(spec, cfg)),
    })
    if retries:
        keys["max_retries"] = str(hc.max_retries)
        keys["retry_until"] = f"ExitCode == {BAD_INPUT_EXIT}"
    if hc.hold_on_signal:
        keys["on_exit_hold"] = "ExitBySignal =?= true"
        keys["on_exit_hold_reason"] = ('strcat("skyops step killed by signal ", ExitSignal, '
                                       '" (out of memory or preempted?)")')
        keys["on_exit_hold_subcode"] = "ExitSignal"
    if hc.periodic_release:
        keys["periodic_release"] = hc.periodic_release
    if hc.accounting_group:
        keys["accounting_group"] = hc.accounting_group
    batch = "/".join(v for v in (spec.labels.get("campaign"), spec.labels.get("unit")) if v) or spec.step
    keys["batch_name"] = classad_string(batch)
    keys["MY.SkyopsStep"] = classad_string(spec.step)
    for label, attr in (("campaign", "SkyopsCampaign"), ("unit", "SkyopsUnit")):
        if spec.labels.get(label):
            keys[f"MY.{attr}"] = classad_string(spec.labels[label])
    if str(spec.labels.get("map_index", "")).lstrip("-").isdigit():
        keys["MY.SkyopsMapIndex"] = str(int(spec.labels["map_index"]))
    return keys


def submit_description(spec: StepSpec, cfg: PlatformConfig) -> Any:
    """The ``htcondor2.Submit`` for one try of ``spec``."""
    import htcondor2

    return htcondor2.Submit(submit_keys(spec, cfg))


# ----------------------------------------------------------------------------- the job and its log
@dataclass(frozen=True)
class CondorJob:
    """A submitted job: enough to find it again (JSON-safe, kept in the task state store)."""

    cluster: int
    proc: int
    workdir: str
    schedd: str | None = None

    @property
    def log(self) -> Path:
        return Path(self.workdir) / EVENT_LOG

    @property
    def id(self) -> str:
        return f"{self.cluster}.{self.proc}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CondorJob":
        try:
            return cls(int(data["cluster"]), int(data.get("proc", 0)), str(data["workdir"]), data.get("schedd"))
        except (KeyError, TypeError, ValueError):
            raise ExecutorError(f"stored Condor job {data!r} is malformed; expected cluster, proc and workdir "
                                f"(clear the task's state store entry 'condor_job' to submit afresh)") from None


class JobState(str, Enum):
    """Where a job is, from its event log."""

    UNKNOWN = "unknown"        # no event for the job yet (log not written)
    SUBMITTED = "submitted"    # 000
    RUNNING = "running"        # 001
    IDLE = "idle"              # 004 evicted / requeued for a retry, or 013 released
    HELD = "held"              # 012
    SUCCEEDED = "succeeded"    # 005, return value 0
    FAILED = "failed"          # 005, non-zero return value
    KILLED = "killed"          # 005, terminated by a signal
    ABORTED = "aborted"        # 009, removed

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED, JobState.ABORTED)

    @property
    def active(self) -> bool:
        """Still in the queue and may yet run (a held job may be released)."""
        return self in (JobState.SUBMITTED, JobState.RUNNING, JobState.IDLE, JobState.HELD)


@dataclass
class JobStatus:
    """A job's state from its event log, with what explains it."""

    state: JobState = JobState.UNKNOWN
    returncode: int | None = None   # exit code, or -signal
    reason: str = ""                # hold or abort reason
    hold_code: int | None = None
    hold_subcode: int | None = None
    host: str = ""
    timestamp: int = 0
    events: int = 0

    def exit_status(self) -> int:
        """A process-style return code for provenance: 0, the exit code, -signal, or 1."""
        if self.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED) and self.returncode is not None:
            return self.returncode
        return 1

    def describe(self) -> str:
        if self.state is JobState.HELD:
            return f"was held: {self.reason} (hold code {self.hold_code}, subcode {self.hold_subcode})"
        if self.state is JobState.ABORTED:
            return f"was removed from the queue: {self.reason or 'no reason given'}"
        if self.state is JobState.KILLED:
            return f"was killed by signal {-(self.returncode or 0)}"
        if self.state in (JobState.SUCCEEDED, JobState.FAILED):
            return f"exited with status {self.returncode}"
        return self.state.value

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobStatus":
        return cls(**{**data, "state": JobState(data["state"])})


def _host(sinful: str) -> str:
    """``<10.1.2.9:9618?...&alias=ep9.example.org&...>`` -> ``ep9.example.org`` (or the address)."""
    inner = sinful.strip("<>")
    for part in inner.partition("?")[2].split("&"):
        if part.startswith("alias="):
            return part[len("alias="):]
    return inner.partition("?")[0]


def apply_event(status: JobStatus, event: Any) -> JobStatus:
    """Fold one ``htcondor2.JobEvent`` into ``status`` (events of other jobs are the caller's to skip)."""
    import htcondor2

    t = htcondor2.JobEventType
    kind = event.type
    status.events += 1
    status.timestamp = int(event.timestamp)
    if kind == t.SUBMIT:
        status.state = JobState.SUBMITTED
    elif kind == t.EXECUTE:
        status.state, status.reason = JobState.RUNNING, ""
        status.host = _host(str(event.get("ExecuteHost", ""))) or status.host
    elif kind == t.JOB_TERMINATED:
        if event.get("TerminatedNormally", False):
            rc = int(event.get("ReturnValue", 1))
            status.state, status.returncode = (JobState.SUCCEEDED if rc == 0 else JobState.FAILED), rc
        else:
            status.state, status.returncode = JobState.KILLED, -int(event.get("TerminatedBySignal", 0) or 0)
    elif kind == t.JOB_HELD:
        status.state = JobState.HELD
        status.reason = redact_text(str(event.get("HoldReason", "no hold reason recorded")))
        status.hold_code = event.get("HoldReasonCode")
        status.hold_subcode = event.get("HoldReasonSubCode")
    elif kind == t.JOB_RELEASED:
        status.state, status.reason, status.hold_code, status.hold_subcode = JobState.IDLE, "", None, None
    elif kind == t.JOB_EVICTED:
        status.state = JobState.IDLE
    elif kind == t.JOB_ABORTED:
        status.state = JobState.ABORTED
        status.reason = redact_text(str(event.get("Reason", "") or ""))
    # other events (image size, file transfer, attribute updates) do not change the state
    return status


def read_status(log_path: str | Path, cluster: int, proc: int = 0) -> JobStatus:
    """The job's state from every complete event in its event log so far (never blocks).

    Re-reading from the start each time is cheap (a job's log is a few kB) and survives a
    triggerer restart, which a saved file offset would not.
    """
    import htcondor2

    status = JobStatus()
    path = Path(log_path)
    if not path.is_file():
        return status
    try:
        jel = htcondor2.JobEventLog(str(path))
    except htcondor2.HTCondorException as exc:
        raise ExecutorError(f"{path}: cannot read the Condor event log ({exc}); is the workspace mounted here?") from None
    try:
        for event in jel.events(stop_after=0):
            if event.cluster == int(cluster) and event.proc == int(proc):
                apply_event(status, event)
    finally:
        jel.close()
    return status


# ----------------------------------------------------------------------------- the schedd's view of a job
#: What the trigger asks the schedd about a job (queue and history alike): enough to classify it.
JOB_PROJECTION = ["ClusterId", "ProcId", "JobStatus", "EnteredCurrentStatus", "HoldReason", "HoldReasonCode",
                  "HoldReasonSubCode", "RemoveReason", "ExitCode", "ExitBySignal", "ExitSignal", "RemoteHost",
                  "LastRemoteHost"]


class JobWhere(str, Enum):
    """Where the schedd knows a job from."""

    QUEUE = "queue"        # condor_q
    HISTORY = "history"    # condor_history: the job left the queue
    ABSENT = "absent"      # neither (history purged or rotated, or the wrong schedd)


@dataclass
class ScheddView:
    """What the schedd said about a job: where it found it, and its state from that ad."""

    where: JobWhere
    status: JobStatus


def job_constraint(cluster: int, proc: int = 0) -> str:
    """The ClassAd constraint selecting exactly one job."""
    return f"ClusterId == {int(cluster)} && ProcId == {int(proc)}"


def _ad_value(ad: Mapping[str, Any], key: str) -> Any:
    """An attribute's value; an expression (rare in a projection) is evaluated in the ad."""
    value = ad.get(key)
    if value is not None and hasattr(value, "eval") and hasattr(ad, "eval"):
        try:
            return ad.eval(key)
        except Exception:  # noqa: BLE001 - an unevaluable attribute is as good as absent
            return None
    return value


def _ad_int(ad: Mapping[str, Any], key: str) -> int | None:
    value = _ad_value(ad, key)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _slot_host(remote_host: Any) -> str:
    """``slot1_1@ep9.example.org`` -> ``ep9.example.org`` (the event log's host names the machine)."""
    return str(remote_host or "").rpartition("@")[2]


def status_from_ad(ad: Mapping[str, Any] | None) -> JobStatus:
    """A job's state from its ClassAd (schedd queue or history), in the event log's terms.

    ``None`` (the schedd does not know the job) gives ``UNKNOWN``. ``JobStatus`` codes:
    1 idle, 2 running, 6 transferring output and 7 suspended are still running (on a slot),
    5 held (with ``HoldReason`` and its codes), 3 removed (aborted, with ``RemoveReason``),
    4 completed (exit code, or ``-signal`` when ``ExitBySignal``). Reasons are redacted: a
    hold reason may quote a URL from the job's environment.
    """
    import htcondor2

    status = JobStatus()
    if ad is None:
        return status
    code = _ad_int(ad, "JobStatus")
    try:
        js = htcondor2.JobStatus(code)
    except ValueError:
        status.reason = f"the schedd reports JobStatus {code!r}, which skyops does not know"
        return status
    status.timestamp = _ad_int(ad, "EnteredCurrentStatus") or 0
    status.host = _slot_host(_ad_value(ad, "RemoteHost") or _ad_value(ad, "LastRemoteHost"))
    if js is htcondor2.JobStatus.IDLE:
        status.state = JobState.IDLE
    elif js in (htcondor2.JobStatus.RUNNING, htcondor2.JobStatus.TRANSFERRING_OUTPUT, htcondor2.JobStatus.SUSPENDED):
        status.state = JobState.RUNNING
    elif js is htcondor2.JobStatus.HELD:
        status.state = JobState.HELD
        status.reason = redact_text(str(_ad_value(ad, "HoldReason") or "no hold reason recorded"))
        status.hold_code = _ad_int(ad, "HoldReasonCode")
        status.hold_subcode = _ad_int(ad, "HoldReasonSubCode")
    elif js is htcondor2.JobStatus.REMOVED:
        status.state = JobState.ABORTED
        status.reason = redact_text(str(_ad_value(ad, "RemoveReason") or ""))
    else:  # COMPLETED
        if _ad_value(ad, "ExitBySignal") is True:
            status.state, status.returncode = JobState.KILLED, -(_ad_int(ad, "ExitSignal") or 0)
        else:
            rc = _ad_int(ad, "ExitCode")
            status.state = JobState.SUCCEEDED if rc == 0 else JobState.FAILED
            status.returncode = rc
            if rc is None:
                status.reason = "completed, but its ad has no ExitCode"
    return status


def query_job(schedd: Any, cluster: int, proc: int = 0) -> ScheddView:
    """Ask ``schedd`` (an ``htcondor2.Schedd``) about one job: its queue, then its history.

    Blocking network calls: run it off the event loop. Raises what the bindings raise
    (``htcondor2.HTCondorException``) when the schedd cannot be reached.
    """
    constraint = job_constraint(cluster, proc)
    ads = schedd.query(constraint=constraint, projection=JOB_PROJECTION, limit=1)
    if ads:
        return ScheddView(JobWhere.QUEUE, status_from_ad(ads[0]))
    ads = schedd.history(constraint=constraint, projection=JOB_PROJECTION, match=1)
    if ads:
        return ScheddView(JobWhere.HISTORY, status_from_ad(ads[0]))
    return ScheddView(JobWhere.ABSENT, JobStatus())


def locate_schedd(name: str | None, collector: str | None = None) -> Any:
    """The ``htcondor2.Schedd`` called ``name`` (located through ``collector``), or the local one.

    Plain values in, so that a trigger rebuilt from its serialised keyword arguments finds
    the schedd exactly as :class:`CondorPool` does from the config.
    """
    import htcondor2

    where = name or "the local schedd"
    try:
        if name:
            coll = htcondor2.Collector(collector) if collector else htcondor2.Collector()
            return htcondor2.Schedd(coll.locate(htcondor2.DaemonType.Schedd, name))
        return htcondor2.Schedd()
    except htcondor2.HTCondorException as exc:
        raise ExecutorError(f"cannot reach {where} ({redact_text(str(exc))}); check executors.htcondor.schedd/"
                            f"collector and that `condor_q -name {name or ''}` works here") from None


def remove_job(schedd: Any, job: CondorJob, reason: str) -> Any:
    """``condor_rm`` ``job`` on ``schedd`` with ``reason`` (it becomes the job's ``RemoveReason``).

    The reason goes as the bindings' ``(reason, code)`` pair: htcondor2 25.x passes a
    plain-string reason on as no reason at all; the code is ignored for a removal.
    """
    import htcondor2

    return schedd.act(htcondor2.JobAction.Remove, job.id, reason=(reason, None))


# ----------------------------------------------------------------------------- the schedd
class CondorPool:
    """Submits and removes jobs: the boundary to the HTCondor daemons (mocked in tests)."""

    def __init__(self, cfg: PlatformConfig) -> None:
        self.cfg = cfg
        self.hc = cfg.executors.htcondor

    def schedd(self) -> Any:
        """The configured schedd (located through the collector), or the local one."""
        return locate_schedd(self.hc.schedd, self.hc.collector)

    def submit(self, spec: StepSpec) -> CondorJob:
        """Write params.json and submit one job for ``spec``; returns its id."""
        import htcondor2

        desc = submit_description(spec, self.cfg)
        spec.write_params()
        try:
            result = self.schedd().submit(desc, count=1)
        except htcondor2.HTCondorException as exc:
            raise ExecutorError(f"step {spec.step}: submit to {self.hc.schedd or 'the local schedd'} failed "
                                f"({redact_text(str(exc))}); the submit description is in the task log") from None
        job = CondorJob(int(result.cluster()), 0, str(spec.workdir), self.hc.schedd)
        log.info("step %s submitted as Condor job %s (event log %s)", spec.step, job.id, job.log)
        return job

    def remove(self, job: CondorJob, reason: str) -> None:
        """Remove ``job`` from the queue (a held job the policy does not release, a killed task)."""
        import htcondor2

        try:
            remove_job(self.schedd(), job, reason)
        except (htcondor2.HTCondorException, ExecutorError) as exc:
            log.warning("could not remove Condor job %s: %s", job.id, redact_text(str(exc)))


__all__ = ["CondorJob", "CondorPool", "JobState", "JobStatus", "read_status", "apply_event", "submit_keys",
           "JobWhere", "ScheddView", "JOB_PROJECTION", "job_constraint", "status_from_ad", "query_job",
           "locate_schedd", "remove_job",
           "submit_description", "arguments_value", "environment_value", "EVENT_LOG", "STDOUT", "STDERR"]
