"""Knowing that a staged file is still the verified one without reading it again.

Staging verifies every byte against the manifest's md5 while it writes the file. To skip a
file on the next run without re-hashing it (a tile's inputs are tens of GB), skyops records
that verification on the file itself: an extended attribute ``user.skyops.staged`` holding
the md5, the size and the modification time (ns) the file had when it was verified.

Why an xattr and not a sidecar file: it travels with the inode (so the hard links from the
shared cache share it), it cannot be left behind or go stale under another name, and it
adds nothing to the destination's layout that a step scanning its inputs would trip over.
A write to the file changes its mtime (or size) and so voids the stamp. Where a filesystem
has no user xattrs, stamping silently does nothing and files are verified by re-reading
them: slower, never wrong.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

from skyops.fileio import md5sum

log = logging.getLogger(__name__)

XATTR = "user.skyops.staged"
_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.EROFS, errno.ENOSPC,
                errno.E2BIG}


def _encode(md5: str, st: os.stat_result) -> bytes:
    return f"md5={md5} size={st.st_size} mtime_ns={st.st_mtime_ns}".encode()


def write_stamp(target: int | str | os.PathLike[str], md5: str, *,
                as_of: os.stat_result | None = None) -> bool:
    """Record that ``target`` (a path or an open fd) was verified to have ``md5``, as it is now.

    ``as_of``: the stat taken before the verification; when the file changed since, no stamp
    is written. Best effort: returns False when the filesystem or permissions refuse xattrs.
    """
    if not hasattr(os, "setxattr"):
        return False
    try:
        st = os.stat(target)
        if as_of is not None and (st.st_size, st.st_mtime_ns) != (as_of.st_size, as_of.st_mtime_ns):
            return False
        os.setxattr(target, XATTR, _encode(md5, st))
        return True
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        log.debug("cannot stamp %s (%s); it will be re-hashed when checked", target, exc.strerror)
        return False


def stamped(path: str | os.PathLike[str], md5: str, st: os.stat_result) -> bool:
    """True when ``path`` carries a stamp for ``md5`` that matches its current size and mtime."""
    if not hasattr(os, "getxattr"):
        return False
    try:
        value = os.getxattr(path, XATTR)
    except OSError:
        return False
    return value == _encode(md5, st)


def verified(path: Path, md5: str, size: int | None, *, rehash: bool = True) -> bool:
    """Is ``path`` present with the manifest's size and md5?

    A valid stamp answers without reading the file; otherwise the file is hashed once (when
    ``rehash``) and stamped, so the next check is cheap.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if not path.is_file() or (size is not None and st.st_size != size):
        return False
    if stamped(path, md5, st):
        return True
    if not rehash:
        return False
    if md5sum(path) != md5:
        return False
    with contextlib.suppress(OSError):
        write_stamp(path, md5, as_of=st)
    return True
