"""Alard-Lupton PSF matching: a spatially varying convolution kernel fitted by linear least squares.

HOTPANTS is not installable here, so skyops fits the kernel itself, the way Alard & Lupton (1998)
and Alard (2000) describe and HOTPANTS implements it. The model of the target image ``I`` is the
reference image ``R`` convolved with a kernel that changes smoothly over the image, plus a
differential background::

    I(x) ~ sum_n a_n(x) (B_n * R)(x) + bg(x)

* ``B_n`` -- the basis -- Gaussians of a few widths (default sigma 0.7, 1.5, 3 px) times
  polynomials in kernel coordinates (degree 6, 4, 2). The first basis image (the narrowest
  Gaussian) has unit sum and every other one is made zero-sum and orthonormalised, so the
  kernel sum -- the photometric scaling between the images -- is the first coefficient alone.
  It is held constant over the image (a CCD has one transparency); the others vary.
* ``a_n(x)`` -- polynomials of degree ``spatial_degree`` (1-2) in image coordinates normalised
  to [-1, 1]; ``bg(x)`` a polynomial of degree ``bg_degree``.
* The fit uses stamps around bright, isolated, unmasked sources (:func:`select_stamps`). Each
  stamp contributes its normal equations ``Y^T W Y`` (``Y`` = the reference patch convolved
  with each basis image, computed with FFTs for all stamps at once); the spatial polynomials
  are evaluated at the stamp centre and expanded into the global normal matrix. Stamps whose
  chi2 stands out (a variable source, a blend, a cosmic) are clipped and the fit repeated.
* Stars constrain a kernel only where the reference PSF has power: its highest spatial
  frequencies are free, and left free they amplify the reference's noise. A small penalty on
  the kernel's roughness (``regularization`` times the squared Laplacian of each spatial term,
  relative to the data's weight) keeps them quiet without biasing what the stars do constrain.

Applying a fitted kernel to a whole image (:meth:`KernelSolution.convolve`) needs only one FFT
of the image and one convolution per spatial term, because the kernel is linear in the
polynomial images: ``K(x) * R = sum_m P_m(x) (K_m * R)`` with ``K_m = sum_n c_nm B_n``.

Convolution convention everywhere: ``(K * R)(y, x) = sum_{v,u} K[h+v, h+u] R(y-v, x-u)`` with
``h`` the kernel half-width (a true convolution, kernel centre at ``[h, h]``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
import scipy.linalg
from scipy import ndimage

from skyops.errors import ProcessingError
from skyops.imaging.fftconv import fftconvolve

log = logging.getLogger(__name__)

#: Stamps must peak below this fraction of the saturation level (linear, unclipped pixels).
SATURATION_FRACTION = 0.8
#: FWHM of a Gaussian in units of its sigma.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


# ----------------------------------------------------------------------------- basis
@dataclass(frozen=True)
class KernelBasis:
    """The Alard-Lupton basis: ``images[0]`` has unit sum, the others zero sum and orthonormal."""

    half_width: int
    sigmas: tuple[float, ...]
    degrees: tuple[int, ...]
    images: np.ndarray = field(repr=False)  # (n, 2h+1, 2h+1) float64

    @property
    def size(self) -> int:
        return 2 * self.half_width + 1

    @property
    def n(self) -> int:
        return int(self.images.shape[0])


def alard_lupton_basis(half_width: int = 10, sigmas: tuple[float, ...] = (0.7, 1.5, 3.0),
                       degrees: tuple[int, ...] = (6, 4, 2)) -> KernelBasis:
    """Gaussians of width ``sigmas`` times ``u^i v^j`` (``i + j <= degree``) on a (2h+1)^2 grid."""
    if len(sigmas) != len(degrees) or not sigmas:
        raise ValueError(f"kernel sigmas {sigmas} and degrees {degrees} must be non-empty and of equal length")
    if half_width < 1:
        raise ValueError(f"kernel half-width must be >= 1, got {half_width}")
    h = int(half_width)
    r = np.arange(-h, h + 1, dtype=np.float64)
    v, u = np.meshgrid(r, r, indexing="ij")  # v along rows (y), u along columns (x)
    raw = []
    for sig, deg in zip(sigmas, degrees):
        g = np.exp(-(u * u + v * v) / (2.0 * sig * sig))
        us, vs = u / h, v / h  # scaled so that high powers stay O(1)
        for total in range(int(deg) + 1):
            for j in range(total + 1):
                raw.append(g * us ** (total - j) * vs ** j)
    raw_arr = np.array(raw)
    b0 = raw_arr[0] / raw_arr[0].sum()
    rest = raw_arr[1:] - raw_arr[1:].sum(axis=(1, 2))[:, None, None] * b0[None]
    flat = rest.reshape(len(rest), -1).T
    q, rr = scipy.linalg.qr(flat, mode="economic")
    diag = np.abs(np.diag(rr))
    keep = diag > 1e-9 * diag.max()
    ortho = q[:, keep].T.reshape(-1, 2 * h + 1, 2 * h + 1)
    images = np.concatenate([b0[None], ortho])
    return KernelBasis(h, tuple(float(s) for s in sigmas), tuple(int(d) for d in degrees), images)


# ----------------------------------------------------------------------------- polynomials
def poly_exponents(degree: int) -> list[tuple[int, int]]:
    """(i, j) of the terms x^i y^j with i + j <= degree: 1, x, y, x^2, xy, y^2, ..."""
    return [(total - j, j) for total in range(int(degree) + 1) for j in range(total + 1)]


def normalized_coords(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel coordinates mapped to [-1, 1] over an image of ``shape`` (ny, nx)."""
    ny, nx = shape
    return ((np.asarray(x, dtype=np.float64) - (nx - 1) / 2.0) / max((nx - 1) / 2.0, 1.0),
            (np.asarray(y, dtype=np.float64) - (ny - 1) / 2.0) / max((ny - 1) / 2.0, 1.0))


