"""Operations health checks: can this deployment run a campaign right now?

Each check returns a :class:`CheckResult` (ok, a one-line summary, details) and never
raises for the condition it checks: the ``skyops_healthcheck`` DAG turns a failed check
into a failed task, and the CLI prints them all. Every summary is free of credentials.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from skyops.config import PlatformConfig
from skyops.errors import SkyopsError
from skyops.secrets import redact_text, redact_url
from skyops.tools import find_tool, tool_version


@dataclass
class CheckResult:
    name: str
    ok: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timed(name: str, fn) -> CheckResult:
    t0 = time.perf_counter()
    try:
        res = fn()
    except SkyopsError as exc:
        res = CheckResult(name, False, redact_text(str(exc)))
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash
        res = CheckResult(name, False, f"{type(exc).__name__}: {redact_text(str(exc))}")
    res.seconds = round(time.perf_counter() - t0, 4)
    return res


def check_provenance(cfg: PlatformConfig) -> CheckResult:
    """The provenance DB answers and is migrated to the current schema revision."""

    def run() -> CheckResult:
        from skyops.provenance import ProvenanceStore

        st = ProvenanceStore.from_config(cfg).status()
        ok = bool(st.get("current"))
        msg = (f"provenance DB {st['url']} at revision {st['revision']}"
               + ("" if ok else f", expected {st['head']}: run `skyops prov migrate`"))
        return CheckResult("provenance", ok, msg, {k: v for k, v in st.items() if k != "counts"} | {"counts": st.get("counts", {})})

    return _timed("provenance", run)


def check_archive(cfg: PlatformConfig) -> CheckResult:
    """The archive DB answers, and the archive's file root is reachable."""

    def run() -> CheckResult:
        import sqlalchemy as sa

        url = cfg.databases.archive
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
                tables = set(sa.inspect(conn).get_table_names())
                nfiles = conn.execute(sa.text("SELECT COUNT(*) FROM desfile")).scalar() if "desfile" in tables else None
        except Exception as exc:  # noqa: BLE001
            return CheckResult("archive", False, f"archive DB {redact_url(url)} unreachable: "
                               f"{redact_text(str(exc).splitlines()[0])}")
        finally:
            engine.dispose()
        root = cfg.archive.root
        parts = urlsplit(root)
        if parts.scheme in ("", "file"):
            path = Path(parts.path)
            if not path.is_dir() or not os.access(path, os.R_OK | os.X_OK):
                return CheckResult("archive", False, f"archive root {root} is not a readable directory; "
                                   "create the demo archive with `skyops archive create --preset demo`")
        else:
            import requests

            r = requests.head(root, timeout=10)
            if r.status_code >= 500:
                return CheckResult("archive", False, f"archive root {redact_url(root)} answered HTTP {r.status_code}")
        if nfiles is None:
            return CheckResult("archive", False, f"archive DB {redact_url(url)} has no DESFILE table; "
                               "run `skyops archive create --preset demo` (or point databases.archive at DESDM)")
        return CheckResult("archive", True, f"archive DB {redact_url(url)}: {nfiles} files; root {redact_url(root)}",
                           {"files": nfiles, "tables": len(tables)})

    return _timed("archive", run)


def check_tools(cfg: PlatformConfig) -> CheckResult:
    """Every Astromatic tool the campaigns call is on PATH; their versions."""

    def run() -> CheckResult:
        versions, missing = {}, []
        for t in cfg.tools:
            try:
                find_tool(t)
                versions[t] = tool_version(t)
            except SkyopsError as exc:
                missing.append(str(exc))
        if missing:
            return CheckResult("tools", False, "; ".join(missing), {"versions": versions})
        return CheckResult("tools", True, ", ".join(versions.values()), {"versions": versions})

    return _timed("tools", run)


def check_workspace(cfg: PlatformConfig) -> CheckResult:
    """Scratch, persistent and cache folders exist, are writable, and have free space."""

    def run() -> CheckResult:
        ws = cfg.workspace
        details, problems = {}, []
        for label in ("scratch", "persistent", "cache"):
            p = Path(getattr(ws, label))
            p.mkdir(parents=True, exist_ok=True)
            probe = p / f".skyops-probe-{os.getpid()}"
            try:
                probe.write_bytes(b"ok")
                probe.unlink()
            except OSError as exc:
                problems.append(f"{label} {p} not writable ({exc.strerror})")
            free_gb = shutil.disk_usage(p).free / 1e9
            details[label] = {"path": str(p), "free_gb": round(free_gb, 2)}
            if free_gb < ws.min_free_gb:
                problems.append(f"{label} {p} has {free_gb:.2f} GB free, below min_free_gb={ws.min_free_gb}")
        if problems:
            return CheckResult("workspace", False, "; ".join(problems), details)
        least = min(d["free_gb"] for d in details.values())
        return CheckResult("workspace", True, f"scratch/persistent/cache writable, >= {least:.1f} GB free", details)

    return _timed("workspace", run)


CHECKS = {
    "provenance": check_provenance,
    "archive": check_archive,
    "tools": check_tools,
    "workspace": check_workspace,
}
