"""The shared staging cache: one verified copy per md5, fetched once however many ask.

Many tasks of a campaign stage overlapping inputs (every CCD of a tile needs the same
calibration frames) at the same time, from threads of one worker and from separate processes
and hosts sharing the workspace. The cache makes each file cross the network once:

* objects are content-addressed, ``objects/ab/abcdef...`` (the manifest's md5), so the same
  file reached under two archive paths is stored once;
* whoever wants an object that is not there takes its file lock (``locks/ab/<md5>.lock``,
  :mod:`filelock`, an ``flock`` that the kernel drops if the holder dies), checks again,
  fetches into a stable ``.part`` name (a part left by a killed holder is resumed) and
  renames the verified file into place; the others wait on the lock and then find it;
* an object only ever appears by rename, complete and verified, so nobody sees a partial
  file; objects are read-only and stamped (:mod:`skyops.staging.stamps`), and an object
  whose stamp no longer matches (written through a hard link) is re-hashed, and evicted
  when wrong;
* destinations are hard links to the objects (no copy, no extra space); across
  filesystems, or where links are refused, they are copies verified while copying.

Because destinations share the object's inode, staged files are read-only: a step that
wants to modify an input must copy it first.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Callable, Iterator, Literal, TypeVar

from filelock import FileLock, Timeout

from skyops.errors import InputError, StagingError
from skyops.fileio import BLOCK, temp_name
from skyops.staging.stamps import stamped, verified, write_stamp

log = logging.getLogger(__name__)

_MD5 = re.compile(r"[0-9a-f]{32}")
_LINK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}

T = TypeVar("T")
Placed = Literal["link", "copy"]


class StageCache:
    """A cache folder shared by every stager of a workspace (threads, processes, hosts)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"StageCache({str(self.root)!r})"

    @staticmethod
    def _key(md5: str) -> str:
        if not _MD5.fullmatch(md5):
            raise InputError(f"md5 {md5!r} is not 32 lowercase hex digits; cannot key the staging cache by it")
        return md5

    def path(self, md5: str) -> Path:
        """Where the object for ``md5`` lives (whether or not it is there yet)."""
        key = self._key(md5)
        return self.root / "objects" / key[:2] / key

    def part_path(self, md5: str) -> Path:
        """The stable ``.part`` name an object is fetched into (only under its lock)."""
        key = self._key(md5)
        return self.root / "objects" / key[:2] / f".{key}.part"

    @contextlib.contextmanager
    def locked(self, md5: str) -> Iterator[None]:
        """Hold the object's file lock; logs when another stager has it and we wait."""
        key = self._key(md5)
        lock_path = self.root / "locks" / key[:2] / f"{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.debug("waiting for another stager fetching %s", key)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def get(self, md5: str, size: int | None) -> Path | None:
        """The object for ``md5`` when present and stamped as verified (no lock, no read)."""
        obj = self.path(md5)
        try:
            st = obj.stat()
        except FileNotFoundError:
            return None
        if (size is None or st.st_size == size) and stamped(obj, md5, st):
            return obj
        return None

    def ensure(self, md5: str, size: int | None, fill: Callable[[Path, Path], T]) -> tuple[Path, T | None]:
        """The verified object for ``md5``, calling ``fill(part, final)`` to fetch it if absent.

        Returns the object's path and what ``fill`` returned, or None when the object was
        already there (possibly fetched meanwhile by another stager we waited for).
        """
        obj = self.get(md5, size)
        if obj is not None:
            return obj, None
        obj = self.path(md5)
        obj.parent.mkdir(parents=True, exist_ok=True)
        with self.locked(md5):
            if verified(obj, md5, size):
                return obj, None
            if obj.exists():
                log.warning("cache object %s does not match its md5/size (modified through a hard link?); "
                            "evicting and fetching it again", obj)
                obj.unlink()
            return obj, fill(self.part_path(md5), obj)

    def place(self, obj: Path, dest: Path, md5: str) -> Placed:
        """Make ``dest`` a hard link to ``obj`` (a verified copy when linking is impossible).

        ``dest`` appears atomically: linked or copied to a temporary name, then renamed.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(dest)
        try:
            try:
                os.link(obj, tmp)
                how: Placed = "link"
            except OSError as exc:
                if exc.errno not in _LINK_ERRNOS:
                    raise
                log.debug("cannot hard-link %s (%s); copying", obj, exc.strerror)
                _copy_verified(obj, tmp, md5)
                how = "copy"
            os.replace(tmp, dest)
        except OSError as exc:
            raise StagingError(f"cannot place {dest} from the cache ({obj}): {exc.strerror or exc}; "
                               "check free space and permissions of the destination") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return how

    def usage(self) -> tuple[int, int]:
        """(number of objects, bytes) held by the cache."""
        n = total = 0
        for obj in self._objects():
            with contextlib.suppress(FileNotFoundError):
                total += obj.stat().st_size
                n += 1
        return n, total

    def prune(self, keep_bytes: int) -> int:
        """Evict objects no destination links to, oldest first, until at most ``keep_bytes``
        remain in such objects. Returns the bytes freed. Linked objects cost nothing extra
        (their space is the destination's) and are kept."""
        unlinked = []
        for obj in self._objects():
            with contextlib.suppress(FileNotFoundError):
                st = obj.stat()
                if st.st_nlink == 1:
                    unlinked.append((st.st_mtime_ns, st.st_size, obj))
        unlinked.sort()
        held = sum(size for _, size, _ in unlinked)
        freed = 0
        for _, size, obj in unlinked:
            if held - freed <= keep_bytes:
                break
            with self.locked(obj.name):
                with contextlib.suppress(FileNotFoundError):
                    if obj.stat().st_nlink == 1:
                        obj.unlink()
                        freed += size
        return freed

    def _objects(self) -> Iterator[Path]:
        base = self.root / "objects"
        if not base.is_dir():
            return
        for sub in base.iterdir():
            if sub.is_dir():
                yield from (p for p in sub.iterdir() if _MD5.fullmatch(p.name))


def _copy_verified(src: Path, dst: Path, md5: str) -> None:
    """Copy ``src`` to ``dst``, hashing the bytes copied; raise when they are not ``md5``."""
    h = hashlib.md5(usedforsecurity=False)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(src, "rb", buffering=0) as fi, open(dst, "wb", buffering=0) as fo:
        while n := fi.readinto(buf):
            fo.write(view[:n])
            h.update(view[:n])
    if h.hexdigest() != md5:
        dst.unlink()
        raise StagingError(f"cache object {src} no longer has md5 {md5} (got {h.hexdigest()}); "
                           "remove it and stage again")
    write_stamp(dst, md5)
