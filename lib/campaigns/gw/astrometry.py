"""Astrometric refinement of one CCD against a GAIA-like reference catalog.

The header WCS of a raw DECam CCD is good to a fraction of an arcsecond to a few arcseconds.
The nightly pipeline (SCAMP in DESDM; here a direct fit) corrects it per CCD:

1. reference stars on the CCD (proper motions carried to the exposure's epoch) and detections
   are put in the tangent plane of the header WCS (standard coordinates about ``CRVAL``);
2. the bulk offset is found by voting: the mode of all detection-to-reference differences
   within ``search_radius`` -- robust to offsets larger than the star spacing;
3. nearest neighbours within ``match_radius`` are paired and a linear transformation of the
   tangent plane (shift, rotation, scale and shear: 6 parameters; a shift alone with few
   stars) is fitted by least squares, rejecting pairs beyond ``clip`` robust sigma, iterated;
4. the transformation goes back into the WCS as a new CD matrix and CRPIX (CRVAL, the tangent
   point, is kept): for a TAN projection this is exact, not an approximation.

The result says how far the header was off at the CCD centre (header minus corrected, arcsec,
RA term times cos Dec), the rms of the fit and the number of stars used.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import fitsio
import numpy as np
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from skyops.errors import InputError, ProcessingError
from skyops.skygeom import DEG, gnomonic

log = logging.getLogger(__name__)

ARCSEC = 1.0 / 3600.0
REFCAT_COLUMNS = ("source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "ref_epoch",
                  "phot_g_mean_mag", "bp_rp")


def mjd_to_epoch(mjd: float) -> float:
    """Julian epoch (years) of an MJD."""
    return 2000.0 + (float(mjd) - 51544.5) / 365.25


def at_epoch(ref: np.ndarray, epoch: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Reference positions (degrees) moved from ``ref_epoch`` to ``epoch`` by their proper motions
    (GAIA: ``pmra`` is mu_alpha* in mas/yr); unchanged without an epoch or proper motions."""
    ra, dec = ref["ra"].astype(float), ref["dec"].astype(float)
    if epoch is None or not {"pmra", "pmdec", "ref_epoch"} <= set(ref.dtype.names or ()):
        return ra, dec
    dt = epoch - ref["ref_epoch"].astype(float)
    ra = ra + np.nan_to_num(ref["pmra"].astype(float)) * dt / 3.6e6 / np.cos(dec * DEG)
    return ra, dec + np.nan_to_num(ref["pmdec"].astype(float)) * dt / 3.6e6


