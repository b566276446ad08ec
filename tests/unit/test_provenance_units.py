"""Provenance pieces that need no database server: records, paths, depths, URLs, and that
no password ever reaches an error, a log line or the CLI's output."""
from __future__ import annotations

import logging
import traceback
from dataclasses import FrozenInstanceError

import pytest

from skyops.cli.main import main
from skyops.config import DatabasesConfig, PlatformConfig
from skyops.errors import InputError, ProvenanceInputError, ProvenanceUnavailableError
from skyops.provenance import ProvenanceStore, TaskKey
from skyops.provenance.lineage import longest_depths
from skyops.provenance.records import file_record, guess_compression, join_path, split_path
from skyops.provenance.synthetic import SynthParams, synthetic_tasks

SECRET_URL = "postgresql+psycopg2://u:s3cret@127.0.0.1:1/x"
REDACTED = "postgresql+psycopg2://u:***@127.0.0.1:1/x"


def test_task_key_defaults_and_is_hashable() -> None:
    key = TaskKey("dag", "run", "task")
    assert (key.map_index, key.try_number) == (-1, 1)
    assert {key: 1}[TaskKey("dag", "run", "task", -1, 1)] == 1
    with pytest.raises(FrozenInstanceError):
        key.try_number = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a/b/c.fits", ("/a/b", "c.fits")),
        ("/a//b/./c.fits", ("/a/b", "c.fits")),
        ("c.fits", ("", "c.fits")),
        ("rel/c.fits", ("rel", "c.fits")),
    ],
)
def test_split_path_is_normalised_and_reversible(path: str, expected: tuple[str, str]) -> None:
    assert split_path(path) == expected
    assert split_path(join_path(*expected)) == expected


def test_split_path_refuses_a_folder() -> None:
    with pytest.raises(ProvenanceInputError, match="names no file"):
        split_path("/a/b/")


def test_file_record_accepts_both_spellings_and_guesses_compression() -> None:
    rec = file_record({"path": "/a/x.fits.fz", "md5sum": "ab", "filesize": 3, "filetype": "raw"}, "here")
    assert (rec.path, rec.filename, rec.md5sum, rec.filesize, rec.compression) == ("/a", "x.fits.fz", "ab", 3, ".fz")
    assert file_record({"path": "/a/x.fits", "compression": ".gz"}, "here").compression == ".gz"
    assert guess_compression("x.fits") is None and guess_compression(".fz") is None
    with pytest.raises(ProvenanceInputError, match="here: 'md5' of /a/x must be a hex string, got 5"):
        file_record({"path": "/a/x", "md5": 5}, "here")
    with pytest.raises(ProvenanceInputError, match="here: a file record needs a 'path'"):
        file_record({"size": 1}, "here")


def test_longest_depths_orders_a_diamond_and_survives_a_cycle() -> None:
    assert longest_depths(0, [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (0, 4)]) == {0: 0, 1: 1, 2: 1, 3: 2, 4: 3}
    depths = longest_depths(0, [(0, 1), (1, 2), (2, 1)])
    assert depths[0] == 0 and depths[1] >= 1 and depths[2] >= 1


def test_synthetic_history_is_seeded_and_sized() -> None:
    params = SynthParams(n_files=2_000, seed=3)
    first, second = list(synthetic_tasks(params)), list(synthetic_tasks(params))
    assert first == second
    generated = sum(len(t.generated) for t in first)
    assert generated == 2_000 - 500 + 250  # processed files + ingested half of the raw files
    assert {t.derivation for t in first} == {"all", "none"}


def test_provenance_input_errors_are_input_errors() -> None:
    assert issubclass(ProvenanceInputError, InputError) and ProvenanceInputError.exit_code == 2


def test_unreachable_database_error_names_it_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = ProvenanceStore(SECRET_URL)
    assert repr(store) == f"ProvenanceStore({REDACTED!r})"
    for call in (store.status, store.migrate, lambda: store.lineage("a.fits"), lambda: store.attempt("c", "r", "u")):
        with pytest.raises(ProvenanceUnavailableError) as err:
            call()
        message = str(err.value)
        assert f"cannot reach the provenance database at {REDACTED}: connection to server at" in message
        assert message.endswith(
            "; check that the server is running and the URL (databases.provenance in configs/skyops.yaml, or --url)"
        )
        assert "s3cret" not in "".join(traceback.format_exception(err.value))
    assert "s3cret" not in caplog.text
    store.close()


def test_cli_on_an_unreachable_database_hides_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prov", "status", "--url", SECRET_URL]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(
        f"skyops: error: read the provenance database status: cannot reach the provenance database at {REDACTED}: "
    )
    assert "s3cret" not in captured.out + captured.err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "provenance database URL 'nonsense' is not a SQLAlchemy URL; expected sqlite:///"),
        ("mysql://u:pw@h/db", "provenance database URL 'mysql://u:***@h/db' uses 'mysql'; the provenance store "
                              "supports sqlite, postgresql"),
    ],
)
def test_unsupported_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ProvenanceUnavailableError) as err:
        ProvenanceStore(url)
    assert str(err.value).startswith(message)


def test_sqlite_in_a_missing_folder_says_what_to_check(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'p.sqlite'}"
    with pytest.raises(ProvenanceUnavailableError) as err:
        ProvenanceStore(url).migrate()
    assert str(err.value) == (
        f"migrate the provenance database: cannot reach the provenance database at {url}: unable to open database "
        "file; check that the folder of the database file exists and is writable, and the URL "
        "(databases.provenance in configs/skyops.yaml, or --url)"
    )


def test_from_config_creates_the_sqlite_folder(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROV_TEST_DIR", str(tmp_path / "deep"))
    cfg = PlatformConfig(databases=DatabasesConfig(provenance="sqlite:///${PROV_TEST_DIR}/state/prov.sqlite"))
    with ProvenanceStore.from_config(cfg) as store:
        assert store.url == f"sqlite:///{tmp_path}/deep/state/prov.sqlite"
        store.migrate()
        assert store.status()["current"] is True
    assert (tmp_path / "deep" / "state" / "prov.sqlite").is_file()


def test_from_config_defaults_to_the_platform_config(skyops_home) -> None:
    with ProvenanceStore.from_config() as store:
        assert store.dialect == "sqlite"
        assert store.url.startswith("sqlite:///") and store.url.endswith("/provenance.sqlite")


def test_revision_bookkeeping_without_alembic_agrees_with_alembic(tmp_path) -> None:
    """The light revision reader (no Alembic import per task) gives Alembic's own answers."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from skyops.provenance import ProvenanceStore
    from skyops.provenance.migrate import VERSION_TABLE, alembic_config, current_revision, head_revision, is_known

    script = ScriptDirectory.from_config(alembic_config())
    assert head_revision() == script.get_current_head()
    assert all(is_known(r.revision) for r in script.walk_revisions())
    assert not is_known("9999")
    store = ProvenanceStore(f"sqlite:///{tmp_path / 'p.db'}")
    with store.engine.connect() as conn:
        assert current_revision(conn) is None
    store.migrate()
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert current_revision(conn) == ctx.get_current_revision() == head_revision()
    store.close()