def poly_terms(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], degree: int) -> np.ndarray:
    """The polynomial terms at 0-based positions: array (nterms, *x.shape)."""
    u, v = normalized_coords(x, y, shape)
    return np.array([u ** i * v ** j for i, j in poly_exponents(degree)])


def poly_images(shape: tuple[int, int], degree: int, dtype: type = np.float32, *, frame: tuple[int, int] | None = None,
                margin: int = 0) -> list[np.ndarray]:
    """The polynomial terms as images of ``shape`` (outer products, cheap).

    The coordinates are those of ``frame`` (default ``shape``): an image padded by ``margin``
    pixels on every side of ``frame`` gets the frame's polynomials, extrapolated into the margin.
    """
    ny, nx = shape
    frame = frame or shape
    u, _ = normalized_coords(np.arange(nx) - margin, np.zeros(nx), frame)
    _, v = normalized_coords(np.zeros(ny), np.arange(ny) - margin, frame)
    u, v = u.astype(dtype), v.astype(dtype)
    return [np.outer(v ** j, u ** i) for i, j in poly_exponents(degree)]


# ----------------------------------------------------------------------------- the solution
@dataclass
class KernelSolution:
    """A fitted spatially varying kernel and differential background, and how the fit went."""

    basis: KernelBasis
    shape: tuple[int, int]  # (ny, nx) of the images the coordinates refer to
    spatial_degree: int
    bg_degree: int
    norm: float  # kernel sum: the photometric scale I / R
    coeffs: np.ndarray  # (basis.n - 1, n_spatial) coefficients of the zero-sum basis images
    bg_coeffs: np.ndarray  # (n_bg,)
    chi2: float  # reduced chi2 of the final fit over the stamps used
    stamp_xy: np.ndarray  # (n, 2) 0-based stamp centres (x, y)
    stamp_chi2: np.ndarray  # per-stamp chi2 per pixel of the final solution
    stamp_used: np.ndarray  # bool: kept after clipping
    iterations: int = 0

    @property
    def n_used(self) -> int:
        return int(self.stamp_used.sum())

    def _spatial_kernels(self) -> list[np.ndarray]:
        """K_m = sum_n c_nm B_n for each spatial term m (the norm goes with the constant term)."""
        rest = self.basis.images[1:]
        ks = [np.tensordot(self.coeffs[:, m], rest, axes=1) for m in range(self.coeffs.shape[1])]
        ks[0] = ks[0] + self.norm * self.basis.images[0]
        return ks

    def kernel_at(self, x: float, y: float) -> np.ndarray:
        """The kernel image at 0-based position (x, y)."""
        p = poly_terms(np.array([x]), np.array([y]), self.shape, self.spatial_degree)[:, 0]
        return sum(pm * km for pm, km in zip(p, self._spatial_kernels()))

    def background_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.tensordot(self.bg_coeffs, poly_terms(x, y, self.shape, self.bg_degree), axes=1)

    def background_image(self) -> np.ndarray:
        """The differential background over the image (``shape``)."""
        imgs = poly_images(self.shape, self.bg_degree)
        return sum(float(c) * im for c, im in zip(self.bg_coeffs, imgs)).astype(np.float32)

    def kernel_power_map(self, margin: int = 0) -> np.ndarray:
        """sum K(x)^2 over the kernel, on the image (padded by ``margin``).

        With ``K(x) = sum_m P_m(x) K_m`` it is ``sum_mm' <K_m, K_m'> P_m P_m'``, a polynomial of
        twice the spatial degree: built exactly from one outer product per power of y.
        """
        ks = np.array(self._spatial_kernels()).reshape(len(self._spatial_kernels()), -1)
        gram = ks @ ks.T
        exps = poly_exponents(self.spatial_degree)
        d2 = 2 * self.spatial_degree
        coef = np.zeros((d2 + 1, d2 + 1))  # [power of u, power of v]
        for a, (i1, j1) in enumerate(exps):
            for b, (i2, j2) in enumerate(exps):
                coef[i1 + i2, j1 + j2] += gram[a, b]
        ny, nx = self.shape[0] + 2 * margin, self.shape[1] + 2 * margin
        u, _ = normalized_coords(np.arange(nx) - margin, np.zeros(nx), self.shape)
        _, v = normalized_coords(np.zeros(ny), np.arange(ny) - margin, self.shape)
        out = np.zeros((ny, nx), dtype=np.float32)
        for j in range(d2 + 1):
            row = sum(coef[i, j] * u ** i for i in range(d2 + 1))
            out += np.outer((v ** j).astype(np.float32), row.astype(np.float32))
        return out

    def convolve(self, image: np.ndarray, margin: int = 0) -> np.ndarray:
        """``K(x) * image`` (no background), zeros outside; ``image`` may be padded by ``margin``."""
        kernels = self._spatial_kernels()
        terms = poly_images(image.shape, self.spatial_degree, frame=self.shape, margin=margin)
        return fft_convolve_many(image, kernels, weights=[None] + terms[1:])  # term 0 is the constant

    def convolve_variance(self, variance: np.ndarray, margin: int = 0) -> np.ndarray:
        """Per-pixel variance of ``K(x) * image`` for independent pixels of ``variance``.

        Exact for the kernel at the image centre; elsewhere scaled by the local sum of K^2
        (the kernel changes slowly, so this is good to second order in its variation).
        """
        ny, nx = self.shape
        kc = self.kernel_at((nx - 1) / 2.0, (ny - 1) / 2.0)
        out = fft_convolve_many(variance, [kc * kc])[0]  # type: ignore[index]
        if self.spatial_degree > 0:
            out *= self.kernel_power_map(margin) / np.float32((kc * kc).sum())
        np.maximum(out, 0.0, out=out)
        return out