def read_refcat(path: str | Path, header_wcs: WCS, shape: tuple[int, int], *, epoch: float | None = None,
                margin_pix: float = 50.0) -> np.ndarray:
    """Reference stars that fall on the CCD (grown by ``margin_pix``) through the header WCS.

    Positions are moved to ``epoch`` with the catalog's proper motions (GAIA: ``pmra`` is
    mu_alpha* in mas/yr). Returns the catalog rows (GAIA column names).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"reference catalog {path} does not exist; stage the GAIA catalog (parameter 'refcat')")
    with fitsio.FITS(str(path)) as f:
        ext = next((h for h in f if h.get_exttype() in ("BINARY_TBL", "ASCII_TBL")), None)
        if ext is None:
            raise InputError(f"reference catalog {path} has no table; expected GAIA DR2 columns "
                             f"{', '.join(REFCAT_COLUMNS)}")
        names = set(ext.get_colnames())
        missing = [c for c in ("ra", "dec", "phot_g_mean_mag") if c not in names]
        if missing:
            raise InputError(f"reference catalog {path} lacks column(s) {', '.join(missing)}; expected GAIA DR2 "
                             "names (ra, dec, phot_g_mean_mag, bp_rp, pmra, pmdec, ref_epoch)")
        ref = ext.read(columns=[c for c in REFCAT_COLUMNS if c in names])
    ra, dec = at_epoch(ref, epoch)
    x, y = header_wcs.all_world2pix(ra, dec, 1)
    ny, nx = shape
    on = (x > 0.5 - margin_pix) & (x < nx + 0.5 + margin_pix) & (y > 0.5 - margin_pix) & (y < ny + 0.5 + margin_pix)
    out = ref[on].copy()
    out["ra"], out["dec"] = ra[on], dec[on]
    return out


@dataclass
class AstromSolution:
    """A refined TAN WCS and how it was obtained."""

    crval: tuple[float, float]
    crpix: tuple[float, float]
    cd: np.ndarray  # 2x2, degrees / pixel
    model: str  # "affine", "shift" or "header" (no fit)
    nmatch: int  # pairs used in the final fit (after clipping)
    ncandidates: int  # pairs matched before clipping
    rms_arcsec: float  # 2-D rms of the fit residuals
    rms_axis_arcsec: tuple[float, float]  # per tangent-plane axis
    dra_arcsec: float  # header minus corrected, at the CCD centre, RA term times cos Dec
    ddec_arcsec: float
    rotation_deg: float  # of the correction
    scale: float  # of the correction (1 = unchanged)
    residuals: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)), repr=False)  # arcsec

    @classmethod
    def unrefined(cls, crval: tuple[float, float], crpix: tuple[float, float], cd: np.ndarray) -> "AstromSolution":
        """The header WCS as it is, before any fit."""
        return cls(crval, crpix, np.asarray(cd, float), "header", 0, 0, float("nan"), (float("nan"), float("nan")),
                   0.0, 0.0, 0.0, 1.0)

    def cards(self) -> list[tuple[str, object, str]]:
        """The corrected TAN WCS keywords (CRVAL kept, CRPIX and CD refined)."""
        return [
            ("CTYPE1", "RA---TAN", "Gnomonic projection"), ("CTYPE2", "DEC--TAN", "Gnomonic projection"),
            ("CRVAL1", float(self.crval[0]), "[deg] Tangent point"),
            ("CRVAL2", float(self.crval[1]), "[deg] Tangent point"),
            ("CRPIX1", float(self.crpix[0]), "Reference pixel (refined by gw.astrometry)"),
            ("CRPIX2", float(self.crpix[1]), "Reference pixel (refined by gw.astrometry)"),
        ] + [(f"CD{i + 1}_{j + 1}", float(self.cd[i, j]), "Linear transformation (refined)")
             for i in range(2) for j in range(2)]

    def wcs(self, shape: tuple[int, int]) -> WCS:
        h = {"NAXIS": 2, "NAXIS1": shape[1], "NAXIS2": shape[0], "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
             "CRVAL1": self.crval[0], "CRVAL2": self.crval[1], "CRPIX1": self.crpix[0], "CRPIX2": self.crpix[1],
             "CD1_1": self.cd[0, 0], "CD1_2": self.cd[0, 1], "CD2_1": self.cd[1, 0], "CD2_2": self.cd[1, 1]}
        return WCS(h)


def tan_parameters(header: dict | fitsio.FITSHDR) -> tuple[tuple[float, float], tuple[float, float], np.ndarray]:
    """(CRVAL, CRPIX, CD) of a TAN header; PC/CDELT headers are converted to CD."""
    try:
        crval = (float(header["CRVAL1"]), float(header["CRVAL2"]))
        crpix = (float(header["CRPIX1"]), float(header["CRPIX2"]))
    except KeyError as exc:
        raise InputError(f"image header has no {exc.args[0]}: a TAN WCS (CRVAL, CRPIX, CD) is needed for "
                         "astrometric refinement") from None
    if "CD1_1" in header:
        cd = np.array([[header.get("CD1_1", 0.0), header.get("CD1_2", 0.0)],
                       [header.get("CD2_1", 0.0), header.get("CD2_2", 0.0)]], dtype=float)
    else:
        pc = np.array([[header.get("PC1_1", 1.0), header.get("PC1_2", 0.0)],
                       [header.get("PC2_1", 0.0), header.get("PC2_2", 1.0)]], dtype=float)
        cd = pc * np.array([[header.get("CDELT1", 1.0)], [header.get("CDELT2", 1.0)]])
    if "TAN" not in str(header.get("CTYPE1", "")) or "TAN" not in str(header.get("CTYPE2", "")):
        raise InputError(f"image WCS is {header.get('CTYPE1')}/{header.get('CTYPE2')}; astrometric refinement "
                         "handles TAN (RA---TAN/DEC--TAN) headers")
    return crval, crpix, cd


def _offset_by_voting(p: np.ndarray, r: np.ndarray, radius: float, bin_size: float) -> np.ndarray:
    """The mode of all (reference - detection) differences within ``radius`` (same units)."""
    tree = cKDTree(r)
    pairs = tree.query_ball_point(p, radius)
    diffs = [r[j] - p[i] for i, js in enumerate(pairs) for j in js]
    if not diffs:
        return np.zeros(2)
    d = np.asarray(diffs)
    nb = int(np.ceil(2 * radius / bin_size))
    h, xe, ye = np.histogram2d(d[:, 0], d[:, 1], bins=nb, range=[[-radius, radius], [-radius, radius]])
    h = h + np.roll(h, 1, 0) + np.roll(h, -1, 0)  # 3x3 box sum: a peak split across bins still wins
    h = h + np.roll(h, 1, 1) + np.roll(h, -1, 1)
    i, j = np.unravel_index(np.argmax(h), h.shape)
    guess = np.array([0.5 * (xe[i] + xe[i + 1]), 0.5 * (ye[j] + ye[j + 1])])
    near = np.hypot(*(d - guess).T) < 2 * bin_size
    return np.median(d[near], axis=0) if near.any() else guess


def _fit(p: np.ndarray, r: np.ndarray, w: np.ndarray, model: str) -> np.ndarray:
    """Weighted least-squares 2x3 matrix M with r ~ M @ [p, 1] (a shift-only model keeps the identity)."""
    if model == "shift":
        t = np.sum((r - p) * w[:, None], axis=0) / np.sum(w)
        return np.array([[1.0, 0.0, t[0]], [0.0, 1.0, t[1]]])
    sw = np.sqrt(w)[:, None]
    a = np.column_stack([p - p.mean(axis=0), np.ones(len(p))])  # centred: a well-conditioned system
    sol, *_ = np.linalg.lstsq(a * sw, r * sw, rcond=None)
    m = sol.T
    m[:, 2] -= m[:, :2] @ p.mean(axis=0)
    return m


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:, :2].T + m[:, 2]


def refine_wcs(x: np.ndarray, y: np.ndarray, header: dict | fitsio.FITSHDR, ref_ra: np.ndarray,
               ref_dec: np.ndarray, shape: tuple[int, int], *, err: np.ndarray | None = None,
               ref_err: np.ndarray | None = None, floor: float = 0.005, search_radius: float = 5.0,
               match_radius: float = 1.0, clip: float = 3.0, min_stars: int = 5, min_affine: int = 10,
               iterations: int = 5) -> AstromSolution:
    """Fit a linear correction of the header TAN WCS from detections (FITS pixels) and reference stars.

    ``err``/``ref_err`` are per-axis position errors (arcsec) of the detections and the reference
    stars; with ``floor`` added in quadrature they weight the fit, and residuals are clipped in
    units of them (bright and faint stars are judged each by its own error). Radii are in arcsec.
    Fewer than ``min_stars`` matched stars is a ProcessingError; fewer than ``min_affine`` fits a
    shift only.
    """
    crval, crpix, cd = tan_parameters(header)
    ny, nx = shape
    # detections and reference stars in the header's tangent plane (arcsec)
    p = (np.column_stack([x - crpix[0], y - crpix[1]]) @ cd.T) / ARCSEC
    xi, eta = gnomonic(ref_ra, ref_dec, *crval)
    r = np.column_stack([xi, eta]) / ARCSEC
    e_p = np.zeros(len(p)) if err is None else np.nan_to_num(np.asarray(err, float), nan=1.0)
    e_r = np.zeros(len(r)) if ref_err is None else np.nan_to_num(np.asarray(ref_err, float), nan=1.0)
    if len(p) < min_stars or len(r) < min_stars:
        raise ProcessingError(f"astrometry: {len(p)} usable detections and {len(r)} reference stars on the CCD; "
                              f"at least {min_stars} of each are needed (check the exposure and the refcat's "
                              "footprint)")
    shift = _offset_by_voting(p, r, search_radius, bin_size=max(match_radius / 2.0, 0.1))
    m = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
    tree = cKDTree(r)
    model = "shift"
    keep = np.zeros(0, bool)
    di = ri = np.zeros(0, int)
    for _ in range(iterations):
        q = _apply(m, p)
        dist, idx = tree.query(q, distance_upper_bound=match_radius)
        ok = np.isfinite(dist)
        di, ri = np.flatnonzero(ok), idx[ok]
        # one detection per reference star: the closest
        order = np.argsort(dist[ok])
        _, first = np.unique(ri[order], return_index=True)
        sel = order[first]
        di, ri = di[sel], ri[sel]
        if len(di) < min_stars:
            raise ProcessingError(
                f"astrometry: only {len(di)} detections match reference stars within {match_radius} arcsec after "
                f"the bulk offset ({shift[0]:.2f}, {shift[1]:.2f}) arcsec; at least {min_stars} are needed "
                "(the header WCS may be off by more than search_radius, or the refcat does not cover the CCD)")
        keep = np.ones(len(di), bool)
        sigma = np.sqrt(e_p[di] ** 2 + e_r[ri] ** 2 + floor**2)
        for _ in range(iterations):
            model = "affine" if keep.sum() >= min_affine else "shift"
            m = _fit(p[di[keep]], r[ri[keep]], 1.0 / sigma[keep] ** 2, model)
            res = r[ri] - _apply(m, p[di])
            chi = np.hypot(res[:, 0], res[:, 1]) / sigma
            scale = max(np.median(chi[keep]) / 1.1774, 1e-3)  # per-axis scatter from the radial median (Rayleigh)
            new = chi < clip * scale
            if new.sum() < min_stars or np.array_equal(new, keep):
                break
            keep = new
    res = (r[ri] - _apply(m, p[di]))[keep]
    # back to the WCS: r = A p + t, p = CD (x - crpix)  ->  CD' = A CD, crpix' = crpix - CD'^-1 t
    a, t = m[:, :2], m[:, 2] * ARCSEC
    cd_new = a @ cd
    crpix_new = np.array(crpix) - np.linalg.solve(cd_new, t)
    # header minus corrected position of the CCD centre
    xc, yc = (nx + 1) / 2.0, (ny + 1) / 2.0
    w_old = _tan(crval, crpix, cd)
    w_new = _tan(crval, tuple(crpix_new), cd_new)
    (ra_h, dec_h), (ra_c, dec_c) = w_old.all_pix2world([[xc, yc]], 1)[0], w_new.all_pix2world([[xc, yc]], 1)[0]
    dra = ((ra_h - ra_c + 180.0) % 360.0 - 180.0) * np.cos(dec_c * DEG) * 3600.0
    ddec = (dec_h - dec_c) * 3600.0
    rot = float(np.degrees(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])))
    scale = float(np.sqrt(abs(np.linalg.det(a))))
    rms = float(np.sqrt(np.mean(np.sum(res**2, axis=1)))) if len(res) else float("nan")
    rms_axes = tuple(float(v) for v in np.sqrt(np.mean(res**2, axis=0))) if len(res) else (np.nan, np.nan)
    sol = AstromSolution(crval, (float(crpix_new[0]), float(crpix_new[1])), cd_new, model, int(keep.sum()),
                         int(len(di)), rms, rms_axes, float(dra), float(ddec), rot, scale, res)
    log.info("astrometry: %s fit of %d stars (%d matched), rms %.3f arcsec, header offset (%.3f, %.3f) arcsec",
             model, sol.nmatch, sol.ncandidates, rms, dra, ddec)
    return sol


def _tan(crval: tuple[float, float], crpix: tuple[float, float], cd: np.ndarray) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = list(crpix)
    w.wcs.cd = cd
    return w
