"""File staging: a manifest's files, copied from the archive into a workspace, verified.

``stage(manifest, dest)`` copies every file of a manifest from the archive root (``file://``
or ``https://`` with basic auth from ``.netrc`` or a desservices section) to
``dest/<path>/<filename><compression>``, checking each against the manifest's md5 while it
streams, writing ``.part`` files renamed only when verified, skipping what is already there
and verified, and sharing one copy per file through a locked cache so that parallel tasks
never fetch a file twice. See :mod:`skyops.staging.stager` for the flow,
:mod:`~skyops.staging.transfer` for retries and resume, :mod:`~skyops.staging.cache` for
the cache and :mod:`~skyops.staging.stamps` for how "verified in place" avoids re-reading.

    >>> from skyops.staging import stage
    >>> report = stage("manifest.json", "work/inputs")      # doctest: +SKIP
    >>> report.summary()                                    # doctest: +SKIP
    'staged 62 files (410.2 MB) in 3.1 s: 58 fetched, 4 verified in place, 0 from cache; 132.3 MB/s'
"""
from __future__ import annotations

from skyops.staging.cache import StageCache
from skyops.staging.report import FileResult, Outcome, ProgressCallback, ProgressEvent, StageReport, format_bytes
from skyops.staging.sources import FileSource, HttpSource, Source, TransferFault, open_source
from skyops.staging.stager import PlannedFile, plan, stage

__all__ = [
    "FileResult", "FileSource", "HttpSource", "Outcome", "PlannedFile", "ProgressCallback", "ProgressEvent",
    "Source", "StageCache", "StageReport", "TransferFault", "format_bytes", "open_source", "plan", "stage",
]
