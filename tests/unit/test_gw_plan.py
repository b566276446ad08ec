"""GW planning: which files each CCD task gets, and which CCDs are skipped."""
from __future__ import annotations

import pytest

from skyops.campaigns.gw.params import GWParamError, parse_ccds, validate
from skyops.campaigns.gw.plan import diff_inputs, se_inputs
from skyops.errors import InputError
from skyops.manifest import FILE_COLUMNS, Manifest


def manifest(rows: list[dict], extra: tuple[str, ...]) -> Manifest:
    cols = list(FILE_COLUMNS) + list(extra)
    return Manifest(cols, [tuple(r.get(c) for c in cols) for r in rows])


def file(name: str, path: str, ft: str, **kw) -> dict:
    return {"filename": name, "path": path, "compression": "", "md5sum": "0" * 32, "filesize": 1, "filetype": ft, **kw}


RAW = manifest([file("DECam_00668439.fits", "DTS/raw/20170817", "raw", expnum=668439)], ("expnum",))
CALS = manifest([file(f"{ft}_c{c:02d}.fits", "OPS/precal", ft, ccdnum=c)
                 for c in (1, 2, 5) for ft in ("cal_biascor", "cal_norm_dflatcor", "cal_bpm")], ("ccdnum",))
REF = manifest([file("gaia.fits", "OPS/cal/refcat", "cal_refcat")], ())


def test_se_inputs_per_selected_ccd():
    p = validate({"night": "20170817", "ccds": "1,2,5,7"})
    plan = se_inputs("/stage", RAW, CALS, REF, p, 668439)
    assert set(plan) == {f"c{c:02d}" for c in (1, *range(3, 61), 62)}  # no tasks for dead CCDs 2 and 61
    assert plan["c01"]["bias"] == "/stage/OPS/precal/cal_biascor_c01.fits"
    assert plan["c05"]["raw"] == "/stage/DTS/raw/20170817/DECam_00668439.fits" and plan["c05"]["ccd"] == 5
    assert plan["c07"] is None  # selected but no calibrations for it: skipped with a warning
    assert plan["c03"] is None  # not selected


def test_se_inputs_wrong_expnum_is_a_clear_error():
    with pytest.raises(InputError, match="exposure 1: expected one raw file in the archive, found 0"):
        se_inputs("/stage", RAW, CALS, REF, validate({"night": "20170817"}), 1)


def test_diff_inputs_pairs_templates_and_honours_flags():
    tmpl = manifest([file("t1_c05.fits", "OPS/t", "red_immask", search_ccdnum=5),
                     file("t2_c05.fits", "OPS/t", "red_immask", search_ccdnum=5)], ("search_ccdnum",))
    se = {5: {"red_immask": "/w/s5.fits", "psfex_model": "/w/s5.psf"}, 6: {"red_immask": "/w/s6.fits"}}
    p = validate({"night": "20170817", "fullcopy": True})
    plan = diff_inputs("/stage", se, tmpl, {5: 31.4}, p, 668439)
    assert plan["c05"]["templates"] == ["/stage/OPS/t/t1_c05.fits", "/stage/OPS/t/t2_c05.fits"]
    assert plan["c05"]["zeropoint"] == 31.4 and plan["c05"]["keep_scratch"] is True
    assert plan["c06"] is None  # no template overlaps CCD 6
    assert all(v is None for v in diff_inputs("/stage", se, tmpl, {}, validate(
        {"night": "20170817", "template_mode": True}), 668439).values())


def test_param_errors_name_the_flag():
    with pytest.raises(GWParamError) as e:
        parse_ccds("1,3-70")
    assert str(e.value) == "param 'ccds' (-c): CCD 63 is outside 1-62 (DECam has 62 science CCDs)"
    with pytest.raises(GWParamError) as e:
        validate({"night": "2017-08-17"})
    assert str(e.value) == "param 'night' (-n): '2017-08-17' is not a night in YYYYMMDD form (e.g. 20170817)"
    with pytest.raises(GWParamError) as e:
        validate({"night": "20170817", "schema": "des"})
    assert str(e.value) == "param 'schema' (-m): 'des' is not one of gw, wsdiff"
    with pytest.raises(GWParamError, match=r"param 'season' \(-S\): 'dp 60' is not a season label"):
        validate({"night": "20170817", "season": "dp 60"})
    assert validate({"night": "20170817", "season": "dp61"}).season == "dp61"
