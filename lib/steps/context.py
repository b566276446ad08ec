"""What a step sees while it runs: its workdir, config, logger, and the output contract.

A step never writes a product under its final name directly. It asks the context:

    with ctx.output("cat.fits", filetype="cat_finalcut") as tmp:
        write_catalog(tmp)

and the file is renamed into place only when the block succeeds, then listed in
``result.json`` with its md5 and size. Inputs the step reads are declared with
:meth:`StepContext.use` so provenance can draw the derivation edges.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from skyops.config import PlatformConfig, platform_config
from skyops.fileio import atomic_path, md5sum
from skyops.tools import run_tool, tool_version


@dataclass
class FileEntry:
    """One file in result.json: what provenance records as a ``desfile`` row."""

    path: str
    md5: str | None
    size: int | None
    filetype: str | None

    @classmethod
    def of(cls, path: Path, filetype: str | None, md5: str | None = None) -> "FileEntry":
        path = Path(path).resolve()
        return cls(str(path), md5 or md5sum(path), path.stat().st_size, filetype)


@dataclass
class StepContext:
    """The runtime of one step invocation (one task try)."""

    step: str
    workdir: Path
    params: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("skyops.step"))
    outputs: list[FileEntry] = field(default_factory=list)
    used: list[FileEntry] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)
    _config: PlatformConfig | None = None

    @property
    def config(self) -> PlatformConfig:
        """The platform config (loaded on first use: most steps never need it)."""
        if self._config is None:
            self._config = platform_config()
        return self._config

    def path(self, relative: str | os.PathLike[str]) -> Path:
        """A path inside the workdir (absolute paths are returned unchanged)."""
        p = Path(relative)
        return p if p.is_absolute() else self.workdir / p

    @contextlib.contextmanager
    def output(self, name: str | os.PathLike[str], filetype: str) -> Iterator[Path]:
        """Yield a temporary path to write ``name``; on success rename it and record it."""
        final = self.path(name)
        with atomic_path(final) as tmp:
            yield tmp
        self.declare_output(final, filetype)

    def declare_output(self, path: str | os.PathLike[str], filetype: str, md5: str | None = None) -> FileEntry:
        """Record an output that is already complete under its final name."""
        entry = FileEntry.of(self.path(path), filetype, md5)
        self.outputs = [o for o in self.outputs if o.path != entry.path] + [entry]
        return entry

    def use(self, path: str | os.PathLike[str], filetype: str | None = None, md5: str | None = None) -> Path:
        """Declare an input file (for provenance); returns its path for convenience."""
        p = self.path(path)
        entry = FileEntry.of(p, filetype, md5)
        if all(u.path != entry.path for u in self.used):
            self.used.append(entry)
        return p

    def metric(self, name: str, value: Any) -> None:
        """Record a scalar metric (counts, rms, zeropoints) for result.json and provenance."""
        self.metrics[name] = value

    def tool(self, name: str, args: Sequence[str | Path], *, cwd: Path | None = None,
             timeout: float | None = None) -> str:
        """Run an external tool, recording its version string."""
        self.tool_versions[name] = tool_version(name)
        return run_tool(name, args, cwd=cwd or self.workdir, timeout=timeout)
