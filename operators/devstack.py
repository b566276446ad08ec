"""A real local Airflow 3.3 stack as child processes: for integration tests and benchmarks.

``AirflowStack(home, metadata_url)`` writes the environment of an embedded deployment
(:func:`skyops.airflow_env.settings` plus what a multi-process Airflow 3.3 needs: the
LocalExecutor, a JWT secret shared by the api-server and the scheduler, an api-server on a
free 127.0.0.1 port that also serves the execution API, the repo's ``dags/`` as the one DAG
bundle, the simple auth manager with one admin whose password it writes), runs
``airflow db migrate``, starts ``api-server``, ``scheduler``, ``dag-processor`` (and
``triggerer`` on request) with their output in ``$SKYOPS_HOME/airflow/logs/stack/``, and
waits until ``/api/v2/monitor/health`` says they are up.

``executor="CeleryExecutor"`` runs tasks the production way instead: Redis as the Celery broker,
the metadata database as the result backend, and ``airflow celery worker`` processes that
consume a queue of this stack's own (so that two stacks sharing one Redis never take each
other's tasks); the worker counts as up when Celery logs that it is ready. :meth:`~AirflowStack.trigger` and
:meth:`~AirflowStack.wait` speak REST API v2 with a bearer token. On exit every process it
started is stopped by its process group id (SIGTERM, then SIGKILL): nothing is left behind.

The metadata database should be PostgreSQL (:func:`pg_database` makes a throwaway one):
SQLite cannot serve several processes writing at once.

Usage::

    with pg_database() as url, AirflowStack(home, url) as stack:
        run_id = stack.trigger("gw_exposure", {"expnum": 668439, "night": "20170817"})
        run = stack.wait("gw_exposure", run_id, timeout=1800)
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

from skyops import airflow_env
from skyops.airflow_api import AirflowAPI, AirflowAPIError
from skyops.config import PROJECT_ROOT
from skyops.errors import SkyopsError

log = logging.getLogger(__name__)

PG_ADMIN_URL = os.environ.get("SKYOPS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
#: Components started by default (``triggerer`` is added with ``triggerer=True``).
COMPONENTS = ("api-server", "scheduler", "dag-processor")
#: Health-report keys that must be "healthy" before the stack counts as up, per component.
HEALTH_KEYS = {"api-server": "metadatabase", "scheduler": "scheduler", "dag-processor": "dag_processor",
               "triggerer": "triggerer"}
EXECUTORS = ("LocalExecutor", "CeleryExecutor")
REDIS_URL = os.environ.get("SKYOPS_TEST_REDIS", "redis://127.0.0.1:6379/0")
#: What a Celery worker logs once it consumes its queue.
CELERY_READY = b" ready."
TERMINAL_STATES = ("success", "failed")


class StackError(SkyopsError):
    """The local Airflow stack could not start, or did not answer as expected."""


@contextlib.contextmanager
def pg_database(admin_url: str = PG_ADMIN_URL, prefix: str = "skyops_af") -> Iterator[str]:
    """A throwaway PostgreSQL database (created now, dropped WITH (FORCE) on exit); yields its URL."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class AirflowStack:
    """api-server + scheduler + dag-processor (+ triggerer) on one machine, as a context manager.

    :param home: the SKYOPS_HOME the stack (and the tasks it runs) work in.
    :param metadata_url: SQLAlchemy URL of Airflow's metadata DB (PostgreSQL).
    :param parallelism: task slots: LocalExecutor workers, or each Celery worker's concurrency.
    :param triggerer: also start ``airflow triggerer`` (deferrable operators).
    :param executor: ``LocalExecutor`` (default) or ``CeleryExecutor``.
    :param celery_workers: Celery worker processes to start (CeleryExecutor only).
    :param broker_url: the Celery broker (default: the local Redis).
    :param extra_env: more environment for every process (overrides the defaults).
    :param dags_folder: the DAG bundle's folder (default: the repo's ``dags/``).
    :param start_timeout: seconds to wait for migration and for health, each.
    """

    def __init__(self, home: str | os.PathLike[str], metadata_url: str, *, parallelism: int = 2,
                 triggerer: bool = False, extra_env: dict[str, str] | None = None,
                 dags_folder: str | os.PathLike[str] | None = None, start_timeout: float = 240.0,
                 executor: str = "LocalExecutor", celery_workers: int = 1, broker_url: str = REDIS_URL) -> None:
        if executor not in EXECUTORS:
            raise StackError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
        self.home = Path(home).resolve()
        self.metadata_url = metadata_url
        self.parallelism = parallelism
        self.executor = executor
        self.broker_url = broker_url
        self.queue = f"skyops_{uuid.uuid4().hex[:8]}"
        workers = tuple(f"celery-worker-{i}" for i in range(celery_workers)) if executor == "CeleryExecutor" else ()
        self.components = COMPONENTS + (("triggerer",) if triggerer else ()) + workers
        self.dags_folder = Path(dags_folder or PROJECT_ROOT / "dags").resolve()
        self.extra_env = dict(extra_env or {})
        self.start_timeout = start_timeout
        self.port = 0
        self.password = secrets.token_urlsafe(16)
        self.procs: dict[str, subprocess.Popen] = {}
        self._log_files: list[Any] = []
        self._client: AirflowAPI | None = None
        self.env: dict[str, str] = {}

    # ------------------------------------------------------------------ set-up
    @property
    def log_dir(self) -> Path:
        return self.home / "airflow" / "logs" / "stack"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def make_env(self) -> dict[str, str]:
        """The whole environment of the stack's processes (inherited AIRFLOW_* settings dropped)."""
        af = self.home / "airflow"
        pw_file = af / "simple_auth_manager_passwords.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_")}
        env.update(airflow_env.settings(self.home, metadata_url=self.metadata_url))
        env.update({
            "SKYOPS_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__PARALLELISM": str(max(self.parallelism, 32) if self.executor == "CeleryExecutor"
                                              else self.parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # only what trigger() unpauses runs
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pw_file),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # 86 characters: SHA-512 HMAC wants 64 bytes or more
            "AIRFLOW__API_AUTH__JWT_ISSUER": "skyops-devstack",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([
                {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                 "kwargs": {"path": str(self.dags_folder)}}]),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # Task start-up and CPU tuning for compute nodes (measured in bench gw_orchestration):
            # - A task's supervisor sees its process exit only at the next select() timeout when
            #   the process closes its sockets a moment before it exits, which is common (a
            #   large process takes milliseconds to tear down). That timeout is
            #   min_heartbeat_interval, 5 s by default: up to 5 s of an idle slot per task.
            #   1 s also means a heartbeat per running task per second, which is nothing here.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            # - Re-parsing every DAG file every 30 s took 10% of a core from the steps; the
            #   files change with a deployment, not during a night. An edited DAG file is still
            #   re-parsed at once (file_parsing_sort_mode modified_time, the default), new files
            #   are found at every refresh_interval; only an edited campaign YAML waits for this.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "1800",
            # - The scheduler examines every running DAG run each loop, reading all its task
            #   instances; idle, it sleeps this long between loops (1 s by default). 2 s halves
            #   that work on a node whose cores the steps need, for about 0.5 s more per hop
            #   on a run's chain of single tasks.
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "2",
            # the worker's and triggerer's log servers: free ports, so that stacks can run side by side
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
        })
        if self.executor == "CeleryExecutor":
            env.update({
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                # results in the metadata database (Celery's SQLAlchemy backend: "db+" + the URL)
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.metadata_url.replace("+psycopg2", ""),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.parallelism),
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            })
        env.update(self.extra_env)
        return env

    def _write_passwords(self) -> None:
        path = Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"admin": self.password}))
        path.chmod(0o600)

    def _airflow(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "airflow", *args]

    def migrate(self) -> None:
        """``airflow db migrate`` and ``skyops prov migrate`` (output in logs/stack/db-migrate.log)."""
        out = self.log_dir / "db-migrate.log"
        with out.open("w") as f:
            r = subprocess.run(self._airflow("db", "migrate"), env=self.env, stdout=f, stderr=subprocess.STDOUT,
                               timeout=self.start_timeout)
        if r.returncode != 0:
            raise StackError(f"airflow db migrate failed (exit {r.returncode}); see {out}:\n{_tail(out)}")
        # The provenance DB the tasks (and the listener) write to, under the same SKYOPS_HOME.
        with out.open("a") as f:
            r = subprocess.run([sys.executable, "-m", "skyops.cli.main", "prov", "migrate"], env=self.env,
                               stdout=f, stderr=subprocess.STDOUT, timeout=self.start_timeout)
        if r.returncode != 0:
            raise StackError(f"skyops prov migrate failed (exit {r.returncode}); see {out}:\n{_tail(out)}")

    def command(self, component: str) -> list[str]:
        """The command line of a component (``celery-worker-N`` is ``airflow celery worker``)."""
        if component.startswith("celery-worker"):
            return self._airflow("celery", "worker", "--queues", self.queue, "--concurrency", str(self.parallelism),
                                 "--celery-hostname", f"{component}@{self.queue}", "--without-mingle",
                                 "--without-gossip")
        return self._airflow(component)

    def start(self, component: str) -> subprocess.Popen:
        """Start ``airflow <component>`` in a session of its own (so its children die with it)."""
        out = (self.log_dir / f"{component}.log").open("ab")
        self._log_files.append(out)
        proc = subprocess.Popen(self.command(component), env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(self.home))
        self.procs[component] = proc
        log.info("started airflow %s (pid %d), log %s", component, proc.pid, out.name)
        return proc

    def __enter__(self) -> "AirflowStack":
        try:
            self.up()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def up(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.env = self.make_env()
        self._write_passwords()
        self.migrate()
        for c in self.components:
            self.start(c)
        self.wait_healthy(self.start_timeout)

    # ------------------------------------------------------------------ health
    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise StackError(f"airflow {name} (pid {p.pid}) exited with {p.returncode}; "
                                 f"its log {self.log_dir / (name + '.log')} ends:\n{_tail(self.log_dir / (name + '.log'))}")

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=5) as r:
                return json.load(r)
        except (OSError, ValueError):
            return None

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        """Block until every started component reports healthy (raises when one dies or on timeout)."""
        deadline, h = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            self.check_alive()
            h = self.health()
            if h and all((h.get(HEALTH_KEYS[c]) or {}).get("status") == "healthy"
                         for c in self.components if c in HEALTH_KEYS) and self._workers_ready() \
                    and self.execution_api_ready():
                return h
            time.sleep(1.0)
        raise StackError(f"the Airflow stack at {self.base_url} was not healthy after {timeout:.0f} s: {h}; "
                         f"logs in {self.log_dir}")

    def execution_api_ready(self) -> bool:
        """The Task Execution API (what task supervisors call) answers ``/execution/health``.

        Its app (Cadwyn, versioned) builds its routers on the first request it gets: about 3 s
        of CPU in the api-server, measured with py-spy. Asking it here moves that off the first
        task of the first run, whose start (``PATCH .../run``) otherwise waits for it.
        """
        try:
            with urllib.request.urlopen(f"{self.base_url}/execution/health", timeout=30) as r:
                return json.load(r).get("status") == "healthy"
        except (OSError, ValueError):
            return False

    def _workers_ready(self) -> bool:
        """Every Celery worker has logged that it is ready (they are not in the health report)."""
        for c in self.components:
            if c.startswith("celery-worker"):
                try:
                    if CELERY_READY not in (self.log_dir / f"{c}.log").read_bytes():
                        return False
                except OSError:
                    return False
        return True

    # ------------------------------------------------------------------ REST API v2
    @property
    def client(self) -> AirflowAPI:
        """The REST client of this stack (admin user)."""
        if self._client is None:
            self._client = AirflowAPI(self.base_url, "admin", self.password)
        return self._client

    def api(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """Call ``/api/v2<path>``; returns the decoded JSON (raises StackError with the server's detail)."""
        try:
            return self.client.api(method, path, body, **query)
        except AirflowAPIError as e:
            raise StackError(str(e)) from None

    def wait_dag(self, dag_id: str, timeout: float = 180.0) -> dict[str, Any]:
        """Block until the dag-processor has serialised ``dag_id``; unpause it; return the DAG."""
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                dag = self.api("GET", f"/dags/{dag_id}")
                if dag.get("is_paused"):
                    dag = self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
                return dag
            except StackError as e:
                last = str(e)
            time.sleep(1.0)
        errs = ""
        with contextlib.suppress(StackError):
            errs = json.dumps(self.api("GET", "/importErrors"))[:2000]
        raise StackError(f"DAG {dag_id} did not appear within {timeout:.0f} s ({last}); import errors: {errs}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        """Trigger a run of ``dag_id`` with ``conf`` (waiting for the DAG to be parsed); returns its run id."""
        self.wait_dag(dag_id)
        run_id = run_id or f"manual__devstack_{uuid.uuid4().hex[:8]}"
        self.api("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}})
        return run_id

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def wait(self, dag_id: str, run_id: str, timeout: float = 3600.0, poll: float = 1.0) -> dict[str, Any]:
        """Block until the run is success or failed; returns the DAG run (raises on timeout or a dead process)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            run = self.dag_run(dag_id, run_id)
            if run["state"] in TERMINAL_STATES:
                return run
            if time.monotonic() > deadline:
                raise StackError(f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f} s")
            time.sleep(poll)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run (all pages)."""
        out: list[dict[str, Any]] = []
        path = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        while True:
            page = self.api("GET", path, limit=100, offset=len(out))
            out += page["task_instances"]
            if not page["task_instances"] or len(out) >= page["total_entries"]:
                return out

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """One XCom value of a task instance, decoded."""
        path = (f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/"
                f"{urllib.parse.quote(task_id, safe='')}/xcomEntries/{urllib.parse.quote(key, safe='')}")
        return self.api("GET", path, map_index=map_index, deserialize="true")["value"]

    def clear(self, dag_id: str, run_id: str, task_ids: list[str], *, downstream: bool = True,
              only_failed: bool = False) -> list[dict[str, Any]]:
        """Clear task instances of one run, as an operator does from the UI; returns what was cleared."""
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "include_downstream": downstream,
                "include_upstream": False, "only_failed": only_failed, "reset_dag_runs": True}
        return self.api("POST", f"/dags/{dag_id}/clearTaskInstances", body)["task_instances"]

    def set_pool(self, name: str, slots: int) -> dict[str, Any]:
        """Create the pool ``name`` or change its slots."""
        try:
            return self.api("PATCH", f"/pools/{urllib.parse.quote(name, safe='')}",
                            {"name": name, "slots": slots, "include_deferred": False})
        except StackError as e:
            if "HTTP 404" not in str(e):
                raise
            return self.api("POST", "/pools", {"name": name, "slots": slots, "include_deferred": False})

    # ------------------------------------------------------------------ tear-down
    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM each started process group, then SIGKILL what is left after ``grace`` seconds."""
        for name, p in self.procs.items():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name, p in self.procs.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
        for name, p in self.procs.items():
            # The group may outlive its leader (task processes, uvicorn workers): kill it whole.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        # The killed members of a group are reaped by init, a moment after their leader: wait
        # (bounded) until each group is gone, so that "stopped" means no process is left.
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            while _group_alive(p.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        for f in self._log_files:
            f.close()
        self._log_files.clear()
        self.procs.clear()


def _group_alive(pgid: int) -> bool:
    """Whether any process (a zombie included) is still in the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
