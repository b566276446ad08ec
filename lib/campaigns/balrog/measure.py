"""``balrog.measure``: SOF, MOF and metacalibration of every object of a tile's MEDS files.

Inputs are one MEDS file per band (same objects in the same order, as desmeds writes them; layout
in :mod:`medsreader`). For every object, every single-epoch cutout of every band becomes an
:class:`fitter.Epoch` with its own Jacobian and PSF mixture (fitted to the cutout's PSF image, or a
Gaussian of ``image_info['psf_fwhm']``). Then, per friends-of-friends group of overlapping objects:

* ``sof``: one joint fit of ``model`` (default bdf) per object, neighbours' seg-map pixels masked;
* ``mof``: the group refitted with neighbours' models subtracted until it converges (:mod:`mof`);
* ``metacal``: metacalibration (:mod:`metacal`) of the object's cutouts -- the MOF-subtracted ones
  when MOF ran, as the DES "shr" runs use MOF outputs -- giving g and the 2x2 response R.

Output (``output``, filetype ``balrog_measure``): one FITS table, one row per object: ``id``,
``number``, ``ra``, ``dec``, ``group_id``, ``group_size``, ``nepoch[nband]``, and per method
``<m>_flags``, ``<m>_flux[nband]``, ``<m>_flux_err[nband]``, ``<m>_mag[nband]`` (zeropoint
``magzp_ref`` of the MEDS metadata), ``<m>_mag_err[nband]``, ``<m>_g[2]``, ``<m>_g_cov[2,2]``,
``<m>_T``, ``<m>_T_err``, ``<m>_fracdev``, ``<m>_chi2per``, ``<m>_niter`` for m in sof, mof;
``mcal_flags``, ``mcal_g[2]`` (noshear), ``mcal_g_1p[2]``, ``mcal_g_1m[2]``, ``mcal_g_2p[2]``,
``mcal_g_2m[2]``, ``mcal_R11``, ``mcal_R12``, ``mcal_R21``, ``mcal_R22``, ``mcal_T``, ``mcal_s2n``,
``mcal_psf_T``. The header records BANDS, MODEL, MAGZP and what was run.
"""
from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np

from skyops.campaigns.balrog import metacal as mcal
from skyops.campaigns.balrog import mof
from skyops.campaigns.balrog.fitter import Epoch, FitResult, ObjectFitter
from skyops.campaigns.balrog.gmix import MODELS
from skyops.campaigns.balrog.medsreader import MEDSReader
from skyops.campaigns.balrog.psfmix import fit_psf, gaussian_psf
from skyops.errors import InputError, StepParameterError
from skyops.steps.context import StepContext
from skyops.steps.registry import step

METHODS = ("sof", "mof", "metacal")
STEP_NAME = "balrog.measure"
log = logging.getLogger(__name__)


def _param_error(param: str, msg: str) -> StepParameterError:
    return StepParameterError(f"step '{STEP_NAME}': parameter '{param}': {msg}")


def check_params(meds: list[str], bands: list[str] | None, measure: list[str], model: str, ncpu: int,
                 psf_ngauss: int) -> list[str]:
    """Validate the step's parameters; returns the band names."""
    if not meds:
        raise _param_error("meds", "no MEDS files given; expected one path per band, e.g. "
                           "['DES0239+0216_g_meds-y3v02.fits.fz', ...]")
    bad = [m for m in measure if m not in METHODS]
    if bad or not measure:
        raise _param_error("measure", f"{bad or measure!r} is not a list of methods; expected a non-empty subset of "
                           f"{', '.join(METHODS)}")
    if model not in MODELS:
        raise _param_error("model", f"{model!r} is not a model; expected one of {', '.join(MODELS)}")
    if ncpu < 1:
        raise _param_error("ncpu", f"{ncpu} must be at least 1")
    if not 1 <= psf_ngauss <= 6:
        raise _param_error("psf_ngauss", f"{psf_ngauss} is out of range; expected 1..6 (3 is usual)")
    if bands is None:
        return [f"b{i}" for i in range(len(meds))]
    if len(bands) != len(meds):
        raise _param_error("bands", f"{len(bands)} bands for {len(meds)} MEDS files; give one band per file")
    return list(bands)


