"""The Balrog campaign's YAML files: the desmeds-style ``medsconf`` (-c), the injection config (-g) and
``configs/balrog_tile.yaml`` (run defaults and per-step settings).

``medsconf`` (``configs/balrog/<medsconf>.yaml``) says how a tile becomes coadds, catalogs and MEDS
files, as ``desmeds-config/meds-y3v02.yaml`` did: which single-epoch campaign to read (PROCTAG
tag, zeropoint source), which bands, the common zeropoint (``magzp_ref``, 30), how SWarp and
SExtractor are run and how MEDS boxes are sized. The injection config (the original's GalSim YAML,
``-g``) says what Balrog injects: the hex grid, the synthetic deep field, stars, noise. Both are
validated by pydantic models here, so a wrong key fails with the file and the key before any work
starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from skyops.config import CampaignConfig, SkyopsModel, config_dir, load_model
from skyops.errors import InputError

#: DECam bands a Balrog tile may be processed in.
DES_BANDS = ("g", "r", "i", "z", "Y")
#: Sub-folder of ``configs/`` holding the campaign's native files (medsconf, injection configs, tile lists).
CONFIG_SUBDIR = "balrog"


class BalrogConfigError(InputError):
    """A Balrog medsconf or injection config is missing or invalid."""


class SwarpSettings(SkyopsModel):
    """How each band's coadd is resampled and combined (DESDM's coadd settings)."""

    combine_type: Literal["WEIGHTED", "AVERAGE", "MEDIAN"] = "WEIGHTED"
    resampling_type: Literal["LANCZOS3", "LANCZOS2", "BILINEAR", "NEAREST"] = "LANCZOS3"
    det_combine_type: Literal["CHI-MEAN", "CHI-OLD", "WEIGHTED"] = "CHI-MEAN"


class SextractorSettings(SkyopsModel):
    """Detection and measurement on the coadds (dual mode: detect on the det image)."""

    detect_thresh: float = Field(1.5, gt=0)
    analysis_thresh: float = Field(1.5, gt=0)
    detect_minarea: int = Field(4, ge=1)
    deblend_nthresh: int = Field(32, ge=1)
    deblend_mincont: float = Field(0.001, gt=0)
    filter_fwhm: float = Field(3.0, gt=0, description="Gaussian detection filter FWHM, pixels")
    back_size: int = Field(256, ge=16)
    phot_apertures: list[float] = [5.0, 10.0]


class MedsConf(SkyopsModel):
    """A desmeds-style configuration (``-c``): the tile's inputs, coadds and MEDS layout."""

    medsconf: str
    description: str = ""
    finalcut_campaign: str = Field("Y3A1_FINALCUT", description="PROCTAG tag of the single-epoch images")
    zp_source: str = "FGCM"
    zp_version: str = "v1"
    bands: list[str] = ["g", "r", "i", "z"]
    det_bands: list[str] = ["r", "i", "z"]
    magzp_ref: float = 30.0
    #: DESDM BADPIX bits that make a single-epoch pixel unusable (weight 0 in the coadd inputs).
    bad_mask_bits: int = Field(1 | 2 | 8 | 16 | 512, ge=0)
    swarp: SwarpSettings = SwarpSettings()
    sextractor: SextractorSettings = SextractorSettings()
    #: MEDS box sizes: 2 * sigma_fac * sigma * (1 + ellipticity), rounded up to an allowed size.
    allowed_box_sizes: list[int] = [32, 48, 64, 96, 128, 192, 256]
    min_boxsize: int = Field(32, ge=8)
    max_boxsize: int = Field(256, ge=8)
    sigma_fac: float = Field(5.0, gt=0)
    psf_box_size: int = Field(33, ge=9, description="side of the PSF image of each cutout (odd)")
    #: An epoch is kept in a MEDS object when its centre lies at least this far inside the image.
    bounds_buffer: int = Field(0, ge=0)
    cutout_types: list[Literal["image", "weight", "seg", "bmask"]] = ["image", "weight", "seg", "bmask"]

    @field_validator("bands", "det_bands")
    @classmethod
    def _bands(cls, v: list[str]) -> list[str]:
        bad = [b for b in v if b not in DES_BANDS]
        if bad or not v:
            raise ValueError(f"bands must be a non-empty list of {', '.join(DES_BANDS)}; got {v}")
        return v

    @field_validator("psf_box_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"psf_box_size must be odd (the PSF centre is a pixel centre), got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "MedsConf":
        missing = [b for b in self.det_bands if b not in self.bands]
        if missing:
            raise ValueError(f"det_bands {missing} are not in bands {self.bands}")
        if self.min_boxsize > self.max_boxsize:
            raise ValueError(f"min_boxsize {self.min_boxsize} > max_boxsize {self.max_boxsize}")
        if not any(self.min_boxsize <= s <= self.max_boxsize for s in self.allowed_box_sizes):
            raise ValueError("no allowed_box_sizes between min_boxsize and max_boxsize")
        return self


class GridSettings(SkyopsModel):
    """Where injected objects go: a hex grid, offset per realization (Balrog-GalSim's HexGrid)."""

    type: Literal["HexGrid"] = "HexGrid"
    spacing: float = Field(30.0, gt=0, description="arcsec between neighbours")
    edge_buffer: float = Field(10.0, ge=0, description="arcsec kept free along the tile edges")
    rotate: bool = Field(False, description="also rotate the grid by a random angle per realization")


class DeepFieldSettings(SkyopsModel):
    """The synthetic deep-field catalog injected galaxies are drawn from (:mod:`.deepfield`)."""

    seed: int = 2019
    n_objects: int = Field(20000, ge=10)
    mag_range: list[float] = Field([18.0, 25.5], min_length=2, max_length=2, description="i-band magnitudes")
    count_slope: float = Field(0.33, description="d log10 N / d mag")


class StarSettings(SkyopsModel):
    """Stars injected with the galaxies (PSF-only objects)."""

    fraction: float = Field(0.1, ge=0, le=1)
    mag_range: list[float] = Field([17.0, 24.0], min_length=2, max_length=2, description="i-band magnitudes")


class InjectionConfig(SkyopsModel):
    """The Balrog injection config (``-g``; the original's Balrog-GalSim YAML)."""

    description: str = ""
    realizations: int = Field(1, ge=1, description="default number of realizations per tile")
    seed: int = 1
    grid: GridSettings = GridSettings()
    deepfield: DeepFieldSettings = DeepFieldSettings()
    stars: StarSettings = StarSettings()
    #: ``poisson``: add the injected light's own photon noise; ``none``: noiseless models.
    noise: Literal["poisson", "none"] = "poisson"
    #: GalSim folding threshold of the drawn profiles (flux outside the stamp stays below it).
    folding_threshold: float = Field(1e-3, gt=0, lt=0.05)


class BalrogDefaults(SkyopsModel):
    """Defaults of a balrog_tile run (each overridable when triggering one)."""

    medsconf: str = "y3a1-v02"
    galsim_config: str = "galsim_y3a1"
    ncpu: int = Field(1, ge=1)
    mode: int = Field(63, ge=1, le=63)
    realizations: int = Field(1, ge=0)
    measure: list[str] = ["sof"]


class BalrogTileConfig(CampaignConfig):
    """``configs/balrog_tile.yaml``."""

    campaign: str = "balrog_tile"
    meds_dir: str = "${SKYOPS_HOME}/persistent/balrog"
    max_active_tiles: int = Field(4, ge=1)
    defaults: BalrogDefaults = BalrogDefaults()


def resolve_config_file(name_or_path: str, param: str, flag: str) -> Path:
    """``configs/balrog/<name>.yaml`` or a path; BalrogConfigError naming the param if absent."""
    p = Path(name_or_path)
    candidates = [p] if p.suffix in (".yaml", ".yml") else []
    candidates.append(config_dir() / CONFIG_SUBDIR / f"{name_or_path}.yaml")
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise BalrogConfigError(
        f"param '{param}' ({flag}): no config {name_or_path!r} (looked for {', '.join(map(str, candidates))}); "
        f"give a file name under configs/{CONFIG_SUBDIR}/ without .yaml (e.g. y3a1-v02) or a path to a YAML file")


def load_medsconf(name_or_path: str) -> MedsConf:
    """The medsconf (``-c``) by name (``y3a1-v02``) or path."""
    return load_model(resolve_config_file(name_or_path, "medsconf", "-c"), MedsConf)


def load_injection(name_or_path: str) -> InjectionConfig:
    """The injection config (``-g``) by name (``galsim_y3a1``) or path."""
    return load_model(resolve_config_file(name_or_path, "galsim_config", "-g"), InjectionConfig)
