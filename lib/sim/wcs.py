"""Per-CCD TAN WCS: one gnomonic projection around the pointing, cut into CCDs.

Every CCD of an exposure shares ``CRVAL = (telra, teldec)`` and the CD matrix; its ``CRPIX``
is where the boresight falls in its own pixel grid (far outside the CCD), so the 62 headers
describe one continuous, distortion-free focal plane. With the CD matrix used here,
``+x`` (the CCD's short axis) points South and ``+y`` (long axis) points West, with the
normal sky parity (``det CD < 0``).

The *true* WCS places the simulated sources; the *header* WCS written to the files may differ
by a small per-CCD shift of CRPIX (``astrometric offset``), which the pipeline's astrometric
refinement has to find. Truth records the shift in pixels and the resulting on-sky offset at
the CCD centre (header minus true, arcsec).
"""
from __future__ import annotations

from dataclasses import dataclass

import galsim
import numpy as np
from astropy.wcs import WCS

from skyops.sim.focalplane import CCD, FocalPlane
from skyops.skygeom import DEG, gnomonic, inverse_gnomonic  # noqa: F401  (re-exported)


def cd_matrix(pixel_scale: float) -> np.ndarray:
    """The CD matrix (degrees/pixel): +x toward South, +y toward West."""
    s = pixel_scale / 3600.0
    return np.array([[0.0, -s], [-s, 0.0]])