# ------------------------------------------------------------------------------------------------
# reading one object's epochs
# ------------------------------------------------------------------------------------------------

class TileData:
    """The per-band MEDS files of a tile, and the objects' epochs read from them (PSF fits cached)."""

    def __init__(self, paths: list[str], psf_ngauss: int = 3, use_coadd: bool = False) -> None:
        self.paths = paths
        self.readers = [MEDSReader(p) for p in paths]
        n = {r.size for r in self.readers}
        if len(n) != 1:
            sizes = ", ".join(f"{Path(p).name}: {r.size}" for p, r in zip(paths, self.readers))
            raise InputError(f"step '{STEP_NAME}': the MEDS files do not hold the same objects ({sizes}); give the "
                             "MEDS files of one tile and one realization, one per band")
        ids = [r.object_data["id"] for r in self.readers]
        if any(not np.array_equal(ids[0], i) for i in ids[1:]):
            raise InputError(f"step '{STEP_NAME}': the MEDS files list different object ids (or in another order); "
                             "they must come from one coadd catalog")
        self.psf_ngauss = psf_ngauss
        self.use_coadd = use_coadd
        self._psf_cache: dict[bytes, np.ndarray] = {}
        self.psf_fits = 0

    def close(self) -> None:
        for r in self.readers:
            r.close()

    @property
    def nobj(self) -> int:
        return self.readers[0].size

    @property
    def nband(self) -> int:
        return len(self.readers)

    def _psf_mixture(self, r: MEDSReader, iobj: int, icut: int) -> np.ndarray:
        got = r.psf_image(iobj, icut)
        if got is None:
            return gaussian_psf(r.psf_fwhm(iobj, icut))
        img, pjac = got
        key = hashlib.blake2b(img.tobytes() + pjac.array.tobytes(), digest_size=16).digest()
        if key not in self._psf_cache:
            self._psf_cache[key] = fit_psf(img, pjac, self.psf_ngauss).gmix
            self.psf_fits += 1
        return self._psf_cache[key]

    def epochs(self, iobj: int, mask_neighbours: bool) -> list[Epoch]:
        """Every measured cutout of object ``iobj`` in every band."""
        out = []
        for b, r in enumerate(self.readers):
            for icut in r.epoch_indices(iobj, self.use_coadd):
                c = r.cutout(iobj, icut, mask_neighbours)
                out.append(Epoch(c.image, c.weight, c.jac, self._psf_mixture(r, iobj, icut), b, c.file_id,
                                 c.orig_row, c.orig_col, c.orig_start_row, c.orig_start_col))
        return out

    def metacal_epochs(self, iobj: int, images: list[Epoch]) -> list[mcal.MetacalEpoch]:
        """The metacal inputs of an object: ``images`` (its epochs, possibly neighbour-subtracted) with the
        PSF images (a Gaussian image of psf_fwhm when the MEDS file has none)."""
        out = []
        k = 0
        for b, r in enumerate(self.readers):
            for icut in r.epoch_indices(iobj, self.use_coadd):
                e = images[k]
                k += 1
                got = r.psf_image(iobj, icut)
                if got is None:
                    import galsim

                    from skyops.campaigns.balrog.measuresim import psf_image

                    got = psf_image(galsim.Gaussian(fwhm=r.psf_fwhm(iobj, icut)), e.jac)
                out.append(mcal.MetacalEpoch(e.image, e.weight, e.jac, got[0], got[1], b))
        return out


# ------------------------------------------------------------------------------------------------
# the catalog
# ------------------------------------------------------------------------------------------------

