"""Host-wide core slots for local steps: never more steps computing than the host has cores.

Airflow's task slots and the host's cores are different budgets. A task spends part of its
life not computing: it starts, parses its DAG, renders templates, opens provenance, and after
the step it reports back and waits for the scheduler to notice. With exactly as many slots as
cores those gaps idle a core; with one slot more, three CPU-bound steps time-share two cores
and each runs slower. Core slots separate the two: run Airflow with a slot or two more than
cores, and let the local executor start a step's process only when its declared cores are free
on this host. The spare task then does its bookkeeping while the others compute, and its step
starts the moment a core frees up, without waiting for a scheduler loop.

How: one lock file per core in a node-local folder, each held with ``flock`` by the task
process that runs a step on that core. The kernel drops a lock when its holder dies, so a
killed task never leaks a core. Waiting tasks queue on a ``gate`` lock; the one at its head
polls the core locks every ``poll`` seconds (a few system calls), the others sleep in the
kernel. A step that needs several cores keeps those it has while it waits at the head for the
rest, so one-core steps cannot starve it. Locks are taken in the task process and are not
inherited by the step (close-on-exec).
"""
from __future__ import annotations

import errno
import fcntl
import math
import os
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from skyops.errors import ExecutorError

GATE = "gate"


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota.

    In a container with ``resources.limits.cpu: 4`` on a 64-core node the affinity says 64
    and ``/sys/fs/cgroup/cpu.max`` says ``400000 100000``: the answer is 4.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_slot_dir() -> Path:
    """A node-local folder private to this user: the shared workspace would lock across nodes."""
    return Path(tempfile.gettempdir()) / f"skyops-{os.getuid()}" / "core-slots"


def _private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) and refuse it if another user owns it or may write to it."""
    path.mkdir(parents=True, mode=0o700, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise ExecutorError(f"core slots: {path} is not a folder; remove it or set executors.local.slot_dir")
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ExecutorError(
            f"core slots: {path} belongs to uid {st.st_uid} or is writable by others (mode "
            f"{stat.S_IMODE(st.st_mode):o}); a shared folder would let others hold this host's cores. "
            f"Remove it or set executors.local.slot_dir to a folder only you can write"
        )
    return path


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


class CoreSlots:
    """``cores`` flock-held slots in ``directory``, shared by every local step on the host.

    :param cores: how many cores the local steps may hold at once.
    :param directory: node-local folder for the lock files (created private to this user).
    :param poll: seconds between tries of the task at the head of the queue.
    """

    def __init__(self, cores: int, directory: Path | None = None, poll: float = 0.05) -> None:
        if cores < 1:
            raise ExecutorError(f"core slots: cores must be at least 1, got {cores}")
        self.cores = cores
        self.directory = _private_dir(Path(directory) if directory else default_slot_dir())
        self.poll = poll

    def cores_for(self, cpu: float) -> int:
        """Slots a step declaring ``cpu`` cores takes: at least one, at most all of them."""
        return min(self.cores, max(1, math.ceil(cpu)))

    def _try(self, i: int) -> int | None:
        fd = _open_lock(self.directory / f"core-{i}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise

    @contextmanager
    def hold(self, cpu: float, log: Callable[[str], None] | None = None) -> Iterator[list[int]]:
        """Wait for ``cpu`` cores, hold them for the block; yields the slot numbers held."""
        want = self.cores_for(cpu)
        held: dict[int, int] = {}
        try:
            gate = _open_lock(self.directory / GATE)
            try:
                t0 = time.monotonic()
                fcntl.flock(gate, fcntl.LOCK_EX)  # waiters queue here; the head polls below
                said = False
                while True:
                    for i in range(self.cores):
                        if len(held) < want and i not in held and (fd := self._try(i)) is not None:
                            held[i] = fd
                    if len(held) >= want:
                        break
                    if not said and log:
                        log(f"waiting for {want} of this host's {self.cores} cores (all held by other steps)")
                        said = True
                    time.sleep(self.poll)
                if said and log:
                    log(f"got cores {sorted(held)} after {time.monotonic() - t0:.1f} s")
            finally:
                os.close(gate)  # closing drops the gate: the next waiter moves up
            yield sorted(held)
        finally:
            for fd in held.values():
                os.close(fd)
