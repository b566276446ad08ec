"""Running SExtractor, PSFEx and SWarp the same way from every campaign.

Each tool gets a complete command line: a config file is not needed (``-dd`` defaults
plus explicit ``-KEY value`` overrides), the output parameter list comes from a shipped
``configs/astromatic/<name>.param`` or an explicit list, and convolution filters are
written on the fly from a Gaussian FWHM, so a pod or a Condor job needs nothing beyond the
tool itself. Outputs are written under a temporary name and renamed when complete.

Pass ``ctx`` (a :class:`~skyops.steps.context.StepContext`) to record each tool's version
in ``result.json``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import fitsio
import numpy as np

from skyops.config import config_dir
from skyops.fileio import atomic_path
from skyops.tools import run_tool, tool_version

NNW_CANDIDATES = ("/usr/share/source-extractor/default.nnw", "/usr/share/sextractor/default.nnw")


def _run(name: str, args: list[str], cwd: Path, ctx: Any | None) -> str:
    if ctx is not None:
        return ctx.tool(name, args, cwd=cwd)
    tool_version(name)
    return run_tool(name, args, cwd=cwd)


def _overrides(config: Mapping[str, Any] | None) -> list[str]:
    out: list[str] = []
    for key, val in (config or {}).items():
        if isinstance(val, (list, tuple)):
            val = ",".join(str(v) for v in val)
        out += [f"-{key.upper()}", str(val)]
    return out


def param_file(params: Sequence[str] | str, workdir: Path) -> Path:
    """A ``.param`` file: a shipped one by name (``gw_se``) or one written from a list."""
    if isinstance(params, str):
        p = config_dir() / "astromatic" / (params if params.endswith(".param") else f"{params}.param")
        if not p.is_file():
            raise FileNotFoundError(f"SExtractor parameter list {p} not found")
        return p
    digest = hashlib.sha1("\n".join(params).encode()).hexdigest()[:10]
    p = workdir / f"sex_{digest}.param"
    p.write_text("\n".join(params) + "\n")
    return p


def gauss_conv_file(fwhm_pix: float, workdir: Path) -> Path:
    """A normalised Gaussian detection filter matched to the PSF FWHM (odd size ~ 2 FWHM)."""
    size = max(3, int(2 * np.ceil(fwhm_pix)) | 1)
    r = np.arange(size) - size // 2
    sig = fwhm_pix / 2.3548
    k = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / sig**2)
    p = workdir / f"gauss_{fwhm_pix:.2f}_{size}x{size}.conv"
    lines = ["CONV NORM", f"# {size}x{size} convolution mask of a gaussian PSF with FWHM = {fwhm_pix:.2f} pixels."]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in k / k.max()]
    p.write_text("\n".join(lines) + "\n")
    return p


def sextractor(image: Path | str, catalog: Path | str, *, params: Sequence[str] | str, workdir: Path,
               config: Mapping[str, Any] | None = None, weight: Path | str | None = None,
               detect_image: Path | str | None = None, detect_weight: Path | str | None = None,
               filter_fwhm: float | None = None, checkimages: Mapping[str, Path | str] | None = None,
               ctx: Any | None = None) -> Path:
    """Run SExtractor on ``image`` (dual mode when ``detect_image`` is given) into ``catalog``.

    ``image``/``weight`` may carry an HDU suffix (``file.fits[0]``). ``checkimages`` maps
    CHECKIMAGE_TYPE (``SEGMENTATION``, ``BACKGROUND``...) to output paths.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    catalog = Path(catalog)
    nnw = next((n for n in NNW_CANDIDATES if os.path.exists(n)), None)
    opts: dict[str, Any] = {"PARAMETERS_NAME": param_file(params, workdir), "VERBOSE_TYPE": "QUIET",
                            "CATALOG_TYPE": "FITS_LDAC"}
    if nnw:
        opts["STARNNW_NAME"] = nnw
    if filter_fwhm:
        opts.update(FILTER="Y", FILTER_NAME=gauss_conv_file(filter_fwhm, workdir))
    else:
        opts["FILTER"] = "N"
    if weight is not None:
        opts.update(WEIGHT_TYPE="MAP_WEIGHT" if detect_image is None else "MAP_WEIGHT,MAP_WEIGHT",
                    WEIGHT_IMAGE=weight if detect_image is None else f"{detect_weight or weight},{weight}")
    opts.update({k.upper(): v for k, v in (config or {}).items()})
    checks = dict(checkimages or {})
    tmp_checks = {}
    if checks:
        for kind, path in checks.items():
            tmp_checks[kind] = Path(path).with_name(f".{Path(path).name}.tmp.fits")
        opts["CHECKIMAGE_TYPE"] = list(checks)
        opts["CHECKIMAGE_NAME"] = [str(p) for p in tmp_checks.values()]
    target = f"{detect_image},{image}" if detect_image is not None else str(image)
    with atomic_path(catalog) as tmp:
        opts["CATALOG_NAME"] = tmp
        _run("source-extractor", [target] + _overrides(opts), workdir, ctx)
    for kind, tmpc in tmp_checks.items():
        os.replace(tmpc, checks[kind])
    return catalog


