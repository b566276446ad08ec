"""Reading NOIRLab Community Pipeline InstCal MEFs the way kred does.

One MEF is one DECam exposure: a header-only primary HDU (EXPNUM, FILTER, EXPTIME, MAGZERO
...) and one image HDU per CCD (EXTNAME = DETPOS, CCDNUM, a TAN WCS, and the CP's footprint
keys ``CENRA1 CENDEC1 COR1RA1 .. COR4DEC1``). Nothing here reads pixels unless asked.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import fitsio
import numpy as np

from skyops.campaigns.magellanic.layout import KredTree, UnknownFieldError
from skyops.errors import InputError

#: Primary keywords kred needs (FILTER and EXPTIME group the overlaps; MAGZERO rescales).
PRIMARY_KEYS = ("EXPNUM", "FILTER", "EXPTIME", "MJD-OBS", "MAGZERO")
#: Per-CCD keywords kred needs: identity, the WCS, and the corners FindOverlaps reads.
CCD_KEYS = ("CCDNUM", "DETPOS", "CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
            "CD1_1", "CD1_2", "CD2_1", "CD2_2") + tuple(f"COR{i}{c}1" for i in range(1, 5) for c in ("RA", "DEC"))
WCS_KEYS = ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2",
            "CD2_1", "CD2_2", "EQUINOX", "RADESYS")


class MefReadError(InputError):
    """A MEF cannot be opened or lacks what kred needs."""


def band_of(header: fitsio.FITSHDR | dict) -> str:
    """The short filter name: ``BAND`` when present, else the first word of ``FILTER`` (``N662``)."""
    band = str(header.get("BAND", "") or "").strip()
    if band:
        return band
    return str(header.get("FILTER", "") or "").strip().split(" ")[0]


@dataclass(frozen=True)
class Exposure:
    """What kred uses of an MEF's primary header."""

    path: Path
    expnum: int
    band: str
    exptime: float
    mjd_obs: float
    magzero: float
    airmass: float

    @classmethod
    def read(cls, path: Path, header: fitsio.FITSHDR | None = None) -> "Exposure":
        h = header if header is not None else read_primary(path)
        missing = [k for k in PRIMARY_KEYS if k not in h]
        if missing:
            raise MefReadError(f"{path}: primary header lacks {', '.join(missing)}; MefCheck lists the "
                               "problems of every MEF of the field")
        return cls(Path(path), int(h["EXPNUM"]), band_of(h), float(h["EXPTIME"]), float(h["MJD-OBS"]),
                   float(h["MAGZERO"]), float(h.get("AIRMASS", np.nan)))


def read_primary(path: Path) -> fitsio.FITSHDR:
    try:
        return fitsio.read_header(str(path), ext=0)
    except (OSError, ValueError) as exc:
        raise MefReadError(f"{path}: cannot read the primary header ({exc}); re-stage the file") from None


def ccd_hdus(fits: fitsio.FITS) -> Iterator[fitsio.hdu.ImageHDU]:
    """The image HDUs holding CCDs (every extension with data)."""
    for hdu in list(fits)[1:]:
        if hdu.get_exttype() == "IMAGE_HDU" and hdu.get_dims():
            yield hdu


def header_wcs(h: fitsio.FITSHDR | dict):
    """The CCD's celestial WCS (an astropy WCS) from its header's WCS keywords.

    Imported here, not at module level: astropy.wcs costs a task's start-up time, and most
    steps never need it.
    """
    from astropy.wcs import WCS

    return WCS({k: h[k] for k in WCS_KEYS if k in h} | {"NAXIS": 2, "NAXIS1": h.get("NAXIS1", h.get("ZNAXIS1")),
                                                          "NAXIS2": h.get("NAXIS2", h.get("ZNAXIS2"))})


def corners(h: fitsio.FITSHDR | dict) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec of the CCD's four corners: the CP's COR keys, or the WCS at the pixel corners."""
    if all(f"COR{i}RA1" in h and f"COR{i}DEC1" in h for i in range(1, 5)):
        return (np.array([float(h[f"COR{i}RA1"]) for i in range(1, 5)]),
                np.array([float(h[f"COR{i}DEC1"]) for i in range(1, 5)]))
    nx, ny = int(h.get("NAXIS1", h.get("ZNAXIS1"))), int(h.get("NAXIS2", h.get("ZNAXIS2")))
    ra, dec = header_wcs(h).all_pix2world([0.5, nx + 0.5, nx + 0.5, 0.5], [0.5, 0.5, ny + 0.5, ny + 0.5], 1)
    return np.asarray(ra, float), np.asarray(dec, float)


def locate_mef(tree: KredTree, mef: str | Path) -> Path:
    """The path of MEF ``mef`` (a name in ``DECam_MEF/<field>/`` or a path), checked to exist."""
    if not tree.mef_dir.is_dir():
        raise UnknownFieldError(f"field {tree.field!r}: no MEF directory {tree.mef_dir}; check the field name "
                                "or stage the field's DECam_MEF tree into the kred directory first")
    path = Path(mef) if Path(mef).is_absolute() else tree.mef_dir / str(mef)
    if not path.is_file():
        have = [p.name for p in tree.mef_files()]
        raise MefReadError(f"MEF {str(mef)!r} is not in {tree.mef_dir} (field {tree.field} has {len(have)} MEFs"
                           f"{': ' + ', '.join(have[:4]) + (' ...' if len(have) > 4 else '') if have else ''})")
    return path
