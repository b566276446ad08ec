"""MOF: multi-object fitting of blended groups, by fitting each member with its neighbours subtracted.

Objects whose cutouts overlap form a group (friends-of-friends on the sky, :func:`groups`). Starting
from the single-object (SOF) fits, each member is refitted on its cutouts minus the current best
models of the other members -- each neighbour drawn through its *own* Jacobian, recentred on its
position in this cutout (both come from the same source image, ``file_id``: the positions are
``orig_row/col`` of the neighbour minus ``orig_start_row/col`` of the cutout), convolved with this
epoch's PSF. The pass repeats until no member's fluxes move by more than ``rtol`` of their size
(plus error), which is a block-coordinate descent on the joint likelihood of the group.
"""
from __future__ import annotations

import math

import numpy as np

from skyops.campaigns.balrog.fitter import Epoch, FitResult, ObjectFitter, render_fit


def groups(ra: np.ndarray, dec: np.ndarray, radius_arcsec: float | np.ndarray) -> list[list[int]]:
    """Friends-of-friends groups: i and j are linked when closer than (r_i + r_j) / 2 arcsec."""
    n = len(ra)
    rad = np.broadcast_to(np.asarray(radius_arcsec, dtype=np.float64), (n,))
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    x = np.asarray(ra) * np.cos(np.radians(np.asarray(dec))) * 3600.0
    y = np.asarray(dec) * 3600.0
    order = np.argsort(y)
    rmax = float(rad.max()) if n else 0.0
    for a in range(n):
        i = order[a]
        for b in range(a + 1, n):
            j = order[b]
            if y[j] - y[i] > rmax:
                break
            if math.hypot(x[i] - x[j], y[i] - y[j]) < 0.5 * (rad[i] + rad[j]):
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    out: dict[int, list[int]] = {}
    for i in range(n):
        out.setdefault(find(i), []).append(i)
    return sorted(out.values(), key=lambda g: g[0])


def subtract_neighbours(epochs: list[Epoch], neighbours: list[tuple[list[Epoch], FitResult]]) -> list[Epoch]:
    """``epochs`` with every neighbour's current model subtracted (where the neighbour has a cutout of
    the same source image in the same band)."""
    out = []
    for e in epochs:
        img = e.image.copy()
        for nep, res in neighbours:
            if not res.ok:
                continue
            other = next((x for x in nep if x.band == e.band and x.file_id == e.file_id), None)
            if other is None:
                continue
            jac = other.jac.recentred(other.orig_row - e.orig_start_row, other.orig_col - e.orig_start_col)
            img -= render_fit(res, e, jac)
        out.append(e.with_image(img))
    return out


def _change(old: FitResult, new: FitResult) -> float:
    if not (old.ok and new.ok):
        return math.inf
    f0, f1 = old.flux, new.flux
    scale = np.abs(f0) + np.nan_to_num(new.flux_err, nan=0.0) + 1e-300
    ok = np.isfinite(f0) & np.isfinite(f1)
    dflux = float(np.max(np.abs(f1 - f0)[ok] / scale[ok])) if ok.any() else 0.0
    dcen = float(np.hypot(*(new.pars[:2] - old.pars[:2])))
    return max(dflux, dcen / 0.1)  # centre moves count in units of 0.1 arcsec


def fit_group(members: list[list[Epoch]], first: list[FitResult], nband: int, model: str = "bdf",
              maxiter: int = 40, rtol: float = 2e-3) -> tuple[list[FitResult], int]:
    """MOF on one group: (final fits, number of passes).

    ``first`` are the starting fits: SOF fits *with neighbours masked* (a fit of the unmasked blend
    holds the neighbour's light too, and subtracting it drives the other member negative).
    """
    results = list(first)
    if len(members) < 2:
        return results, 0
    npass = 0
    for npass in range(1, maxiter + 1):
        change = 0.0
        for i, eps in enumerate(members):
            others = [(members[j], results[j]) for j in range(len(members)) if j != i]
            sub = subtract_neighbours(eps, others)
            good = results[i].ok and np.all(np.nan_to_num(results[i].flux, nan=1.0) > 0)
            guess = results[i].pars if good else None  # a member driven negative restarts afresh
            new = ObjectFitter(sub, nband, model).fit(guess)
            change = max(change, _change(results[i], new))
            results[i] = new
        if change < rtol:
            break
    return results, npass
