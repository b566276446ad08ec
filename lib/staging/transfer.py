"""Fetching one file: streamed into a ``.part`` file, verified as it streams, retried, resumed.

The md5 is computed over the bytes as they are written, so a file is read from the source
once and never re-read from disk to verify it. Only a complete file whose size and md5 match
the manifest is renamed to its final name (rename is atomic on POSIX): nobody ever sees a
partial or corrupt file under the final name.

Interrupted transfers **resume**: the ``.part`` file and the md5 state of what it holds are
kept across attempts, and the next attempt asks the source for the rest (HTTP ``Range:
bytes=N-``; a seek for ``file://``). When a source answers from byte 0 instead (a server
without range support), the part is truncated and the transfer restarts cleanly. A ``.part``
left by an earlier, killed process (the cache uses a stable part name under a lock) is
re-hashed once and resumed. An md5 mismatch at the end discards the part, since there is no
telling which bytes were wrong, and the file is fetched again from scratch.

Transient faults (connection errors, 5xx, a short body, an md5 mismatch) are retried with
exponential backoff and jitter; permanent ones (404, credentials refused, a size that
contradicts the manifest) fail at once. Either way the error names the file, the
password-free URL, the attempts and the last reason.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from skyops.errors import StagingError, TransferError
from skyops.fileio import BLOCK
from skyops.staging.sources import Source, TransferFault
from skyops.staging.stamps import write_stamp

log = logging.getLogger(__name__)

#: Upper bound of one backoff sleep, seconds.
MAX_BACKOFF = 60.0
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH

BytesCallback = Callable[[int], None]
#: The ``reason`` of a TransferError for a file the run gave up on before finishing it.
CANCELLED = "cancelled"


@dataclass(frozen=True)
class Fetched:
    """How a fetch went: attempts made, bytes read from the source, attempts that resumed."""

    attempts: int
    bytes_read: int
    resumed: int


class _Part:
    """A ``.part`` file being written, and the md5 of the bytes it holds so far."""

    def __init__(self, path: Path, expected_size: int | None) -> None:
        self.path = path
        self.offset = 0
        self.written = 0  # bytes written by this process, all attempts
        self.hasher = hashlib.md5(usedforsecurity=False)
        try:
            held = path.stat().st_size
        except FileNotFoundError:
            return
        if held == 0 or (expected_size is not None and held > expected_size):
            self.reset()
            return
        # A part left by an earlier process: hash its prefix once and continue after it.
        with open(path, "rb") as f:
            while chunk := f.read(BLOCK):
                self.hasher.update(chunk)
                self.offset += len(chunk)
        log.debug("resuming %s from byte %d", path, self.offset)

    def reset(self) -> int:
        """Discard what the part holds; returns the number of bytes discarded."""
        discarded, self.offset = self.offset, 0
        self.hasher = hashlib.md5(usedforsecurity=False)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        return discarded

    def append(self, chunks, on_bytes: BytesCallback | None) -> None:
        """Write ``chunks`` after ``offset``, hashing them as they go."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.lseek(fd, self.offset, os.SEEK_SET)
            os.ftruncate(fd, self.offset)
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                self.hasher.update(chunk)
                self.offset += len(chunk)
                self.written += len(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
        finally:
            os.close(fd)


def backoff_delay(attempt: int, backoff: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): exponential, with jitter."""
    return min(backoff * 2 ** (attempt - 1), MAX_BACKOFF) * random.uniform(0.5, 1.0)


def _attempt(source: Source, relpath: str, part: _Part, md5: str, size: int | None,
             on_bytes: BytesCallback | None) -> None:
    """One attempt: read the rest of the file into ``part`` and check it."""
    with source.open(relpath, part.offset) as body:
        if body.start != part.offset:
            if body.start != 0:
                discarded = part.reset()
                if on_bytes and discarded:
                    on_bytes(-discarded)
                raise TransferFault(f"source answered from byte {body.start}, not {part.offset}", transient=True)
            discarded = part.reset()
            if on_bytes and discarded:
                on_bytes(-discarded)
            log.debug("%s: source cannot resume; restarting from byte 0", relpath)
        if size is not None and body.size is not None and body.size != size:
            raise TransferFault(
                f"size mismatch: the source has {body.size} bytes, the manifest says {size} "
                "(stale manifest, or the archive file was replaced)", transient=False)
        expected = size if size is not None else body.size
        try:
            part.append(body.chunks, on_bytes)
        except OSError as exc:
            raise StagingError(
                f"cannot write {part.path}: {exc.strerror or exc}; check free space and permissions"
            ) from None
    if expected is not None and part.offset < expected:
        raise TransferFault(f"truncated: got {part.offset} of {expected} bytes", transient=True)
    if expected is not None and part.offset > expected:
        over = part.offset
        discarded = part.reset()
        if on_bytes:
            on_bytes(-discarded)
        raise TransferFault(f"too long: got {over} bytes, expected {expected}", transient=True)
    digest = part.hasher.hexdigest()
    if digest != md5:
        discarded = part.reset()
        if on_bytes:
            on_bytes(-discarded)
        raise TransferFault(f"md5 mismatch (got {digest}, manifest says {md5})", transient=True)


def _finish(part: Path, final: Path, md5: str, *, read_only: bool, fsync: bool) -> None:
    """Stamp the verified part and rename it to its final name."""
    if fsync:
        fd = os.open(part, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    write_stamp(part, md5)
    if read_only:
        os.chmod(part, READ_ONLY)
    os.replace(part, final)


def fetch(source: Source, relpath: str, part: Path, final: Path, *, md5: str, size: int | None,
          retries: int = 4, backoff: float = 0.5, on_bytes: BytesCallback | None = None,
          read_only: bool = False, fsync: bool = False, cancel: threading.Event | None = None,
          sleep: Callable[[float], None] = time.sleep) -> Fetched:
    """Fetch ``relpath`` from ``source`` into ``final`` via ``part``, verified against ``md5``.

    Makes at most ``1 + retries`` attempts. ``on_bytes`` receives the byte counts as they are
    written (negative when a discarded part takes bytes back). ``read_only`` makes the final
    file read-only (the cache's copies, which destinations hard-link to). Raises
    :class:`~skyops.errors.TransferError` naming the file, the URL, the attempts and the
    last reason.
    """
    url = source.url_for(relpath)
    final.parent.mkdir(parents=True, exist_ok=True)
    state = _Part(part, size)
    if on_bytes and state.offset:
        on_bytes(state.offset)
    resumed = attempts = 0
    last: TransferFault | None = None
    cancelled = False
    for attempt in range(1, retries + 2):
        if cancel is not None and cancel.is_set():
            cancelled = True
            break
        attempts = attempt
        resumed += state.offset > 0
        try:
            _attempt(source, relpath, state, md5, size, on_bytes)
        except TransferFault as fault:
            last = fault
            if not fault.transient or attempt > retries:
                break
            delay = backoff_delay(attempt, backoff)
            log.warning("%s: attempt %d of %d failed (%s); retrying in %.1f s",
                        url, attempt, retries + 1, fault.reason, delay)
            sleep(delay)
            continue
        _finish(part, final, md5, read_only=read_only, fsync=fsync)
        return Fetched(attempts=attempt, bytes_read=state.written, resumed=resumed)
    if cancelled:
        raise TransferError(f"{relpath}: not staged, the run was stopped after another file failed",
                            relpath=relpath, url=url, attempts=attempts, reason=CANCELLED)
    reason = last.reason if last else "no attempt made"
    plural = "s" if attempts != 1 else ""
    raise TransferError(f"could not stage {relpath} from {url}: {reason} after {attempts} attempt{plural}",
                        relpath=relpath, url=url, attempts=attempts, reason=reason,
                        fatal=bool(last and last.fatal))
