"""Triggers (run in Airflow's triggerer): waiting without holding a worker slot."""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent


class NewExposuresTrigger(BaseTrigger):
    """Fires when GW search exposures not yet processed appear in the archive.

    Only plain values are serialised (program, bands, since_nite, the known expnums); the
    archive and provenance connections are opened in the triggerer from skyops' own
    config, so no URL or credential is ever stored in Airflow's trigger table.
    """

    def __init__(self, *, program: str, bands: list[str] | None, since_nite: str, known: list[int],
                 poll_seconds: float = 60.0, timeout_seconds: float = 540.0) -> None:
        super().__init__()
        self.program, self.bands, self.since_nite = program, bands, since_nite
        self.known, self.poll_seconds, self.timeout_seconds = list(known), poll_seconds, timeout_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("skyops.operators.triggers.NewExposuresTrigger",
                {"program": self.program, "bands": self.bands, "since_nite": self.since_nite, "known": self.known,
                 "poll_seconds": self.poll_seconds, "timeout_seconds": self.timeout_seconds})

    def _poll(self) -> list[int]:
        from skyops.archive import ArchiveDB
        from skyops.campaigns.gw.watch import recent_exposures

        db = ArchiveDB.from_config()
        try:
            rows = recent_exposures(db.engine, program=self.program, bands=self.bands, since_nite=self.since_nite)
        finally:
            db.dispose()
        return sorted({r["expnum"] for r in rows} - set(self.known))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            new = await asyncio.to_thread(self._poll)
            if new:
                yield TriggerEvent({"status": "new", "expnums": new})
                return
            if time.monotonic() >= deadline:
                yield TriggerEvent({"status": "timeout", "expnums": []})
                return
            await asyncio.sleep(self.poll_seconds)
