"""NewExposureSensor: waits (deferred, no worker slot) for new GW search exposures."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Sequence

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from skyops.operators.triggers import NewExposuresTrigger


class NewExposureSensor(BaseSensorOperator):
    """Return the expnums of search exposures that arrived and have no gw_exposure run yet.

    Deferrable: the waiting happens in the triggerer. If nothing arrives before the
    timeout the task is skipped (the next scheduled watch looks again).
    """

    template_fields: Sequence[str] = ("program", "bands")

    def __init__(self, *, program: str = "gw", bands: list[str] | None = None, lookback_nights: int = 1,
                 poll_seconds: float = 60.0, wait_seconds: float = 540.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.program, self.bands, self.lookback_nights = program, bands, lookback_nights
        self.poll_seconds, self.wait_seconds = poll_seconds, wait_seconds

    def execute(self, context: Context) -> list[int]:
        from skyops.campaigns.gw.watch import processed_exposures, since_nite
        from skyops.provenance import ProvenanceStore

        store = ProvenanceStore.from_config()
        known = sorted(processed_exposures(store.engine))
        store.close()
        self.defer(trigger=NewExposuresTrigger(program=self.program, bands=self.bands,
                                               since_nite=since_nite(self.lookback_nights), known=known,
                                               poll_seconds=self.poll_seconds, timeout_seconds=self.wait_seconds),
                   method_name="execute_complete", timeout=timedelta(seconds=self.wait_seconds + 60))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[int]:
        if event.get("status") != "new":
            raise AirflowSkipException("no new search exposures arrived while waiting")
        self.log.info("new search exposures: %s", event["expnums"])
        return event["expnums"]
