"""Staging a manifest: plan every file, then copy them in parallel, verified, into a workspace.

:func:`stage` is what ``StageFilesOperator`` and ``skyops stage`` call. It first checks the
whole manifest (paths that would escape the destination or the archive, missing or
malformed md5s) so that a bad row fails before a single byte moves; then a bounded pool of
threads stages the files: skip what is already present and verified, otherwise take it from
the shared cache, fetching it there first (once, whoever else wants it) when needed.
A file that fails after its retries does not stop the others: they finish, and the run then
raises one :class:`~skyops.errors.StagingIncompleteError` listing every failure, so that a
retry of the task only fetches what is missing. Credentials refused stops the run at once.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyops.credentials import Credentials
from skyops.errors import InputError, SkyopsError, StagingError, StagingIncompleteError, TransferError
from skyops.fileio import safe_join, temp_name
from skyops.manifest import Manifest
from skyops.staging.cache import StageCache
from skyops.staging.report import FileResult, ProgressCallback, ProgressEvent, StageReport
from skyops.staging.sources import Source, open_source
from skyops.staging.stamps import verified
from skyops.staging.transfer import CANCELLED, fetch

log = logging.getLogger("skyops.staging")

_MD5 = re.compile(r"[0-9a-f]{32}")
#: How many failures a StagingIncompleteError message spells out.
MAX_LISTED = 10


@dataclass(frozen=True)
class PlannedFile:
    """One manifest row, checked: where it comes from, where it goes, what it must be."""

    index: int
    relpath: str
    dest: Path
    filename: str
    compression: str
    filetype: str
    md5: str
    size: int | None


def _row_size(value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: filesize {value!r} is not an integer number of bytes") from None
    if size < 0:
        raise InputError(f"{where}: filesize {size} is negative")
    return size


def plan(manifest: Manifest, dest: str | os.PathLike[str], source: Source) -> list[PlannedFile]:
    """Check every row and map it to its destination; raises before anything is transferred.

    Refuses (:class:`~skyops.errors.ArchivePathError`) a path that is absolute or would
    escape the destination or the archive root; refuses (:class:`~skyops.errors.InputError`)
    a row without a usable md5, since every staged file is verified, and two rows that
    put different files at one destination path. Rows repeating a file are staged once.
    """
    planned: dict[Path, PlannedFile] = {}
    for index, rec in enumerate(manifest.records()):
        if not rec.get("filename"):
            raise InputError(f"manifest row {index}: empty filename")
        relpath = Manifest.relpath(rec)
        where = f"manifest row {index} ({relpath})"
        source.check(relpath)
        target = safe_join(dest, relpath)
        md5 = str(rec.get("md5sum") or "").strip().lower()
        if not _MD5.fullmatch(md5):
            raise InputError(f"{where}: md5sum {rec.get('md5sum')!r} is not a 32-digit hex md5; "
                             "staging verifies every file against it, so the row needs one")
        item = PlannedFile(index=index, relpath=relpath, dest=target, filename=rec["filename"],
                           compression=rec.get("compression") or "", filetype=rec.get("filetype") or "",
                           md5=md5, size=_row_size(rec.get("filesize"), where))
        seen = planned.get(target)
        if seen is None:
            planned[target] = item
        elif seen.md5 != md5:
            raise InputError(f"{where}: same destination as manifest row {seen.index} but a different md5 "
                             f"({md5} vs {seen.md5}); the manifest lists two different files at one path")
        else:
            log.debug("%s repeats manifest row %d; staging it once", where, seen.index)
    return list(planned.values())


class _Run:
    """One call of :func:`stage`: the shared state of its worker threads."""

    def __init__(self, source: Source, cache: StageCache | None, *, retries: int, backoff: float,
                 progress: ProgressCallback | None, fsync: bool) -> None:
        self.source = source
        self.cache = cache
        self.retries = retries
        self.backoff = backoff
        self.progress = progress
        self.fsync = fsync
        self.cancel = threading.Event()
        self.bytes_read = 0
        self._lock = threading.Lock()

    def emit(self, event: ProgressEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def on_bytes(self, n: int) -> None:
        if n > 0:
            with self._lock:
                self.bytes_read += n
        self.emit(ProgressEvent("bytes", nbytes=n))

    def fetch_into(self, item: PlannedFile, part: Path, final: Path, *, read_only: bool) -> int:
        """Fetch ``item`` into ``final``; returns the attempts it took."""
        done = fetch(self.source, item.relpath, part, final, md5=item.md5, size=item.size,
                     retries=self.retries, backoff=self.backoff, on_bytes=self.on_bytes,
                     read_only=read_only, fsync=self.fsync, cancel=self.cancel)
        return done.attempts

    def stage_one(self, item: PlannedFile) -> FileResult:
        """Put one file at its destination, verified; say how."""
        try:
            return self._stage_one(item)
        except OSError as exc:  # the local side: permissions, a folder in the way, disk full
            where = f" ({exc.filename})" if exc.filename else ""
            raise StagingError(f"{exc.strerror or exc}{where}; check the destination and cache folders "
                               "(permissions, free space)") from None

    def _stage_one(self, item: PlannedFile) -> FileResult:
        t0 = time.perf_counter()
        attempts = 0
        if self.cancel.is_set():
            raise TransferError(f"{item.relpath}: not staged, the run was stopped", relpath=item.relpath,
                                url=self.source.url_for(item.relpath), reason=CANCELLED)
        if verified(item.dest, item.md5, item.size):
            outcome = "skipped"
        elif self.cache is not None:
            obj, fetched_in = self.cache.ensure(
                item.md5, item.size, lambda part, final: self.fetch_into(item, part, final, read_only=True))
            self.cache.place(obj, item.dest, item.md5)
            outcome = "cached" if fetched_in is None else "fetched"
            attempts = fetched_in or 0
        else:
            part = temp_name(item.dest)
            try:
                attempts = self.fetch_into(item, part, item.dest, read_only=False)
            finally:
                part.unlink(missing_ok=True)
            outcome = "fetched"
        size = item.size if item.size is not None else item.dest.stat().st_size
        if outcome != "fetched":
            self.emit(ProgressEvent("bytes", nbytes=size))
        result = FileResult(index=item.index, relpath=item.relpath, path=item.dest, filename=item.filename,
                            compression=item.compression, filetype=item.filetype, md5=item.md5, size=size,
                            source=self.source.url_for(item.relpath), outcome=outcome, attempts=attempts,
                            seconds=time.perf_counter() - t0)
        log.debug("%s: %s (%d bytes)", item.relpath, outcome, size)
        self.emit(ProgressEvent("file", result=result))
        return result

    def stage_all(self, items: list[PlannedFile], workers: int) -> tuple[list[FileResult], list[TransferError]]:
        """Stage ``items`` on ``workers`` threads; returns results and failures."""
        results: list[FileResult] = []
        failures: list[TransferError] = []
        unexpected: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="skyops-stage")
        try:
            futures: dict[Future[FileResult], PlannedFile] = {pool.submit(self.stage_one, it): it for it in items}
            for fut in as_completed(futures):
                if fut.cancelled():
                    continue
                try:
                    results.append(fut.result())
                    continue
                except TransferError as exc:
                    if exc.reason == CANCELLED:
                        continue
                    failures.append(exc)
                    fatal = exc.fatal
                except SkyopsError as exc:  # a local problem: disk full, unwritable destination
                    item = futures[fut]
                    failures.append(TransferError(f"could not stage {item.relpath}: {exc}", relpath=item.relpath,
                                                  url=self.source.url_for(item.relpath), reason=str(exc)))
                    fatal = False
                except BaseException as exc:  # a bug or an interrupt: stop, then re-raise it
                    unexpected = unexpected or exc
                    fatal = True
                if fatal:
                    self.cancel.set()
                    for f in futures:
                        f.cancel()
        except BaseException:  # interrupted while waiting: stop the workers between attempts
            self.cancel.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if unexpected is not None:
            raise unexpected
        return results, failures


def _incomplete(failures: list[TransferError], items: list[PlannedFile], report: StageReport) -> StagingIncompleteError:
    """One error that says what failed, what was staged, and what to do."""
    failures = sorted(failures, key=lambda e: (not e.fatal, e.relpath))
    staged = len(report.files)
    missing = len(items) - staged - len(failures)
    tail = f"{staged} of {len(items)} files were staged and verified (a rerun skips them)"
    if missing:
        tail += f"; {missing} were not attempted"
    fatal = [e for e in failures if e.fatal]
    if fatal:  # credentials refused: every file fails the same way; say it once
        others = f"{len(failures) - 1} other files failed too; " if len(failures) > 1 else ""
        msg = f"{fatal[0]}\nthe run stopped: {others}{tail}"
    elif len(failures) == 1:
        msg = f"{failures[0]}\n{tail}"
    else:
        lines = [f"  - {e}" for e in failures[:MAX_LISTED]]
        if len(failures) > MAX_LISTED:
            lines.append(f"  ... and {len(failures) - MAX_LISTED} more")
        msg = f"{len(failures)} files could not be staged into {report.dest}:\n" + "\n".join(lines) + f"\n{tail}"
    return StagingIncompleteError(msg, failures=failures, report=report)


def _open_cache(cache: str | os.PathLike[str] | StageCache | bool | None) -> StageCache | None:
    if cache is False:
        return None
    if isinstance(cache, StageCache):
        return cache
    if cache is None or cache is True:
        from skyops.config import platform_config

        return StageCache(platform_config().workspace.cache)
    return StageCache(cache)


def stage(manifest: Manifest | str | os.PathLike[str], dest: str | os.PathLike[str], *,
          root: str | os.PathLike[str] | Source | None = None,
          cache: str | os.PathLike[str] | StageCache | bool | None = None,
          workers: int = 4, retries: int = 4, backoff: float = 0.5,
          progress: ProgressCallback | None = None,
          credentials: Credentials | None = None, netrc: str | os.PathLike[str] | None = None,
          fsync: bool = False) -> StageReport:
    """Copy a manifest's files from an archive into ``dest``, keeping their archive layout.

    ``manifest``: a :class:`~skyops.manifest.Manifest` or the path of one. ``root``: the
    archive (``file://`` or ``https://`` URL, a path, or a :class:`Source`); default: the
    platform config's ``archive.root``. ``cache``: the shared cache folder; default the
    workspace's ``cache``; ``False`` stages straight into ``dest``. ``workers``: parallel
    transfers. ``retries``/``backoff``: extra attempts per file on transient faults, first
    wait in seconds (doubling, jittered). ``credentials`` (e.g. ``read_desservices(section)``)
    authenticate to an HTTPS archive; without them the ``.netrc`` entry of its host is used
    (``netrc`` file; default the config's ``archive.netrc``, else ``~/.netrc``). ``fsync``:
    flush every file to disk before its rename (durability across power loss, at a cost).

    Returns a :class:`StageReport`. Raises :class:`~skyops.errors.ArchivePathError` or
    :class:`~skyops.errors.InputError` for a bad manifest before anything is transferred,
    and :class:`~skyops.errors.StagingIncompleteError` when files failed after their retries.
    """
    t0 = time.perf_counter()
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if retries < 0 or backoff < 0:
        raise InputError(f"retries and backoff must not be negative (got {retries}, {backoff})")
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    if root is None:
        from skyops.config import platform_config

        archive = platform_config().archive
        root, netrc = archive.root, netrc or archive.netrc
    store = _open_cache(cache)
    source = open_source(root, credentials=credentials, netrc=netrc)
    dest_p = Path(dest)
    try:
        source.validate()
        items = plan(manifest, dest_p, source)
        dest_p.mkdir(parents=True, exist_ok=True)
        report = StageReport(dest=dest_p.resolve(), root=source.url, cache=store.root if store else None)
        run = _Run(source, store, retries=retries, backoff=backoff, progress=progress, fsync=fsync)
        run.emit(ProgressEvent("start", files_total=len(items),
                               bytes_total=sum(it.size or 0 for it in items)))
        log.info("staging %d files from %s into %s (cache: %s, %d workers)", len(items), source.url,
                 report.dest, store.root if store else "off", workers)
        try:
            results, failures = run.stage_all(items, workers)
        finally:
            run.emit(ProgressEvent("done"))
    finally:
        source.close()
    report.files = sorted(results, key=lambda r: r.index)
    report.bytes_read = run.bytes_read
    report.seconds = time.perf_counter() - t0
    if failures:
        err = _incomplete(failures, items, report)
        log.error("%s", err)
        raise err
    log.info("%s", report.summary())
    return report


__all__ = ["PlannedFile", "plan", "stage"]
