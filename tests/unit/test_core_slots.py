"""Core slots: at most N local steps compute at once on a host, and a dead holder frees its core."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from skyops.config import PlatformConfig
from skyops.errors import ExecutorError
from skyops.executors import CoreSlots, LocalExecutor, StepSpec, get_executor
from skyops.executors.core_slots import available_cores


def _worker(directory: str, inside: str, tag: int, cores: int) -> None:
    """Hold one core, note how many holders are inside, leave."""
    slots = CoreSlots(cores, Path(directory), poll=0.005)
    with slots.hold(1):
        me = Path(inside) / str(tag)
        me.touch()
        n = len(os.listdir(inside))
        (Path(inside).parent / f"seen-{tag}").write_text(str(n))
        for _ in range(200_000):  # a little work while holding the core
            pass
        me.unlink()


def test_never_more_holders_than_cores(tmp_path):
    inside = tmp_path / "inside"
    inside.mkdir()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "slots"), str(inside), i, 2)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    seen = [int((tmp_path / f"seen-{i}").read_text()) for i in range(8)]
    assert len(seen) == 8 and max(seen) <= 2


def test_two_cores_are_two_slots_and_a_third_waits_for_a_release(tmp_path):
    slots = CoreSlots(2, tmp_path, poll=0.01)
    got, waiting = threading.Event(), threading.Event()
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("waiting for"):
            waiting.set()

    def third() -> None:
        with CoreSlots(2, tmp_path, poll=0.01).hold(1, say) as held:
            said.append(f"held {held}")
            got.set()

    with slots.hold(1) as a, slots.hold(1) as b:
        assert {tuple(a), tuple(b)} == {(0,), (1,)}  # both cores held at once
        th = threading.Thread(target=third)
        th.start()
        assert waiting.wait(30)  # it found both cores busy ...
        assert not got.wait(0.2)  # ... and has not started while they stay busy
    assert got.wait(10)
    th.join()
    assert said[0] == "waiting for 1 of this host's 2 cores (all held by other steps)"
    assert said[1].startswith("got cores [")
    assert said[-1] in ("held [0]", "held [1]")


def test_a_step_declaring_more_cores_takes_that_many_but_never_more_than_the_host(tmp_path):
    slots = CoreSlots(3, tmp_path)
    assert [slots.cores_for(c) for c in (0.5, 1, 1.5, 2, 16)] == [1, 1, 2, 2, 3]
    with slots.hold(2) as held:
        assert len(held) == 2
        with slots.hold(1) as last:
            assert len(last) == 1 and last[0] not in held


def test_a_killed_holder_frees_its_core(tmp_path):
    code = ("import sys, time; from pathlib import Path; from skyops.executors import CoreSlots\n"
            "with CoreSlots(1, Path(sys.argv[1])).hold(1):\n"
            "    print('holding', flush=True); time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        got = threading.Event()
        th = threading.Thread(target=lambda: CoreSlots(1, tmp_path, poll=0.01).hold(1).__enter__() and got.set())
        th.daemon = True
        th.start()
        assert not got.wait(0.3)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert got.wait(10)  # the kernel dropped the dead holder's lock


def test_a_shared_slot_folder_is_refused(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(ExecutorError) as e:
        CoreSlots(2, d)
    assert str(d) in str(e.value) and "writable by others" in str(e.value)
    assert "executors.local.slot_dir" in str(e.value)


def test_zero_cores_is_refused(tmp_path):
    with pytest.raises(ExecutorError, match="at least 1"):
        CoreSlots(0, tmp_path)


def test_available_cores_is_this_process_affinity_at_most():
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


def test_config_picks_the_limit(tmp_path):
    def local(**kw):
        cfg = PlatformConfig.model_validate({"executors": {"local": {"slot_dir": str(tmp_path), **kw}}})
        return get_executor("local", cfg)

    assert local().slots.cores == available_cores()
    assert local(cores=5).slots.cores == 5
    assert local(cores=0).slots is None
    assert local(cores="").slots.cores == available_cores()  # ${SKYOPS_LOCAL_CORES:-} unset


def test_the_local_executor_starts_the_step_only_when_a_core_is_free(tmp_path):
    slots = CoreSlots(1, tmp_path / "slots", poll=0.01)
    ex = LocalExecutor(slots=slots)
    spec = StepSpec("selftest.make_image", {"nstars": 5, "size": 64, "seed": 1}, tmp_path / "w")
    lines: list[str] = []
    done: dict = {}
    waiting = threading.Event()

    def sink(line: str) -> None:
        lines.append(line)
        waiting.set()

    with slots.hold(1):
        th = threading.Thread(target=lambda: done.setdefault("outcome", ex.run(spec, sink)))
        th.start()
        assert waiting.wait(30)  # its first word ...
        th.join(0.2)
        assert th.is_alive() and not (tmp_path / "w" / "step.log").exists()  # ... and it has not started
        assert lines == ["waiting for 1 of this host's 1 cores (all held by other steps)"]
    th.join(120)
    assert done["outcome"].returncode == 0
    assert any("selftest.make_image" in ln for ln in lines)
    with slots.hold(1):  # released after the step
        pass
