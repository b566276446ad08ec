"""Staging from an HTTP archive: a real server on 127.0.0.1 with basic auth, byte ranges,
request counts and injected faults (corrupt bytes, cut connections, 503s)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
from pathlib import Path

import pytest

from skyops.credentials import read_desservices
from skyops.errors import ArchivePathError, StagingIncompleteError
from skyops.fileio import md5sum
from skyops.manifest import FILE_COLUMNS, Manifest
from skyops.staging import HttpSource, open_source, stage
from skyops.staging.server import ArchiveServer

USER = "desuser"
PASSWORD = "Zq7-hunter2-Xk9"  # distinctive, so that finding it anywhere in a text means a leak


def make_archive(root: Path, sizes: list[int], seed: int = 7) -> Manifest:
    rng = random.Random(seed)
    rows = []
    for i, size in enumerate(sizes):
        path = f"OPS/finalcut/Y6A1/r4000/D{2000 + i:08d}/p01/red/immask"
        name = f"D{2000 + i:08d}_r_c{i + 1:02d}_r4000p01_immasked.fits"
        data = rng.randbytes(size)
        f = root / path / (name + ".fz")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        rows.append((name, path, ".fz", hashlib.md5(data).hexdigest(), size, "red_immask"))
    return Manifest(columns=list(FILE_COLUMNS), rows=rows)


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, Manifest]:
    root = tmp_path / "archive"
    return root, make_archive(root, [300_000, 200_000, 5 << 20, 123_457])


@pytest.fixture
def server(archive):
    with ArchiveServer(archive[0], user=USER, password=PASSWORD) as srv:
        yield srv


@pytest.fixture
def netrc_file(tmp_path: Path, server: ArchiveServer) -> Path:
    return write_private(tmp_path / "netrc", f"machine {server.host} login {USER} password {PASSWORD}\n")


def rel(manifest: Manifest, i: int) -> str:
    return Manifest.relpath(list(manifest.records())[i])


def assert_staged(manifest: Manifest, dest: Path) -> None:
    for rec in manifest.records():
        f = dest / Manifest.relpath(rec)
        assert md5sum(f) == rec["md5sum"], f


def test_basic_auth_from_netrc(archive, server, netrc_file, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    _, manifest = archive
    report = stage(manifest, tmp_path / "d", root=server.url, cache=tmp_path / "cache", netrc=netrc_file)
    assert report.fetched == 4
    assert_staged(manifest, tmp_path / "d")
    assert all(server.hits[rel(manifest, i)] == 1 for i in range(4))
    assert report.files[0].source == server.url + rel(manifest, 0)
    assert PASSWORD not in caplog.text
    assert PASSWORD not in json.dumps(report.to_dict())

    again = stage(manifest, tmp_path / "d", root=server.url, cache=tmp_path / "cache", netrc=netrc_file)
    assert again.skipped == 4 and sum(server.hits.values()) == 4


def test_netrc_from_environment(archive, server, netrc_file, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NETRC", str(netrc_file))
    report = stage(archive[1], tmp_path / "d", root=server.url, cache=False)
    assert report.fetched == 4


def test_basic_auth_from_desservices_section(archive, server, tmp_path: Path) -> None:
    ini = write_private(tmp_path / "desservices.ini",
                        f"[desar-http]\nuser = {USER}\npasswd = {PASSWORD}\nserver = {server.host}\n")
    creds = read_desservices("desar-http", ini)
    report = stage(archive[1], tmp_path / "d", root=server.url, cache=False, credentials=creds)
    assert report.fetched == 4
    assert_staged(archive[1], tmp_path / "d")


@pytest.mark.parametrize("how", ["netrc", "desservices", "url"])
def test_wrong_password_is_a_clear_error_without_the_password(archive, server, tmp_path: Path, caplog,
                                                               how: str) -> None:
    wrong = "Wr0ng-Pa55-Qv8"
    kwargs: dict = {}
    root = server.url
    if how == "netrc":
        kwargs["netrc"] = write_private(tmp_path / "netrc", f"machine {server.host} login {USER} password {wrong}\n")
    elif how == "desservices":
        ini = write_private(tmp_path / "d.ini", f"[arch]\nuser = {USER}\npasswd = {wrong}\n")
        kwargs["credentials"] = read_desservices("arch", ini)
    else:
        root = server.url.replace("http://", f"http://{USER}:{wrong}@")
    with pytest.raises(StagingIncompleteError) as exc:
        stage(archive[1], tmp_path / "d", root=root, cache=tmp_path / "cache", backoff=0, **kwargs)
    msg = str(exc.value)
    assert "HTTP 401" in msg and f"refused user '{USER}'" in msg
    assert "check the user and password" in msg and "the run stopped" in msg
    for text in (msg, repr(exc.value), caplog.text, *(repr(f) for f in exc.value.failures)):
        assert wrong not in text and PASSWORD not in text
    assert all(e.attempts <= 1 for e in exc.value.failures)  # 401 is not retried


def test_source_never_shows_a_password() -> None:
    src = open_source(f"https://{USER}:{PASSWORD}@desar2.cosmology.illinois.edu/DESFiles/desarchive/")
    assert isinstance(src, HttpSource)
    shown = [src.url, src.url_for("OPS/a b.fits.fz"), repr(src), str(src), repr(src.credentials),
             str(src.credentials)]
    assert all(PASSWORD not in s for s in shown), shown
    assert src.url == "https://desar2.cosmology.illinois.edu/DESFiles/desarchive/"
    assert src.url_for("OPS/a b.fits.fz").endswith("/desarchive/OPS/a%20b.fits.fz")
    assert src.credentials.user == USER and src.credentials.passwd == PASSWORD


def test_file_corrupted_every_time_fails_clearly(archive, server, netrc_file, tmp_path: Path) -> None:
    _, manifest = archive
    bad = rel(manifest, 1)
    server.inject(bad, "corrupt", times=None)
    with pytest.raises(StagingIncompleteError) as exc:
        stage(manifest, tmp_path / "d", root=server.url, cache=tmp_path / "cache", netrc=netrc_file,
              retries=3, backoff=0.01)
    msg = str(exc.value)
    assert f"could not stage {bad} from {server.url}{bad}" in msg
    assert "md5 mismatch" in msg and "after 4 attempts" in msg
    assert "3 of 4 files were staged" in msg
    assert server.hits[bad] == 4  # fetched again each time
    assert not (tmp_path / "d" / bad).exists()
    assert exc.value.failures[0].attempts == 4 and exc.value.failures[0].url == server.url + bad


def test_file_corrupted_once_succeeds_on_retry(archive, server, netrc_file, tmp_path: Path) -> None:
    _, manifest = archive
    bad = rel(manifest, 0)
    server.inject(bad, "corrupt", times=1)
    report = stage(manifest, tmp_path / "d", root=server.url, cache=tmp_path / "cache", netrc=netrc_file,
                   backoff=0.01)
    assert report.fetched == 4
    assert_staged(manifest, tmp_path / "d")
    assert server.hits[bad] == 2
    assert server.range_starts[bad] == [0, 0]  # an md5 mismatch restarts from scratch
    assert next(f for f in report.files if f.relpath == bad).attempts == 2


def test_transient_503_is_retried_and_404_is_not(archive, server, netrc_file, tmp_path: Path) -> None:
    _, manifest = archive
    server.inject(rel(manifest, 0), "status", times=2, status=503)
    missing = archive[0] / rel(manifest, 3)
    missing.unlink()
    with pytest.raises(StagingIncompleteError) as exc:
        stage(manifest, tmp_path / "d", root=server.url, cache=False, netrc=netrc_file, backoff=0.01)
    assert server.hits[rel(manifest, 0)] == 3
    assert server.hits[rel(manifest, 3)] == 1
    assert "HTTP 404" in str(exc.value) and "not in the archive" in str(exc.value)
    assert exc.value.report.fetched == 3


class Watcher(threading.Thread):
    """Polls a final path during a transfer; records any moment it held wrong content."""

    def __init__(self, paths: list[Path], md5: str) -> None:
        super().__init__(daemon=True)
        self.paths, self.md5 = paths, md5
        self.stop = threading.Event()
        self.bad: list[str] = []
        self.seen = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for p in self.paths:
                try:
                    data = p.read_bytes()
                except (FileNotFoundError, PermissionError):
                    continue
                self.seen += 1
                if hashlib.md5(data).hexdigest() != self.md5:
                    self.bad.append(f"{p}: {len(data)} bytes")


@pytest.mark.parametrize("use_cache", [True, False])
def test_cut_transfer_resumes_and_never_shows_a_partial_file(archive, tmp_path: Path, netrc_file,
                                                             use_cache: bool) -> None:
    root, manifest = archive
    big, rec = rel(manifest, 2), list(manifest.records())[2]
    dest = tmp_path / "d"
    cache = tmp_path / "cache"
    with ArchiveServer(root, user=USER, password=PASSWORD, chunk_delay=0.002) as srv:
        srv.inject(big, "cut", times=1)  # closes the connection after half the file
        watcher = Watcher([dest / big, cache / "objects" / rec["md5sum"][:2] / rec["md5sum"]], rec["md5sum"])
        watcher.start()
        try:
            report = stage(manifest, dest, root=srv.url, cache=cache if use_cache else False, netrc=netrc_file,
                           backoff=0.01)
        finally:
            watcher.stop.set()
            watcher.join()
        starts = srv.range_starts[big]
    assert watcher.bad == []
    assert md5sum(dest / big) == rec["md5sum"]
    assert len(starts) == 2 and starts[0] == 0
    assert 0 < starts[1] <= rec["filesize"] // 2  # resumed with Range, not restarted
    assert next(f for f in report.files if f.relpath == big).attempts == 2
    assert report.bytes_read == report.bytes  # the resumed bytes were not fetched twice
    assert [p for p in tmp_path.rglob("*.part")] == []


def test_server_without_ranges_restarts_cleanly(archive, tmp_path: Path, netrc_file) -> None:
    root, manifest = archive
    big = rel(manifest, 2)
    with ArchiveServer(root, user=USER, password=PASSWORD, ranges=False) as srv:
        srv.inject(big, "cut", times=1)
        report = stage(manifest, tmp_path / "d", root=srv.url, cache=False, netrc=netrc_file, backoff=0.01)
    assert md5sum(tmp_path / "d" / big) == list(manifest.records())[2]["md5sum"]
    assert report.fetched == 4


def test_part_left_by_a_killed_stager_is_resumed(archive, server, netrc_file, tmp_path: Path) -> None:
    """The cache's stable .part name lets the next stager continue a dead one's transfer."""
    root, manifest = archive
    big, rec = rel(manifest, 2), list(manifest.records())[2]
    cache = tmp_path / "cache"
    part = cache / "objects" / rec["md5sum"][:2] / f".{rec['md5sum']}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes((root / big).read_bytes()[: 3 << 20])
    report = stage(manifest, tmp_path / "d", root=server.url, cache=cache, netrc=netrc_file)
    assert server.range_starts[big] == [3 << 20]
    assert md5sum(tmp_path / "d" / big) == rec["md5sum"]
    assert report.fetched == 4 and not part.exists()


@pytest.mark.parametrize("bad_path", ["../secrets", "/etc"])
def test_escaping_path_refused_before_any_request(archive, server, netrc_file, tmp_path: Path,
                                                  bad_path: str) -> None:
    _, manifest = archive
    rows = [*manifest.rows, ("passwd", bad_path, "", "1" * 32, 12, "evil")]
    with pytest.raises(ArchivePathError, match="escapes|absolute"):
        stage(Manifest(columns=manifest.columns, rows=rows), tmp_path / "d", root=server.url,
              cache=tmp_path / "cache", netrc=netrc_file)
    assert sum(server.hits.values()) == 0
    assert not (tmp_path / "d").exists()
