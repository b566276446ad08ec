"""balrog.measure through the step runner (validation, atomic output, result.json) on 2-band MEDS files.

Scene: three isolated exponential galaxies and one blended pair (1.8" apart), 3 exposures per band
(the first standing in for the coadd). Checks: the catalog has one row per object in MEDS order with
the documented columns; SOF mags of the isolated objects within 0.03 of truth (S/N ~ 100-300 per
band); the pair is one MOF group and MOF's mags are closer to truth than unmasked SOF would be (both
within 0.1); metacal responses are physical (0.3 < R11, R22 < 1.1); bad parameters exit 2 naming
the parameter.
"""
from __future__ import annotations

import fitsio
import galsim
import numpy as np
import pytest

from skyops.campaigns.balrog import measuresim as ms
from skyops.steps.runner import run_step

ZP = 30.0


@pytest.fixture(scope="module")
def meds_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(17)
    pos = np.array([[-20.0, 5.0], [0.0, -10.0], [18.0, 8.0], [10.0, -2.0], [11.2, -0.65]])
    mags = np.array([[19.5, 19.0], [20.0, 19.6], [20.5, 20.2], [19.8, 19.4], [20.2, 20.0]])
    gals = [[galsim.Exponential(half_light_radius=0.5, flux=10 ** (0.4 * (ZP - m))).shear(g1=0.1, g2=-0.05)
             for m in row] for row in mags]
    sc = ms.Scene(40.0, -20.0, pos, gals)
    for band in (0, 1):
        for i in range(3):
            sc.exposures.append(ms.Exposure(band, (200, 200), ms.random_jacobian(rng, 99.5, 99.5),
                                            ms.random_psf(rng), 6.0))
    sc.render(rng)
    d = tmp_path_factory.mktemp("tile")
    paths = []
    for band, name in enumerate("ri"):
        p = d / f"DES0000+0000_{name}_meds-test.fits"
        ms.write_meds(str(p), sc, band, box_size=32)
        paths.append(str(p))
    return paths, mags


def test_measure_step_sof_mof_metacal(meds_files: tuple[list[str], np.ndarray], tmp_path) -> None:  # noqa: ANN001
    paths, mags = meds_files
    res = run_step("balrog.measure", {"meds": paths, "bands": ["r", "i"], "measure": ["sof", "mof", "metacal"],
                                      "seed": 3}, tmp_path)
    assert res.ok, res.error
    (out,) = res.output_paths("balrog_measure")
    cat, hdr = fitsio.read(out, header=True)
    assert hdr["BANDS"] == "r,i" and hdr["MAGZP"] == ZP
    assert list(cat["id"]) == [1000, 1001, 1002, 1003, 1004]
    assert np.all(cat["nepoch"] == 2)
    iso = cat["group_size"] == 1
    assert iso.sum() == 3 and cat["group_id"][3] == cat["group_id"][4]
    assert np.all(cat["sof_flags"][iso] == 0)
    assert np.abs(cat["sof_mag"][iso] - mags[iso]).max() < 0.03
    assert np.abs(cat["mof_mag"][~iso] - mags[~iso]).max() < 0.1
    for k in ("mcal_R11", "mcal_R22"):
        assert np.all((cat[k] > 0.3) & (cat[k] < 1.1)), cat[k]
    assert res.metrics["n_objects"] == 5 and res.metrics["psf_fits"] > 0


def test_measure_step_bad_params(meds_files: tuple[list[str], np.ndarray], tmp_path) -> None:  # noqa: ANN001
    paths, _ = meds_files
    r = run_step("balrog.measure", {"meds": paths, "measure": ["sof", "ngmix"]}, tmp_path)
    assert r.exit_code == 2 and "measure" in r.error["message"]
    r = run_step("balrog.measure", {"meds": paths + ["missing.fits"]}, tmp_path)
    assert r.exit_code == 2 and "meds" in r.error["message"]
