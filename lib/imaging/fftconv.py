"""FFT convolution of real arrays over chosen axes, on :mod:`scipy.fft` alone.

Same results as ``scipy.signal.fftconvolve`` for real input (modes ``full``, ``same`` and
``valid``, with broadcasting over the other axes). It exists because importing
``scipy.signal`` costs about half a second, paid by every difference-imaging task of a night,
while the FFTs themselves live in the much lighter :mod:`scipy.fft`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft

MODES = ("full", "same", "valid")


def fftconvolve(in1: np.ndarray, in2: np.ndarray, mode: str = "full",
                axes: int | Sequence[int] | None = None) -> np.ndarray:
    """Convolve real ``in1`` with real ``in2`` over ``axes`` (default: all) by FFT.

    ``valid`` needs ``in1`` at least as large as ``in2`` along every convolved axis; other
    axes broadcast as in NumPy. Raises ValueError for an unknown mode or mismatched ranks.
    """
    if mode not in MODES:
        raise ValueError(f"fftconvolve: mode must be one of {', '.join(MODES)}, got {mode!r}")
    a, b = np.asarray(in1), np.asarray(in2)
    if a.ndim != b.ndim:
        raise ValueError(f"fftconvolve: inputs have {a.ndim} and {b.ndim} dimensions; they must match")
    if axes is None:
        ax = tuple(range(a.ndim))
    else:
        ax = tuple(int(x) % a.ndim for x in ([axes] if isinstance(axes, int) else axes))
    s1 = np.array([a.shape[i] for i in ax])
    s2 = np.array([b.shape[i] for i in ax])
    if mode == "valid" and np.any(s1 < s2):
        raise ValueError(f"fftconvolve: 'valid' needs in1 {tuple(s1)} at least as large as in2 {tuple(s2)}")
    full = s1 + s2 - 1
    fshape = [scipy.fft.next_fast_len(int(n), real=True) for n in full]
    spec = scipy.fft.rfftn(a, fshape, axes=ax) * scipy.fft.rfftn(b, fshape, axes=ax)
    out = scipy.fft.irfftn(spec, fshape, axes=ax)
    if mode == "full":
        want, start = full, np.zeros_like(full)
    elif mode == "same":
        want, start = s1, (full - s1) // 2
    else:
        want, start = s1 - s2 + 1, s2 - 1
    index = [slice(None)] * out.ndim
    for i, st, n in zip(ax, start, want):
        index[i] = slice(int(st), int(st + n))
    return out[tuple(index)]
