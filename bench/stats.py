"""Small helpers the benchmarks share: REST timestamps and percentiles."""
from __future__ import annotations

import statistics
from datetime import datetime


def parse_ts(v: str | None) -> datetime | None:
    """An ISO timestamp from Airflow's REST API (``...Z``) as an aware datetime; None stays None."""
    return datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None


def percentiles(xs: list[float]) -> dict[str, float]:
    """n, p50, p90, p99, max and mean of ``xs`` (nearest-rank); empty for no data."""
    if not xs:
        return {}
    xs = sorted(xs)

    def q(f: float) -> float:
        return xs[min(len(xs) - 1, int(round(f * (len(xs) - 1))))]

    return {"n": len(xs), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": xs[-1], "mean": statistics.mean(xs)}