def uv_to_sky(u: np.ndarray, v: np.ndarray, ra0: float, dec0: float,
              pixel_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Focal-plane pixels (from the boresight) -> (ra, dec), through the true projection."""
    cd = cd_matrix(pixel_scale)
    xi = cd[0, 0] * np.asarray(u) + cd[0, 1] * np.asarray(v)
    eta = cd[1, 0] * np.asarray(u) + cd[1, 1] * np.asarray(v)
    return inverse_gnomonic(xi, eta, ra0, dec0)


def sky_to_uv(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float,
              pixel_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) -> focal-plane pixels from the boresight, through the true projection."""
    xi, eta = gnomonic(ra, dec, ra0, dec0)
    inv = np.linalg.inv(cd_matrix(pixel_scale))
    return inv[0, 0] * xi + inv[0, 1] * eta, inv[1, 0] * xi + inv[1, 1] * eta


@dataclass(frozen=True)
class CCDWcs:
    """The true and header TAN WCS of one CCD in one exposure."""

    ccd: CCD
    ra0: float
    dec0: float
    pixel_scale: float
    shift: tuple[float, float] = (0.0, 0.0)  # header CRPIX minus true CRPIX (pixels)

    @property
    def crpix_true(self) -> tuple[float, float]:
        return 1.0 - self.ccd.u0, 1.0 - self.ccd.v0

    def cards(self, true: bool = False) -> list[tuple[str, object, str]]:
        """FITS WCS keywords (name, value, comment); the header WCS unless ``true``."""
        c1, c2 = self.crpix_true
        if not true:
            c1, c2 = c1 + self.shift[0], c2 + self.shift[1]
        cd = cd_matrix(self.pixel_scale)
        return [
            ("WCSAXES", 2, "Number of WCS axes"),
            ("CTYPE1", "RA---TAN", "Gnomonic projection"),
            ("CTYPE2", "DEC--TAN", "Gnomonic projection"),
            ("CUNIT1", "deg", ""),
            ("CUNIT2", "deg", ""),
            ("CRVAL1", float(self.ra0), "[deg] RA of the reference point (boresight)"),
            ("CRVAL2", float(self.dec0), "[deg] Dec of the reference point (boresight)"),
            ("CRPIX1", float(c1), "Reference pixel on axis 1"),
            ("CRPIX2", float(c2), "Reference pixel on axis 2"),
            ("CD1_1", float(cd[0, 0]), "Linear transformation matrix"),
            ("CD1_2", float(cd[0, 1]), "Linear transformation matrix"),
            ("CD2_1", float(cd[1, 0]), "Linear transformation matrix"),
            ("CD2_2", float(cd[1, 1]), "Linear transformation matrix"),
            ("EQUINOX", 2000.0, "Equinox of the coordinates"),
            ("RADESYS", "ICRS", "Astrometric system"),
        ]

    def header_dict(self, true: bool = False) -> dict[str, object]:
        h: dict[str, object] = {"NAXIS": 2, "NAXIS1": self.ccd.nx, "NAXIS2": self.ccd.ny}
        h.update({k: v for k, v, _ in self.cards(true)})
        return h

    def astropy(self, true: bool = False) -> WCS:
        return WCS(self.header_dict(true))

    def galsim(self, true: bool = True) -> galsim.GSFitsWCS:
        """GalSim's TAN WCS (the true one by default: it is what sources are drawn with)."""
        return galsim.GSFitsWCS(header=self.header_dict(true))

    def sky_to_pixel(self, ra: np.ndarray, dec: np.ndarray, true: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """FITS (1-based) pixel coordinates of (ra, dec) in this CCD."""
        u, v = sky_to_uv(ra, dec, self.ra0, self.dec0, self.pixel_scale)
        x, y = self.ccd.to_xy(u, v)
        if not true:
            x, y = x + self.shift[0], y + self.shift[1]
        return x, y

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray, true: bool = True) -> tuple[np.ndarray, np.ndarray]:
        if not true:
            x, y = np.asarray(x) - self.shift[0], np.asarray(y) - self.shift[1]
        u, v = self.ccd.to_uv(x, y)
        return uv_to_sky(u, v, self.ra0, self.dec0, self.pixel_scale)

    def offset_arcsec(self) -> tuple[float, float]:
        """Header minus true sky position of the CCD centre: (dRA cos Dec, dDec) in arcsec."""
        xc, yc = (self.ccd.nx + 1) / 2.0, (self.ccd.ny + 1) / 2.0
        ra_t, dec_t = self.pixel_to_sky(xc, yc, true=True)
        ra_h, dec_h = self.pixel_to_sky(xc, yc, true=False)
        dra = ((ra_h - ra_t + 180.0) % 360.0 - 180.0) * np.cos(dec_t * DEG) * 3600.0
        return float(dra), float((dec_h - dec_t) * 3600.0)

    def corners(self, true: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) of the four outer pixel corners, DESDM order (1,1) (1,ny) (nx,ny) (nx,1)."""
        nx, ny = self.ccd.nx, self.ccd.ny
        x = np.array([0.5, 0.5, nx + 0.5, nx + 0.5])
        y = np.array([0.5, ny + 0.5, ny + 0.5, 0.5])
        return self.pixel_to_sky(x, y, true=true)


def ccd_wcs(fp: FocalPlane, ccdnum: int, ra0: float, dec0: float,
            shift: tuple[float, float] = (0.0, 0.0)) -> CCDWcs:
    return CCDWcs(fp.ccd(ccdnum), float(ra0), float(dec0), fp.pixel_scale, (float(shift[0]), float(shift[1])))


def footprint(ra: np.ndarray, dec: np.ndarray) -> dict[str, float | str]:
    """DESDM footprint columns from corner coordinates: centre, racmin/racmax, crossra0..."""
    ra = np.mod(np.asarray(ra, dtype=float), 360.0)
    dec = np.asarray(dec, dtype=float)
    cross = (ra.max() - ra.min()) > 180.0
    if cross:
        shifted = np.where(ra > 180.0, ra - 360.0, ra)
        racmin, racmax = float(np.mod(shifted.min(), 360.0)), float(np.mod(shifted.max(), 360.0))
        ra_cent = float(np.mod(shifted.mean(), 360.0))
    else:
        racmin, racmax, ra_cent = float(ra.min()), float(ra.max()), float(ra.mean())
    out: dict[str, float | str] = {"ra_cent": ra_cent, "dec_cent": float(dec.mean())}
    for i in range(4):
        out[f"rac{i + 1}"] = float(ra[i])
        out[f"decc{i + 1}"] = float(dec[i])
    out.update(racmin=racmin, racmax=racmax, deccmin=float(dec.min()), deccmax=float(dec.max()),
               crossra0="Y" if cross else "N")
    return out
