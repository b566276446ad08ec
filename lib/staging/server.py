"""A small HTTP archive server on loopback, standing in for DESDM's file server.

DESDM serves its archive over HTTPS with basic auth and byte ranges. :class:`ArchiveServer`
does the same over plain HTTP on 127.0.0.1 for a folder of files, so that staging's HTTP
path runs for real in tests, benchmarks and demos: it counts the requests per file (to
check that parallel stagers fetch each file once) and can be told to misbehave for a file
(serve corrupt bytes, cut the connection halfway, answer 503) a number of times, which is
how retries and resume are exercised. It is a test double of a remote service, not a
production server.
"""
from __future__ import annotations

import base64
import collections
import logging
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from skyops.errors import ArchivePathError
from skyops.fileio import safe_join

log = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
FaultKind = Literal["corrupt", "cut", "status"]
CHUNK = 1 << 16


@dataclass
class Fault:
    """Misbehaviour for one file: ``times`` requests (None: every request) get it."""

    kind: FaultKind
    times: int | None = 1
    status: int = 503


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    archive: "ArchiveServer"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "skyops-archive/0.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        archive = self.server.archive
        archive._enter()
        try:
            self._serve(head=False)
        finally:
            archive._leave()

    def _empty(self, code: int, **headers: str) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, head: bool) -> None:
        archive = self.server.archive
        if not archive.authorized(self.headers.get("Authorization")):
            self._empty(401, WWW_Authenticate='Basic realm="skyops archive"')
            return
        path = unquote(urlsplit(self.path).path)
        if not path.startswith(archive.prefix):
            self._empty(404)
            return
        rel = path[len(archive.prefix):]
        m = _RANGE.fullmatch(self.headers.get("Range", "").strip()) if archive.ranges else None
        start = int(m.group(1)) if m else 0
        fault = archive._record(rel, start) if not head else None
        if fault is not None and fault.kind == "status":
            self._empty(fault.status)
            return
        try:
            file = safe_join(archive.root, rel)
        except ArchivePathError:
            self._empty(404)
            return
        if not file.is_file():
            self._empty(404)
            return
        size = file.stat().st_size
        end = min(int(m.group(2)), size - 1) if m and m.group(2) else size - 1
        if m and start >= size:
            self._empty(416, Content_Range=f"bytes */{size}")
            return
        self.send_response(206 if m else 200)
        if m:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes" if archive.ranges else "none")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if head:
            return
        with open(file, "rb") as f:
            if fault is not None and fault.kind == "cut":
                f.seek(start)
                self.wfile.write(f.read(max(0, size // 2 - start)))
                self.close_connection = True
                return
            if (fault is not None and fault.kind == "corrupt") or archive.chunk_delay or archive.rate:
                self._send_slowly(f, start, end + 1 - start, corrupt=fault is not None)
            else:
                self.connection.sendfile(f, start, end + 1 - start)

    def _send_slowly(self, f, start: int, count: int, *, corrupt: bool) -> None:
        """Send in 64 KiB chunks, pausing ``chunk_delay`` between them and pacing to ``rate``;
        flip one byte if ``corrupt``."""
        archive = self.server.archive
        f.seek(start)
        sent = 0
        t0 = time.monotonic()
        while sent < count:
            chunk = bytearray(f.read(min(CHUNK, count - sent)))
            if not chunk:
                break
            if corrupt and sent == 0:
                chunk[len(chunk) // 2] ^= 0xFF
            self.wfile.write(chunk)
            sent += len(chunk)
            if archive.chunk_delay:
                time.sleep(archive.chunk_delay)
            if archive.rate:
                ahead = t0 + sent / archive.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)


class ArchiveServer:
    """Serve ``root`` at ``http://127.0.0.1:<port><prefix>`` (basic auth when ``user`` is set).

    Use as a context manager (or :meth:`start`/:meth:`stop`). ``hits[relpath]`` counts the
    authorized GETs of a path (present or not), ``range_starts[relpath]`` the offset each
    GET asked for (0 without ``Range``), ``peak_active`` the most GETs answered at once.
    ``chunk_delay`` slows every transfer (seconds per 64 KiB) to make parallel transfers
    overlap; ``rate`` paces each transfer to that many bytes/s, like one TCP stream over a
    wide-area link. ``ranges=False`` ignores ``Range`` like a server without range support.
    """

    def __init__(self, root: str | Path, *, user: str | None = None, password: str | None = None,
                 prefix: str = "/archive/", host: str = "127.0.0.1", port: int = 0,
                 chunk_delay: float = 0.0, rate: float | None = None, ranges: bool = True) -> None:
        self.root = Path(root)
        self.prefix = "/" + prefix.strip("/") + "/"
        self.chunk_delay = chunk_delay
        self.rate = rate
        self.ranges = ranges
        self._auth = (None if user is None else
                      "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode())
        self.hits: collections.Counter[str] = collections.Counter()
        self.range_starts: dict[str, list[int]] = collections.defaultdict(list)
        #: GETs being answered now, and the most at any one time.
        self.active = 0
        self.peak_active = 0
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.archive = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{self.prefix}"

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    def authorized(self, header: str | None) -> bool:
        return self._auth is None or header == self._auth

    def inject(self, relpath: str, kind: FaultKind, times: int | None = 1, status: int = 503) -> None:
        """Misbehave for the next ``times`` GETs of ``relpath`` (None: for every one)."""
        with self._lock:
            self._faults[relpath] = Fault(kind, times, status)

    def _enter(self) -> None:
        with self._lock:
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)

    def _leave(self) -> None:
        with self._lock:
            self.active -= 1

    def _record(self, relpath: str, start: int) -> Fault | None:
        """Count one GET of ``relpath``; return the fault it gets, if any."""
        with self._lock:
            self.hits[relpath] += 1
            self.range_starts[relpath].append(start)
            fault = self._faults.get(relpath)
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[relpath]
            return fault

    def start(self) -> "ArchiveServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="archive-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ArchiveServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m skyops.staging.server ROOT``: serve a folder until interrupted.

    Prints the URL on the first line of stdout. The password (with ``--user``) comes from
    ``$SKYOPS_ARCHIVE_SERVER_PASSWORD``, never from the command line, which ``ps`` shows.
    """
    import argparse
    import os
    import signal
    import sys

    ap = argparse.ArgumentParser(prog="python -m skyops.staging.server", description=main.__doc__)
    ap.add_argument("root", type=Path)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--user")
    ap.add_argument("--rate", type=float, default=None, help="bytes/s per transfer")
    args = ap.parse_args(argv)
    server = ArchiveServer(args.root, user=args.user, password=os.environ.get("SKYOPS_ARCHIVE_SERVER_PASSWORD"),
                           port=args.port, rate=args.rate)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        sys.stdout.write(server.url + "\n")
        sys.stdout.flush()
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
