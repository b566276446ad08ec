"""The field's log: one file per field that every kred stage appends to.

kred's programs wrote their progress to one log per field, so that an operator reads the
history of a field in one place. Under Airflow the stages run as parallel mapped tasks, on
several workers, so every append must be whole: each record is written with one ``write(2)``
on a descriptor opened with ``O_APPEND`` (POSIX makes the seek-to-end and the write one
atomic step on a local file system) under an exclusive ``flock`` (which also serialises
writers on network file systems that honour it). Records never interleave, never overwrite
each other, and a killed task leaves either its whole line or none of it.
"""
from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from skyops.campaigns.magellanic.layout import KredTree


def append_lines(path: Path, lines: list[str]) -> None:
    """Append ``lines`` to ``path`` as one atomic record (created with its folder if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line.rstrip("\n").replace("\n", " | ") + "\n" for line in lines).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            view = memoryview(data)
            while view:  # one write in practice; loop only if the kernel wrote part of it
                n = os.write(fd, view)
                view = view[n:]
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class FieldLog:
    """``log.write("MefSum", "c4d_..: 6 CCDs, mode ...")`` appends a stamped line to the field's log."""

    def __init__(self, tree: KredTree) -> None:
        self.path = tree.log_path
        self.field = tree.field

    def write(self, stage: str, *messages: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        who = f"{socket.gethostname()}:{os.getpid()}"
        append_lines(self.path, [f"{stamp} {self.field} {stage:<12s} {who} {m}" for m in messages])
