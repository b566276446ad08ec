"""The records the provenance store takes and gives back.

Input: a :class:`TaskKey` names one try of one Airflow task instance; a file is a dict as
written by ``skyops step run`` in ``result.json`` (``path``, ``md5``, ``size``, ``filetype``,
optional ``compression``) and is normalised to a :class:`FileRecord`. Output:
:class:`FileInfo` and :class:`TaskInfo` are read-only views of ``desfile`` and ``task`` rows.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from skyops.errors import ProvenanceInputError

#: Task states after which a try of a task instance does not run again.
TERMINAL_STATES = frozenset(
    {"success", "failed", "up_for_retry", "upstream_failed", "skipped", "removed", "cleared"}
)

#: File suffixes recorded in ``desfile.compression`` (DESDM keeps ``.fz``/``.gz`` apart).
COMPRESSIONS = (".fz", ".gz", ".bz2", ".xz", ".zst")


@dataclass(frozen=True)
class TaskKey:
    """One try of one Airflow task instance: the natural key of a ``task`` row."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = 1


@dataclass(frozen=True)
class FileRecord:
    """A file to record, split the DESDM way into folder (``path``) and ``filename``."""

    path: str
    filename: str
    md5sum: str | None = None
    filesize: int | None = None
    filetype: str | None = None
    compression: str | None = None

    @property
    def full_path(self) -> str:
        return join_path(self.path, self.filename)

    @property
    def key(self) -> tuple[str, str]:
        return (self.path, self.filename)

    def row(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "filename": self.filename,
            "md5sum": self.md5sum,
            "filesize": self.filesize,
            "filetype": self.filetype,
            "compression": self.compression,
        }


@dataclass(frozen=True)
class TaskInfo:
    """A ``task`` row as lineage, impact and reports show it."""

    id: int
    name: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    status: str
    executor: str | None = None
    host: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None

    @property
    def key(self) -> TaskKey:
        return TaskKey(self.dag_id, self.run_id, self.task_id, self.map_index, self.try_number)

    @property
    def label(self) -> str:
        """``task_id[map] try N`` — how Airflow users name a try."""
        mapped = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.task_id}{mapped} try {self.try_number}"


@dataclass(frozen=True)
class FileInfo:
    """A ``desfile`` row."""

    id: int
    path: str
    filename: str
    filetype: str | None = None
    filesize: int | None = None
    md5sum: str | None = None
    compression: str | None = None
    wgb_task_id: int | None = None

    @property
    def full_path(self) -> str:
        return join_path(self.path, self.filename)


def join_path(folder: str, filename: str) -> str:
    """The inverse of :func:`split_path`."""
    return os.path.join(folder, filename) if folder else filename


def split_path(full_path: str | os.PathLike[str]) -> tuple[str, str]:
    """``/a/b/c.fits`` -> (``/a/b``, ``c.fits``), after normalising ``//`` and ``./``."""
    text = os.fspath(full_path)
    if not text or text.endswith(("/", os.sep)):
        raise ProvenanceInputError(
            f"file path {text!r} names no file (empty, or ends with a separator); "
            "give the full path of a file"
        )
    folder, name = os.path.split(os.path.normpath(text))
    return folder, name


def guess_compression(filename: str) -> str | None:
    """``x.fits.fz`` -> ``.fz``; None for an uncompressed name."""
    for suffix in COMPRESSIONS:
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return suffix
    return None


def file_record(entry: Mapping[str, Any], where: str) -> FileRecord:
    """Validate one file dict from ``result.json``; ``where`` names it in errors.

    DESDM manifest spellings (``md5sum``, ``filesize``) are accepted beside the
    ``result.json`` ones (``md5``, ``size``).
    """
    if not hasattr(entry, "get") or not entry.get("path"):
        raise ProvenanceInputError(
            f"{where}: a file record needs a 'path' (the file's full path); got {entry!r}"
        )
    folder, name = split_path(entry["path"])
    size = entry.get("size", entry.get("filesize"))
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ProvenanceInputError(f"{where}: 'size' of {entry['path']} must be a byte count, got {size!r}")
    md5 = entry.get("md5", entry.get("md5sum"))
    if md5 is not None and not isinstance(md5, str):
        raise ProvenanceInputError(f"{where}: 'md5' of {entry['path']} must be a hex string, got {md5!r}")
    return FileRecord(
        path=folder,
        filename=name,
        md5sum=md5,
        filesize=size,
        filetype=entry.get("filetype"),
        compression=entry.get("compression") or guess_compression(name),
    )


def to_json(value: Mapping[str, Any] | None) -> str | None:
    """JSON text for a dict column (sorted keys, so equal dicts store equal text)."""
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, default=str)


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime; naive values are taken to be UTC already (as Airflow's are)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def state_text(state: Any) -> str:
    """A state as stored: Airflow's ``TaskInstanceState.SUCCESS`` -> ``"success"``."""
    return str(getattr(state, "value", state))


def now() -> datetime:
    return datetime.now(timezone.utc)
