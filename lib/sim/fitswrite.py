"""Deterministic, atomic FITS and CSV writing for simulated products.

Files are written with fitsio (CFITSIO adds no DATE or CHECKSUM on its own), under a
temporary name and renamed when complete (:func:`skyops.fileio.atomic_path`), with header
cards in the order given. Same arrays and cards -> same bytes -> same md5.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import fitsio
import numpy as np

from skyops.fileio import atomic_open, atomic_path
from skyops.sim.headers import Card


@dataclass
class HDU:
    """One HDU to write: ``data`` (image array, structured table, or None), cards, EXTNAME."""

    data: np.ndarray | None
    cards: Sequence[Card] = ()
    extname: str | None = None


def _records(cards: Sequence[Card]) -> list[dict[str, object]]:
    return [{"name": k, "value": v, "comment": c} for k, v, c in cards]


def write_fits(path: str | os.PathLike[str], hdus: Sequence[HDU]) -> Path:
    """Write ``hdus`` in order (the first becomes the primary HDU); returns the final path.

    A primary HDU with ``data=None`` is header-only, as in DECam raw files.
    """
    final = Path(path)
    with atomic_path(final) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
            for i, h in enumerate(hdus):
                header = _records(h.cards)
                if h.data is None:
                    if i != 0:
                        raise ValueError("only the primary HDU may be header-only")
                    f.write(None, header=header)
                    if h.extname:
                        f[0].write_key("EXTNAME", h.extname)
                elif h.data.dtype.names:
                    if i == 0:
                        f.write(None)
                    f.write(h.data, extname=h.extname, header=header)
                else:
                    f.write(h.data, extname=h.extname, header=header)
    return final


class FitsAppender:
    """Write a multi-extension FITS file one HDU at a time (a raw exposure, CCD by CCD)."""

    def __init__(self, path: str | os.PathLike[str], primary: Sequence[Card]) -> None:
        self.final = Path(path)
        self._ctx = atomic_path(self.final)
        self._tmp = self._ctx.__enter__()
        self._fits = fitsio.FITS(str(self._tmp), "rw", clobber=True)
        self._fits.write(None, header=_records(primary))

    def append(self, hdu: HDU) -> None:
        self._fits.write(hdu.data, extname=hdu.extname, header=_records(hdu.cards))

    def close(self) -> Path:
        self._fits.close()
        self._ctx.__exit__(None, None, None)
        return self.final

    def abort(self, exc: BaseException) -> None:
        self._fits.close()
        self._ctx.__exit__(type(exc), exc, exc.__traceback__)


def write_csv(path: str | os.PathLike[str], table: np.ndarray) -> Path:
    """A structured array as CSV with a header row; floats in shortest round-trip form."""
    final = Path(path)
    names = table.dtype.names or ()
    with atomic_open(final, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(names)
        cols = [_column_text(table[n]) for n in names]
        for row in zip(*cols):
            w.writerow(row)
    return final


def _column_text(col: np.ndarray) -> list[str]:
    """Shortest round-trip text per value: float32 as float32, bools as 0/1, bytes decoded."""
    kind = col.dtype.kind
    if kind == "f":
        return [str(v) for v in col]  # numpy scalars print their shortest repr for their precision
    if kind == "b":
        return ["1" if v else "0" for v in col]
    if kind == "S":
        return [v.decode("ascii") for v in col]
    return [str(v) for v in col.tolist()]


def write_table(path: str | os.PathLike[str], table: np.ndarray, extname: str,
                cards: Sequence[Card] = (), csv_too: bool = False) -> list[Path]:
    """A FITS binary table (empty primary + one extension), optionally also as ``.csv``."""
    out = [write_fits(path, [HDU(None, cards), HDU(table, (), extname)])]
    if csv_too:
        out.append(write_csv(Path(path).with_suffix(".csv"), table))
    return out