def catalog_dtype(nband: int, measure: list[str]) -> list[tuple]:
    dt: list[tuple] = [("id", "i8"), ("number", "i4"), ("ra", "f8"), ("dec", "f8"), ("group_id", "i4"),
                       ("group_size", "i4"), ("nepoch", "i4", nband)]
    for m in ("sof", "mof"):
        if m in measure:
            dt += [(f"{m}_flags", "i4"), (f"{m}_flux", "f8", nband), (f"{m}_flux_err", "f8", nband),
                   (f"{m}_mag", "f8", nband), (f"{m}_mag_err", "f8", nband), (f"{m}_g", "f8", 2),
                   (f"{m}_g_cov", "f8", (2, 2)), (f"{m}_T", "f8"), (f"{m}_T_err", "f8"), (f"{m}_fracdev", "f8"),
                   (f"{m}_chi2per", "f8"), (f"{m}_niter", "i4")]
    if "metacal" in measure:
        dt += [("mcal_flags", "i4"), ("mcal_g", "f8", 2)] + [(f"mcal_g_{t}", "f8", 2) for t in mcal.TYPES[1:]]
        dt += [(f"mcal_R{i}{j}", "f8") for i in (1, 2) for j in (1, 2)]
        dt += [("mcal_T", "f8"), ("mcal_s2n", "f8"), ("mcal_psf_T", "f8")]
    return dt


def _fill_fit(row: np.void, m: str, res: FitResult, magzp: float, niter: int | None = None) -> None:
    row[f"{m}_flags"] = res.flags
    f, fe = res.flux, res.flux_err
    row[f"{m}_flux"], row[f"{m}_flux_err"] = f, fe
    with np.errstate(divide="ignore", invalid="ignore"):
        row[f"{m}_mag"] = np.where(f > 0, magzp - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)
        row[f"{m}_mag_err"] = np.where(f > 0, 2.5 / math.log(10) * fe / np.abs(f), np.nan)
    row[f"{m}_g"] = res.g
    row[f"{m}_g_cov"] = res.cov[2:4, 2:4] if res.cov is not None else np.full((2, 2), np.nan)
    row[f"{m}_T"], row[f"{m}_T_err"] = res.T, res.errors[4]
    row[f"{m}_fracdev"] = res.pars[5]
    row[f"{m}_chi2per"] = res.chi2per
    row[f"{m}_niter"] = res.niter if niter is None else niter


@dataclass
class _Job:
    paths: list[str]
    groups: list[list[int]]
    group_ids: list[int]
    measure: list[str]
    model: str
    seed: int
    psf_ngauss: int
    mask_neighbours: bool
    use_coadd: bool
    nband: int


#: Seconds between progress lines of a measuring worker.
PROGRESS_EVERY_S = 20.0