def fft_convolve_many(image: np.ndarray, kernels: list[np.ndarray],
                      weights: list[np.ndarray | None] | None = None) -> np.ndarray | list[np.ndarray]:
    """``image * k`` for each kernel (same shape as image, zero padding), sharing one image FFT.

    With ``weights`` (one image per kernel, the first may be all ones) the weighted sum
    ``sum_m weights_m (image * k_m)`` is returned instead of the list.
    """
    img = np.asarray(image, dtype=np.float32)
    ny, nx = img.shape
    h = max(k.shape[0] // 2 for k in kernels)
    shape = (scipy.fft.next_fast_len(ny + h + 1, real=True), scipy.fft.next_fast_len(nx + h + 1, real=True))
    fimg = scipy.fft.rfft2(img, s=shape, workers=1)
    outs: list[np.ndarray] = []
    total: np.ndarray | None = None
    kpad = np.zeros(shape, dtype=np.float32)
    for m, k in enumerate(kernels):
        kh = k.shape[0] // 2
        kpad[:] = 0.0
        ks = k.astype(np.float32)
        # the kernel centre goes to [0, 0], wrapping its other quadrants to the far ends
        kpad[: kh + 1, : kh + 1] = ks[kh:, kh:]
        kpad[: kh + 1, -kh:] = ks[kh:, :kh]
        kpad[-kh:, : kh + 1] = ks[:kh, kh:]
        kpad[-kh:, -kh:] = ks[:kh, :kh]
        fk = scipy.fft.rfft2(kpad, workers=1)
        fk *= fimg
        full = scipy.fft.irfft2(fk, s=shape, workers=1)
        del fk
        view = full[:ny, :nx]
        if weights is None:
            outs.append(np.ascontiguousarray(view))
        elif total is None:
            total = view * weights[0] if weights[0] is not None else view.copy()
        else:
            if weights[m] is not None:
                view *= weights[m]
            total += view
    return outs if weights is None else total  # type: ignore[return-value]


# ----------------------------------------------------------------------------- stamps
def cutouts(image: np.ndarray, xy: np.ndarray, half: int) -> np.ndarray:
    """(n, 2 half + 1, 2 half + 1) cutouts centred on integer 0-based positions (must be inside)."""
    idx = np.arange(-half, half + 1)
    ys = xy[:, 1, None, None] + idx[None, :, None]
    xs = xy[:, 0, None, None] + idx[None, None, :]
    return image[ys, xs]


def select_stamps(ref: np.ndarray, sci: np.ndarray, bad: np.ndarray, var_ref: np.ndarray, var_sci: np.ndarray,
                  *, half: int, pad: int, max_stamps: int = 200, snr_min: float = 30.0,
                  saturation: float | None = None, cell: int = 256) -> np.ndarray:
    """Centres (x, y; 0-based ints) of stamps for the kernel fit, spread over the image.

    A stamp is centred on a peak seen at S/N >= ``snr_min`` in both images whose brightest pixel
    is, in both images, within 2 pixels of the centre of its own (2 half + 1)^2 stamp (isolated
    from anything brighter, tolerant of a residual misalignment of the images), has
    no masked pixel within ``half + pad`` (the reference patch the convolution reads), and
    peaks below half the saturation level. The brightest stamps of each ``cell``-pixel cell are
    taken in turn, so that the spatial terms of the kernel are constrained everywhere.
    """
    ny, nx = ref.shape
    var_ref, var_sci = np.broadcast_to(var_ref, ref.shape), np.broadcast_to(var_sci, ref.shape)
    reach = half + pad
    if ny <= 2 * reach + 1 or nx <= 2 * reach + 1:
        return np.zeros((0, 2), dtype=np.int64)
    smooth = ndimage.gaussian_filter(ref.astype(np.float32), 1.0)
    sig_ref = np.sqrt(np.maximum(var_ref, 1e-12))
    above = (smooth > snr_min * 0.5 * sig_ref) & ~bad
    above[:reach, :] = above[-reach:, :] = False
    above[:, :reach] = above[:, -reach:] = False
    yy, xx = np.nonzero(above)
    peak = np.ones(len(yy), dtype=bool)  # local maxima (5 x 5) among the bright pixels only
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            if dy or dx:
                peak &= smooth[yy, xx] >= smooth[yy + dy, xx + dx]
    yy, xx = yy[peak], xx[peak]
    if not len(xx):
        return np.zeros((0, 2), dtype=np.int64)
    snr_r = ref[yy, xx] / sig_ref[yy, xx]
    snr_s = sci[yy, xx] / np.sqrt(np.maximum(var_sci[yy, xx], 1e-12))
    ok = (snr_r >= snr_min) & (snr_s >= snr_min)
    if saturation is not None and np.isfinite(saturation):
        ok &= (sci[yy, xx] < SATURATION_FRACTION * saturation) & (ref[yy, xx] < SATURATION_FRACTION * saturation)
    xy = np.column_stack([xx[ok], yy[ok]]).astype(np.int64)
    snr = np.minimum(snr_r[ok], snr_s[ok])
    if not len(xy):
        return xy
    keep = np.ones(len(xy), dtype=bool)
    for i0 in range(0, len(xy), 512):  # chunks bound the memory of the cutouts
        sl = slice(i0, i0 + 512)
        c_bad = cutouts(bad, xy[sl], reach)
        ok_iso = np.ones(len(c_bad), dtype=bool)
        for img in (ref, sci):  # the brightest pixel of the stamp lies within 2 pixels of its centre
            c = cutouts(img, xy[sl], half).copy()
            core = c[:, half - 2:half + 3, half - 2:half + 3].reshape(len(c), -1).max(axis=1)
            c[:, half - 2:half + 3, half - 2:half + 3] = -np.inf
            ok_iso &= c.reshape(len(c), -1).max(axis=1) <= core
        keep[sl] = ok_iso & ~c_bad.reshape(len(c_bad), -1).any(axis=1)
    xy, snr = xy[keep], snr[keep]
    # round-robin over cells, brightest first in each, until max_stamps
    cell_id = (xy[:, 1] // cell) * (nx // cell + 1) + xy[:, 0] // cell
    order = np.lexsort((-snr, cell_id))
    xy, cell_id = xy[order], cell_id[order]
    rank = np.zeros(len(xy), dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(cell_id)) + 1]
    for a, b in zip(starts, np.r_[starts[1:], len(xy)]):
        rank[a:b] = np.arange(b - a)
    chosen = np.lexsort((cell_id, rank))[:max_stamps]
    return xy[np.sort(chosen)]


def adaptive_sigma(stamps: np.ndarray, guess: float = 2.0, iterations: int = 12) -> np.ndarray:
    """Adaptive Gaussian-moment size (sigma, pixels) of each stamp's central source.

    The weight's width follows the object's (Bernstein & Jarvis 2002), so for a Gaussian it
    converges to the Gaussian's sigma; for other profiles it is their best-matching Gaussian.
    Stamps are background-free cutouts centred near the source. NaN where it does not converge.
    """
    st = np.asarray(stamps, dtype=np.float64)
    n, ny, nx = st.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    cx = np.full(n, (nx - 1) / 2.0)
    cy = np.full(n, (ny - 1) / 2.0)
    sw2 = np.full(n, float(guess) ** 2)
    for _ in range(iterations):
        dx = xx[None] - cx[:, None, None]
        dy = yy[None] - cy[:, None, None]
        w = np.exp(-(dx * dx + dy * dy) / (2.0 * sw2[:, None, None])) * st
        f = w.sum(axis=(1, 2))
        f = np.where(f > 0, f, np.nan)
        mx = (w * dx).sum(axis=(1, 2)) / f
        my = (w * dy).sum(axis=(1, 2)) / f
        m2 = 0.5 * (w * (dx * dx + dy * dy)).sum(axis=(1, 2)) / f  # per-axis weighted variance
        cx = np.clip(cx + mx, 0, nx - 1)
        cy = np.clip(cy + my, 0, ny - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / m2 - 1.0 / sw2
            s2 = np.where(inv > 0, 1.0 / inv, np.nan)
        sw2 = np.where(np.isfinite(s2), np.clip(s2, 0.25, (min(nx, ny) / 2.0) ** 2), sw2)
    return np.where(np.isfinite(s2), np.sqrt(sw2), np.nan)


def stellar_fwhm(sizes: np.ndarray) -> tuple[float, np.ndarray]:
    """FWHM (pixels) of the stellar locus among source sizes, and which sources are on it.

    Stars are the smallest sources: those within 15% of the 20th percentile of the sizes
    (galaxies only ever come out larger). Returns (NaN, none) when no size is finite.
    """
    s = np.asarray(sizes, dtype=np.float64)
    good = np.isfinite(s)
    if not good.any():
        return float("nan"), np.zeros(len(s), dtype=bool)
    floor = np.percentile(s[good], 20)
    star = good & (s <= 1.15 * floor) & (s >= 0.8 * floor)
    return float(np.median(s[star]) * FWHM_PER_SIGMA), star


# ----------------------------------------------------------------------------- the fit
def _stamp_arrays(ref: np.ndarray, sci: np.ndarray, weight: np.ndarray, xy: np.ndarray, half: int,
                  basis: KernelBasis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stamp: Y (n_stamps, n_basis + 1, npix) = [B_n * R patches..., 1], I and W (n_stamps, npix)."""
    h = basis.half_width
    patches = cutouts(ref, xy, half + h).astype(np.float64)
    conv = fftconvolve(patches[:, None], basis.images[None], mode="valid", axes=(2, 3))  # (S, N, Q, Q)
    s, n = conv.shape[:2]
    y = np.empty((s, n + 1, conv.shape[2] * conv.shape[3]))
    y[:, :n] = conv.reshape(s, n, -1)
    y[:, n] = 1.0
    img = cutouts(sci, xy, half).reshape(s, -1).astype(np.float64)
    w = cutouts(weight, xy, half).reshape(s, -1).astype(np.float64)
    return y, img, w


def _expansion(p_sp: np.ndarray, p_bg: np.ndarray, n_basis: int) -> np.ndarray:
    """E_s (n_stamps, n_basis + 1, n_par): per-stamp coefficients = E_s @ theta.

    theta = [norm, c_{1,0..M-1}, c_{2,...}, ..., bg_0..bg_{K-1}].
    """
    s, m = p_sp.shape[1], p_sp.shape[0]
    k = p_bg.shape[0]
    npar = 1 + (n_basis - 1) * m + k
    e = np.zeros((s, n_basis + 1, npar))
    e[:, 0, 0] = 1.0
    for nb in range(1, n_basis):
        c0 = 1 + (nb - 1) * m
        e[:, nb, c0:c0 + m] = p_sp.T
    e[:, n_basis, npar - k:] = p_bg.T
    return e


def _roughness(basis: KernelBasis, n_spatial: int, n_bg: int) -> np.ndarray:
    """H with theta^T H theta = sum over spatial terms of |Laplacian of K_m|^2 (the bg is free)."""
    lap = np.array([ndimage.laplace(b, mode="constant") for b in basis.images]).reshape(basis.n, -1)
    g = lap @ lap.T  # (n, n)
    n, m = basis.n, n_spatial
    npar = 1 + (n - 1) * m + n_bg
    idx = np.zeros((n, m), dtype=np.int64)  # theta index of c_{n,m}; -1 where absent
    idx[0, :] = -1
    idx[0, 0] = 0
    for nb in range(1, n):
        idx[nb] = 1 + (nb - 1) * m + np.arange(m)
    h = np.zeros((npar, npar))
    for mm in range(m):
        rows = idx[:, mm]
        ok = rows >= 0
        h[np.ix_(rows[ok], rows[ok])] += g[np.ix_(ok, ok)]
    return h


def fit_kernel(ref: np.ndarray, sci: np.ndarray, var_ref: np.ndarray, var_sci: np.ndarray, bad: np.ndarray,
               xy: np.ndarray, *, basis: KernelBasis, half: int, spatial_degree: int = 2, bg_degree: int = 1,
               clip_sigma: float = 3.0, max_iter: int = 5, min_stamps: int | None = None,
               regularization: float = 1e-5) -> KernelSolution:
    """Fit ``sci ~ K(x) * ref + bg(x)`` on stamps centred at ``xy`` (0-based x, y).

    ``half`` is the half-size of the fitted stamp region; the reference patch read around
    each is ``half + basis.half_width``. Pixels are weighted by 1 / (var_sci + var_ref), 0 where
    ``bad``. Stamps are clipped when their chi2 per pixel exceeds the median by ``clip_sigma``
    robust sigmas. The spatial degree is lowered when there are too few stamps to constrain it
    (fewer than 3 per term). ``regularization`` weighs the kernel-roughness penalty (see the
    module docstring); 0 gives the plain least-squares solution.
    """
    shape = ref.shape
    xy = np.asarray(xy, dtype=np.int64).reshape(-1, 2)
    min_stamps = min_stamps or 3
    if len(xy) < min_stamps:
        raise ProcessingError(
            f"PSF matching: only {len(xy)} usable stamps (bright, isolated, unmasked sources seen in both "
            f"images); at least {min_stamps} are needed. Check that the templates overlap the search CCD "
            "and that the images are not mostly masked.")
    deg = int(spatial_degree)
    while deg > 0 and len(xy) < 3 * len(poly_exponents(deg)):
        deg -= 1
    if deg != spatial_degree:
        log.warning("PSF matching: %d stamps are too few for spatial degree %d; using %d", len(xy), spatial_degree, deg)
    bdeg = min(int(bg_degree), deg) if bg_degree > 0 else 0
    with np.errstate(divide="ignore"):
        weight = np.where(bad, 0.0, 1.0 / np.maximum(var_sci + var_ref, 1e-12))
    y, img, w = _stamp_arrays(ref, sci, weight, xy, half, basis)
    n_b = basis.n
    yw = y * w[:, None, :]
    m_s = np.einsum("sap,sbp->sab", yw, y, optimize=True)
    v_s = np.einsum("sap,sp->sa", yw, img, optimize=True)
    p_sp = poly_terms(xy[:, 0], xy[:, 1], shape, deg)
    p_bg = poly_terms(xy[:, 0], xy[:, 1], shape, bdeg)
    e = _expansion(p_sp, p_bg, n_b)
    rough = _roughness(basis, p_sp.shape[0], p_bg.shape[0])
    npix = (w > 0).sum(axis=1)
    used = npix > 0
    theta = np.zeros(e.shape[2])
    chi2_s = np.full(len(xy), np.nan)
    it = 0
    for it in range(1, max_iter + 1):
        eu = e[used]
        me = np.matmul(m_s[used], eu)
        a = eu.reshape(-1, eu.shape[2]).T @ me.reshape(-1, me.shape[2])
        b = np.einsum("sat,sa->t", eu, v_s[used])
        reg = regularization * np.trace(a) / np.trace(rough) * rough
        reg += 1e-12 * np.trace(a) / len(a) * np.eye(len(a))  # numerical safety only
        try:
            theta = scipy.linalg.solve(a + reg, b, assume_a="pos")
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            theta = np.linalg.lstsq(a, b, rcond=1e-12)[0]
        alpha = np.einsum("sat,t->sa", e, theta)
        model = np.einsum("sa,sap->sp", alpha, y)
        with np.errstate(invalid="ignore", divide="ignore"):
            chi2_s = ((img - model) ** 2 * w).sum(axis=1) / np.maximum(npix, 1)
        med = float(np.median(chi2_s[used]))
        mad = 1.4826 * float(np.median(np.abs(chi2_s[used] - med)))
        limit = med + clip_sigma * max(mad, 0.05 * med)
        new_used = used & (chi2_s <= limit)
        if new_used.sum() < max(min_stamps, 3 * len(poly_exponents(deg))) or new_used.sum() == used.sum():
            break
        used = new_used
    dof = max(int(npix[used].sum()) - len(theta), 1)
    chi2 = float((chi2_s[used] * npix[used]).sum() / dof)
    m = p_sp.shape[0]
    coeffs = theta[1:1 + (n_b - 1) * m].reshape(n_b - 1, m)
    sol = KernelSolution(basis, shape, deg, bdeg, float(theta[0]), coeffs, theta[len(theta) - p_bg.shape[0]:],
                         chi2, xy, chi2_s, used, it)
    log.info("kernel fit: %d of %d stamps used, chi2/dof %.3f, norm %.4f, %d iterations",
             sol.n_used, len(xy), chi2, sol.norm, it)
    return sol
