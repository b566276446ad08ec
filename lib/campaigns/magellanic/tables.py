"""kred's ``.tab`` files: typed astropy-readable tables, written atomically, read without astropy.

kred kept its summaries as astropy ASCII tables with the ``.tab`` suffix. skyops writes them in
astropy's ECSV format (``# %ECSV 1.0``: a YAML header with every column's type and the table's
metadata, then space-separated rows), so ``astropy.table.Table.read(path, format="ascii.ecsv")``
opens any of them -- but the steps themselves read and write them with the few dozen lines below,
on numpy structured arrays: importing ``astropy.table`` costs half a second, and every kred task
(tens of thousands for a field) would pay it before doing anything.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import yaml

from skyops.errors import InputError, ProcessingError

ECSV_HEADER = "# %ECSV 1.0"
_ECSV_TYPES = {"i": "int64", "u": "int64", "f": "float64", "b": "bool", "U": "string", "S": "string"}


class MissingStageOutputError(InputError):
    """A table that an earlier kred stage writes is not there: that stage has not run."""


class Tab:
    """A table: a numpy structured array (``data``) and its metadata (``meta``)."""

    def __init__(self, data: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        self.data = data
        self.meta = dict(meta or {})

    # -- construction
    @classmethod
    def from_columns(cls, columns: dict[str, Sequence[Any]], meta: dict[str, Any] | None = None) -> "Tab":
        arrays = {k: _column(v) for k, v in columns.items()}
        n = {len(a) for a in arrays.values()}
        if len(n) > 1:
            raise ValueError(f"columns of different lengths: { {k: len(a) for k, a in arrays.items()} }")
        out = np.zeros(n.pop() if n else 0, dtype=[(k, a.dtype) for k, a in arrays.items()])
        for k, a in arrays.items():
            out[k] = a
        return cls(out, meta)

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]], names: Sequence[str], meta: dict[str, Any] | None = None,
                  dtypes: Sequence[str] | None = None) -> "Tab":
        if not rows:
            if dtypes is None:
                raise ValueError("an empty table needs its column dtypes")
            return cls(np.zeros(0, dtype=list(zip(names, dtypes))), meta)
        cols = list(zip(*rows))
        return cls.from_columns({n: list(c) for n, c in zip(names, cols)}, meta)

    # -- access
    @property
    def colnames(self) -> list[str]:
        return list(self.data.dtype.names or ())

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[np.void]:
        return iter(self.data)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self.data[key]
        return Tab(self.data[key], self.meta)

    def sorted(self, keys: Sequence[str]) -> "Tab":
        return Tab(np.sort(self.data, order=list(keys)), self.meta) if len(self.data) else self

    @staticmethod
    def vstack(tables: Iterable["Tab"]) -> "Tab":
        tables = list(tables)
        if not tables:
            raise ValueError("nothing to stack")
        names = tables[0].colnames
        cols = {n: np.concatenate([np.asarray(t[n]) for t in tables]) for n in names}
        return Tab.from_columns(cols, tables[0].meta)


def _column(values: Sequence[Any]) -> np.ndarray:
    a = np.asarray(values)
    if a.dtype.kind == "S":
        a = a.astype(str)
    if a.dtype.kind == "O":
        a = np.asarray([str(v) for v in values])
    if a.dtype.kind == "U" and a.size == 0:
        a = a.astype("U1")
    return a


# ------------------------------------------------------------------ ECSV
def _cell(v: Any, kind: str) -> str:
    if kind == "f":
        f = float(v)
        return "nan" if math.isnan(f) else repr(f)
    if kind == "b":
        return "True" if v else "False"
    text = str(v)
    if text == "" or any(c in text for c in ' "\t\n') or text.startswith("#"):
        return '"' + text.replace('"', '""') + '"'  # CSV quoting, as astropy's ECSV writer does
    return text


def ecsv_text(tab: Tab) -> str:
    """``tab`` as ECSV text (astropy's ``ascii.ecsv``)."""
    names = tab.colnames
    kinds = [tab.data.dtype[n].kind for n in names]
    header = {"datatype": [{"name": n, "datatype": _ECSV_TYPES[k]} for n, k in zip(names, kinds)]}
    if tab.meta:
        header["meta"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in tab.meta.items()}
    header["schema"] = "astropy-2.0"
    lines = [ECSV_HEADER, "# ---"] + ["# " + ln for ln in yaml.safe_dump(header, sort_keys=False).splitlines()]
    body = [" ".join(names)] + [" ".join(_cell(row[n], k) for n, k in zip(names, kinds)) for row in tab.data]
    return "\n".join(lines + body) + "\n"


def parse_ecsv(text: str, source: str = "<ecsv>") -> Tab:
    """An ECSV table (as :func:`ecsv_text` writes it) as a :class:`Tab`."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith(ECSV_HEADER):
        raise ProcessingError(f"{source}: not an ECSV table (first line {lines[0] if lines else ''!r})")
    head = [ln[2:] for ln in lines[1:] if ln.startswith("# ") and ln != "# ---"]
    body = [ln for ln in lines[1:] if not ln.startswith("#")]
    header = yaml.safe_load("\n".join(head)) or {}
    spec = header.get("datatype", [])
    rows = list(csv.reader(body, delimiter=" ", quotechar='"'))
    names = [c["name"] for c in spec]
    if rows and rows[0] != names:
        raise ProcessingError(f"{source}: column line {rows[0]} does not match the header's {names}")
    data = rows[1:]
    cols: dict[str, np.ndarray] = {}
    for k, c in enumerate(spec):
        raw = [r[k] for r in data]
        t = c["datatype"]
        if t.startswith("int") or t.startswith("uint"):
            cols[c["name"]] = np.array(raw, dtype=np.int64)
        elif t.startswith("float"):
            cols[c["name"]] = np.array(raw, dtype=np.float64)
        elif t == "bool":
            cols[c["name"]] = np.array([v == "True" for v in raw], dtype=bool)
        else:
            cols[c["name"]] = np.array(raw, dtype=str) if raw else np.zeros(0, "U1")
    meta = header.get("meta") or {}
    if isinstance(meta, list):  # astropy's !!omap: (key, value) pairs or one-key mappings
        meta = dict(kv for d in meta for kv in (d.items() if isinstance(d, dict) else [tuple(d)]))
    return Tab.from_columns(cols, meta)


# ------------------------------------------------------------------ files
def write_table(ctx: Any, path: Path, tab: Tab, filetype: str, meta: dict[str, Any] | None = None) -> Path:
    """Write ``tab`` to ``path`` through ``ctx.output`` (atomic, recorded as ``filetype``)."""
    if meta:
        tab = Tab(tab.data, {**tab.meta, **meta})
    with ctx.output(path, filetype=filetype) as tmp:
        tmp.write_text(ecsv_text(tab))
    return Path(path)


def read_table(path: Path, *, stage: str, ctx: Any | None = None, filetype: str | None = None) -> Tab:
    """The table at ``path``; MissingStageOutputError saying to run ``stage`` when it is absent."""
    if not Path(path).is_file():
        raise MissingStageOutputError(f"{path} does not exist: run {stage} for this field first "
                                      "(or include it in the run's stages)")
    if ctx is not None:
        ctx.use(path, filetype=filetype)
    return parse_ecsv(Path(path).read_text(), str(path))


def as_str(values: Any) -> list[str]:
    """Column values as Python strings."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