def psfex(ldac: Path | str, out_psf: Path | str, *, workdir: Path, config: Mapping[str, Any] | None = None,
          ctx: Any | None = None) -> Path:
    """Fit a PSFEx model to an LDAC catalog with VIGNETs; write it to ``out_psf``."""
    workdir = Path(workdir)
    ldac, out_psf = Path(ldac), Path(out_psf)
    outdir = workdir / f".psfex_{out_psf.stem}"
    outdir.mkdir(parents=True, exist_ok=True)
    opts = {"PSF_DIR": outdir, "PSF_SUFFIX": ".psf", "CHECKPLOT_TYPE": "NONE", "CHECKIMAGE_TYPE": "NONE",
            "WRITE_XML": "N", "VERBOSE_TYPE": "QUIET", "NTHREADS": 1}
    opts.update({k.upper(): v for k, v in (config or {}).items()})
    _run("psfex", [str(ldac)] + _overrides(opts), workdir, ctx)
    produced = outdir / (ldac.stem + ".psf")
    if not produced.exists():
        raise FileNotFoundError(f"PSFEx wrote no model for {ldac} in {outdir}")
    out_psf.parent.mkdir(parents=True, exist_ok=True)
    os.replace(produced, out_psf)
    return out_psf


def swarp(images: Sequence[Path | str], out_image: Path | str, out_weight: Path | str, *, workdir: Path,
          config: Mapping[str, Any] | None = None, weights: Sequence[Path | str] | None = None,
          ctx: Any | None = None) -> tuple[Path, Path]:
    """Resample and combine ``images`` with SWarp into ``out_image`` and ``out_weight``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out_image, out_weight = Path(out_image), Path(out_weight)
    lst = workdir / f".swarp_{out_image.stem}.lst"
    lst.write_text("\n".join(map(str, images)) + "\n")
    opts: dict[str, Any] = {"VERBOSE_TYPE": "QUIET", "WRITE_XML": "N", "NTHREADS": 1,
                            "RESAMPLE_DIR": workdir, "DELETE_TMPFILES": "Y", "WRITE_FILEINFO": "N"}
    if weights is not None:
        wl = workdir / f".swarp_{out_image.stem}_w.lst"
        wl.write_text("\n".join(map(str, weights)) + "\n")
        opts.update(WEIGHT_TYPE="MAP_WEIGHT", WEIGHT_IMAGE=f"@{wl}")
    opts.update({k.upper(): v for k, v in (config or {}).items()})
    with atomic_path(out_image) as ti, atomic_path(out_weight) as tw:
        opts.update(IMAGEOUT_NAME=ti, WEIGHTOUT_NAME=tw)
        _run("SWarp", [f"@{lst}"] + _overrides(opts), workdir, ctx)
    return out_image, out_weight


def read_ldac(path: Path | str) -> np.ndarray:
    """The objects table of a FITS_LDAC catalog (``LDAC_OBJECTS``), or of a plain FITS table."""
    with fitsio.FITS(str(path)) as f:
        names = [h.get_extname() for h in f]
        ext = names.index("LDAC_OBJECTS") if "LDAC_OBJECTS" in names else 1
        return f[ext].read()


def read_config(config: Path | str) -> dict[str, str]:
    """A shipped Astromatic config (``configs/astromatic/<name>.sex``, or a path) as ``{KEY: value}``.

    For passing a campaign's ``.sex`` file through :func:`sextractor`'s ``config`` overrides, so
    the keys are readable in one file and every run stays a complete command line.
    """
    p = Path(config)
    if not p.is_file():
        p = config_dir() / "astromatic" / (str(config) if str(config).endswith(".sex") else f"{config}.sex")
    if not p.is_file():
        raise FileNotFoundError(f"Astromatic config {config} not found (looked for {p})")
    out: dict[str, str] = {}
    for line in p.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, val = line.partition(" ")
            out[key.upper()] = val.strip()
    return out
