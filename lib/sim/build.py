"""``create_archive``: build a preset's survey under the archive root and register it.

This is the one call that turns an empty SKYOPS_HOME into a DESDM-like archive every
campaign can query and stage from: files in DESDM's path layout under the platform config's
``archive.root`` (a ``file://`` URL), rows in the archive database (``databases.archive``),
truth tables under ``SIM/truth/``. Same preset and seed -> same files, byte for byte.

``parts`` chooses what is built (default: the preset's ``parts``, ``("gw",)`` for demo and
bench): ``gw`` the core survey of the preset's nights; ``tiles`` its DES coadd tiles with
their single-epoch exposures and finalcut products (:mod:`skyops.sim.tilesurvey`); ``kred``
its kred Magellanic field, a ``DECam_MEF`` tree (:mod:`skyops.sim.kred`). ``parts=ALL_PARTS``
(or ``"all"``) builds every part the preset defines.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlparse

from skyops.errors import SimulationBuildError, SimulationError, SkyopsError
from skyops.sim import layout
from skyops.sim.presets import ALL_PARTS, Preset
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
    parts: list[str] = field(default_factory=lambda: ["gw"])
    tiles: list[str] = field(default_factory=list)  # DES tile names built (part "tiles")
    kred_fields: list[str] = field(default_factory=list)  # kred fields built (part "kred")

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
                   parts: str | Iterable[str] | None = None, ccds: Iterable[int] | None = None,
                   raw_only_templates: bool | Iterable[int] = False, **overrides: object) -> ArchiveSummary:
    """Build the ``preset`` survey with ``seed`` under the archive root and register it.

    ``config`` is a :class:`~skyops.config.PlatformConfig` (default: the platform's); ``root``
    overrides its ``archive.root``. ``progress(stage, done, total)`` is called as CCDs are
    written. ``register=False`` writes files only. ``parts`` picks the survey parts (``gw``,
    ``tiles``, ``kred``, or ``"all"``; default the preset's ``parts``). ``ccds`` builds only those
    CCDs of the GW survey's exposures (default all 62). ``raw_only_templates`` (True, or
    template expnums) builds those GW templates as raw exposures + night calibrations without
    finalcut products (see :class:`~skyops.sim.survey.Survey`). Extra keywords
    override the preset (``noise=False``, ``ccd_shape=(64, 128)`` ...).
    """
    from skyops.config import platform_config

    t0 = time.perf_counter()
    cfg = config if config is not None else platform_config()
    cfg = cfg.resolved("create_archive config")
    survey = Survey(preset, seed, raw_only_templates=raw_only_templates, **overrides)
    want = resolve_parts(parts, survey.preset)
    root_url = str(root) if root is not None else cfg.archive.root
    base = root_path(root_url)
    if not root_url.startswith("file://"):
        root_url = base.resolve().as_uri()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimulationBuildError(
            f"cannot create archive root {base}: {exc}; check the path and permissions") from None
    log.info("building %r under %s (parts: %s)", survey, base, ", ".join(want))
    part_times: dict[str, float] = {}
    build = tiles = kred = None
    try:
        if "gw" in want:
            t = time.perf_counter()
            build = survey.build(base, workers=workers, progress=progress, ccds=ccds)
            part_times["build_gw"] = time.perf_counter() - t
        if "tiles" in want:
            from skyops.sim.tilesurvey import TileSurvey

            t = time.perf_counter()
            tile_survey = TileSurvey(survey.preset, survey.seed)
            tiles = tile_survey.build(base, progress=progress)
            part_times["build_tiles"] = time.perf_counter() - t
        if "kred" in want:
            from skyops.sim.kred import KredField
            from skyops.sim.kredtree import build_field

            t = time.perf_counter()
            assert survey.preset.kred is not None
            kred = build_field(KredField(survey.preset.kred, survey.seed, noise=survey.preset.options.noise,
                                         psf_beta=survey.preset.options.psf_beta), base, progress=progress)
            part_times["build_kred"] = time.perf_counter() - t
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
            from skyops.sim.register_parts import merge_counts, register_kred, register_tiles

            counts = []
            if build is not None:
                counts.append(register_build(db, survey, build, cfg.archive.name, root_url))
            if tiles is not None:
                counts.append(register_tiles(db, tile_survey, tiles, cfg.archive.name, root_url))
            if kred is not None:
                counts.append(register_kred(db, kred, cfg.archive.name, root_url))
            rows = merge_counts(*counts)
        finally:
            db.dispose()
        if progress:
            progress("register", 1, 1)
    files = (build.files if build is not None else []) + (tiles.files if tiles is not None else []) + (
        kred.files if kred is not None else [])
    summary = ArchiveSummary(
        preset=survey.preset.name, seed=survey.seed, root=base, database=database, archive_name=cfg.archive.name,
        nights=survey.nites if build is not None else [],
        exposures=(list(survey.exposures) if build is not None else []) + (tiles.expnums if tiles is not None else []),
        n_files=len(files), n_bytes=sum(f.filesize for f in files),
        files_by_filetype=dict(sorted(Counter(f.file.filetype for f in files).items())),
        rows=rows, truth_dir=base / layout.TRUTH_DIR,
        refcat=layout.refcat(survey.refcat_name).relpath if build is not None else "",
        elapsed_s=time.perf_counter() - t0,
        timings={"build": t_build, "register": time.perf_counter() - t0 - t_build, **part_times},
        parts=list(want), tiles=[t.name for t in tiles.tiles] if tiles is not None else [],
        kred_fields=[kred.field] if kred is not None else [],
    )
    log.info("archive ready: %d files, %.1f MB, %.1f s", summary.n_files, summary.n_bytes / 1e6, summary.elapsed_s)
    return summary


def resolve_parts(parts: str | Iterable[str] | None, preset: Preset) -> tuple[str, ...]:
    """The survey parts to build: ``parts`` (a name, names, or ``"all"``) or the preset's default.

    ``"all"`` means every part the preset defines (``tiles`` needs ``preset.tiles``, ``kred``
    needs ``preset.kred``); naming a part the preset lacks is an error.
    """
    if parts is None:
        names: tuple[str, ...] = tuple(preset.parts)
    elif isinstance(parts, str):
        names = tuple(p.strip() for p in parts.split(",") if p.strip())
    else:
        names = tuple(parts)
    if names == ("all",):
        names = tuple(p for p in ALL_PARTS if p == "gw" or getattr(preset, p) is not None)
    unknown = [p for p in names if p not in ALL_PARTS]
    if unknown or not names:
        raise SimulationError(f"unknown survey part(s) {unknown or list(names)}; parts are {', '.join(ALL_PARTS)} "
                              f"(or 'all')")
    missing = [p for p in names if p != "gw" and getattr(preset, p) is None]
    if missing:
        raise SimulationError(f"preset {preset.name!r} defines no {' or '.join(missing)} part; "
                              f"set Preset.{missing[0]} or leave the part out")
    return tuple(p for p in ALL_PARTS if p in names)
