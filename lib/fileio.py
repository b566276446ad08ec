"""Safe file writing and checksums shared by steps, staging and provenance.

Every file skyops produces is written under a temporary name in the same folder and
renamed into place when complete (rename is atomic on POSIX), so a killed process never
leaves a file that looks finished. Checksums stream in 1 MiB blocks: memory stays flat for
multi-GB images.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import IO, Iterator

from skyops.errors import ArchivePathError

BLOCK = 1 << 20
PART_SUFFIX = ".part"


def md5sum(path: str | os.PathLike[str]) -> str:
    """Hex md5 of a file, read in 1 MiB blocks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK):
            h.update(chunk)
    return h.hexdigest()


def temp_name(final: Path) -> Path:
    """A unique sibling name for writing ``final``: ``.<name>.<uuid>.part``."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}{PART_SUFFIX}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``final`` only if the block succeeds.

    For tools that write a file themselves (SExtractor's CATALOG_NAME, SWarp's
    IMAGEOUT_NAME): pass them the yielded path.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{final}: the writer produced no file at {tmp}")
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(final: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``final`` when the block succeeds."""
    with atomic_path(final) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def safe_join(root: str | os.PathLike[str], relative: str) -> Path:
    """``root / relative``, refusing absolute paths and ``..`` that would escape ``root``."""
    root_p = Path(root).resolve()
    rel = Path(relative)
    if rel.is_absolute():
        raise ArchivePathError(
            f"path {relative!r} is absolute; archive and manifest paths must be relative to {root_p}"
        )
    target = (root_p / rel).resolve()
    if target != root_p and root_p not in target.parents:
        raise ArchivePathError(
            f"path {relative!r} escapes its root {root_p}; refusing it (check the manifest row)"
        )
    return target
