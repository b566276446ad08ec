"""``skyops stage MANIFEST DEST``, run in-process through the real entry point."""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from skyops.cli.main import main
from skyops.fileio import md5sum
from skyops.manifest import FILE_COLUMNS, Manifest
from skyops.staging.server import ArchiveServer

PASSWORD = "Cli-Pa55-7yq"


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, Path]:
    """An archive of 3 files and its manifest file."""
    rng = random.Random(3)
    root = tmp_path / "archive"
    rows = []
    for i in range(3):
        path, name = f"OPS/finalcut/Y6A1/r4002/D{4000 + i:08d}/p01/red/immask", f"D{4000 + i:08d}_z_c0{i}.fits"
        data = rng.randbytes(70_000 + i)
        (root / path).mkdir(parents=True)
        (root / path / (name + ".fz")).write_bytes(data)
        rows.append((name, path, ".fz", hashlib.md5(data).hexdigest(), len(data), "red_immask"))
    manifest = Manifest(columns=list(FILE_COLUMNS), rows=rows, query="cli_test").write(tmp_path / "m.json")
    return root, manifest


def test_stage_command_file_root(archive, tmp_path: Path, capsys) -> None:
    root, manifest = archive
    dest, report = tmp_path / "dest", tmp_path / "report.json"
    rc = main(["stage", str(manifest), str(dest), "--root", root.as_uri(), "--cache", str(tmp_path / "c"),
               "--report", str(report)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "staged 3 files (210.0 kB) in" in out and "3 fetched, 0 verified in place, 0 from cache" in out
    doc = json.loads(report.read_text())
    assert [f["outcome"] for f in doc["files"]] == ["fetched"] * 3
    assert all(md5sum(f["path"]) == f["md5"] and f["filetype"] == "red_immask" for f in doc["files"])

    rc = main(["stage", str(manifest), str(dest), "--root", root.as_uri(), "--no-cache"])
    assert rc == 0 and "3 verified in place" in capsys.readouterr().out


def test_stage_command_http_with_desservices(archive, tmp_path: Path, capsys) -> None:
    root, manifest = archive
    ini = tmp_path / "des.ini"
    ini.write_text(f"[desar]\nuser = cliuser\npasswd = {PASSWORD}\n")
    os.chmod(ini, 0o600)
    with ArchiveServer(root, user="cliuser", password=PASSWORD) as srv:
        rc = main(["stage", str(manifest), str(tmp_path / "d"), "--root", srv.url, "--no-cache",
                   "--desservices-section", "desar", "--desservices-file", str(ini), "--workers", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "3 fetched" in out
    assert PASSWORD not in out + err


def test_stage_command_wrong_password_exits_1_without_password(archive, tmp_path: Path, capsys) -> None:
    root, manifest = archive
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login cliuser password Not-The-One-42\n")
    os.chmod(netrc, 0o600)
    with ArchiveServer(root, user="cliuser", password=PASSWORD) as srv:
        rc = main(["stage", str(manifest), str(tmp_path / "d"), "--root", srv.url, "--no-cache",
                   "--netrc", str(netrc), "--backoff", "0"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "skyops: error: could not stage" in err and "HTTP 401" in err
    assert "Not-The-One-42" not in err


def test_stage_command_bad_manifest_path_exits_2(tmp_path: Path, capsys) -> None:
    rc = main(["stage", str(tmp_path / "nope.json"), str(tmp_path / "d"), "--root", tmp_path.as_uri()])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"skyops: error: {tmp_path / 'nope.json'}: manifest file not found" in err


def test_stage_command_refuses_escaping_path_exits_2(archive, tmp_path: Path, capsys) -> None:
    root, manifest = archive
    m = Manifest.read(manifest)
    m.rows.append(("x.fits", "../../elsewhere", "", "2" * 32, 5, "evil"))
    m.write(manifest)
    rc = main(["stage", str(manifest), str(tmp_path / "d"), "--root", root.as_uri(), "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 2 and "escapes" in err and "../../elsewhere/x.fits" in err
    assert not (tmp_path / "d").exists()


def test_stage_command_unsafe_netrc_exits_2(archive, tmp_path: Path, capsys) -> None:
    root, manifest = archive
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login u password p\n")
    os.chmod(netrc, 0o644)
    rc = main(["stage", str(manifest), str(tmp_path / "d"), "--root", "http://127.0.0.1:9/archive/",
               "--netrc", str(netrc)])
    assert rc == 2 and "chmod 600" in capsys.readouterr().err
