"""DES coadd tiles: names, TAN geometry, COADDTILE_GEOM rows, and which CCDs overlap them.

A DES tile is a square TAN image named for its centre, ``DEShhmm±ddmm`` (RA in hours and
minutes, Dec in degrees and arcminutes): 10000 x 10000 pixels at 0.263"/pixel (0.7304 deg)
in the real survey. A simulated tile sits exactly where its name points (``DES0239+0216``
is centred on RA 39.75, Dec +2.2667) and keeps DES's pixel scale, but its size is the
:class:`TilePlan` knob ``tile_size_deg``: 0.05 deg (684 pixels) in the demo preset, so that a
tile is covered by ~8 demo CCDs (256 x 512) per exposure, and DES's 0.7304 deg in ``bench``.

Geometry follows DESDM's conventions (:mod:`skyops.archive.schema`): CRPIX at the centre,
``CD1_1 = -scale`` (East to the left), ``CD2_2 = +scale``; corners in the same order as the
IMAGE table (pixel corners (0.5, 0.5), (0.5, ny+0.5), (nx+0.5, ny+0.5), (nx+0.5, 0.5));
``racmin``/``racmax`` the westmost and eastmost RA, with ``crossra0 = 'Y'`` and ``racmin >
racmax`` when the tile straddles RA 0 (the demo's ``DES0000+0209`` does, on purpose). The
*unique* region (``uramin .. udecmax``) is the part of the tile no neighbour claims: the
central ``UNIQUE_FRACTION`` of its side, DES's 0.70 deg spacing over its 0.7304 deg tiles.

:func:`footprints_overlap` is the same box test the archive's ``se_sources`` query runs, so
the generator builds exactly the CCDs the query will return.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from skyops.errors import SimulationError
from skyops.sim.focalplane import PIXEL_SCALE
from skyops.sim.wcs import DEG, footprint, gnomonic, inverse_gnomonic

#: DES tile side: 10000 pixels at 0.263 arcsec/pixel.
DES_TILE_NAXIS = 10000
DES_TILE_SIZE_DEG = DES_TILE_NAXIS * PIXEL_SCALE / 3600.0
#: Fraction of the tile side that is its unique region (DES: 0.70 deg spacing / 0.7304 deg side).
UNIQUE_FRACTION = 0.70 / DES_TILE_SIZE_DEG

_NAME = re.compile(r"^DES(\d{2})(\d{2})([+-])(\d{2})(\d{2})$")


@dataclass(frozen=True)
class TilePlan:
    """The DES-tile part of a preset: which tiles, observed how often, in which bands.

    Each epoch is one night on which every band is observed once per tile (``exptime`` s,
    pointing dithered around the tile centre by ``dither_deg`` per axis, 1 sigma), so a tile
    gets ``len(epochs)`` exposures per band. The tile survey has its own source densities
    (dense enough that PSFEx finds stars on every small demo CCD), its own CCD size if
    ``ccd_shape`` is set (else the preset's), and leaves a small smooth
    residual background in the reduced images (``bkg_residual`` x sky, 1 sigma per
    coefficient), which the ``red_bkg`` maps measure and Balrog-like pipelines must remove.
    """

    tilenames: tuple[str, ...] = ("DES0239+0216", "DES0000+0209")
    tile_size_deg: float = 0.05
    bands: tuple[str, ...] = ("g", "r", "i", "z")
    epochs: tuple[str, ...] = ("20131020", "20141112")
    exptime: float = 90.0
    campaign: str = "Y3A1"
    tag: str = "Y3A1_FINALCUT"
    propid: str = "2012B-0001"
    first_expnum: int = 229_000  # epoch e, tile t, band b -> first + 1000 e + len(bands) t + b
    first_reqnum: int = 2390  # one finalcut request per epoch
    dither_deg: float = 0.008
    star_density: float = 150_000.0  # ~25 stars per 128x256 demo CCD: PSFEx needs >= 3 good ones
    galaxy_density: float = 40_000.0
    star_mag_range: tuple[float, float] = (16.0, 22.5)
    galaxy_mag_range: tuple[float, float] = (19.0, 24.5)
    bkg_residual: float = 0.01
    psfvar_degrees: int = 1  # PSFEx PSFVAR_DEGREES (DES uses 2 on full-size CCDs)
    ccd_shape: tuple[int, int] | None = None  # CCD size of the tile exposures; None: the preset's

    def expnum(self, epoch: int, tile: int, band: int) -> int:
        return self.first_expnum + 1000 * epoch + len(self.bands) * tile + band


def tile_center(name: str) -> tuple[float, float]:
    """(RA, Dec) in degrees that a DES tile name encodes (``DES0239+0216`` -> 39.75, 2.2667)."""
    m = _NAME.match(name)
    if not m:
        raise SimulationError(f"tile name {name!r} is not a DES tile name; expected DEShhmm+ddmm, e.g. DES0239+0216")
    hh, mm, sign, dd, dm = m.groups()
    if int(hh) > 23 or int(mm) > 59 or int(dd) > 89 or int(dm) > 59:
        raise SimulationError(f"tile name {name!r}: RA must be 0000..2359 and Dec -8959..+8959")
    ra = 15.0 * (int(hh) + int(mm) / 60.0)
    dec = (int(dd) + int(dm) / 60.0) * (-1.0 if sign == "-" else 1.0)
    return ra, dec


def tile_name(ra: float, dec: float) -> str:
    """The DES-style name of a tile centred at (RA, Dec): RA and Dec truncated to minutes."""
    h = (ra % 360.0) / 15.0
    hh, mm = int(h), int((h - int(h)) * 60.0 + 1e-9)
    d = abs(dec)
    dd, dm = int(d), int((d - int(d)) * 60.0 + 1e-9)
    return f"DES{hh:02d}{mm:02d}{'-' if dec < 0 else '+'}{dd:02d}{dm:02d}"


@dataclass(frozen=True)
class Tile:
    """One coadd tile: a square TAN image of ``naxis`` pixels centred on (ra, dec)."""

    name: str
    id: int
    ra: float
    dec: float
    naxis: int
    pixel_scale: float = PIXEL_SCALE

    @classmethod
    def from_name(cls, name: str, tile_id: int, size_deg: float, pixel_scale: float = PIXEL_SCALE) -> "Tile":
        ra, dec = tile_center(name)
        naxis = int(round(size_deg * 3600.0 / pixel_scale))
        if naxis < 16:
            raise SimulationError(f"tile {name}: tile_size_deg {size_deg} gives {naxis} pixels; use at least 16")
        return cls(name, tile_id, ra, dec, naxis, pixel_scale)

    @property
    def size_deg(self) -> float:
        return self.naxis * self.pixel_scale / 3600.0

    @property
    def crpix(self) -> float:
        return (self.naxis + 1) / 2.0

    def wcs_cards(self) -> list[tuple[str, object, str]]:
        s = self.pixel_scale / 3600.0
        return [
            ("CTYPE1", "RA---TAN", "Gnomonic projection"), ("CTYPE2", "DEC--TAN", "Gnomonic projection"),
            ("CRVAL1", float(self.ra), "[deg] Tile centre RA"), ("CRVAL2", float(self.dec), "[deg] Tile centre Dec"),
            ("CRPIX1", self.crpix, "Reference pixel on axis 1"), ("CRPIX2", self.crpix, "Reference pixel on axis 2"),
            ("CD1_1", -s, "Linear transformation matrix"), ("CD1_2", 0.0, "Linear transformation matrix"),
            ("CD2_1", 0.0, "Linear transformation matrix"), ("CD2_2", s, "Linear transformation matrix"),
        ]

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.pixel_scale / 3600.0
        xi = -(np.asarray(x, dtype=float) - self.crpix) * s
        eta = (np.asarray(y, dtype=float) - self.crpix) * s
        return inverse_gnomonic(xi, eta, self.ra, self.dec)

    def sky_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FITS (1-based) tile pixel coordinates of (ra, dec); NaN more than 90 deg away."""
        s = self.pixel_scale / 3600.0
        xi, eta = gnomonic(ra, dec, self.ra, self.dec)
        return self.crpix - xi / s, self.crpix + eta / s

    def contains(self, ra: np.ndarray, dec: np.ndarray, margin_pix: float = 0.0) -> np.ndarray:
        """Which (ra, dec) fall on the tile's pixels (grown by ``margin_pix``)."""
        x, y = self.sky_to_pixel(ra, dec)
        lo, hi = 0.5 - margin_pix, self.naxis + 0.5 + margin_pix
        with np.errstate(invalid="ignore"):
            return (x >= lo) & (x < hi) & (y >= lo) & (y < hi)

    def footprint(self) -> dict[str, Any]:
        """DESDM footprint columns (ra_cent ... crossra0) from the pixel corners."""
        n = self.naxis
        ra, dec = self.pixel_to_sky(np.array([0.5, 0.5, n + 0.5, n + 0.5]), np.array([0.5, n + 0.5, n + 0.5, 0.5]))
        out = footprint(ra, dec)
        out["ra_cent"], out["dec_cent"] = float(self.ra), float(self.dec)
        return out

    def unique_bounds(self) -> dict[str, float]:
        """uramin/uramax/udecmin/udecmax: the central UNIQUE_FRACTION of the tile side."""
        half = 0.5 * self.size_deg * UNIQUE_FRACTION
        dra = half / np.cos(self.dec * DEG)
        return {"uramin": float((self.ra - dra) % 360.0), "uramax": float((self.ra + dra) % 360.0),
                "udecmin": float(self.dec - half), "udecmax": float(self.dec + half)}

    def in_unique(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        u = self.unique_bounds()
        dra = (np.asarray(ra, dtype=float) - self.ra + 180.0) % 360.0 - 180.0
        half_ra = ((u["uramax"] - u["uramin"]) % 360.0) / 2.0
        dec = np.asarray(dec, dtype=float)
        return (np.abs(dra) < half_ra) & (dec >= u["udecmin"]) & (dec < u["udecmax"])

    def geom_row(self) -> dict[str, Any]:
        """The tile's COADDTILE_GEOM row."""
        row: dict[str, Any] = {"tilename": self.name, "id": self.id, "pixelscale": self.pixel_scale,
                               "naxis1": self.naxis, "naxis2": self.naxis, "ra_size": self.size_deg,
                               "dec_size": self.size_deg}
        row.update(self.footprint())
        row.update(self.unique_bounds())
        row.update({k.lower(): v for k, v, _ in self.wcs_cards()})
        return row


def make_tiles(plan: TilePlan, pixel_scale: float = PIXEL_SCALE) -> list[Tile]:
    """The plan's tiles, ids 1..n in the plan's order; names must be distinct."""
    if len(set(plan.tilenames)) != len(plan.tilenames):
        raise SimulationError(f"tile plan lists a tile twice: {plan.tilenames}")
    return [Tile.from_name(n, i + 1, plan.tile_size_deg, pixel_scale) for i, n in enumerate(plan.tilenames)]


def footprints_overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two DESDM footprints (racmin, racmax, deccmin, deccmax, crossra0) overlap.

    The box test of :func:`skyops.archive.queries.ccd_overlap` / ``ra_overlap``: Dec ranges
    intersect, and RA ranges intersect with RA = 0 handled through ``crossra0``.
    """
    if a["deccmin"] > b["deccmax"] or a["deccmax"] < b["deccmin"]:
        return False
    a_y, b_y = a["crossra0"] == "Y", b["crossra0"] == "Y"
    if not a_y and not b_y:
        return a["racmin"] <= b["racmax"] and a["racmax"] >= b["racmin"]
    if a_y and b_y:
        return True
    wrap, plain = (a, b) if a_y else (b, a)
    return plain["racmax"] >= wrap["racmin"] or plain["racmin"] <= wrap["racmax"]
