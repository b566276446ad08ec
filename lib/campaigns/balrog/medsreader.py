"""Read MEDS files (multi-epoch data structures): every cutout of every object, with its geometry.

The layout is Erin Sheldon's MEDS format as desmeds writes it with fitsio; ``balrog.meds``
(:mod:`skyops.campaigns.balrog.meds`) writes it and this reader expects exactly this:

Extensions
    ``object_data``   one row per object (binary table, columns below)
    ``image_info``    one row per source image; row ``file_id`` describes cutouts with that file_id
    ``metadata``      one row; ``magzp_ref`` (the zeropoint all cutouts are scaled to; 30 if absent)
    ``image_cutouts``, ``weight_cutouts``, ``seg_cutouts``, ``bmask_cutouts``
                      1-D image HDUs: every cutout's pixels, row-major, concatenated
    ``psf`` (or ``psf_cutouts``)  optional 1-D image HDU of PSF images, laid out the same way

``object_data`` columns (``[n]`` = an array of ``max_cutouts`` entries, one per cutout)
    ``id`` (i8), ``number`` (i4, the SExtractor NUMBER = the value in the seg map; ``id`` is used
    when absent), ``box_size`` (i4, the cutout side: cutouts are ``box_size x box_size``),
    ``ra``, ``dec`` (f8, degrees), ``ncutout`` (i4), ``file_id[n]`` (i4), ``start_row[n]`` (i8,
    the offset of the cutout's first pixel in the flat ``*_cutouts`` arrays),
    ``orig_row[n]``, ``orig_col[n]`` (f8, the object's position in the source image, 0-based),
    ``orig_start_row[n]``, ``orig_start_col[n]`` (i4, the cutout's corner in the source image),
    ``cutout_row[n]``, ``cutout_col[n]`` (f8, the object's position in the cutout, 0-based),
    ``dudrow[n]``, ``dudcol[n]``, ``dvdrow[n]``, ``dvdcol[n]`` (f8, the local WCS Jacobian at
    the object, arcsec per pixel; u is along +RA (east), v along +Dec).
    PSF images, when there are any: ``psf_start_row[n]`` (i8, offset into the ``psf`` HDU) and
    either ``psf_box_size[n]`` (i4, square) or ``psf_row_size[n]`` and ``psf_col_size[n]``;
    optionally ``psf_cutout_row[n]``, ``psf_cutout_col[n]`` (f8, the PSF centre in its image;
    the image centre ``(size - 1) / 2`` when absent). A PSF image is the *effective* PSF (pixel
    response included, as PSFEx models are) drawn at the object's position, any normalisation.

Cutout 0 is the coadd, cutouts 1..ncutout-1 the single-epoch images. Pixel values are in the
common zeropoint ``magzp_ref`` (desmeds scales each epoch by ``image_info['scale']`` when writing),
weights are inverse variance in the same units; pixels with a non-zero ``bmask`` get weight 0.

Without PSF images a Gaussian PSF is used, of FWHM ``image_info['psf_fwhm']`` (f8, **arcsec**) of
the cutout's source image. With neither, :meth:`MEDSReader.psf_mixture` raises an InputError.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np

from skyops.campaigns.balrog.gmix import Jacobian
from skyops.errors import InputError

REQUIRED_EXTENSIONS = ("object_data", "image_info", "image_cutouts", "weight_cutouts")
REQUIRED_COLUMNS = ("id", "box_size", "ra", "dec", "ncutout", "file_id", "start_row", "orig_row", "orig_col",
                    "orig_start_row", "orig_start_col", "cutout_row", "cutout_col", "dudrow", "dudcol", "dvdrow",
                    "dvdcol")
PSF_EXTENSIONS = ("psf", "psf_cutouts")
DEFAULT_MAGZP_REF = 30.0


@dataclass(frozen=True)
class Cutout:
    """One cutout of one object: pixels, inverse variance (bmask applied), seg, Jacobian, MEDS geometry."""

    image: np.ndarray
    weight: np.ndarray
    seg: np.ndarray | None
    jac: Jacobian
    file_id: int
    orig_row: float
    orig_col: float
    orig_start_row: int
    orig_start_col: int


class MEDSReader:
    """A MEDS file opened for reading (a context manager); see the module docstring for the layout."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"MEDS file {self.path} does not exist; check the path (balrog.meds writes "
                             "<tilename>_<band>_meds-<medsconf>.fits.fz under $MEDS_DIR/<medsconf>/<tilename>/)")
        try:
            self._fits = fitsio.FITS(str(self.path))
        except OSError as exc:
            raise InputError(f"MEDS file {self.path} is not a readable FITS file ({exc}); re-run balrog.meds") from None
        names = {h.get_extname() for h in self._fits}
        missing = [e for e in REQUIRED_EXTENSIONS if e not in names]
        if missing:
            self._fits.close()
            raise InputError(f"MEDS file {self.path} lacks extension(s) {', '.join(missing)}; a MEDS file has "
                             f"{', '.join(REQUIRED_EXTENSIONS)} (see skyops.campaigns.balrog.medsreader)")
        self.object_data = self._fits["object_data"].read()
        cols = set(self.object_data.dtype.names)
        lost = [c for c in REQUIRED_COLUMNS if c not in cols]
        if lost:
            self._fits.close()
            raise InputError(f"MEDS file {self.path}: object_data lacks column(s) {', '.join(lost)}; expected the "
                             "standard MEDS columns (see skyops.campaigns.balrog.medsreader)")
        self.image_info = self._fits["image_info"].read()
        self.metadata = self._fits["metadata"].read() if "metadata" in names else None
        self._seg = "seg_cutouts" in names
        self._bmask = "bmask_cutouts" in names
        self._psf_ext = next((e for e in PSF_EXTENSIONS if e in names), None)
        if self._psf_ext and "psf_start_row" not in cols:
            self._psf_ext = None

    def __enter__(self) -> "MEDSReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fits.close()

    @property
    def size(self) -> int:
        return len(self.object_data)

    @property
    def magzp_ref(self) -> float:
        if self.metadata is not None and "magzp_ref" in self.metadata.dtype.names:
            return float(self.metadata["magzp_ref"][0])
        return DEFAULT_MAGZP_REF

    @property
    def has_psf_images(self) -> bool:
        return self._psf_ext is not None

    def _check(self, iobj: int, icut: int) -> np.void:
        if not 0 <= iobj < self.size:
            raise InputError(f"MEDS file {self.path}: object index {iobj} is outside 0..{self.size - 1}")
        row = self.object_data[iobj]
        if not 0 <= icut < int(row["ncutout"]):
            raise InputError(f"MEDS file {self.path}: object {iobj} (id {row['id']}) has {row['ncutout']} cutouts; "
                             f"cutout {icut} does not exist")
        return row

    def _flat(self, ext: str, start: int, npix: int, shape: tuple[int, int]) -> np.ndarray:
        return self._fits[ext][start:start + npix].reshape(shape)

    def number(self, iobj: int) -> int:
        row = self.object_data[iobj]
        return int(row["number"]) if "number" in row.dtype.names else int(row["id"])

    def jacobian(self, iobj: int, icut: int) -> Jacobian:
        r = self._check(iobj, icut)
        return Jacobian(float(r["cutout_row"][icut]), float(r["cutout_col"][icut]), float(r["dudrow"][icut]),
                        float(r["dudcol"][icut]), float(r["dvdrow"][icut]), float(r["dvdcol"][icut]))

    def cutout(self, iobj: int, icut: int, mask_neighbours: bool = False) -> Cutout:
        """Cutout ``icut`` of object ``iobj``; ``mask_neighbours`` zeroes the weight of pixels that the
        seg map gives to another object (the SOF "uberseg"-style mask, minus its Voronoi refinement)."""
        r = self._check(iobj, icut)
        box = int(r["box_size"])
        start, npix = int(r["start_row"][icut]), box * box
        img = self._flat("image_cutouts", start, npix, (box, box)).astype(np.float64)
        wt = self._flat("weight_cutouts", start, npix, (box, box)).astype(np.float64)
        seg = self._flat("seg_cutouts", start, npix, (box, box)) if self._seg else None
        if self._bmask:
            wt[self._flat("bmask_cutouts", start, npix, (box, box)) != 0] = 0.0
        if mask_neighbours and seg is not None:
            wt[(seg != 0) & (seg != self.number(iobj))] = 0.0
        wt[~np.isfinite(img) | ~np.isfinite(wt) | (wt < 0)] = 0.0
        return Cutout(img, wt, seg, self.jacobian(iobj, icut), int(r["file_id"][icut]), float(r["orig_row"][icut]),
                      float(r["orig_col"][icut]), int(r["orig_start_row"][icut]), int(r["orig_start_col"][icut]))

    def psf_image(self, iobj: int, icut: int) -> tuple[np.ndarray, Jacobian] | None:
        """The PSF image of a cutout and its Jacobian (centred on the PSF centre); None without PSF images."""
        if self._psf_ext is None:
            return None
        r = self._check(iobj, icut)
        names = r.dtype.names
        if "psf_row_size" in names:
            shape = (int(r["psf_row_size"][icut]), int(r["psf_col_size"][icut]))
        elif "psf_box_size" in names:
            shape = (int(r["psf_box_size"][icut]),) * 2
        else:
            raise InputError(f"MEDS file {self.path}: has a {self._psf_ext!r} extension but object_data has neither "
                             "psf_box_size nor psf_row_size/psf_col_size; the writer must record the PSF image size")
        img = self._flat(self._psf_ext, int(r["psf_start_row"][icut]), shape[0] * shape[1], shape).astype(np.float64)
        crow = float(r["psf_cutout_row"][icut]) if "psf_cutout_row" in names else (shape[0] - 1) / 2.0
        ccol = float(r["psf_cutout_col"][icut]) if "psf_cutout_col" in names else (shape[1] - 1) / 2.0
        return img, self.jacobian(iobj, icut).recentred(crow, ccol)

    def psf_fwhm(self, iobj: int, icut: int) -> float:
        """The image_info ``psf_fwhm`` (arcsec) of the cutout's source image (the no-PSF-image fallback)."""
        r = self._check(iobj, icut)
        if "psf_fwhm" not in (self.image_info.dtype.names or ()):
            raise InputError(f"MEDS file {self.path} has no PSF images (no 'psf' extension with psf_start_row) and "
                             "image_info has no 'psf_fwhm' column: the measurement needs one of them; re-run "
                             "balrog.meds with PSF cutouts")
        fwhm = float(self.image_info["psf_fwhm"][int(r["file_id"][icut])])
        if not (math.isfinite(fwhm) and fwhm > 0):
            raise InputError(f"MEDS file {self.path}: image_info psf_fwhm of file_id {int(r['file_id'][icut])} is "
                             f"{fwhm!r}; expected a positive FWHM in arcsec")
        return fwhm

    def epoch_indices(self, iobj: int, use_coadd: bool = False) -> list[int]:
        """The cutouts to measure: the single epochs (1..ncutout-1), or the coadd alone if there are none."""
        n = int(self.object_data["ncutout"][iobj])
        if use_coadd or n == 1:
            return [0] if n >= 1 else []
        return list(range(1, n))