def _measure_groups(job: _Job) -> tuple[np.ndarray, dict[str, float]]:
    """Measure some groups of objects; returns their catalog rows and timings (runs in a worker)."""
    data = TileData(job.paths, job.psf_ngauss, job.use_coadd)
    try:
        magzp = data.readers[0].magzp_ref
        od = data.readers[0].object_data
        rows = np.zeros(sum(len(g) for g in job.groups), dtype=catalog_dtype(job.nband, job.measure))
        times = {"read_psf": 0.0, "sof": 0.0, "mof": 0.0, "metacal": 0.0}
        k = 0
        t_start = t_report = time.perf_counter()
        for gid, members in zip(job.group_ids, job.groups):
            if time.perf_counter() - t_report > PROGRESS_EVERY_S:  # long work shows progress
                t_report = time.perf_counter()
                log.info("measured %d of %d objects (%.0f%%) in %.0f s", k, len(rows), 100.0 * k / max(1, len(rows)),
                         t_report - t_start)
            t0 = time.perf_counter()
            raw = [data.epochs(i, False) for i in members]
            masked = [data.epochs(i, True) for i in members] if job.mask_neighbours else raw
            times["read_psf"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            sof = [ObjectFitter(eps, job.nband, job.model).fit() for eps in masked]
            times["sof"] += time.perf_counter() - t0
            images = raw
            if "mof" in job.measure:
                t0 = time.perf_counter()
                # MOF starts from fits of the unmasked images' shapes: the SOF fits are a good guess
                mofres, npass = mof.fit_group(raw, sof, job.nband, job.model)
                times["mof"] += time.perf_counter() - t0
                if len(members) > 1:
                    images = [mof.subtract_neighbours(raw[a], [(raw[b], mofres[b]) for b in range(len(members))
                                                               if b != a]) for a in range(len(members))]
            for a, i in enumerate(members):
                row = rows[k]
                k += 1
                row["id"] = od["id"][i]
                row["number"] = data.readers[0].number(i)
                row["ra"], row["dec"] = od["ra"][i], od["dec"][i]
                row["group_id"], row["group_size"] = gid, len(members)
                row["nepoch"] = np.bincount([e.band for e in raw[a]], minlength=job.nband)
                if "sof" in job.measure:
                    _fill_fit(row, "sof", sof[a], magzp)
                if "mof" in job.measure:
                    _fill_fit(row, "mof", mofres[a], magzp, npass if len(members) > 1 else sof[a].niter)
                if "metacal" in job.measure:
                    t0 = time.perf_counter()
                    _fill_metacal(row, data, i, images[a], job)
                    times["metacal"] += time.perf_counter() - t0
        times["psf_fits"] = data.psf_fits
        return rows, times
    finally:
        data.close()


def _fill_metacal(row: np.void, data: TileData, iobj: int, images: list[Epoch], job: _Job) -> None:
    if not images:
        row["mcal_flags"] = 8
        return
    rng = np.random.default_rng([job.seed, int(row["id"]) & 0x7FFFFFFF])
    try:
        res = mcal.metacal_fit(data.metacal_epochs(iobj, images), job.nband, rng)
    except Exception as exc:  # noqa: BLE001 -- a GalSim failure on one object flags it, not the tile
        row["mcal_flags"] = 32
        log.warning("metacal failed for object id %d: %s", row["id"], exc)
        return
    row["mcal_flags"] = res.flags
    row["mcal_g"] = res.g
    for t in mcal.TYPES[1:]:
        row[f"mcal_g_{t}"] = res.fits[t].g
    row["mcal_R11"], row["mcal_R12"], row["mcal_R21"], row["mcal_R22"] = res.R.ravel()
    ns = res.fits["noshear"]
    row["mcal_T"] = ns.T
    with np.errstate(divide="ignore", invalid="ignore"):
        row["mcal_s2n"] = float(np.sqrt(np.nansum((ns.flux / ns.flux_err) ** 2)))
    row["mcal_psf_T"] = res.psf_T


def _split(groups: list[list[int]], nchunk: int) -> list[list[int]]:
    """Group indices dealt into ``nchunk`` lists of about equal object counts (largest groups first)."""
    order = sorted(range(len(groups)), key=lambda g: -len(groups[g]))
    chunks: list[list[int]] = [[] for _ in range(nchunk)]
    load = [0] * nchunk
    for g in order:
        c = int(np.argmin(load))
        chunks[c].append(g)
        load[c] += len(groups[g])
    return [c for c in chunks if c]


def measure_tile(paths: list[str], measure: list[str], model: str = "bdf", seed: int = 0, ncpu: int = 1,
                 psf_ngauss: int = 3, mask_neighbours: bool = True, use_coadd: bool = False,
                 group_radius: float | None = None) -> tuple[np.ndarray, dict[str, float], float]:
    """Measure every object of the MEDS files; (catalog rows in object order, timings, magzp_ref)."""
    data = TileData(paths, psf_ngauss, use_coadd)
    try:
        od = data.readers[0].object_data
        magzp = data.readers[0].magzp_ref
        if "mof" in measure:
            # cutouts overlap when centres are closer than a box: link at the mean of the two box sides
            scale = np.array([math.sqrt(data.readers[0].jacobian(i, 0).area) if od["ncutout"][i] else 0.263
                              for i in range(data.nobj)])
            radius = od["box_size"] * scale if group_radius is None else np.full(data.nobj, group_radius)
            grp = mof.groups(od["ra"], od["dec"], radius)
        else:
            grp = [[i] for i in range(data.nobj)]
    finally:
        data.close()
    gids = list(range(len(grp)))
    chunks = _split(grp, max(1, min(ncpu, len(grp)))) if grp else []
    jobs = [_Job(paths, [grp[g] for g in c], [gids[g] for g in c], measure, model, seed, psf_ngauss, mask_neighbours,
                 use_coadd, len(paths)) for c in chunks]
    if ncpu > 1 and len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
            results = pool.map(_measure_groups, jobs)
    else:
        results = [_measure_groups(j) for j in jobs]
    rows = np.concatenate([r[0] for r in results]) if results else np.zeros(0, catalog_dtype(len(paths), measure))
    times: dict[str, float] = {}
    for _, t in results:
        for key, v in t.items():
            times[key] = times.get(key, 0.0) + v
    order = np.argsort(np.searchsorted(od["id"], rows["id"]) if np.all(np.diff(od["id"]) > 0)
                       else [int(np.flatnonzero(od["id"] == i)[0]) for i in rows["id"]], kind="stable")
    return rows[order], times, magzp


@step(STEP_NAME, resources={"cpu": 1, "memory_mb": 4096, "scratch_mb": 512}, outputs=("balrog_measure",))
def measure(ctx: StepContext, *, meds: list[str], bands: list[str] | None = None, measure: list[str] = ["sof"],  # noqa: B006
            model: str = "bdf", seed: int = 0, ncpu: int = 1, psf_ngauss: int = 3, mask_neighbours: bool = True,
            use_coadd: bool = False, output: str = "balrog_measure.fits") -> dict[str, object]:
    """SOF / MOF / metacal photometry and shapes of every object in a tile's per-band MEDS files.

    ``meds``: one MEDS path per band (same objects, same order); ``bands``: their names (for the
    header); ``measure``: any of sof, mof, metacal; ``model``: gauss, exp, dev or bdf (SOF/MOF);
    ``seed``: metacal's noise fields; ``ncpu``: worker processes; ``psf_ngauss``: Gaussians per PSF
    mixture; ``mask_neighbours``: SOF ignores pixels the seg map gives to other objects;
    ``use_coadd``: fit the coadd cutout instead of the single epochs.
    """
    names = check_params(meds, bands, measure, model, ncpu, psf_ngauss)
    paths = []
    for i, p in enumerate(meds):
        path = ctx.path(p)
        if not path.is_file():
            raise InputError(f"step '{STEP_NAME}': parameter 'meds'[{i}]: {path} does not exist; run balrog.meds "
                             "for this tile (and realization) first, or fix the path")
        paths.append(str(ctx.use(path, "meds")))
    t0 = time.perf_counter()
    rows, times, magzp = measure_tile(paths, list(measure), model, seed, ncpu, psf_ngauss, mask_neighbours,
                                      use_coadd)
    wall = time.perf_counter() - t0
    header = [{"name": "BANDS", "value": ",".join(names), "comment": "band of each flux column entry"},
              {"name": "MODEL", "value": model, "comment": "SOF/MOF galaxy model"},
              {"name": "MAGZP", "value": magzp, "comment": "zeropoint of the mag columns"},
              {"name": "MEASURE", "value": ",".join(measure), "comment": "methods run"},
              {"name": "SEED", "value": seed, "comment": "metacal noise seed"}]
    with ctx.output(output, filetype="balrog_measure") as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
            f.write(rows, extname="OBJECTS", header=header)
    n = len(rows)
    ctx.metric("n_objects", n)
    ctx.metric("wall_s", round(wall, 3))
    for key, v in times.items():
        ctx.metric(f"{key}_s" if key != "psf_fits" else key, round(float(v), 3))
    for m in ("sof", "mof"):
        if m in measure and n:
            ctx.metric(f"{m}_ok_fraction", float(np.mean(rows[f"{m}_flags"] & (8 | 32 | 4) == 0)))
    ctx.log.info("balrog.measure: %d objects, %s, %.1f s", n, ",".join(measure), wall)
    return {"catalog": str(ctx.path(output)), "n_objects": n}
