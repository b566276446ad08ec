"""Manifests: the file lists that archive queries produce and staging consumes.

A manifest is a table whose every row is one archive file: ``filename``, ``path`` (the
folder relative to the archive root, as in DESDM's FILE_ARCHIVE_INFO), ``compression``
(``.fz``, ``.gz`` or empty), ``md5sum``, ``filesize``, ``filetype``, followed by the query's
own columns (``expnum``, ``ccdnum``, ``band``, ``mag_zero`` ...). It is written to disk as
JSON and only its path travels through XCom, never the rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from skyops.errors import InputError
from skyops.fileio import atomic_open

FILE_COLUMNS = ("filename", "path", "compression", "md5sum", "filesize", "filetype")
FORMAT = "skyops-manifest/1"


@dataclass
class Manifest:
    """Rows of archive files plus what produced them (query name and bind parameters)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    query: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in FILE_COLUMNS if c not in self.columns]
        if missing and self.rows:
            raise InputError(f"manifest from {self.query or 'unknown query'} lacks columns {missing}")

    def __len__(self) -> int:
        return len(self.rows)

    def records(self) -> Iterator[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        for r in self.rows:
            yield dict(zip(self.columns, r))

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    @staticmethod
    def relpath(rec: dict[str, Any]) -> str:
        """The file's path relative to the archive root: ``path/filename+compression``."""
        name = rec["filename"] + (rec.get("compression") or "")
        return f"{rec['path'].rstrip('/')}/{name}" if rec.get("path") else name

    def write(self, path: str | Path) -> Path:
        """Write atomically as JSON; returns the path."""
        path = Path(path)
        doc = {"format": FORMAT, "query": self.query, "params": self.params,
               "columns": self.columns, "rows": [list(r) for r in self.rows]}
        with atomic_open(path, "w") as f:
            json.dump(doc, f, default=str)
        return path

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: manifest file not found") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not a skyops manifest (invalid JSON: {exc})") from None
        if doc.get("format") != FORMAT:
            raise InputError(f"{path}: not a skyops manifest (format {doc.get('format')!r}, expected {FORMAT!r})")
        return cls(columns=doc["columns"], rows=[tuple(r) for r in doc["rows"]],
                   query=doc.get("query", ""), params=doc.get("params", {}))


def merge_manifests(sources: "str | Path | Manifest | list[str | Path | Manifest]") -> Manifest:
    """One manifest of the file columns of several (duplicates by path and name dropped).

    Staging takes one manifest; a task that needs the files of several queries (a raw
    exposure, its calibrations, the reference catalog) merges them first.
    """
    items = sources if isinstance(sources, (list, tuple)) else [sources]
    manifests = [m if isinstance(m, Manifest) else Manifest.read(m) for m in items]
    if len(manifests) == 1:
        return manifests[0]
    rows: list[tuple] = []
    seen: set[tuple] = set()
    for m in manifests:
        for rec in m.records():
            row = tuple(rec[c] for c in FILE_COLUMNS)
            if (row[1], row[0], row[2]) not in seen:
                seen.add((row[1], row[0], row[2]))
                rows.append(row)
    return Manifest(columns=list(FILE_COLUMNS), rows=rows, query="+".join(m.query for m in manifests))
