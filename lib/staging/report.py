"""What a staging run did, file by file: the record provenance is written from.

The Airflow operator records a ``desfile`` row (name, path, filetype, size, md5) for every
staged file and an ``opm_used`` edge to the task that uses it, straight from
:class:`StageReport`; the CLI and task logs print :meth:`StageReport.summary`. Progress
callbacks receive :class:`ProgressEvent` objects while the run goes.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from skyops.fileio import atomic_open

#: How a file got to its destination: read from the archive, linked from the shared cache
#: (someone else fetched it), or already present and verified.
Outcome = Literal["fetched", "cached", "skipped"]


@dataclass(frozen=True)
class FileResult:
    """One staged file: where it is, what it is, where it came from and how."""

    index: int          #: row number in the manifest (to join back to the query's own columns)
    relpath: str        #: archive-relative path, ``path/filename+compression``
    path: Path          #: absolute destination path
    filename: str
    compression: str
    filetype: str
    md5: str            #: verified md5 (the manifest's)
    size: int           #: bytes
    source: str         #: password-free URL of the archive copy
    outcome: Outcome
    attempts: int = 0   #: transfer attempts this run made (0 when cached or skipped)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass
class StageReport:
    """The result of :func:`skyops.staging.stage`: per-file results in manifest order, and totals."""

    dest: Path
    root: str                     #: password-free archive root URL
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    bytes_read: int = 0           #: bytes read from the archive, retries included
    cache: Path | None = None

    def _count(self, outcome: Outcome) -> int:
        return sum(1 for f in self.files if f.outcome == outcome)

    @property
    def fetched(self) -> int:
        """Files read from the archive by this run."""
        return self._count("fetched")

    @property
    def cached(self) -> int:
        """Files linked from the shared cache (fetched earlier, or by a parallel stager)."""
        return self._count("cached")

    @property
    def skipped(self) -> int:
        """Files already present at the destination and verified."""
        return self._count("skipped")

    @property
    def bytes(self) -> int:
        """Total size of the staged files."""
        return sum(f.size for f in self.files)

    def summary(self) -> str:
        """One line for task logs and the CLI."""
        rate = self.bytes / self.seconds if self.seconds > 0 else 0.0
        return (f"staged {len(self.files)} files ({format_bytes(self.bytes)}) in {self.seconds:.1f} s: "
                f"{self.fetched} fetched, {self.skipped} verified in place, {self.cached} from cache; "
                f"{format_bytes(rate)}/s")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (for XCom-by-path, provenance, ``skyops stage --report``)."""
        return {"dest": str(self.dest), "root": self.root, "cache": str(self.cache) if self.cache else None,
                "seconds": self.seconds, "bytes": self.bytes, "bytes_read": self.bytes_read,
                "fetched": self.fetched, "cached": self.cached, "skipped": self.skipped,
                "files": [f.to_dict() for f in self.files]}

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        path = Path(path)
        with atomic_open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        return path


@dataclass(frozen=True)
class ProgressEvent:
    """What a progress callback receives.

    ``start``: ``files_total``/``bytes_total`` are known. ``bytes``: ``nbytes`` more bytes are
    in place (negative when a discarded partial transfer takes some back). ``file``: one
    file is done (``result``). ``done``: the run ended. Callbacks are called from worker
    threads and must be thread-safe (a rich ``Progress`` is).
    """

    kind: Literal["start", "bytes", "file", "done"]
    files_total: int = 0
    bytes_total: int = 0
    nbytes: int = 0
    result: FileResult | None = None


ProgressCallback = Callable[[ProgressEvent], None]


def format_bytes(n: float) -> str:
    """Decimal units, as transfer tools print them: ``410.2 MB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
