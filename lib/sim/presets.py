"""Survey presets: which fields, nights and exposures, at which size and source density.

``demo``  the GW170817 field (RA 197.45, Dec -23.38) in i band: one search night
          (20170817, exposures 668439-668441, program ``gw``, raw + master calibrations,
          transients) and two templates from an earlier season (20160301, program
          ``survey``). All 62 CCDs at 128 x 256 pixels, with dense stars and galaxies so that
          every small CCD has some of each. Builds in well under a minute.
``bench`` the same survey with full-size 2048 x 4096 CCDs and realistic densities (about 130
          stars and 1,300 galaxies per CCD). For benchmarks; never built whole in tests.

Optional parts (``Preset.parts`` says which :func:`~skyops.sim.create_archive` builds by
default; ``create_archive(..., parts=ALL_PARTS)`` builds them all):

``gw``    the nights above (always the core survey).
``tiles`` DES coadd tiles for Balrog (:class:`~skyops.sim.tiles.TilePlan`): demo
          ``DES0239+0216`` and ``DES0000+0209`` (straddles RA 0), 0.05 deg tiles (684 pixels
          at DES's 0.263"/pixel; DES: 0.7304 deg = 10000 pixels), g r i z, 2 epochs, about 8
          CCDs of 256 x 512 per exposure (``TilePlan.ccd_shape``; 20,000 stars/deg2), each with
          red_immask + red_bkg + red_segmap + psfex_model.
``kred``  the kred Magellanic field ``LMC_c42`` (:class:`~skyops.sim.kred.KredPlan`):
          N662/N673/r x 30 s/400 s x 2 dithers = 12 InstCal MEFs of 6 CCDs (256 x 512 in the
          demo), 4 tiles T01-T04 of 0.03 deg, diffuse emission + stars + per-exposure offsets.

A preset is a frozen dataclass; :func:`get_preset` returns one by name and
:meth:`Preset.replace` derives variants (``noise=False`` for truth tests, another
``ccd_shape``...).
"""
from __future__ import annotations

import dataclasses
from dataclasses import replace, dataclass, field

from skyops.errors import SimulationError
from skyops.sim.focalplane import DETPOS, GOOD_CCDS
from skyops.sim.exposure import SimOptions
from skyops.sim.exposure_spec import SEARCH, TEMPLATE
from skyops.sim.kred import KredPlan
from skyops.sim.tiles import DES_TILE_SIZE_DEG, TilePlan

#: The parts of a synthetic survey (see the module docstring).
ALL_PARTS: tuple[str, ...] = ("gw", "tiles", "kred")


@dataclass(frozen=True)
class Field:
    name: str
    ra: float
    dec: float


