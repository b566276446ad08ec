"""The MEDS reader on files of the standard layout (written by measuresim.write_meds with fitsio).

Checks: every cutout equals the source image's pixels at orig_start_row/col; the Jacobian and the
object's cutout position round-trip; seg masking zeroes exactly the other objects' pixels; bmask
zeroes weight; PSF images come back from a "psf" or a "psf_cutouts" extension; without them the
psf_fwhm fallback is used; missing extensions/columns raise InputError naming what is missing.
"""
from __future__ import annotations

import fitsio
import galsim
import numpy as np
import pytest

from skyops.campaigns.balrog import measuresim as ms
from skyops.campaigns.balrog.measure import TileData
from skyops.campaigns.balrog.medsreader import MEDSReader
from skyops.errors import InputError


@pytest.fixture(scope="module")
def scene() -> ms.Scene:
    rng = np.random.default_rng(3)
    pos = np.array([[-8.0, 2.0], [-6.5, 2.6], [9.0, -3.0]])
    gals = [[galsim.Exponential(half_light_radius=0.5, flux=f)] for f in (3000.0, 2000.0, 5000.0)]
    sc = ms.Scene(40.0, -20.0, pos, gals)
    for i in range(3):
        sc.exposures.append(ms.Exposure(0, (120, 150), ms.random_jacobian(rng, 59.5, 74.5), ms.random_psf(rng), 2.0))
    sc.render(rng)
    return sc


def test_cutouts_match_source_pixels(scene: ms.Scene, tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "m.fits"
    ms.write_meds(str(path), scene, 0, box_size=32)
    with MEDSReader(path) as m:
        assert m.size == 3 and m.magzp_ref == 30.0 and m.has_psf_images
        for i in range(m.size):
            assert m.epoch_indices(i) == [1, 2]
            for k in range(int(m.object_data["ncutout"][i])):
                c = m.cutout(i, k)
                ex = scene.exposures[c.file_id]
                r0, c0 = c.orig_start_row, c.orig_start_col
                np.testing.assert_array_equal(c.image, ex.image[r0:r0 + 32, c0:c0 + 32].astype(np.float32))
                assert c.jac.dudcol == ex.jac.dudcol and c.jac.dvdrow == ex.jac.dvdrow
                row, col = ex.jac.to_pixel(*scene.positions[i])
                assert abs(c.jac.row0 + r0 - row) < 1e-9 and abs(c.jac.col0 + c0 - col) < 1e-9
                img, pjac = m.psf_image(i, k)
                assert img.shape == (25, 25) and pjac.row0 == 12.0 and abs(img.sum() - 1) < 0.01
        # seg masking: object 0's neighbour (object 1, 1.6" away) is masked, its own pixels are not
        masked = m.cutout(0, 1, mask_neighbours=True)
        assert np.all(masked.weight[masked.seg == 2] == 0)
        assert np.all(masked.weight[(masked.seg == 1) | (masked.seg == 0)] > 0)


def test_bmask_psf_cutouts_extension_and_fwhm_fallback(scene: ms.Scene, tmp_path) -> None:  # noqa: ANN001
    p1 = tmp_path / "psfcut.fits"
    ms.write_meds(str(p1), scene, 0, box_size=32, psf_ext="psf_cutouts")
    with fitsio.FITS(str(p1), "rw") as f:
        bm = f["bmask_cutouts"].read()
        bm[:10] = 4
        f["bmask_cutouts"].write(bm)
    with MEDSReader(p1) as m:
        assert m.has_psf_images
        st = int(m.object_data["start_row"][0][0])
        w = m.cutout(0, 0).weight.ravel()
        assert st == 0 and np.all(w[:10] == 0) and np.all(w[10:] > 0)
    p2 = tmp_path / "nopsf.fits"
    ms.write_meds(str(p2), scene, 0, box_size=32, psf_ext=None, psf_fwhm=0.95)
    data = TileData([str(p2)])
    try:
        assert not data.readers[0].has_psf_images
        e = data.epochs(0, False)[0]
        assert abs(e.psf[0, 3] - (0.95 / 2.35482) ** 2) < 1e-4
    finally:
        data.close()


def test_malformed_files_raise(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="does not exist"):
        MEDSReader(tmp_path / "nope.fits")
    p = tmp_path / "bad.fits"
    with fitsio.FITS(str(p), "rw", clobber=True) as f:
        f.write(np.zeros(2, dtype=[("id", "i8")]), extname="object_data")
    with pytest.raises(InputError, match="lacks extension"):
        MEDSReader(p)
    with fitsio.FITS(str(p), "rw", clobber=True) as f:
        f.write(np.zeros(2, dtype=[("id", "i8")]), extname="object_data")
        f.write(np.zeros(1, dtype=[("image_id", "i8")]), extname="image_info")
        f.write(np.zeros(4, dtype=np.float32), extname="image_cutouts")
        f.write(np.zeros(4, dtype=np.float32), extname="weight_cutouts")
    with pytest.raises(InputError, match="lacks column"):
        MEDSReader(p)
