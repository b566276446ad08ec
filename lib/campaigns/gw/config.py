"""``configs/gw_nightly.yaml``: the GW campaign's schedule, defaults and per-step settings."""
from __future__ import annotations

from datetime import date

from pydantic import Field, field_validator

from skyops.campaigns.gw.params import BANDS, parse_ccds
from skyops.config import CampaignConfig, SkyopsModel


class GWDefaults(SkyopsModel):
    """Defaults of the run params (each overridable when triggering a run)."""

    band: str = "i"
    ccds: str = "1,3-60,62"
    rnum: int = 4
    pnum: int = 5
    season: str = "dp60"
    destination: str = "persistent"
    schema_: str = Field("gw", alias="schema", description="-m: gw or wsdiff")
    calibrate: bool = True
    program: str = "gw"
    diffimg_version: str = "v1"

    @field_validator("band")
    @classmethod
    def _band(cls, v: str) -> str:
        if v not in BANDS:
            raise ValueError(f"unknown band {v!r}; expected one of {', '.join(BANDS)}")
        return v

    @field_validator("ccds")
    @classmethod
    def _ccds(cls, v: str) -> str:
        parse_ccds(v)
        return v


class GWWatch(SkyopsModel):
    """The low-latency watcher: how often to look for new search exposures."""

    schedule: str = "*/10 * * * *"
    poll_seconds: float = Field(60.0, gt=0)
    timeout_minutes: float = Field(9.0, gt=0)
    lookback_nights: int = Field(1, ge=0)


class GWNightlyConfig(CampaignConfig):
    """The gw_nightly campaign's YAML."""

    campaign: str = "gw_nightly"
    schedule: str = "0 14 * * *"
    start_date: date = date(2017, 8, 1)
    max_active_exposures: int = Field(4, ge=1)
    defaults: GWDefaults = GWDefaults()
    watch: GWWatch = GWWatch()
