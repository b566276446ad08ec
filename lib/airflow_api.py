"""A small client of Airflow 3's REST API v2 (JWT bearer tokens), with no Airflow import.

``skyops campaign submit`` triggers runs through it from any machine that can reach the
api-server; :class:`skyops.operators.devstack.AirflowStack` drives its test stacks with it.
The password never appears in an error or a log line: errors quote the server's answer only.

Where the API and the user come from: ``--api-url`` / ``SKYOPS_AIRFLOW_API`` (default
``http://127.0.0.1:8080``), ``--user`` / ``SKYOPS_AIRFLOW_USER`` (default ``admin``), and the
password from ``SKYOPS_AIRFLOW_PASSWORD`` or a file readable by its owner only
(``--password-file`` / ``SKYOPS_AIRFLOW_PASSWORD_FILE``, refused when group or others can read it).
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from skyops.credentials import check_private
from skyops.errors import InputError, SkyopsError

DEFAULT_URL = "http://127.0.0.1:8080"
TERMINAL_STATES = ("success", "failed")
#: Tokens are renewed after this many seconds (Airflow's default lifetime is longer).
TOKEN_MAX_AGE_S = 1800.0


class AirflowAPIError(SkyopsError):
    """The Airflow API refused a request or could not be reached."""


class AirflowAPI:
    """REST API v2 of one Airflow deployment, authenticated as ``username``."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout = timeout
        self._token: str | None = None
        self._token_time = 0.0

    def __repr__(self) -> str:
        return f"AirflowAPI({self.base_url!r}, user={self.username!r})"

    @classmethod
    def from_env(cls, url: str | None = None, user: str | None = None, password_file: str | None = None
                 ) -> "AirflowAPI":
        """The API from arguments, else ``SKYOPS_AIRFLOW_*`` variables (see the module docstring)."""
        url = url or os.environ.get("SKYOPS_AIRFLOW_API") or DEFAULT_URL
        user = user or os.environ.get("SKYOPS_AIRFLOW_USER") or "admin"
        pw_file = password_file or os.environ.get("SKYOPS_AIRFLOW_PASSWORD_FILE")
        if pw_file:
            path = Path(pw_file).expanduser()
            if not path.is_file():
                raise InputError(f"Airflow password file {path} does not exist; create it (mode 600) or set "
                                 "SKYOPS_AIRFLOW_PASSWORD")
            check_private(path)
            password = path.read_text().strip()
        else:
            password = os.environ.get("SKYOPS_AIRFLOW_PASSWORD", "")
        if not password:
            raise InputError(f"no password for Airflow user {user!r} at {url}: set SKYOPS_AIRFLOW_PASSWORD or give "
                             "--password-file (a file only you can read)")
        return cls(url, user, password)

    def token(self) -> str:
        """A bearer token (``POST /auth/token``), renewed every :data:`TOKEN_MAX_AGE_S` seconds."""
        if self._token is None or time.monotonic() - self._token_time > TOKEN_MAX_AGE_S:
            body = json.dumps({"username": self.username, "password": self._password}).encode()
            req = urllib.request.Request(f"{self.base_url}/auth/token", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    self._token = json.load(r)["access_token"]
            except urllib.error.HTTPError as e:
                raise AirflowAPIError(f"Airflow at {self.base_url} refused user {self.username!r} "
                                      f"(HTTP {e.code}); check the user and password") from None
            except OSError as e:
                raise AirflowAPIError(f"cannot reach the Airflow API at {self.base_url}: {e}; check --api-url "
                                      "and that the api-server runs") from None
            self._token_time = time.monotonic()
        return self._token

    def api(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """Call ``/api/v2<path>``; the decoded JSON (AirflowAPIError quoting the server's detail)."""
        url = f"{self.base_url}/api/v2{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token()}", "Content-Type": "application/json",
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise AirflowAPIError(f"{method} {path}: HTTP {e.code}: {e.read().decode(errors='replace')[:500]}") from None
        except OSError as e:
            raise AirflowAPIError(f"{method} {path}: cannot reach {self.base_url}: {e}") from None
        return json.loads(raw) if raw else None

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        """Trigger a run of ``dag_id`` now with ``conf``; returns its run id."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def unpause(self, dag_id: str) -> dict[str, Any]:
        """Unpause ``dag_id`` (a paused DAG's triggered runs wait forever)."""
        return self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
