"""Staging's parts on their own: path checks, planning, stamps, one-file fetch, cache, report."""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from skyops.errors import ArchivePathError, InputError, TransferError
from skyops.manifest import FILE_COLUMNS, Manifest
from skyops.staging import FileResult, FileSource, HttpSource, StageCache, StageReport, format_bytes, open_source, plan
from skyops.staging.sources import check_relpath
from skyops.staging.stamps import XATTR, stamped, verified, write_stamp
from skyops.staging.transfer import backoff_delay, fetch


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("relpath", ["a/b.fits", "OPS/x/./y.fits.fz", "a..b/c.fits"])
def test_relative_paths_pass(relpath: str) -> None:
    check_relpath(relpath)


@pytest.mark.parametrize("relpath", ["../a.fits", "a/../../b.fits", "/etc/passwd", "", "~/x", "a\\..\\b"])
def test_escaping_paths_are_refused(relpath: str) -> None:
    with pytest.raises(ArchivePathError):
        check_relpath(relpath)


def manifest_of(*rows: tuple) -> Manifest:
    return Manifest(columns=list(FILE_COLUMNS), rows=list(rows))


def test_plan_maps_rows_to_destinations(tmp_path: Path) -> None:
    m = manifest_of(("a.fits", "OPS/red", ".fz", "A" * 32, "12", "red_immask"),
                    ("cat.fits", "OPS/cat", None, "b" * 32, None, "cat_finalcut"),
                    ("a.fits", "OPS/red", ".fz", "a" * 32, 12, "red_immask"))
    items = plan(m, tmp_path / "d", FileSource(tmp_path))
    assert [i.relpath for i in items] == ["OPS/red/a.fits.fz", "OPS/cat/cat.fits"]
    assert items[0].dest == (tmp_path / "d" / "OPS/red/a.fits.fz").resolve()
    assert items[0].md5 == "a" * 32 and items[0].size == 12  # md5 lower-cased; repeated row staged once
    assert items[1].size is None and items[1].compression == ""


@pytest.mark.parametrize("path", ["../../x", "/abs/olute", "OPS/../.."])
def test_plan_refuses_escaping_rows(tmp_path: Path, path: str) -> None:
    m = manifest_of(("ok.fits", "OPS", "", "a" * 32, 1, "t"), ("f.fits", path, "", "b" * 32, 1, "t"))
    with pytest.raises(ArchivePathError):
        plan(m, tmp_path / "d", open_source("https://example.org/archive/"))


def test_plan_refuses_a_symlink_out_of_a_file_archive(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "archive" / "OPS").symlink_to(tmp_path / "outside")
    with pytest.raises(ArchivePathError, match="escapes"):
        plan(manifest_of(("f.fits", "OPS", "", "a" * 32, 1, "t")), tmp_path / "d", FileSource(tmp_path / "archive"))


@pytest.mark.parametrize("value,match", [("12x", "not an integer"), (-1, "negative")])
def test_plan_refuses_bad_sizes(tmp_path: Path, value, match: str) -> None:
    with pytest.raises(InputError, match=match):
        plan(manifest_of(("f.fits", "OPS", "", "a" * 32, value, "t")), tmp_path, FileSource(tmp_path))


def test_stamp_answers_without_reading_and_a_write_voids_it(tmp_path: Path) -> None:
    f = tmp_path / "f.fits"
    f.write_bytes(b"science" * 1000)
    good = md5(f.read_bytes())
    assert not stamped(f, good, f.stat())
    assert verified(f, good, 7000)  # hashes once, then stamps
    assert stamped(f, good, f.stat())
    assert os.getxattr(f, XATTR).startswith(f"md5={good} size=7000".encode())
    assert verified(f, good, 7000, rehash=False)
    assert not verified(f, good, 6999)
    with open(f, "r+b") as fh:
        fh.write(b"X")
    assert not stamped(f, good, f.stat())
    assert not verified(f, good, 7000)


