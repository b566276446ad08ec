"""What an exposure is: when, where, which band, under which conditions, for which campaign.

An :class:`ExposureSpec` is the whole description of one DECam exposure that the renderer
needs besides the sky catalogs; a survey preset turns its nights into specs
(:mod:`skyops.sim.survey`). Observing conditions (seeing, transparency, sky brightness,
airmass) are drawn per exposure from the random stream (seed, "conditions", expnum) unless
the preset fixes them.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass

from skyops.errors import SimulationError
from skyops.sim.photometry import BANDS

MJD_EPOCH = _dt.datetime(1858, 11, 17)
SEARCH, TEMPLATE = "search", "template"


def mjd_to_datetime(mjd: float) -> _dt.datetime:
    """UTC time of an MJD, rounded to the millisecond (as DECam headers give it)."""
    ms = round(float(mjd) * 86_400_000.0)
    return MJD_EPOCH + _dt.timedelta(milliseconds=ms)


def nite_to_mjd(nite: str) -> float:
    """MJD of 00:00 UT on the calendar day after the (Chilean evening) ``nite`` YYYYMMDD."""
    d = _dt.datetime.strptime(nite, "%Y%m%d") + _dt.timedelta(days=1)
    return (d - MJD_EPOCH).total_seconds() / 86400.0


@dataclass(frozen=True)
class ExposureSpec:
    """One DECam exposure. Angles in degrees, times in seconds, seeing in arcsec."""

    expnum: int
    nite: str
    mjd_obs: float
    band: str
    exptime: float
    telra: float
    teldec: float
    kind: str  # "search" (may hold transients) or "template" (never does)
    field: str
    program: str  # EXPOSURE.PROGRAM: "gw", "survey", ...
    propid: str
    object: str
    airmass: float
    seeing: float
    transparency: float
    sky_factor: float  # sky brightness relative to dark sky
    sky_gradient: tuple[float, float]  # fractional sky change across the field radius (u, v)
    campaign: str  # e.g. "Y4N": the finalcut campaign folder of its reduced images
    reqnum: int
    attnum: int
    raw: bool  # write the raw exposure (and the night's calibrations)
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.band not in BANDS:
            raise SimulationError(f"exposure {self.expnum}: band {self.band!r} is not one of {', '.join(BANDS)}")
        if self.kind not in (SEARCH, TEMPLATE):
            raise SimulationError(f"exposure {self.expnum}: kind must be 'search' or 'template', got {self.kind!r}")
        if not (len(self.nite) == 8 and self.nite.isdigit()):
            raise SimulationError(f"exposure {self.expnum}: nite must be YYYYMMDD, got {self.nite!r}")
        if self.exptime <= 0 or self.seeing <= 0 or not (0 < self.transparency <= 1.0):
            raise SimulationError(
                f"exposure {self.expnum}: exptime and seeing must be > 0 and transparency in (0, 1]"
            )

    @property
    def unitname(self) -> str:
        """DESDM's unit name for single-exposure processing: ``D00668439``."""
        return f"D{self.expnum:08d}"

    @property
    def date_obs(self) -> str:
        return mjd_to_datetime(self.mjd_obs).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]

    @property
    def t_eff(self) -> float:
        """DES-style effective-time ratio: (0.9"/seeing)^2 x transparency^2 / sky brightness."""
        return float((0.9 / self.seeing) ** 2 * self.transparency**2 / self.sky_factor)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["sky_gradient_u"], d["sky_gradient_v"] = d.pop("sky_gradient")
        d["tags"] = ",".join(self.tags)
        d["date_obs"] = self.date_obs
        d["t_eff"] = self.t_eff
        return d
