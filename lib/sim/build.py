"""``create_archive``: build a preset's survey under the archive root and register it.

This is the one call that turns an empty SKYOPS_HOME into a DESDM-like archive every
campaign can query and stage from: files in DESDM's path layout under the platform config's
``archive.root`` (a ``file://`` URL), rows in the archive database (``databases.archive``),
truth tables under ``SIM/truth/``. Same preset and seed -> same files, byte for byte.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from skyops.errors import SimulationBuildError, SimulationError, SkyopsError
from skyops.sim import layout
from skyops.sim.presets import Preset
from skyops.sim.survey import Progress, Survey

log = logging.getLogger(__name__)


@dataclass
class ArchiveSummary:
    """What :func:`create_archive` built and registered."""

    preset: str
    seed: int
    root: Path
    database: str  # URL with the password masked
    archive_name: str
    nights: list[str]
    exposures: list[int]
    n_files: int
    n_bytes: int
    files_by_filetype: dict[str, int]
    rows: dict[str, int]  # rows inserted per archive table
    truth_dir: Path
    refcat: str  # refcat path relative to the root
    elapsed_s: float
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["root"], d["truth_dir"] = str(self.root), str(self.truth_dir)
        return d


def root_path(root: str | Path) -> Path:
    """A local archive root from a path or a ``file://`` URL (``https://`` roots are read-only)."""
    if isinstance(root, Path):
        return root
    parsed = urlparse(str(root))
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path if parsed.scheme else str(root)))
    raise SimulationError(
        f"archive root {root!r} is not a local path or file:// URL; the synthetic archive can only be "
        f"written to a filesystem (set archive.root to file:///some/folder)"
    )


def create_archive(preset: str | Preset = "demo", seed: int = 42, config: Any = None, root: str | Path | None = None,
                   progress: Progress | None = None, *, workers: int = 1, register: bool = True,
                   **overrides: object) -> ArchiveSummary:
    """Build the ``preset`` survey with ``seed`` under the archive root and register it.

    ``config`` is a :class:`~skyops.config.PlatformConfig` (default: the platform's); ``root``
    overrides its ``archive.root``. ``progress(stage, done, total)`` is called as CCDs are
    written. ``register=False`` writes files only. Extra keywords override the preset
    (``noise=False``, ``ccd_shape=(64, 128)`` ...).
    """
    from skyops.config import platform_config

    t0 = time.perf_counter()
    cfg = config if config is not None else platform_config()
    cfg = cfg.resolved("create_archive config")
    survey = Survey(preset, seed, **overrides)
    root_url = str(root) if root is not None else cfg.archive.root
    base = root_path(root_url)
    if not root_url.startswith("file://"):
        root_url = base.resolve().as_uri()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimulationBuildError(
            f"cannot create archive root {base}: {exc}; check the path and permissions") from None
    log.info("building %r under %s", survey, base)
    try:
        build = survey.build(base, workers=workers, progress=progress)
    except SkyopsError:
        raise
    except OSError as exc:
        raise SimulationBuildError(f"writing the {survey.preset.name} survey under {base} failed: {exc}") from None
    t_build = time.perf_counter() - t0
    rows: dict[str, int] = {}
    database = ""
    if register:
        from skyops.archive import ArchiveDB

        if progress:
            progress("register", 0, 1)
        db = ArchiveDB.from_config(cfg)
        database = db.url
        try:
            from skyops.sim.register import register_build

            rows = register_build(db, survey, build, cfg.archive.name, root_url)
        finally:
            db.dispose()
        if progress:
            progress("register", 1, 1)
    files = build.files
    summary = ArchiveSummary(
        preset=survey.preset.name, seed=survey.seed, root=base, database=database, archive_name=cfg.archive.name,
        nights=survey.nites, exposures=list(survey.exposures), n_files=len(files),
        n_bytes=sum(f.filesize for f in files),
        files_by_filetype=dict(sorted(Counter(f.file.filetype for f in files).items())),
        rows=rows, truth_dir=base / layout.TRUTH_DIR, refcat=layout.refcat(survey.refcat_name).relpath,
        elapsed_s=time.perf_counter() - t0, timings={"build": t_build, "register": time.perf_counter() - t0 - t_build},
    )
    log.info("archive ready: %d files, %.1f MB, %.1f s", summary.n_files, summary.n_bytes / 1e6, summary.elapsed_s)
    return summary
