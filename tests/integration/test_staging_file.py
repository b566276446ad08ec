"""Staging from a ``file://`` archive: real files, real md5s, a real cache folder."""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from skyops.errors import ArchivePathError, InputError, StagingIncompleteError
from skyops.fileio import md5sum
from skyops.manifest import FILE_COLUMNS, Manifest
from skyops.staging import ProgressEvent, StageCache, stage


def make_archive(root: Path, n: int, size: int = 150_000, seed: int = 1) -> Manifest:
    """``n`` random files laid out like DESDM's archive, and their manifest (with md5s)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        path = f"OPS/finalcut/Y6A1/r4000/D{1000 + i:08d}/p01/red/immask"
        name, comp = f"D{1000 + i:08d}_g_c{i % 62 + 1:02d}_r4000p01_immasked.fits", ".fz" if i % 4 else ""
        data = rng.randbytes(size + 1013 * i)
        f = root / path / (name + comp)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        rows.append((name, path, comp, hashlib.md5(data).hexdigest(), len(data), "red_immask", i % 62 + 1))
    return Manifest(columns=[*FILE_COLUMNS, "ccdnum"], rows=rows, query="test_files")


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, Manifest]:
    root = tmp_path / "archive"
    return root, make_archive(root, 9)


def assert_staged(manifest: Manifest, dest: Path) -> None:
    """Every manifest file is at dest/path/filename+compression with the manifest's md5."""
    for rec in manifest.records():
        f = dest / Manifest.relpath(rec)
        assert f.is_file(), f
        assert f.stat().st_size == rec["filesize"]
        assert md5sum(f) == rec["md5sum"], f


def test_file_staging_then_skip_on_second_run(archive, tmp_path: Path) -> None:
    root, manifest = archive
    dest = tmp_path / "work" / "inputs"
    report = stage(manifest, dest, root=root.as_uri(), cache=tmp_path / "cache", workers=3)

    assert_staged(manifest, dest)
    assert (report.fetched, report.cached, report.skipped) == (9, 0, 0)
    assert report.bytes == sum(manifest.column("filesize"))
    assert report.bytes_read == report.bytes  # one read per byte, no re-read to verify
    first = report.files[0]
    assert first.path == (dest / Manifest.relpath(next(manifest.records()))).resolve()
    assert first.md5 == manifest.rows[0][3] and first.size == manifest.rows[0][4]
    assert first.filetype == "red_immask" and first.source.startswith("file://")
    assert [f.index for f in report.files] == list(range(9))
    assert "staged 9 files" in report.summary() and "9 fetched" in report.summary()

    again = stage(manifest, dest, root=root.as_uri(), cache=tmp_path / "cache")
    assert (again.fetched, again.cached, again.skipped) == (0, 0, 9)
    assert again.bytes_read == 0
    assert "9 verified in place" in again.summary()


def test_second_destination_links_from_cache(archive, tmp_path: Path) -> None:
    root, manifest = archive
    cache = StageCache(tmp_path / "cache")
    stage(manifest, tmp_path / "a", root=root, cache=cache)
    report = stage(manifest, tmp_path / "b", root=root, cache=cache)

    assert (report.fetched, report.cached) == (0, 9)
    assert_staged(manifest, tmp_path / "b")
    f = report.files[3]
    obj = cache.path(f.md5)
    assert os.path.samefile(f.path, obj)  # a hard link, not a copy
    assert not os.access(obj, os.W_OK) or os.geteuid() == 0  # cache objects are read-only
    assert oct(obj.stat().st_mode & 0o777) == oct(0o444)
    assert cache.usage() == (9, report.bytes)


def test_without_cache_copies_into_place(archive, tmp_path: Path) -> None:
    root, manifest = archive
    report = stage(manifest, tmp_path / "d", root=root, cache=False, workers=1)
    assert report.fetched == 9 and report.cache is None
    assert_staged(manifest, tmp_path / "d")
    leftovers = [p for p in (tmp_path / "d").rglob("*") if p.name.endswith(".part")]
    assert leftovers == []


def test_modified_destination_is_detected_and_restaged(archive, tmp_path: Path) -> None:
    """A write to a staged file voids its stamp; the next run re-hashes and fetches it again
    (and evicts the cache object it shared an inode with)."""
    root, manifest = archive
    cache = StageCache(tmp_path / "cache")
    dest = tmp_path / "d"
    report = stage(manifest, dest, root=root, cache=cache)
    victim = report.files[2].path
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as f:
        f.seek(100)
        f.write(b"XXXX")

    again = stage(manifest, dest, root=root, cache=cache)
    assert (again.fetched, again.skipped) == (1, 8)
    assert_staged(manifest, dest)
    assert md5sum(cache.path(report.files[2].md5)) == report.files[2].md5


def test_truncated_destination_is_replaced(archive, tmp_path: Path) -> None:
    root, manifest = archive
    dest = tmp_path / "d"
    stage(manifest, dest, root=root, cache=False)
    rel = Manifest.relpath(next(manifest.records()))
    (dest / rel).write_bytes(b"short")
    again = stage(manifest, dest, root=root, cache=False)
    assert (again.fetched, again.skipped) == (1, 8)
    assert_staged(manifest, dest)


