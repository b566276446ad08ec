"""The contract between the synthetic survey (``skyops.sim``) and the named queries.

``skyops archive create --preset demo`` builds the demo survey, and the queries the GW campaign
needs must find it: the night's raw exposures, template CCDs for a search exposure (earlier, same
band, not blacklisted), and every manifest row must name a real file under the archive root
with the md5 the archive claims.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from skyops.archive import ArchiveDB, run_query
from skyops.cli.main import main
from skyops.config import load_platform_config
from skyops.fileio import md5sum, safe_join
from skyops.manifest import Manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """The demo survey built through the CLI in a SKYOPS_HOME of its own: (database, root)."""
    try:
        from skyops.sim import create_archive  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"skyops.sim.create_archive is not available: {exc}")
    home = tmp_path_factory.mktemp("sim_home")
    old = os.environ.get("SKYOPS_HOME")
    os.environ["SKYOPS_HOME"] = str(home)
    try:
        assert main(["archive", "create", "--preset", "demo", "--seed", "42"]) == 0
        cfg = load_platform_config()
    finally:
        if old is not None:
            os.environ["SKYOPS_HOME"] = old
    db = ArchiveDB.from_config(cfg)
    yield db, Path(urlsplit(cfg.archive.root).path)
    db.dispose()


def _check_files(root: Path, m: Manifest) -> None:
    """Every row is a real file under the archive root, with the md5 and size the archive says."""
    for rec in m.records():
        path = safe_join(root, Manifest.relpath(rec))
        assert path.is_file(), path
        assert md5sum(path) == rec["md5sum"] and path.stat().st_size == rec["filesize"]


def test_night_and_templates_on_the_demo_survey(demo: tuple[ArchiveDB, Path]) -> None:
    db, root = demo
    with db.connect() as conn:
        nites = conn.exec_driver_sql("SELECT DISTINCT nite, program, band FROM exposure ORDER BY nite DESC").all()
    nite, program, band = nites[0]
    night = run_query(db, "night_exposures", nite=nite, program=program, bands=[band])
    assert len(night) > 0 and set(night.column("filetype")) == {"raw"}
    _check_files(root, night)

    search = night.column("expnum")[0]
    mjd = night.column("mjd_obs")[0]
    templates = run_query(db, "templates", expnum=search, min_t_eff=0.0)
    assert len(templates) > 0, "the demo survey should hold templates for its GW night"
    with db.connect() as conn:
        blacklisted = set(conn.exec_driver_sql("SELECT expnum, ccdnum FROM blacklist").all())
    for rec in templates.records():
        assert rec["mjd_obs"] <= mjd - 15 and rec["band"] == band
        assert (rec["expnum"], rec["ccdnum"]) not in blacklisted
    _check_files(root, templates)

    names = sorted(set(templates.column("filename")))
    by_name = run_query(db, "files_by_name", names=names)
    assert by_name.column("filename") == names
