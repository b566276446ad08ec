"""Connecting to the archive: desservices credentials, and no password anywhere.

Real drivers, real refused connections (port 1 on 127.0.0.1 is closed): the error text, its
repr, its chained causes, its formatted traceback and every log record must be free of the
password, in every spelling (raw and %-encoded).
"""
from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from skyops.archive import ArchiveDB
from skyops.config import DatabasesConfig, PlatformConfig
from skyops.errors import ArchiveConnectionError, ArchiveError, CredentialError

PASSWORD = "s3cret!Pa:ss@w/rd"
SIMPLE_PASSWORD = "s3cret"


def _desservices(tmp_path: Path, mode: int, kind: str = "postgres", section: str = "db-test") -> Path:
    p = tmp_path / "desservices.ini"
    p.write_text(
        f"[{section}]\nuser = desuser\npasswd = {PASSWORD}\ntype = {kind}\n"
        f"server = 127.0.0.1\nport = 1\nname = desoper\nservice = desoper\n"
    )
    os.chmod(p, mode)
    return p


def _config(path: Path, section: str = "db-test", archive_schema: str | None = None) -> PlatformConfig:
    return PlatformConfig(databases=DatabasesConfig(desservices_file=str(path), desservices_section=section,
                                                    archive_schema=archive_schema))


def _all_text(exc: BaseException) -> str:
    """Everything an exception could show: str, repr, args, and the same for its whole chain."""
    parts, seen, todo = [], set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        parts += [str(e), repr(e), repr(getattr(e, "args", "")), *traceback.format_exception_only(e)]
        todo += [e.__cause__, e.__context__]
    return "\n".join(parts)


def _assert_clean(text: str, password: str) -> None:
    for form in {password, quote_plus(password), quote(password, safe="")}:
        assert form not in text


def test_desservices_readable_by_others_is_refused(tmp_path: Path) -> None:
    p = _desservices(tmp_path, 0o644)
    with pytest.raises(CredentialError) as info:
        ArchiveDB.from_config(_config(p))
    assert str(info.value) == (
        f"{p}: credential file is accessible by group or others (mode -rw-r--r--); run: chmod 600 {p}"
    )
    _assert_clean(_all_text(info.value), PASSWORD)


def test_desservices_private_is_accepted(tmp_path: Path) -> None:
    p = _desservices(tmp_path, 0o600)
    db = ArchiveDB.from_config(_config(p, archive_schema="PROD.Y3A2_"))
    assert db.url == "postgresql+psycopg2://desuser:***@127.0.0.1:1/desoper"
    assert db.source == f"{p}[db-test]"
    assert (db.schema, db.prefix) == ("PROD", "Y3A2_")
    assert "prod.y3a2_image" in str(db.tables.image)
    _assert_clean(repr(db) + str(db) + repr(db.engine), PASSWORD)


def test_desservices_missing_section(tmp_path: Path) -> None:
    p = _desservices(tmp_path, 0o600)
    with pytest.raises(CredentialError, match=r"no section \[db-desoper\]; sections present: db-test"):
        ArchiveDB.from_config(PlatformConfig(databases=DatabasesConfig(desservices_file=str(p))))


@pytest.mark.parametrize("kind", ["postgres", "oracle"])
def test_desservices_connection_error_has_no_password(tmp_path: Path, kind: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = _desservices(tmp_path, 0o600, kind=kind)
    db = ArchiveDB.from_config(_config(p))
    with pytest.raises(ArchiveConnectionError) as info:
        db.check()
    text = _all_text(info.value)
    _assert_clean(text, PASSWORD)
    _assert_clean(caplog.text, PASSWORD)
    assert str(info.value).startswith(f"cannot connect to the archive database {db.url} (from {p}[db-test]): ")
    assert "check that the server is running" in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_url_connection_error_has_no_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    db = ArchiveDB("postgresql+psycopg2://u:s3cret@127.0.0.1:1/x")
    assert repr(db) == "ArchiveDB(url='postgresql+psycopg2://u:***@127.0.0.1:1/x', schema=None, prefix=None)"
    with pytest.raises(ArchiveConnectionError) as info:
        db.query("tile_geometry", tilename="DES0239+0216")
    assert "Connection refused" in str(info.value)
    assert "postgresql+psycopg2://u:***@127.0.0.1:1/x" in str(info.value)
    _assert_clean(_all_text(info.value), SIMPLE_PASSWORD)
    _assert_clean(caplog.text, SIMPLE_PASSWORD)
    assert info.value.exit_code == 1


def test_unparseable_url_error_has_no_password() -> None:
    with pytest.raises(ArchiveError) as info:
        ArchiveDB("postgresql+psycopg2://u:s3cret@127.0.0.1:notaport/x", source="databases.archive")
    assert str(info.value).startswith("databases.archive: cannot use archive database URL ")
    _assert_clean(_all_text(info.value), SIMPLE_PASSWORD)
    with pytest.raises(ArchiveError) as info:
        ArchiveDB("nosuchdb+driver://u:s3cret@h/x")
    assert "check the URL and that its driver is installed" in str(info.value)
    _assert_clean(_all_text(info.value), SIMPLE_PASSWORD)


def test_from_config_url_and_override(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'desdm.sqlite'}"
    db = ArchiveDB.from_config(PlatformConfig(databases=DatabasesConfig(archive=url, archive_schema="Y3A2_")))
    assert db.source == "databases.archive" and (db.schema, db.prefix) == (None, "Y3A2_")
    assert (tmp_path / "sub").is_dir()  # the embedded default works on a fresh home
    other = ArchiveDB.from_config(PlatformConfig(), url=f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert other.source == "--url" and other.dialect == "sqlite"
    other.create_schema()
    other.check()
    with pytest.raises(ArchiveError, match=r"create_schema works on unprefixed tables only"):
        db.create_schema()
