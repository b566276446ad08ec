"""PSFEx models rendered on the image's pixel grid, many positions at once.

A PSFEx ``.psf`` file holds a polynomial basis of PSF images (``PSF_MASK``, ``PSFAXIS3`` terms in
the context variables, usually X_IMAGE/Y_IMAGE) sampled every ``PSF_SAMP`` image pixels and
including the pixel response. GalSim's :class:`galsim.des.DES_PSFEx` evaluates the same model
(one position per call, through an InterpolatedImage with a Lanczos-3 kernel); MEDS files need it
at every object of every epoch, so this module does the same arithmetic with numpy for a whole
batch: the polynomial sum as one ``einsum`` and the Lanczos-3 resampling onto the pixel grid as
two batched matrix products (the kernel is separable). Each stamp is normalised to unit sum.

Centre convention: a stamp of odd side ``n`` has its PSF centred at ``(row, col) = (c + drow,
c + dcol)`` (0-based, ``c = (n - 1) / 2``), so an object at a non-integer pixel position gets the
PSF at the same sub-pixel phase (PSFEx's ``get_rec`` convention).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np

from skyops.errors import ProcessingError


def lanczos3(x: np.ndarray) -> np.ndarray:
    """The Lanczos-3 kernel sinc(x) sinc(x/3) on |x| < 3."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


@dataclass
class PSFExModel:
    """A PSFEx model: basis images, polynomial context, sampling."""

    path: Path
    basis: np.ndarray  # (nterms, ny, nx)
    zero: tuple[float, float]
    scale: tuple[float, float]
    degree: int
    samp: float
    fwhm: float

    @classmethod
    def read(cls, path: str | Path) -> "PSFExModel":
        path = Path(path)
        try:
            with fitsio.FITS(str(path)) as f:
                hdu = f["PSF_DATA"]
                h = hdu.read_header()
                basis = np.asarray(hdu.read()["PSF_MASK"][0], dtype=np.float64)
        except (OSError, KeyError, ValueError) as exc:
            raise ProcessingError(f"PSFEx model {path} cannot be read ({exc}); check that PSFEx wrote it") from None
        if basis.ndim == 2:
            basis = basis[None]
        naxis = int(h.get("POLNAXIS", 0))
        if naxis not in (0, 2):
            raise ProcessingError(f"PSFEx model {path}: {naxis} context variables; only X_IMAGE/Y_IMAGE (2) or "
                                  "none are supported")
        zero = (float(h.get("POLZERO1", 0.0)), float(h.get("POLZERO2", 0.0)))
        scale = (float(h.get("POLSCAL1", 1.0)), float(h.get("POLSCAL2", 1.0)))
        degree = int(h.get("POLDEG1", 0)) if naxis else 0
        nterms = (degree + 1) * (degree + 2) // 2
        if basis.shape[0] != nterms:
            raise ProcessingError(f"PSFEx model {path}: {basis.shape[0]} basis images for degree {degree}; "
                                  f"expected {nterms}")
        return cls(path, basis, zero, scale, degree, float(h.get("PSF_SAMP", 1.0)), float(h.get("PSF_FWHM", 0.0)))

    def terms(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Polynomial terms (n, nterms) at FITS positions, in PSFEx's (and GalSim's) order."""
        xs = (np.atleast_1d(np.asarray(x, dtype=np.float64)) - self.zero[0]) / self.scale[0]
        ys = (np.atleast_1d(np.asarray(y, dtype=np.float64)) - self.zero[1]) / self.scale[1]
        cols = [xs ** px * ys ** py for py in range(self.degree + 1) for px in range(self.degree + 1 - py)]
        return np.stack(cols, axis=1)

    def model_images(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The model on its own (PSF_SAMP) grid at each position: (n, ny, nx)."""
        return np.einsum("nk,kij->nij", self.terms(x, y), self.basis)

    def render(self, x: np.ndarray, y: np.ndarray, size: int, drow: np.ndarray | None = None,
               dcol: np.ndarray | None = None) -> np.ndarray:
        """Unit-sum PSF stamps (n, size, size) at FITS positions (x, y), centred at (c + drow, c + dcol)."""
        if size % 2 == 0:
            raise ProcessingError(f"PSF stamp size {size} must be odd")
        x = np.atleast_1d(np.asarray(x, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y, dtype=np.float64))
        n = len(x)
        drow = np.zeros(n) if drow is None else np.atleast_1d(np.asarray(drow, dtype=np.float64))
        dcol = np.zeros(n) if dcol is None else np.atleast_1d(np.asarray(dcol, dtype=np.float64))
        imgs = self.model_images(x, y)
        ny, nx = imgs.shape[1:]
        c = (size - 1) / 2.0
        pix = np.arange(size, dtype=np.float64)
        # model-grid coordinate of each output pixel: (pixel - centre) / samp + model centre
        uy = (pix[None, :] - (c + drow)[:, None]) / self.samp + (ny // 2)
        ux = (pix[None, :] - (c + dcol)[:, None]) / self.samp + (nx // 2)
        ly = lanczos3(uy[:, :, None] - np.arange(ny)[None, None, :])  # (n, size, ny)
        lx = lanczos3(ux[:, :, None] - np.arange(nx)[None, None, :])  # (n, size, nx)
        out = ly @ imgs @ lx.transpose(0, 2, 1)
        out /= out.sum(axis=(1, 2), keepdims=True)
        return out.astype(np.float32)
