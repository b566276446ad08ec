"""bench gw_orchestration notices a run's end from the metadata DB, not by polling the api-server."""
from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from bench.bench_gw_orchestration import wait_quietly
from skyops.operators.devstack import StackError, pg_database


class FakeStack:
    """What wait_quietly uses of an AirflowStack: the metadata URL, the liveness check, one REST read."""

    def __init__(self, url: str) -> None:
        self.metadata_url, self.rest_reads, self.alive = url, 0, True

    def check_alive(self) -> None:
        if not self.alive:
            raise StackError("scheduler exited with code 1")

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        self.rest_reads += 1
        return {"dag_id": dag_id, "run_id": run_id, "state": "success"}


@pytest.fixture()
def metadata():
    with pg_database(prefix="skyops_benchwait") as url:
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.execute(sa.text("CREATE TABLE dag_run (dag_id text, run_id text, state text)"))
            c.execute(sa.text("INSERT INTO dag_run VALUES ('gw_exposure', 'r1', 'running')"))
        yield url, engine
        engine.dispose()


def test_the_end_is_read_from_the_db_and_the_run_fetched_once(metadata):
    url, engine = metadata
    stack = FakeStack(url)

    def finish() -> None:
        time.sleep(0.5)
        with engine.connect() as c:
            c.execute(sa.text("UPDATE dag_run SET state = 'success' WHERE run_id = 'r1'"))

    t = threading.Thread(target=finish)
    t.start()
    run = wait_quietly(stack, "gw_exposure", "r1", timeout=60, poll=0.1)
    t.join()
    assert run["state"] == "success" and stack.rest_reads == 1


def test_a_dead_stack_or_a_timeout_stops_the_wait(metadata):
    url, _ = metadata
    stack = FakeStack(url)
    with pytest.raises(StackError, match="not finished after 0 s"):
        wait_quietly(stack, "gw_exposure", "r1", timeout=0.2, poll=0.05)
    stack.alive = False
    with pytest.raises(StackError, match="scheduler exited"):
        wait_quietly(stack, "gw_exposure", "r1", timeout=60, poll=0.05)
    assert stack.rest_reads == 0
