"""Where staged files come from: a ``file://`` archive root or an ``http(s)://`` archive server.

A :class:`Source` turns an archive-relative path (``path/filename+compression``, as in a
manifest) into a stream of bytes starting at a given offset, so that an interrupted transfer
can resume where it stopped. DESDM serves its archive over HTTPS with basic auth; the
credentials come from ``.netrc`` (the entry for the server's host) or a desservices section,
and are held by a :class:`~skyops.credentials.Credentials`, which never shows its password.
Every URL a source shows (``url``, ``url_for``, error texts) is password-free.

A source reports a failed attempt with :class:`TransferFault`, which says whether trying
again may help (connection dropped, 5xx) or not (404, file missing), and whether the
failure condemns the whole run (credentials refused): the stager decides what to do.
"""
from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from skyops.credentials import Credentials, netrc_credentials
from skyops.errors import ArchivePathError, InputError
from skyops.fileio import BLOCK, safe_join
from skyops.secrets import redact_text, redact_url

log = logging.getLogger(__name__)

#: (connect, read) timeouts in seconds for HTTP sources: a stalled server is a transient fault.
DEFAULT_TIMEOUT = (30.0, 300.0)
USER_AGENT = "skyops-staging/0.1"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class TransferFault(Exception):
    """One attempt to read a file failed.

    ``transient``: another attempt may succeed (dropped connection, 5xx, short body).
    ``fatal``: no file from this source can succeed (credentials refused); stop the run.
    """

    def __init__(self, reason: str, *, transient: bool, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.fatal = fatal


@dataclass
class Body:
    """An open read of one file: ``chunks`` yields the bytes from offset ``start`` on.

    ``size`` is the full size of the file when the source knows it (``Content-Length`` of a
    200, the total of a ``Content-Range``, ``st_size``). A chunk may be a view into a
    reused buffer: it is valid until the next chunk is requested.
    """

    start: int
    size: int | None
    chunks: Iterator[bytes | memoryview]


def check_relpath(relpath: str) -> PurePosixPath:
    """Refuse archive paths that are absolute or climb out of the archive with ``..``."""
    p = PurePosixPath(relpath)
    if not relpath or p.is_absolute() or relpath.startswith("~"):
        raise ArchivePathError(
            f"path {relpath!r} is absolute or empty; archive and manifest paths must be relative"
        )
    if ".." in p.parts or "\\" in relpath:
        raise ArchivePathError(
            f"path {relpath!r} escapes the archive root; refusing it (check the manifest row)"
        )
    return p


class Source(ABC):
    """An archive root that files are read from, by archive-relative path."""

    #: The root as a password-free URL, for logs, errors and the report.
    url: str

    def validate(self) -> None:
        """Raise :class:`~skyops.errors.InputError` when the root itself is unusable."""

    @abstractmethod
    def check(self, relpath: str) -> None:
        """Raise :class:`ArchivePathError` when ``relpath`` would escape the archive root."""

    @abstractmethod
    def url_for(self, relpath: str) -> str:
        """The password-free URL of one file, as shown in logs, errors and the report."""

    @abstractmethod
    def open(self, relpath: str, offset: int = 0) -> contextlib.AbstractContextManager[Body]:
        """Open one file for reading from ``offset`` (or from 0 when the source cannot seek).

        Raises :class:`TransferFault` when the attempt fails.
        """

    def close(self) -> None:
        """Release connections; the source is not used afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class FileSource(Source):
    """An archive on a mounted filesystem (``file:///archive/root``).

    Paths are resolved with :func:`~skyops.fileio.safe_join`, so a symlink or ``..`` that
    leads outside the root is refused too.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = self.root.resolve().as_uri()

    def validate(self) -> None:
        if not self.root.is_dir():
            raise InputError(f"archive root {self.url} is not a folder; check archive.root in the platform "
                             "config or --root")

    def check(self, relpath: str) -> None:
        check_relpath(relpath)
        safe_join(self.root, relpath)

    def url_for(self, relpath: str) -> str:
        return f"{self.url.rstrip('/')}/{quote(relpath)}"

    @contextlib.contextmanager
    def open(self, relpath: str, offset: int = 0) -> Iterator[Body]:
        path = safe_join(self.root, relpath)
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise TransferFault(f"not in the archive: {path} does not exist", transient=False) from None
        except (PermissionError, IsADirectoryError) as exc:
            raise TransferFault(f"cannot read {path}: {exc.strerror}", transient=False) from None
        except OSError as exc:
            raise TransferFault(f"cannot open {path}: {exc.strerror or exc}", transient=True) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            start = offset if 0 < offset <= size else 0
            if start:
                f.seek(start)
            yield Body(start=start, size=size, chunks=self._read(f, path))

    @staticmethod
    def _read(f, path: Path) -> Iterator[memoryview]:
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        while True:
            try:
                n = f.readinto(buf)
            except OSError as exc:
                raise TransferFault(f"read error on {path}: {exc.strerror or exc}", transient=True) from None
            if not n:
                return
            yield view[:n]


class HttpSource(Source):
    """An archive served over HTTP(S), as DESDM serves its files: basic auth, ``Range`` reads.

    One :class:`requests.Session` per thread (a session is not thread-safe; one per worker
    keeps its connection alive across files). Bodies are read raw, without content
    decoding: an Apache that labels ``.fits.gz`` files ``Content-Encoding: x-gzip`` must not
    get them decompressed, since the manifest's md5 is that of the compressed file.
    """

    def __init__(self, url: str, credentials: Credentials | None = None, *,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, verify: bool | str = True) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"archive root {redact_url(url)!r} is not an http(s):// URL with a host")
        if parts.username is not None and credentials is None:
            credentials = Credentials(user=unquote(parts.username), passwd=unquote(parts.password or ""),
                                      server=parts.hostname, source="the archive URL")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port:
            netloc += f":{parts.port}"
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        #: Base URL without user info: it is what every log line and error shows.
        self.url = urlunsplit((parts.scheme, netloc, path, "", ""))
        self.host = parts.hostname
        self.credentials = credentials
        self.timeout = timeout
        self.verify = verify
        self._local = threading.local()
        self._sessions: list[object] = []
        self._lock = threading.Lock()

    def check(self, relpath: str) -> None:
        check_relpath(relpath)

    def url_for(self, relpath: str) -> str:
        return redact_url(self.url + quote(posixpath.normpath(relpath)))

    def _session(self):
        """This thread's session, created on first use."""
        import requests

        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
            if self.credentials is not None:
                s.auth = (self.credentials.user, self.credentials.passwd)
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def _reason(self, exc: BaseException) -> str:
        """An exception's text without any password (drivers like to echo URLs)."""
        secret = self.credentials.passwd if self.credentials else ""
        text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        return redact_text(f"{type(exc).__name__}: {text}", secret)

    @contextlib.contextmanager
    def open(self, relpath: str, offset: int = 0) -> Iterator[Body]:
        import requests

        url = self.url + quote(posixpath.normpath(relpath))
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        try:
            resp = self._session().get(url, stream=True, timeout=self.timeout, headers=headers,
                                       verify=self.verify)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransferFault(f"cannot connect: {self._reason(exc)}", transient=True) from None
        except requests.RequestException as exc:
            raise TransferFault(f"request failed: {self._reason(exc)}", transient=False) from None
        try:
            if resp.status_code == 416 and offset > 0:
                # The part we hold is no prefix of the file; start over from byte 0.
                resp.close()
                with self.open(relpath, 0) as body:
                    yield body
                return
            self._raise_for_status(resp)
            start, size = self._extent(resp, offset)
            yield Body(start=start, size=size, chunks=self._read(resp))
        finally:
            resp.close()

    def _raise_for_status(self, resp) -> None:
        code = resp.status_code
        if code in (200, 206):
            return
        what = f"HTTP {code} {resp.reason or ''}".strip()
        if code in (401, 403):
            c = self.credentials
            who = (f"user {c.user!r}" + (f" (credentials from {c.source})" if c.source else "") if c
                   else "anonymous access (no .netrc entry for this host and no desservices section given)")
            raise TransferFault(
                f"{what}: the server refused {who}; check the user and password for {self.host}",
                transient=False, fatal=True)
        if code in (404, 410):
            raise TransferFault(f"{what}: not in the archive", transient=False)
        if code in (408, 429) or code >= 500:
            raise TransferFault(f"{what} from the server", transient=True)
        raise TransferFault(f"unexpected {what}", transient=False)

    @staticmethod
    def _extent(resp, offset: int) -> tuple[int, int | None]:
        """(first byte offset, full size) of a 200 or 206 answer."""
        if resp.status_code == 206:
            m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if not m:
                raise TransferFault("206 answer without a usable Content-Range header", transient=True)
            total = None if m.group(3) == "*" else int(m.group(3))
            return int(m.group(1)), total
        length = resp.headers.get("Content-Length")
        return 0, int(length) if length and length.isdigit() else None

    def _read(self, resp) -> Iterator[bytes]:
        import requests
        import urllib3

        got = 0
        try:
            for chunk in resp.raw.stream(BLOCK, decode_content=False):
                got += len(chunk)
                yield chunk
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise TransferFault(f"connection broken after {got} bytes of this answer: {self._reason(exc)}",
                                transient=True) from None

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()

    def __repr__(self) -> str:
        return f"HttpSource({self.url!r}, credentials={self.credentials!r})"


def open_source(root: str | os.PathLike[str] | Source, *, credentials: Credentials | None = None,
                netrc: str | os.PathLike[str] | None = None,
                timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> Source:
    """A :class:`Source` for an archive root: ``file://`` URL, plain path, or ``http(s)://`` URL.

    For HTTP, ``credentials`` (e.g. ``read_desservices("desar2home")``) win; otherwise the
    ``.netrc`` entry for the server's host is used (``netrc`` file, default ``~/.netrc``),
    and when there is none the archive is read anonymously.
    """
    if isinstance(root, Source):
        return root
    text = os.fspath(root)
    parts = urlsplit(text)
    if parts.scheme in ("http", "https"):
        if credentials is None and parts.username is None:
            credentials = netrc_credentials(parts.hostname or "", netrc)
        return HttpSource(text, credentials, timeout=timeout)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InputError(f"archive root {text!r}: file:// URLs on another host are not supported")
        return FileSource(Path(unquote(parts.path)))
    if parts.scheme and len(parts.scheme) > 1:
        raise InputError(
            f"archive root {redact_url(text)!r}: scheme {parts.scheme!r} is not supported; "
            "use file:///path, https://host/path or http://host/path"
        )
    return FileSource(Path(text))
