"""``magellanic.back_calc`` (kred's BackCalc.py): one background offset per image, from all the pairs.

BackStats measured, for each overlapping pair (i, j), ``delta_ij`` ~ background_j - background_i
over ``W_ij`` coarse cells. The offsets ``x`` minimise

    S(x) = sum_ij W_ij (delta_ij - (x_j - x_i))^2

which fixes ``x`` up to one free constant per connected group of images (a filter and exposure
time, usually); each group's constant is chosen so that its offsets average zero, so matching
moves no group's overall level. The normal equations are ``L x = b`` with ``L`` the weighted graph
Laplacian of the overlap graph -- sparse: each image overlaps tens to hundreds of others, not all
of them. Grounding one image per group makes ``L`` positive definite; diagonally preconditioned
conjugate gradients (a sparse direct solve for small or stubborn systems) then solve a field of
10,000 images in a fraction of a second, where kred's dense SVD pseudo-inverse of the m x n design
matrix costs O(m n^2) time and m n memory.

kred chose among candidate solutions; so does this step, between the fit and *no correction*
(x = 0), by the weighted rms residual per degree of freedom (``sqrt(S / sum W * m / (m - p))``,
p the fitted parameters): where the pairs' differences are inconsistent -- noise, not offsets --
fitting them buys nothing and the images are left alone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import cg, spsolve

from skyops.campaigns.magellanic.backstats import GRID_ARCSEC
from skyops.campaigns.magellanic.fieldconfig import load_field_config
from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.layout import KredTree
from skyops.campaigns.magellanic.skygeom import Boxes, corner_arrays
from skyops.campaigns.magellanic.tables import MissingStageOutputError, Tab, as_str, read_table, write_table
from skyops.errors import ProcessingError
from skyops.steps.context import StepContext
from skyops.steps.registry import step


@dataclass(frozen=True)
class OffsetSolution:
    """Offsets of ``n`` images from ``m`` weighted pair differences."""

    x: np.ndarray  # the fitted offsets (zero mean per component)
    component: np.ndarray  # component label per image (isolated images have their own)
    n_components: int  # components with at least one pair
    rms: float  # weighted rms residual of the fit
    rms_none: float  # weighted rms of the differences themselves (no correction)
    score: float  # rms per degree of freedom of the fit
    score_none: float

    @property
    def better_than_none(self) -> bool:
        return self.score < self.score_none


def laplacian(n: int, i: np.ndarray, j: np.ndarray, w: np.ndarray) -> sp.csr_matrix:
    """The weighted graph Laplacian ``A^T W A`` of the pairs, built directly (no m x n design matrix)."""
    deg = np.bincount(i, weights=w, minlength=n) + np.bincount(j, weights=w, minlength=n)
    rows = np.concatenate([i, j, np.arange(n)])
    cols = np.concatenate([j, i, np.arange(n)])
    vals = np.concatenate([-w, -w, deg])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))  # duplicate pairs add up


def _solve_spd(a: sp.csr_matrix, b: np.ndarray) -> np.ndarray:
    """Solve the grounded (positive definite) system: conjugate gradients preconditioned by the
    diagonal -- overlap graphs are well connected, so a few dozen iterations of O(pairs) each --
    and a sparse direct solve if that does not converge."""
    if a.shape[0] <= 2000:
        return spsolve(a.tocsc(), b)
    d = a.diagonal()
    pre = sp.diags(1.0 / d)
    x, info = cg(a, b, rtol=1e-12, atol=0.0, maxiter=2000, M=pre)
    return x if info == 0 else spsolve(a.tocsc(), b)


def weighted_rms(r: np.ndarray, w: np.ndarray) -> float:
    return float(np.sqrt(np.sum(w * r * r) / np.sum(w))) if len(r) else 0.0


def solve_offsets(n: int, i: np.ndarray, j: np.ndarray, delta: np.ndarray, w: np.ndarray) -> OffsetSolution:
    """Minimise ``sum w (delta - (x_j - x_i))^2`` over ``x`` (n images; pairs i -> j), gauge: zero mean.

    Sparse normal equations per connected component, with one image grounded: exact, and
    linear in the number of pairs for the overlap graphs of a survey.
    """
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    delta, w = np.asarray(delta, float), np.asarray(w, float)
    if np.any(w <= 0) or not np.all(np.isfinite(delta)):
        raise ProcessingError("BackCalc: pair weights must be positive and differences finite; "
                              "drop unused pairs (used = 0) before solving")
    if np.any(i == j):
        raise ProcessingError("BackCalc: a pair joins an image to itself; check the overlaps table")
    lap = laplacian(n, i, j, w)
    rhs = np.bincount(j, weights=w * delta, minlength=n) - np.bincount(i, weights=w * delta, minlength=n)
    ncomp, label = connected_components(lap, directed=False)
    in_pairs = np.zeros(n, bool)
    in_pairs[i] = in_pairs[j] = True
    # ground the first image of each component: the rest of the system is positive definite
    first = np.full(ncomp, -1)
    for k in np.flatnonzero(in_pairs)[::-1]:
        first[label[k]] = k
    free = in_pairs.copy()
    free[first[first >= 0]] = False
    x = np.zeros(n)
    idx = np.flatnonzero(free)
    if idx.size:
        sub = lap[idx][:, idx]
        x[idx] = _solve_spd(sub, rhs[idx]) if idx.size > 1 else rhs[idx] / sub.toarray().ravel()
    # zero mean per component (over the images that have pairs)
    sums = np.bincount(label[in_pairs], weights=x[in_pairs], minlength=ncomp)
    cnt = np.bincount(label[in_pairs], minlength=ncomp)
    with np.errstate(invalid="ignore", divide="ignore"):
        x[in_pairs] -= (sums / np.maximum(cnt, 1))[label[in_pairs]]
    r = delta - (x[j] - x[i])
    m, used_comp = len(delta), int(np.count_nonzero(cnt))
    p = int(in_pairs.sum()) - used_comp
    rms, rms0 = weighted_rms(r, w), weighted_rms(delta, w)
    score = rms * np.sqrt(m / (m - p)) if m > p else 0.0
    return OffsetSolution(x, label, used_comp, rms, rms0, float(score), rms0)


def original_backprep_bytes(det: Tab, grid_arcsec: float, ra0: float, dec0: float) -> int:
    """The disk kred's BackPrep would use: every CCD image reprojected (image + weight, float32 FITS)
    onto the common coarse WCS covering the whole field."""
    ra, dec = corner_arrays(det)
    b = Boxes.from_corners(ra, dec, ra0, dec0)
    s = grid_arcsec / 3600.0
    nx = int(np.ceil((b.x1.max() - b.x0.min()) / s)) + 1
    ny = int(np.ceil((b.y1.max() - b.y0.min()) / s)) + 1

    def fits_size(nbytes: int) -> int:
        return 2880 * 2 + -(-nbytes // 2880) * 2880  # two header blocks + padded data

    return int(len(det) * 2 * fits_size(nx * ny * 4))


@step("magellanic.back_calc", resources={"cpu": 1, "memory_mb": 2048}, outputs=["kred_backcalc"])
def back_calc(ctx: StepContext, *, root: str, field: str, nbatch: int = 1, config: str | None = None) -> dict:
    """Solve for every image's background offset from all BackStats batches (the field's fan-in)."""
    tree = KredTree(Path(root), field)
    cfg = load_field_config(tree, config)
    det = read_table(tree.det_table, stage="MefSum (magellanic.mef_sum + mef_tables)", ctx=ctx,
                     filetype="kred_det_summary")
    parts = []
    for k in range(nbatch):
        p = tree.backstats_table(k, nbatch)
        if not p.is_file():
            raise MissingStageOutputError(f"{p} does not exist: BackStats batch {k} of {nbatch} has not run; run "
                                          f"BackStats with nbatch={nbatch} (the DAG's np) first")
        parts.append(read_table(p, stage="BackStats", ctx=ctx, filetype="kred_backstats"))
    stats = Tab.vstack(parts)
    grid_arcsec = float(parts[0].meta.get("grid_arcsec", GRID_ARCSEC)) if parts else GRID_ARCSEC
    images = [tree.prep_image(m, d).name for m, d in zip(as_str(det["mef"]), as_str(det["detpos"]))]
    index = {name: k for k, name in enumerate(images)}
    used = stats[np.asarray(stats["used"]) == 1] if len(stats) else stats
    named = as_str(used["image_a"]) + as_str(used["image_b"]) if len(used) else []
    unknown = sorted({n for n in named if n not in index})
    if unknown:
        raise ProcessingError(f"BackStats pairs name images MefSum does not know (e.g. {unknown[0]}); the Summary "
                              "tables are older than the overlaps: rerun from MefSum")
    t0 = time.perf_counter()
    if len(used):
        ia = np.array([index[n] for n in as_str(used["image_a"])])
        ib = np.array([index[n] for n in as_str(used["image_b"])])
        sol = solve_offsets(len(images), ia, ib, np.asarray(used["delta"], float), np.asarray(used["npix"], float))
        npairs = np.bincount(np.concatenate([ia, ib]), minlength=len(images))
    else:
        sol = OffsetSolution(np.zeros(len(images)), np.arange(len(images)), 0, 0.0, 0.0, 0.0, 0.0)
        npairs = np.zeros(len(images), int)
    seconds = time.perf_counter() - t0
    chosen = "lsq" if sol.better_than_none else "none"
    applied = sol.x if chosen == "lsq" else np.zeros(len(images))
    table = Tab.from_columns({
        "image": images, "mef": as_str(det["mef"]), "expnum": np.asarray(det["expnum"], int),
        "ccdnum": np.asarray(det["ccdnum"], int), "filter": as_str(det["filter"]),
        "exptime": np.asarray(det["exptime"], float), "offset": applied, "offset_lsq": sol.x,
        "component": sol.component, "npairs": npairs})
    write_table(ctx, tree.backcalc_table, table, "kred_backcalc",
                meta={"chosen": chosen, "rms_before": sol.rms_none, "rms_after": sol.rms, "score_lsq": sol.score,
                      "score_none": sol.score_none})
    written = int(sum(tree.backstats_table(k, nbatch).stat().st_size for k in range(nbatch)))
    original = original_backprep_bytes(det, grid_arcsec, cfg.center.ra, cfg.center.dec)
    FieldLog(tree).write("BackCalc", f"{len(used)} pairs, {len(images)} images, {sol.n_components} groups: rms "
                                     f"{sol.rms_none:.4g} -> {sol.rms:.4g}; kept {chosen}; BackStats wrote {written} "
                                     f"bytes where BackPrep would have written {original}")
    return {"pairs": len(used), "images": len(images), "components": sol.n_components, "rms_before": sol.rms_none,
            "rms_after": sol.rms, "chosen": chosen, "solve_seconds": seconds, "backstats_bytes_written": written,
            "backprep_bytes_original": original}
