"""``configs/magellanic_mosaic.yaml``: the kred campaign's defaults, science settings and per-step resources."""
from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import Field, field_validator

from skyops.campaigns.magellanic.params import MAX_NP, parse_stages, parse_tiles
from skyops.config import CampaignConfig, SkyopsModel


class MagellanicDefaults(SkyopsModel):
    """Defaults of the run params (each overridable when triggering a run)."""

    field: str = "LMC_c42"
    tiles: str = "all"
    np: int = Field(4, ge=1, le=MAX_NP)
    bsub: bool = True
    stages: str = "all"

    @field_validator("tiles")
    @classmethod
    def _tiles(cls, v: str) -> str:
        parse_tiles(v)
        return v

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: str) -> str:
        parse_stages(v)
        return v


class MagellanicScience(SkyopsModel):
    """kred's knobs: MefSum's clipping, MefPrep's zeropoint and background, BackStats' grid, SWarp's pixels."""

    clip: bool = Field(False, description="MefSum: sigma-clipped mean/median/std as well")
    zeropoint: float = Field(30.0, description="MefPrep: the common zeropoint (mag)")
    background: Literal["exposure", "ccd", "none"] = "exposure"
    grid_arcsec: float = Field(2.0, gt=0, description="BackStats: coarse grid cell (arcsec)")
    min_pixels: int = Field(100, ge=1, description="BackStats: pairs need more common cells than this")
    pixel_scale: float = Field(0.27, gt=0, description="SWarp: mosaic pixel (arcsec)")
    resampling: str = "LANCZOS3"
    combine: str = "MEDIAN"


class MagellanicConfig(CampaignConfig):
    """The magellanic_mosaic campaign's YAML."""

    campaign: str = "magellanic_mosaic"
    start_date: date = date(2019, 1, 1)
    #: The kred top-level directory (DECam_MEF, Summary, DECam_PREP, DECam_SWARP); default
    #: ``<workspace.persistent>/kred``, resolved when a run starts.
    workdir: str | None = None
    #: Mapped task instances of one stage running at once in one run.
    max_parallel: int = Field(8, ge=1)
    defaults: MagellanicDefaults = MagellanicDefaults()
    science: MagellanicScience = MagellanicScience()

    def step_options(self) -> dict[str, dict[str, Any]]:
        """Extra parameters per step name, from the science settings."""
        s = self.science
        return {
            "magellanic.mef_sum": {"clip": s.clip},
            "magellanic.mef_prep": {"zeropoint": s.zeropoint, "background": s.background},
            "magellanic.back_stats": {"grid_arcsec": s.grid_arcsec, "min_pixels": s.min_pixels},
            "magellanic.swarp_setup": {"pixel_scale": s.pixel_scale, "resampling": s.resampling,
                                       "combine": s.combine},
        }