@dataclass(frozen=True)
class NightPlan:
    """One night of observing one field in one band, and how DESDM processed it."""

    nite: str
    kind: str  # "search" or "template"
    band: str
    expnums: tuple[int, ...]
    field: str
    program: str
    propid: str
    campaign: str  # finalcut campaign folder, e.g. "Y4N"
    reqnum: int
    attnum: int = 1
    exptime: float = 90.0
    raw: bool = False  # write raw exposures and the night's master calibrations
    calib_reqnum: int = 0  # precal run of the night's calibrations (raw nights)
    dithers_arcsec: tuple[tuple[float, float], ...] = ()  # per exposure (east, north) offsets
    start_hour_ut: float = 1.0  # first shutter open, hours after 00:00 UT following the nite
    tags: tuple[str, ...] = ()  # PROCTAG tags of the finalcut attempts
    #: Conditions of this night when not the preset's (templates come from good nights).
    seeing_range: tuple[float, float] | None = None
    transparency_range: tuple[float, float] | None = None
    sky_factor_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    ccd_shape: tuple[int, int]
    fields: tuple[Field, ...]
    nights: tuple[NightPlan, ...]
    star_density: float  # per square degree
    galaxy_density: float
    star_mag_range: tuple[float, float] = (14.0, 21.5)
    galaxy_mag_range: tuple[float, float] = (18.0, 25.0)
    transients_per_ccd: float = 1.5
    transient_snr_range: tuple[float, float] = (3.0, 100.0)
    host_fraction: float = 0.5
    seeing_range: tuple[float, float] = (0.85, 1.25)  # arcsec at the boresight
    transparency_range: tuple[float, float] = (0.85, 1.0)
    sky_factor_range: tuple[float, float] = (1.0, 1.5)
    airmass_range: tuple[float, float] = (1.05, 1.4)
    options: SimOptions = field(default_factory=SimOptions)
    tiles: TilePlan | None = None  # DES coadd tiles and their single-epoch exposures
    kred: KredPlan | None = None  # a kred Magellanic field (DECam_MEF tree)
    parts: tuple[str, ...] = ("gw",)  # what create_archive builds unless told otherwise

    def replace(self, **changes: object) -> "Preset":
        """A variant of this preset; SimOptions fields (noise, defects, ...) may be given directly."""
        opt_fields = {f.name for f in dataclasses.fields(SimOptions)}
        opts = {k: changes.pop(k) for k in list(changes) if k in opt_fields}
        if opts:
            changes["options"] = dataclasses.replace(self.options, **opts)
        unknown = set(changes) - {f.name for f in dataclasses.fields(Preset)}
        if unknown:
            raise SimulationError(
                f"unknown preset setting(s) {sorted(unknown)}; settings are "
                f"{sorted({f.name for f in dataclasses.fields(Preset)} | opt_fields)}"
            )
        return dataclasses.replace(self, **changes)

    def field_named(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise SimulationError(f"preset {self.name!r}: night refers to unknown field {name!r}")


GW170817 = Field("GW170817", 197.45, -23.38)

_GW_NIGHTS = (
    NightPlan(nite="20160301", kind=TEMPLATE, band="i", expnums=(521360, 521361), field="GW170817",
              program="survey", propid="2012B-0001", campaign="Y3A1", reqnum=2379, attnum=1,
              dithers_arcsec=((4.0, -3.0), (-3.5, 2.5)), start_hour_ut=5.0,
              tags=("Y3A1_FINALCUT",), seeing_range=(0.8, 1.0), transparency_range=(0.95, 1.0),
              sky_factor_range=(1.0, 1.2)),
    NightPlan(nite="20170817", kind=SEARCH, band="i", expnums=(668439, 668440, 668441), field="GW170817",
              program="gw", propid="2017B-0110", campaign="Y4N", reqnum=4, attnum=5, raw=True,
              calib_reqnum=3410, dithers_arcsec=((0.0, 0.0), (1.0, 0.5), (-0.8, 1.2)), start_hour_ut=0.5,
              tags=("Y4N_FINALCUT",)),
)

PRESETS: dict[str, Preset] = {
    "demo": Preset(
        name="demo",
        description="GW170817 field, i band: 3 search exposures (raw + calibrations + transients) "
                    "and 2 templates; 62 CCDs of 128x256 pixels",
        ccd_shape=(128, 256),
        fields=(GW170817,),
        nights=_GW_NIGHTS,
        star_density=30_000.0,
        galaxy_density=60_000.0,
        star_mag_range=(15.0, 21.5),
        galaxy_mag_range=(19.0, 24.5),
        transients_per_ccd=1.5,
        # Balrog's demo tiles: 256x512 CCDs (4x the area of the GW demo's) so that PSFEx finds
        # 7+ stars on every CCD at 20,000 stars/deg2 (g 17-21.5, all bright enough for PSFEx)
        # instead of 150,000 on 128x256 CCDs, a field so crowded that ~12% of bright
        # injections blended with real stars. DES high-latitude fields: a few thousand/deg2.
        tiles=TilePlan(ccd_shape=(256, 512), star_density=20_000.0, star_mag_range=(17.0, 21.5)),
        kred=KredPlan(),
    ),
    "bench": Preset(
        name="bench",
        description="the demo survey with full-size 2048x4096 CCDs and realistic source densities",
        ccd_shape=(2048, 4096),
        fields=(GW170817,),
        nights=_GW_NIGHTS,
        star_density=3_000.0,
        galaxy_density=30_000.0,
        transients_per_ccd=5.0,
        tiles=TilePlan(tile_size_deg=DES_TILE_SIZE_DEG, dither_deg=0.15, star_density=3_000.0,
                       galaxy_density=30_000.0, star_mag_range=(15.0, 22.5), psfvar_degrees=2),
        kred=KredPlan(ccds=tuple(DETPOS[c] for c in GOOD_CCDS), ccd_shape=(2048, 4096), tile_size_deg=0.5,
                      dithers_deg=((-0.1, -0.1), (0.1, 0.1)), star_density=30_000.0),
    ),
}

#: The demo survey at the size the GW campaign's science needs: 256x512 CCDs and a dense star
#: field give PSFEx, the astrometric fit and BLISS 25+ usable stars on every CCD (at 128x256
#: PSFEx fails on some). ``make demo`` and the GW end-to-end tests build this one.
PRESETS["gw-demo"] = replace(
    PRESETS["demo"], name="gw-demo", ccd_shape=(256, 512), star_density=60_000.0,
    description="the demo survey with 256x512 CCDs and 60,000 stars/deg2 (GW campaign demo)")


def get_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise SimulationError(f"unknown sim preset {preset!r}; expected one of: {', '.join(PRESETS)}") from None
