"""Where simulated files live in the archive: DESDM's path and file-name conventions.

Paths are relative to the archive root (``file://`` root of the platform config); each
function returns an :class:`ArchiveFile` (folder, file name, DESDM filetype), which is
exactly what FILE_ARCHIVE_INFO stores (``path`` + ``filename``, no compression: files are
written uncompressed).

====================  ===========================================================================
filetype              path / filename
====================  ===========================================================================
raw                   ``DTS/raw/<nite>/DECam_<expnum:08d>.fits`` (one MEF per exposure, HDU per CCD)
red_immask            ``OPS/finalcut/<campaign>/<nite>-r<reqnum>/D<expnum:08d>/p<att:02d>/red/immask/``
                      ``D<expnum:08d>_<band>_c<ccd:02d>_r<reqnum>p<att:02d>_immasked.fits``
cal_biascor           ``OPS/precal/<nite>-r<reqnum>/p<att:02d>/biascor/``
                      ``D_n<nite>_c<ccd:02d>_r<reqnum>p<att:02d>_biascor.fits``
cal_norm_dflatcor     ``OPS/precal/<nite>-r<reqnum>/p<att:02d>/norm-dflatcor/``
                      ``D_n<nite>_<band>_c<ccd:02d>_r<reqnum>p<att:02d>_norm-dflatcor.fits``
cal_bpm               ``OPS/cal/bpm/<nite>-r<reqnum>/D_n<nite>_c<ccd:02d>_r<reqnum>p<att:02d>_bpm.fits``
cal_refcat            ``OPS/cal/refcat/<name>.fits`` (GAIA-like catalog of the whole footprint)
sim_truth             ``SIM/truth/...`` (see :mod:`skyops.sim.truth`)
====================  ===========================================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from skyops.sim.exposure_spec import ExposureSpec

TRUTH_DIR = "SIM/truth"


@dataclass(frozen=True)
class ArchiveFile:
    """One file's place in the archive (as FILE_ARCHIVE_INFO has it) and its DESDM filetype."""

    path: str  # folder relative to the archive root, no trailing slash
    filename: str
    filetype: str

    @property
    def relpath(self) -> str:
        return str(PurePosixPath(self.path) / self.filename)


@dataclass(frozen=True)
class CalibRun:
    """A precal processing run whose master calibrations serve one night."""

    nite: str
    reqnum: int
    attnum: int = 1

    @property
    def tag(self) -> str:
        return f"r{self.reqnum}p{self.attnum:02d}"


def red_immask(spec: ExposureSpec, ccdnum: int) -> ArchiveFile:
    rp = f"r{spec.reqnum}p{spec.attnum:02d}"
    path = (f"OPS/finalcut/{spec.campaign}/{spec.nite}-r{spec.reqnum}/{spec.unitname}/p{spec.attnum:02d}"
            f"/red/immask")
    return ArchiveFile(path, f"{spec.unitname}_{spec.band}_c{ccdnum:02d}_{rp}_immasked.fits", "red_immask")


def finalcut_archive_path(spec: ExposureSpec) -> str:
    """PFW_ATTEMPT.ARCHIVE_PATH of the exposure's finalcut attempt."""
    return f"OPS/finalcut/{spec.campaign}/{spec.nite}-r{spec.reqnum}/{spec.unitname}/p{spec.attnum:02d}"


def raw(spec: ExposureSpec) -> ArchiveFile:
    return ArchiveFile(f"DTS/raw/{spec.nite}", raw_filename(spec.expnum), "raw")


def raw_filename(expnum: int) -> str:
    return f"DECam_{expnum:08d}.fits"


def precal_path(cal: CalibRun) -> str:
    return f"OPS/precal/{cal.nite}-r{cal.reqnum}/p{cal.attnum:02d}"


def biascor(cal: CalibRun, ccdnum: int) -> ArchiveFile:
    return ArchiveFile(f"{precal_path(cal)}/biascor",
                       f"D_n{cal.nite}_c{ccdnum:02d}_{cal.tag}_biascor.fits", "cal_biascor")


def flatcor(cal: CalibRun, band: str, ccdnum: int) -> ArchiveFile:
    return ArchiveFile(f"{precal_path(cal)}/norm-dflatcor",
                       f"D_n{cal.nite}_{band}_c{ccdnum:02d}_{cal.tag}_norm-dflatcor.fits", "cal_norm_dflatcor")


def bpm(cal: CalibRun, ccdnum: int) -> ArchiveFile:
    return ArchiveFile(f"OPS/cal/bpm/{cal.nite}-r{cal.reqnum}",
                       f"D_n{cal.nite}_c{ccdnum:02d}_{cal.tag}_bpm.fits", "cal_bpm")


def refcat(name: str) -> ArchiveFile:
    return ArchiveFile("OPS/cal/refcat", f"{name}.fits", "cal_refcat")


def truth(name: str, sub: str = "") -> ArchiveFile:
    path = f"{TRUTH_DIR}/{sub}".rstrip("/")
    return ArchiveFile(path, name, "sim_truth")
