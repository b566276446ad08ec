"""``skyops stage MANIFEST DEST``: copy a manifest's files from the archive, verified.

A rich progress bar (files, bytes, rate) on stderr while it runs, then the one-line
summary on stdout; ``--report`` writes the per-file results (path, md5, size, filetype,
source) as JSON. Exit 0 when every file is staged, 1 when some failed after their retries,
2 for a bad manifest or arguments.
"""
from __future__ import annotations

import argparse
import threading
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TransferSpeedColumn)

from skyops.credentials import read_desservices
from skyops.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stage", help="copy a manifest's files from the archive into a folder, verified",
        description="Copy every file of MANIFEST from the archive into DEST, keeping the archive's "
                    "path/filename layout, verifying each against the manifest's md5, skipping files "
                    "already present and verified, through the shared cache.")
    p.add_argument("manifest", type=Path, help="manifest JSON written by an archive query")
    p.add_argument("dest", type=Path, help="destination folder")
    p.add_argument("--root", help="archive root: file:///path or https://host/path "
                                  "(default: archive.root of the platform config)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache", type=Path, help="shared cache folder (default: workspace.cache)")
    cache.add_argument("--no-cache", action="store_true", help="copy straight into DEST, no shared cache")
    p.add_argument("--workers", type=int, default=4, help="parallel transfers (default: 4)")
    p.add_argument("--retries", type=int, default=4, help="extra attempts per file on transient errors (default: 4)")
    p.add_argument("--backoff", type=float, default=0.5, help="first wait between attempts, seconds, doubling (default: 0.5)")
    p.add_argument("--netrc", type=Path, help="netrc file with the archive server's login (default: ~/.netrc)")
    p.add_argument("--desservices-section", metavar="SECTION",
                   help="take the archive login from this section of the desservices file instead of .netrc")
    p.add_argument("--desservices-file", type=Path, metavar="FILE",
                   help="desservices file (default: $DES_SERVICES or ~/.desservices.ini)")
    p.add_argument("--report", type=Path, metavar="FILE", help="write the per-file report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_stage)


class _Bar:
    """A staging progress callback drawing one rich bar: files done, bytes, rate."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None
        self.files_total = 0
        self.files_done = 0
        self._lock = threading.Lock()

    def __call__(self, event) -> None:
        if event.kind == "start":
            self.files_total = event.files_total
            self.task = self.progress.add_task(self._label(), total=event.bytes_total or None)
        elif self.task is None:
            return
        elif event.kind == "bytes":
            self.progress.update(self.task, advance=event.nbytes)
        elif event.kind == "file":
            with self._lock:
                self.files_done += 1
                label = self._label()
            self.progress.update(self.task, description=label)

    def _label(self) -> str:
        return f"staging {self.files_done}/{self.files_total} files"


def _stage(args: argparse.Namespace) -> int:
    from skyops.staging import stage

    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    credentials = None
    if args.desservices_section:
        credentials = read_desservices(args.desservices_section, args.desservices_file)
    elif args.desservices_file:
        raise InputError("--desservices-file needs --desservices-section (which section holds the archive login)")
    cache = False if args.no_cache else args.cache
    err = Console(stderr=True)
    show = not args.no_progress and err.is_terminal
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=err, disable=not show, transient=True) as progress:
        report = stage(args.manifest, args.dest, root=args.root, cache=cache, workers=args.workers,
                       retries=args.retries, backoff=args.backoff, progress=_Bar(progress),
                       credentials=credentials, netrc=args.netrc)
    if args.report:
        report.write(args.report)
    print(report.summary())
    return 0
