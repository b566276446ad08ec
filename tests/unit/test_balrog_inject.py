"""Balrog injection inputs: the per-realization hex grid, the seeded deep field and its profiles."""
from __future__ import annotations

import galsim
import numpy as np
import pytest

from skyops.campaigns.balrog import deepfield
from skyops.campaigns.balrog.config import DeepFieldSettings, InjectionConfig, StarSettings
from skyops.campaigns.balrog.inject import ID_STRIDE, hex_grid, injection_catalog, stamp_size
from skyops.sim.tiles import Tile

GEOM = Tile.from_name("DES0239+0216", 1, 0.05).geom_row()


def test_hex_grid_spacing_bounds_and_offset_per_realization():
    ra0, dec0, x0, y0 = hex_grid(GEOM, 30.0, 10.0, seed=1, realization=0)
    ra1, _, x1, y1 = hex_grid(GEOM, 30.0, 10.0, seed=1, realization=1)
    s = 30.0 / GEOM["pixelscale"]
    d = np.hypot(x0[:, None] - x0[None], y0[:, None] - y0[None])
    np.fill_diagonal(d, np.inf)
    assert d.min(axis=1) == pytest.approx(np.full(len(x0), s), rel=1e-9)  # every neighbour at the spacing
    buf = 10.0 / GEOM["pixelscale"]
    assert (x0 >= 0.5 + buf).all() and (x0 <= 684.5 - buf).all() and (y0 >= 0.5 + buf).all()
    area = (684 - 2 * buf) ** 2
    assert len(x0) == pytest.approx(area / (s * s * np.sqrt(3) / 2), rel=0.2)
    assert not np.allclose(np.sort(x1)[:5], np.sort(x0)[:5])  # each realization moves the grid
    again = hex_grid(GEOM, 30.0, 10.0, seed=1, realization=0)
    np.testing.assert_array_equal(again[0], ra0)
    assert (np.abs(dec0 - GEOM["dec_cent"]) < GEOM["dec_size"] / 2).all()


def test_injection_catalog_is_seeded_and_ids_are_unique_per_realization():
    cfg = InjectionConfig(deepfield=DeepFieldSettings(n_objects=500), stars=StarSettings(fraction=0.3))
    a, b = injection_catalog(GEOM, cfg, 2), injection_catalog(GEOM, cfg, 2)
    np.testing.assert_array_equal(a, b)
    assert a["id"].min() == 2 * ID_STRIDE + 1 and len(np.unique(a["id"])) == len(a)
    assert set(a["kind"]) == {b"galaxy", b"star"}
    stars = a[a["kind"] == b"star"]
    assert (stars["hlr_disk"] == 0).all() and (stars["morphology"] == deepfield.STAR).all()
    assert 0.1 < len(stars) / len(a) < 0.5


def test_deepfield_galaxies_are_bulge_plus_disk_with_unit_flux_profiles():
    df = deepfield.make_deepfield(DeepFieldSettings(n_objects=2000, seed=3))
    np.testing.assert_array_equal(df, deepfield.make_deepfield(DeepFieldSettings(n_objects=2000, seed=3)))
    kinds = np.bincount(df["morphology"], minlength=3)
    assert kinds[deepfield.BULGE_DISK] > 0.2 * len(df) and kinds[deepfield.DISK] > 0.3 * len(df)
    assert ((df["mag_i"] >= 18.0) & (df["mag_i"] <= 25.5)).all()
    assert np.mean(df["mag_i"] > 24) > 0.3  # counts rise towards faint magnitudes
    comp = df[df["morphology"] == deepfield.BULGE_DISK][0]
    prof = deepfield.profile(comp)
    assert prof.flux == pytest.approx(1.0)
    assert len(prof.obj_list) == 2  # an exponential disk and a de Vaucouleurs bulge, sharing the centre
    assert prof.obj_list[1].flux == pytest.approx(float(comp["bulge_frac"]), rel=1e-6)
    assert prof.centroid == galsim.PositionD(0, 0)
    assert stamp_size(comp, 0.263) % 2 == 1