def test_progress_events(archive, tmp_path: Path) -> None:
    root, manifest = archive
    events: list[ProgressEvent] = []
    report = stage(manifest, tmp_path / "d", root=root, cache=False, progress=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert events[0].files_total == 9 and events[0].bytes_total == report.bytes
    assert sum(e.nbytes for e in events if e.kind == "bytes") == report.bytes
    assert sorted(e.result.index for e in events if e.kind == "file") == list(range(9))


@pytest.mark.parametrize("bad_path", ["../../etc", "/etc", "OPS/../../outside"])
def test_escaping_paths_are_refused_before_any_copy(archive, tmp_path: Path, bad_path: str) -> None:
    root, manifest = archive
    rows = list(manifest.rows)
    rows.append(("passwd", bad_path, "", "0" * 32, 10, "evil", 0))
    bad = Manifest(columns=manifest.columns, rows=rows)
    dest = tmp_path / "d"
    with pytest.raises(ArchivePathError) as exc:
        stage(bad, dest, root=root, cache=tmp_path / "cache")
    assert bad_path.lstrip("/").split("/")[0] in str(exc.value)
    assert not dest.exists() or not any(dest.rglob("*"))
    assert not (tmp_path / "cache" / "objects").exists()


def test_rows_without_md5_or_with_conflicts_are_input_errors(archive, tmp_path: Path) -> None:
    root, manifest = archive
    no_md5 = Manifest(columns=manifest.columns, rows=[manifest.rows[0][:3] + (None,) + manifest.rows[0][4:]])
    with pytest.raises(InputError, match="md5sum None is not a 32-digit hex md5"):
        stage(no_md5, tmp_path / "d", root=root, cache=False)
    clash = Manifest(columns=manifest.columns,
                     rows=[manifest.rows[0], manifest.rows[0][:3] + ("f" * 32,) + manifest.rows[0][4:]])
    with pytest.raises(InputError, match="different md5"):
        stage(clash, tmp_path / "d", root=root, cache=False)
    dup = Manifest(columns=manifest.columns, rows=[manifest.rows[0], manifest.rows[0]])
    assert len(stage(dup, tmp_path / "d", root=root, cache=False).files) == 1


def test_missing_and_wrong_files_fail_clearly_after_the_others(archive, tmp_path: Path) -> None:
    root, manifest = archive
    recs = list(manifest.records())
    (root / Manifest.relpath(recs[1])).unlink()
    wrong = root / Manifest.relpath(recs[2])
    wrong.write_bytes(b"\0" * recs[2]["filesize"])  # same size, other bytes

    with pytest.raises(StagingIncompleteError) as exc:
        stage(manifest, tmp_path / "d", root=root, cache=tmp_path / "cache", retries=2, backoff=0)
    msg = str(exc.value)
    assert "2 files could not be staged" in msg
    assert f"{Manifest.relpath(recs[1])} from file://" in msg and "not in the archive" in msg
    assert "after 1 attempt" in msg  # a missing file is not retried
    assert f"could not stage {Manifest.relpath(recs[2])}" in msg and "md5 mismatch" in msg
    assert "after 3 attempts" in msg
    assert "7 of 9 files were staged" in msg
    report = exc.value.report
    assert report.fetched == 7
    assert not (tmp_path / "d" / Manifest.relpath(recs[2])).exists()  # never under its final name
    assert {e.relpath for e in exc.value.failures} == {Manifest.relpath(recs[1]), Manifest.relpath(recs[2])}


@pytest.mark.parametrize("use_cache", [True, False])
def test_local_filesystem_problem_is_a_clear_staging_error(archive, tmp_path: Path, use_cache: bool) -> None:
    root, manifest = archive
    rel = Manifest.relpath(next(manifest.records()))
    (tmp_path / "d" / rel).mkdir(parents=True)  # a folder where the file must go
    with pytest.raises(StagingIncompleteError) as exc:
        stage(manifest, tmp_path / "d", root=root, cache=tmp_path / "cache" if use_cache else False)
    msg = str(exc.value)
    assert f"could not stage {rel}: " in msg and "Is a directory" in msg
    assert "check" in msg and "permissions" in msg
    assert "8 of 9 files were staged" in msg


def test_missing_archive_root_is_an_input_error(tmp_path: Path) -> None:
    m = make_archive(tmp_path / "a", 1)
    with pytest.raises(InputError, match="is not a folder"):
        stage(m, tmp_path / "d", root=(tmp_path / "nope").as_uri(), cache=False)


def test_default_root_and_cache_come_from_the_platform_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SKYOPS_ARCHIVE_ROOT", (tmp_path / "a").as_uri())
    monkeypatch.setenv("SKYOPS_HOME", str(tmp_path / "home"))
    m = make_archive(tmp_path / "a", 2)
    report = stage(m, tmp_path / "d")
    assert report.fetched == 2
    assert report.root == (tmp_path / "a").resolve().as_uri()
    assert report.cache == tmp_path / "home" / "cache"
    assert StageCache(report.cache).usage()[0] == 2
