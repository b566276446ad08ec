"""Levenberg-Marquardt on the normal equations, with box bounds: the solver of every balrog fit.

The fits here have few parameters (a PSF mixture: 6 per Gaussian; a galaxy: 5-6 shape parameters
and one flux per band) and many pixels (all epochs of all bands). scipy's ``least_squares`` works on
the tall Jacobian itself (an SVD per iteration), which costs more than rendering the model; solving
the small normal equations ``(J^T J + lambda D) delta = -J^T r`` is both exact enough for these
well-conditioned problems and an order of magnitude cheaper. Bounds are applied by clipping the
trial point (the bounded parameters -- T >= 0, 0 <= fracdev <= 1 -- have their optimum inside or on
the box, where clipping is the projected step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import njit

#: fun(x) -> (residuals r (n,), Jacobian dr/dx (n, p))
ResidualFunction = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

#: LMResult.flags bits
FLAG_MAXITER = 1  # stopped at maxiter without meeting the tolerances
FLAG_SINGULAR = 2  # J^T J not invertible at the solution: no covariance
FLAG_NONFINITE = 4  # the model produced NaN/inf


@dataclass
class LMResult:
    """The solution, chi^2 = r.r, iterations, flags (FLAG_*) and the covariance inv(J^T J)."""

    x: np.ndarray
    chi2: float
    niter: int
    nfev: int
    flags: int
    cov: np.ndarray | None
    ndata: int

    @property
    def ok(self) -> bool:
        return not self.flags & (FLAG_NONFINITE | FLAG_SINGULAR)

    @property
    def errors(self) -> np.ndarray:
        """1-sigma errors (sqrt of the covariance diagonal; NaN without covariance)."""
        if self.cov is None:
            return np.full(self.x.size, np.nan)
        return np.sqrt(np.clip(np.diag(self.cov), 0, None))


@njit(cache=True)
def normal_equations(J: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(J^T J, J^T r)`` with plain loops: single-threaded on purpose (a BLAS thread pool on these
    thin matrices costs more in contention, on a shared node, than it gains)."""
    n, p = J.shape
    A = np.zeros((p, p))
    g = np.zeros(p)
    for i in range(n):
        ri = r[i]
        if ri == 0.0:
            allzero = True
            for a in range(p):
                if J[i, a] != 0.0:
                    allzero = False
                    break
            if allzero:
                continue
        for a in range(p):
            ja = J[i, a]
            if ja == 0.0:
                continue
            g[a] += ja * ri
            for b in range(a, p):
                A[a, b] += ja * J[i, b]
    for a in range(p):
        for b in range(a):
            A[a, b] = A[b, a]
    return A, g


def _covariance(A: np.ndarray) -> np.ndarray | None:
    """inv(A); parameters the data do not constrain (zero curvature: e.g. the shape of an object of
    size zero) get an infinite variance instead of making the whole matrix singular."""
    d = np.diag(A)
    live = d > 1e-12 * max(float(d.max()), 1e-300)
    cov = np.full(A.shape, np.nan)
    cov[np.diag_indices_from(cov)] = np.inf
    try:
        sub = np.linalg.inv(A[np.ix_(live, live)])
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(sub)):
        return None
    cov[np.ix_(live, live)] = sub
    cov[np.ix_(live, ~live)] = 0.0
    cov[np.ix_(~live, live)] = 0.0
    return cov


def levmar(fun: ResidualFunction, x0: np.ndarray, lower: np.ndarray | None = None, upper: np.ndarray | None = None,
           maxiter: int = 100, ftol: float = 1e-8, xtol: float = 1e-7, lam0: float = 1e-3) -> LMResult:
    """Minimise ``|r(x)|^2`` from ``x0`` within ``[lower, upper]``.

    Converged when an accepted step lowers chi^2 by less than ``ftol * chi^2`` or moves every
    parameter by less than ``xtol * (|x| + xtol)``.
    """
    x = np.asarray(x0, dtype=np.float64).copy()
    p = x.size
    lo = np.full(p, -np.inf) if lower is None else np.asarray(lower, dtype=np.float64)
    hi = np.full(p, np.inf) if upper is None else np.asarray(upper, dtype=np.float64)
    x = np.clip(x, lo, hi)
    r, J = fun(x)
    nfev = 1
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(J))):
        return LMResult(x, float("nan"), 0, nfev, FLAG_NONFINITE, None, r.size)
    chi2 = float(r @ r)
    lam = lam0
    flags = FLAG_MAXITER
    it = 0
    A, g = normal_equations(np.ascontiguousarray(J), r)
    for it in range(1, maxiter + 1):
        dA = np.diag(A).copy()
        dA[dA <= 0] = 1e-12 * max(float(dA.max()), 1e-300)
        accepted = False
        while lam < 1e12:
            try:
                step = np.linalg.solve(A + lam * np.diag(dA), -g)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            xn = np.clip(x + step, lo, hi)
            rn, Jn = fun(xn)
            nfev += 1
            chi2n = float(rn @ rn) if np.all(np.isfinite(rn)) else np.inf
            if chi2n <= chi2 and np.all(np.isfinite(Jn)):
                accepted = True
                break
            lam *= 10.0
        if not accepted:
            flags = 0  # no downhill step left: at the minimum to machine precision
            break
        dchi2 = chi2 - chi2n
        dx = np.abs(xn - x)
        x, r, J, chi2 = xn, rn, Jn, chi2n
        A, g = normal_equations(np.ascontiguousarray(J), r)
        lam = max(lam / 10.0, 1e-10)
        if dchi2 <= ftol * max(chi2, 1e-300) or np.all(dx <= xtol * (np.abs(x) + xtol)):
            flags = 0
            break
    cov = _covariance(A)
    if cov is None:
        flags |= FLAG_SINGULAR
    return LMResult(x, chi2, it, nfev, flags, cov, r.size)