def test_stamp_is_not_written_when_the_file_changed_meanwhile(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    before = f.stat()
    f.write_bytes(b"abcd")
    assert write_stamp(f, md5(b"abc"), as_of=before) is False


def test_fetch_resumes_a_part_and_verifies_the_whole_file(tmp_path: Path) -> None:
    data = os.urandom(3_500_000)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.fz").write_bytes(data)
    part, final = tmp_path / "out" / ".f.part", tmp_path / "out" / "f.fz"
    part.parent.mkdir()
    part.write_bytes(data[:1_234_567])
    seen: list[int] = []
    done = fetch(FileSource(tmp_path / "a"), "f.fz", part, final, md5=md5(data), size=len(data),
                 on_bytes=seen.append)
    assert final.read_bytes() == data and not part.exists()
    assert done.attempts == 1 and done.resumed == 1
    assert done.bytes_read == len(data) - 1_234_567  # only the rest was read from the source
    assert sum(seen) == len(data)


def test_fetch_discards_a_part_that_is_no_prefix(tmp_path: Path) -> None:
    data = os.urandom(2_000_000)
    (tmp_path / "f").write_bytes(data)
    part, final = tmp_path / "o" / "p", tmp_path / "o" / "f"
    part.parent.mkdir()
    part.write_bytes(b"\0" * 1_000_000)  # wrong bytes: the md5 at the end catches it
    done = fetch(FileSource(tmp_path), "f", part, final, md5=md5(data), size=len(data), backoff=0)
    assert final.read_bytes() == data
    assert done.attempts == 2  # resumed, md5 mismatch, restarted from scratch


def test_fetch_size_mismatch_is_not_retried(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 10)
    with pytest.raises(TransferError) as exc:
        fetch(FileSource(tmp_path), "f", tmp_path / "p", tmp_path / "out", md5="0" * 32, size=11, backoff=0)
    assert exc.value.attempts == 1
    assert "size mismatch: the source has 10 bytes, the manifest says 11" in str(exc.value)
    assert f"from {tmp_path.as_uri()}/f" in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_fetch_stops_retrying_when_cancelled(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 10)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TransferError, match="not staged, the run was stopped"):
        fetch(FileSource(tmp_path), "f", tmp_path / "p", tmp_path / "o", md5="0" * 32, size=10, cancel=cancel)


def test_backoff_doubles_with_jitter_and_a_cap() -> None:
    for attempt, base in [(1, 0.5), (2, 1.0), (4, 4.0)]:
        assert all(base / 2 <= backoff_delay(attempt, 0.5) <= base for _ in range(50))
    assert backoff_delay(30, 0.5) <= 60.0


def test_cache_layout_link_and_prune(tmp_path: Path) -> None:
    data = b"flat field" * 5000
    key = md5(data)
    cache = StageCache(tmp_path / "cache")
    assert cache.path(key) == tmp_path / "cache" / "objects" / key[:2] / key
    with pytest.raises(InputError):
        cache.path("../../etc/passwd")

    def fill(part: Path, final: Path) -> str:
        part.write_bytes(data)
        write_stamp(part, key)
        os.replace(part, final)
        return "filled"

    obj, how = cache.ensure(key, len(data), fill)
    assert how == "filled" and obj.read_bytes() == data
    assert cache.ensure(key, len(data), fill) == (obj, None)  # present: not filled again
    assert cache.place(obj, tmp_path / "d" / "x" / "flat.fits", key) == "link"
    assert os.path.samefile(obj, tmp_path / "d" / "x" / "flat.fits")
    assert cache.prune(0) == 0  # linked from a destination: kept
    (tmp_path / "d" / "x" / "flat.fits").unlink()
    assert cache.prune(0) == len(data) and cache.usage() == (0, 0)


def test_report_summary_and_json(tmp_path: Path) -> None:
    files = [FileResult(index=i, relpath=f"p/f{i}.fits.fz", path=tmp_path / f"f{i}", filename=f"f{i}.fits",
                        compression=".fz", filetype="red_immask", md5="a" * 32, size=100_000_000,
                        source=f"https://h/p/f{i}.fits.fz", outcome=o)
             for i, o in enumerate(["fetched", "fetched", "cached", "skipped"])]
    report = StageReport(dest=tmp_path, root="https://h/", files=files, seconds=2.0)
    assert report.summary() == ("staged 4 files (400.0 MB) in 2.0 s: 2 fetched, 1 verified in place, "
                                "1 from cache; 200.0 MB/s")
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["files"][0]["path"] == str(tmp_path / "f0") and doc["fetched"] == 2
    assert format_bytes(999) == "999 B" and format_bytes(410_200_000) == "410.2 MB"


def test_open_source_schemes(tmp_path: Path) -> None:
    assert isinstance(open_source(tmp_path.as_uri()), FileSource)
    assert isinstance(open_source(tmp_path), FileSource)
    assert isinstance(open_source("http://127.0.0.1:8000/a"), HttpSource)
    assert open_source("http://127.0.0.1:8000/a").url == "http://127.0.0.1:8000/a/"
    with pytest.raises(InputError, match="not supported"):
        open_source("s3://bucket/key")
    with pytest.raises(InputError, match="another host"):
        open_source("file://otherhost/archive")

