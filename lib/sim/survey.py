"""The survey: a preset plus a seed, turned into exposures, catalogs and files.

:class:`Survey` is the deterministic top level. It plans the exposures of the preset's
nights (observing conditions drawn per exposure), generates the static sky (stars and their
reference catalog, galaxies) over the footprint, lays each search night's transients, and
renders and writes any exposure, night or the whole survey under an archive root:

    s = Survey("demo", seed=42)                  # or Survey("demo", 42, noise=False, ccd_shape=(64, 128))
    s.render_ccd(668439, 28)                     # one CCD in memory (CCDProduct), nothing written
    s.make_exposure(668439, root, ccds=[1, 28])  # red_immask files (+ raw MEF) + per-exposure truth
    s.make_night("20170817", root)               # calibrations + every exposure of the night
    s.build(root)                                # catalogs, every night, merged truth tables
    Survey("demo", 42, raw_only_templates=True)  # templates as raw + night calibrations, no finalcut

A CCD's pixels depend only on (seed, preset, expnum, ccdnum): building CCDs alone, in
another order or in worker processes gives byte-identical files.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from skyops.errors import SimulationError
from skyops.sim import layout, products
from skyops.sim.ccd import Detector, defects, flat_response, master_bias, master_flat
from skyops.sim.exposure import CCDProduct, ExposureScene, render_ccd
from skyops.sim.exposure_spec import SEARCH, ExposureSpec, nite_to_mjd
from skyops.sim.fitswrite import HDU, write_table
from skyops.sim.focalplane import ALL_CCDS, FocalPlane
from skyops.sim.galaxies import make_galaxies
from skyops.sim.photometry import exposure_zeropoint, sky_electrons
from skyops.sim.presets import NightPlan, Preset, get_preset
from skyops.sim.psf import PSFModel
from skyops.sim.refcat import make_stars
from skyops.sim.seeding import rng
from skyops.sim.skycells import cells_near
from skyops.sim.transients import make_transients
from skyops.sim.truth import CCD_DTYPE, OBJECT_DTYPE, TRANSIENT_DTYPE, TRANSIENT_TRUTH_DTYPE, concat

log = logging.getLogger(__name__)

#: Called as progress(stage, done, total) while building ("calib 20170817", "D00668439", ...).
Progress = Callable[[str, int, int], None]
FORMAT_VERSION = "skyops-sim/1"


@dataclass
class ExposureResult:
    """What :meth:`Survey.make_exposure` wrote, and the truth of the CCDs it built."""

    spec: ExposureSpec
    files: list[products.WrittenFile]
    ccds: np.ndarray  # CCD_DTYPE
    objects: np.ndarray  # OBJECT_DTYPE
    transients: np.ndarray  # TRANSIENT_TRUTH_DTYPE
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class NightResult:
    nite: str
    calibrations: list[products.WrittenFile]
    exposures: list[ExposureResult]

    @property
    def files(self) -> list[products.WrittenFile]:
        return self.calibrations + [f for e in self.exposures for f in e.files]


@dataclass
class BuildResult:
    """Everything :meth:`Survey.build` wrote."""

    catalogs: list[products.WrittenFile]
    nights: list[NightResult]
    truth: list[products.WrittenFile]

    @property
    def exposures(self) -> list[ExposureResult]:
        return [e for n in self.nights for e in n.exposures]

    @property
    def files(self) -> list[products.WrittenFile]:
        return self.catalogs + [f for n in self.nights for f in n.files] + self.truth


class Survey:
    """A deterministic synthetic DECam survey: ``preset`` (name or :class:`Preset`) and ``seed``.

    Keyword overrides change the preset (``ccd_shape``, ``star_density``, ...) or its
    :class:`~skyops.sim.exposure.SimOptions` (``noise=False``, ``defects=False``,
    ``astrometric_offset_sigma=0`` ...).

    ``raw_only_templates``: template exposures that DESDM never processed (True: every
    template exposure; or their expnums). They are written as raw exposures with their night's
    master calibrations, and without finalcut products (no red_immask, IMAGE or ZEROPOINT
    rows): the GW campaign must run SE on them before differencing. Their pixels are those of
    the same exposures in the default survey; every other exposure is unchanged, byte for byte.
    """

    def __init__(self, preset: str | Preset = "demo", seed: int = 42, *,
                 raw_only_templates: bool | Iterable[int] = False, **overrides: object) -> None:
        p = get_preset(preset)
        if overrides:
            p = p.replace(**overrides)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise SimulationError(f"seed must be a non-negative integer, got {seed!r}")
        self.preset = p
        self.seed = int(seed)
        self.fp = FocalPlane(p.ccd_shape)
        self.raw_only: frozenset[int] = _raw_only_expnums(p, raw_only_templates)
        self.exposures: dict[int, ExposureSpec] = self._plan()
        self._transients: dict[str, np.ndarray] = {}
        self._scenes: dict[int, ExposureScene] = {}

    def __repr__(self) -> str:
        return f"Survey({self.preset.name!r}, seed={self.seed}, ccd_shape={self.fp.ccd_shape})"

    # ---------------------------------------------------------------- planning
    def _plan(self) -> dict[int, ExposureSpec]:
        p = self.preset
        out: dict[int, ExposureSpec] = {}
        for night in p.nights:
            f = p.field_named(night.field)
            for i, expnum in enumerate(night.expnums):
                if expnum in out:
                    raise SimulationError(f"preset {p.name!r}: exposure {expnum} appears twice")
                g = rng(self.seed, "conditions", expnum)
                dx, dy = night.dithers_arcsec[i] if i < len(night.dithers_arcsec) else (0.0, 0.0)
                dec = f.dec + dy / 3600.0
                ra = (f.ra + dx / 3600.0 / np.cos(np.radians(f.dec))) % 360.0
                mjd = nite_to_mjd(night.nite) + (night.start_hour_ut + i * (night.exptime + 30.0) / 3600.0) / 24.0
                out[expnum] = ExposureSpec(
                    expnum=expnum, nite=night.nite, mjd_obs=round(mjd, 8), band=night.band, exptime=night.exptime,
                    telra=round(ra, 7), teldec=round(dec, 7), kind=night.kind, field=f.name, program=night.program,
                    propid=night.propid, object=f"{f.name} {night.band}", airmass=round(g.uniform(*p.airmass_range), 3),
                    seeing=round(g.uniform(*(night.seeing_range or p.seeing_range)), 3),
                    transparency=round(g.uniform(*(night.transparency_range or p.transparency_range)), 4),
                    sky_factor=round(g.uniform(*(night.sky_factor_range or p.sky_factor_range)), 4),
                    sky_gradient=(round(float(g.normal(0, 0.01)), 5), round(float(g.normal(0, 0.01)), 5)),
                    campaign=night.campaign, reqnum=night.reqnum, attnum=night.attnum,
                    raw=night.raw or expnum in self.raw_only, tags=night.tags,
                )
        return dict(sorted(out.items(), key=lambda kv: (kv[1].mjd_obs, kv[0])))

    @property
    def nites(self) -> list[str]:
        return list(dict.fromkeys(s.nite for s in self.exposures.values()))

    def exposure(self, expnum: int) -> ExposureSpec:
        try:
            return self.exposures[int(expnum)]
        except (KeyError, ValueError, TypeError):
            raise SimulationError(
                f"exposure {expnum!r} is not in preset {self.preset.name!r}; it has {sorted(self.exposures)}"
            ) from None

    def night(self, nite: str) -> NightPlan:
        plans = [n for n in self.preset.nights if n.nite == str(nite)]
        if not plans:
            raise SimulationError(f"night {nite!r} is not in preset {self.preset.name!r}; it has {self.nites}")
        return plans[0]

    def night_exposures(self, nite: str) -> list[ExposureSpec]:
        self.night(nite)
        return [s for s in self.exposures.values() if s.nite == str(nite)]

    def has_finalcut(self, expnum: int) -> bool:
        """Whether DESDM processed the exposure (red_immask CCDs); not so for raw-only templates."""
        return int(expnum) not in self.raw_only

    def night_has_raw(self, nite: str) -> bool:
        """Whether the night has raw exposures, and so master calibrations, in the archive."""
        return self.night(nite).raw or any(s.raw for s in self.night_exposures(nite))

    def calib_run(self, nite: str) -> layout.CalibRun:
        n = self.night(nite)
        return layout.CalibRun(n.nite, n.calib_reqnum or n.reqnum, 1)

    # ---------------------------------------------------------------- the sky
    @cached_property
    def cells(self) -> list[tuple[int, int]]:
        pointings = [(s.telra, s.teldec) for s in self.exposures.values()]
        return cells_near(pointings, self.fp.radius_deg * 1.1 + 0.02)

    @cached_property
    def _stars_refcat(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.preset
        return make_stars(self.seed, self.cells, p.star_density, p.star_mag_range)

    @property
    def stars(self) -> np.ndarray:
        """True stars over the footprint (:data:`~skyops.sim.refcat.STAR_DTYPE`)."""
        return self._stars_refcat[0]

    @property
    def refcat(self) -> np.ndarray:
        """The GAIA-like reference catalog (:data:`~skyops.sim.refcat.REFCAT_DTYPE`)."""
        return self._stars_refcat[1]

    @cached_property
    def galaxies(self) -> np.ndarray:
        p = self.preset
        return make_galaxies(self.seed, self.cells, p.galaxy_density, p.galaxy_mag_range)

    def transients(self, nite: str) -> np.ndarray:
        """The transients of a search night (empty for template nights), sorted by id."""
        cache = self._transients
        if nite not in cache:
            searches = [s for s in self.night_exposures(nite) if s.kind == SEARCH]
            if not searches or self.preset.transients_per_ccd <= 0:
                cache[nite] = np.zeros(0, TRANSIENT_DTYPE)
            else:
                ref = searches[0]
                p = self.preset
                psf = PSFModel.random(self.seed, ref.expnum, ref.seeing, p.options.psf_beta)
                zp = exposure_zeropoint(ref.band, ref.exptime, ref.airmass, ref.transparency)
                sky = sky_electrons(ref.band, ref.exptime, self.fp.pixel_scale, ref.sky_factor)
                cache[nite] = make_transients(self.seed, ref, self.fp, psf, zp, sky, self.galaxies,
                                              p.transients_per_ccd, p.transient_snr_range, p.host_fraction)
        return cache[nite]

    @property
    def transient_catalog(self) -> np.ndarray:
        return concat([self.transients(n) for n in self.nites], TRANSIENT_DTYPE)

    # ---------------------------------------------------------------- rendering
    def scene(self, expnum: int) -> ExposureScene:
        spec = self.exposure(expnum)
        cache = self._scenes
        if expnum not in cache:
            cache.clear()  # one exposure at a time: scenes of full-size surveys are large
            tr = self.transients(spec.nite) if spec.kind == SEARCH else None
            cache[expnum] = ExposureScene.build(spec, self.seed, self.fp, self.preset.options, self.stars,
                                                self.galaxies, tr)
        return cache[expnum]

    def render_ccd(self, expnum: int, ccdnum: int, raw: bool | None = None) -> CCDProduct:
        """One CCD's products in memory (nothing written)."""
        spec = self.exposure(expnum)
        self.fp.ccd(ccdnum)
        return render_ccd(self.scene(expnum), int(ccdnum), spec.raw if raw is None else raw)

    # ---------------------------------------------------------------- writing
    def make_exposure(self, expnum: int, root: str | Path, *, ccds: Iterable[int] | None = None,
                      raw: bool | None = None, workers: int = 1, progress: Progress | None = None) -> ExposureResult:
        """Write the exposure's red_immask CCDs (and its raw MEF) under ``root``, with its truth.

        A raw-only template (``raw_only_templates``) gets its raw MEF and no red_immask.
        With ``ccds`` only those CCDs are built (the raw MEF then holds only their HDUs, and
        the exposure's truth files only their rows). ``workers > 1`` renders CCDs in forked
        processes; the bytes are the same.
        """
        spec = self.exposure(expnum)
        root = Path(root)
        ccd_list = _ccd_list(self.fp, ccds)
        want_raw = spec.raw if raw is None else bool(raw)
        want_red = self.has_finalcut(expnum)
        if not (want_raw or want_red):
            raise SimulationError(f"exposure {expnum} is a raw-only template: raw=False would write nothing")
        scene = self.scene(expnum)
        files: list[products.WrittenFile] = []
        truth_rows, objects, trans = [], [], []
        writer = products.RawWriter(root, spec) if want_raw else None
        timings = {"render": 0.0, "write": 0.0}
        try:
            for i, job in enumerate(_run_jobs(scene, root, ccd_list, want_raw, workers, want_red)):
                if job.red is not None:
                    files.append(job.red)
                t = time.perf_counter()
                if writer is not None:
                    writer.add(job.raw_hdu)
                timings["write"] += time.perf_counter() - t + job.write_s
                timings["render"] += job.render_s
                truth_rows.append(job.truth)
                objects.append(job.objects)
                trans.append(job.transients)
                if progress:
                    progress(spec.unitname, i + 1, len(ccd_list))
        except BaseException as exc:
            if writer is not None:
                writer.abort(exc)
            raise
        if writer is not None:
            files.append(writer.close())
        result = ExposureResult(spec, files, np.array(truth_rows, dtype=CCD_DTYPE), concat(objects, OBJECT_DTYPE),
                                concat(trans, TRANSIENT_TRUTH_DTYPE), timings)
        result.files += self._write_exposure_truth(root, result)
        log.info("wrote exposure %s: %d CCDs, %d files", spec.unitname, len(ccd_list), len(result.files))
        return result

    def make_calibrations(self, nite: str, root: str | Path, *, ccds: Iterable[int] | None = None,
                          progress: Progress | None = None) -> list[products.WrittenFile]:
        """The night's master bias, flat (each band observed) and BPM, one file per CCD each."""
        root = Path(root)
        cal = self.calib_run(nite)
        bands = sorted({s.band for s in self.night_exposures(nite)})
        noise = self.preset.options.noise
        out: list[products.WrittenFile] = []
        ccd_list = _ccd_list(self.fp, ccds)
        for i, num in enumerate(ccd_list):
            ccd = self.fp.ccd(num)
            det = Detector.for_ccd(self.seed, ccd, self.preset.options.zp_scatter)
            out.append(products.write_biascor(root, cal, ccd, det, master_bias(self.seed, det, cal.nite, noise)))
            for b in bands:
                true_flat = flat_response(self.seed, self.fp, ccd, b)
                flat = master_flat(self.seed, self.fp, ccd, b, cal.nite, noise, true_flat)
                out.append(products.write_flatcor(root, cal, b, ccd, det, flat))
            bpm = defects(self.seed, det, ccd.bad, self.preset.options.defects).bpm
            out.append(products.write_bpm(root, cal, ccd, det, bpm))
            if progress:
                progress(f"calib {nite}", i + 1, len(ccd_list))
        return out

    def make_night(self, nite: str, root: str | Path, *, ccds: Iterable[int] | None = None, workers: int = 1,
                   progress: Progress | None = None) -> NightResult:
        """Calibrations (for a raw night) and every exposure of the night."""
        nite = str(nite)
        cals = self.make_calibrations(nite, root, ccds=ccds, progress=progress) if self.night_has_raw(nite) else []
        exps = [self.make_exposure(s.expnum, root, ccds=ccds, workers=workers, progress=progress)
                for s in self.night_exposures(nite)]
        return NightResult(nite, cals, exps)

    def write_catalogs(self, root: str | Path) -> list[products.WrittenFile]:
        """The reference catalog (archived) and the static truth catalogs."""
        root = Path(root)
        cards = self._truth_cards()
        out = []
        ref = layout.refcat(self.refcat_name)
        write_table(root / ref.relpath, self.refcat, "REFCAT", cards + [
            ("REFCAT", "GAIA-DR2-like (simulated)", "Reference catalog"),
            ("EPOCH", 2015.5, "Reference epoch of positions")])
        out.append(products.record(root, ref, n_rows=len(self.refcat)))
        for name, table, csv_too in (("stars.fits", self.stars, False), ("galaxies.fits", self.galaxies, False),
                                     ("transient_catalog.fits", self.transient_catalog, True),
                                     ("exposures.fits", self.exposure_table(), True)):
            out += self._write_truth_table(root, layout.truth(name), table, cards, csv_too)
        return out

    @property
    def refcat_name(self) -> str:
        return f"gaia_dr2_sim_{self.preset.name}_s{self.seed}"

    def build(self, root: str | Path, *, workers: int = 1, progress: Progress | None = None,
              ccds: Iterable[int] | None = None) -> BuildResult:
        """Catalogs, every night (calibrations + exposures) and the merged truth tables.

        ``ccds`` builds only those CCDs of every exposure (benchmarks at full size need a few
        CCDs, not 62 x 5 exposures of 32 MB images).
        """
        root = Path(root)
        cats = self.write_catalogs(root)
        nights = [self.make_night(n, root, ccds=ccds, workers=workers, progress=progress) for n in self.nites]
        exps = [e for n in nights for e in n.exposures]
        cards = self._truth_cards()
        truth = []
        truth += self._write_truth_table(root, layout.truth("ccds.fits"), concat([e.ccds for e in exps], CCD_DTYPE),
                                         cards, True)
        truth += self._write_truth_table(root, layout.truth("transients.fits"),
                                         concat([e.transients for e in exps], TRANSIENT_TRUTH_DTYPE), cards, True)
        truth.append(self._write_manifest(root))
        return BuildResult(cats, nights, truth)

    # ---------------------------------------------------------------- truth
    def exposure_table(self) -> np.ndarray:
        """One row per exposure: its spec, focal-plane zeropoint, sky and PSF pattern."""
        rows = []
        for s in self.exposures.values():
            d = s.as_dict()
            psf = PSFModel.random(self.seed, s.expnum, s.seeing, self.preset.options.psf_beta)
            d["mag_zero_fp"] = exposure_zeropoint(s.band, s.exptime, s.airmass, s.transparency)
            d["sky_e"] = sky_electrons(s.band, s.exptime, self.fp.pixel_scale, s.sky_factor)
            d.update({f"psf_{k}": v for k, v in psf.as_dict().items()})
            rows.append(d)
        names = list(rows[0])
        dtype = [(n, _column_type(rows[0][n], [r[n] for r in rows])) for n in names]
        return np.array([tuple(r[n] for n in names) for r in rows], dtype=dtype)

    def write_truth_table(self, root: str | Path, af: layout.ArchiveFile, table: np.ndarray,
                          csv_too: bool = True) -> list[products.WrittenFile]:
        """Write a truth table (FITS, and CSV beside it) with this survey's seed/preset cards."""
        return self._write_truth_table(Path(root), af, table, self._truth_cards(), csv_too)

    def write_exposure_truth(self, root: str | Path, result: ExposureResult) -> list[products.WrittenFile]:
        """The per-exposure truth files of ``result`` (as :meth:`make_exposure` writes them)."""
        return self._write_exposure_truth(Path(root), result)

    def _truth_cards(self) -> list[tuple[str, object, str]]:
        return [("SIMSEED", self.seed, "skyops.sim survey seed"), ("PRESET", self.preset.name, "skyops.sim preset"),
                ("SIMFMT", FORMAT_VERSION, "skyops.sim truth format")]

    def _write_truth_table(self, root: Path, af: layout.ArchiveFile, table: np.ndarray,
                           cards: list, csv_too: bool) -> list[products.WrittenFile]:
        paths = write_table(root / af.relpath, table, af.filename.rsplit(".", 1)[0].upper(), cards, csv_too)
        out = [products.record(root, af, n_rows=len(table))]
        if csv_too:
            out.append(products.record(root, layout.ArchiveFile(af.path, paths[1].name, af.filetype),
                                       n_rows=len(table)))
        return out

    def _write_exposure_truth(self, root: Path, r: ExposureResult) -> list[products.WrittenFile]:
        sub = r.spec.unitname
        cards = self._truth_cards() + [("EXPNUM", r.spec.expnum, "DECam exposure number")]
        out = self._write_truth_table(root, layout.truth(f"{sub}_ccds.fits", sub), r.ccds, cards, True)
        out += self._write_truth_table(root, layout.truth(f"{sub}_objects.fits", sub), r.objects, cards, False)
        if r.spec.kind == SEARCH:
            out += self._write_truth_table(root, layout.truth(f"{sub}_transients.fits", sub), r.transients, cards, True)
        return out

    def _write_manifest(self, root: Path) -> products.WrittenFile:
        af = layout.truth("survey.json")
        doc = {"format": FORMAT_VERSION, "seed": self.seed, "preset": _jsonable(asdict(self.preset)),
               "exposures": [s.as_dict() for s in self.exposures.values()], "refcat": self.refcat_name}
        if self.raw_only:  # only then: the default survey's manifest stays byte for byte as it was
            doc["raw_only_templates"] = sorted(self.raw_only)
        from skyops.fileio import atomic_open

        with atomic_open(root / af.relpath, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True, default=str)
        return products.record(root, af)


# -------------------------------------------------------------------- CCD jobs
@dataclass
class _Job:
    red: products.WrittenFile | None  # None for a raw-only template
    raw_hdu: HDU | None
    truth: np.void
    objects: np.ndarray
    transients: np.ndarray
    render_s: float
    write_s: float


_WORKER_STATE: dict[str, object] = {}


def _job(scene: ExposureScene, root: Path, ccdnum: int, raw: bool, red_immask: bool = True) -> _Job:
    t0 = time.perf_counter()
    prod = render_ccd(scene, ccdnum, raw)
    t1 = time.perf_counter()
    red = products.write_red_immask(root, scene.spec, prod) if red_immask else None
    hdu = products.raw_hdu(scene.spec, prod) if raw else None
    return _Job(red, hdu, prod.truth, prod.objects, prod.transients, t1 - t0, time.perf_counter() - t1)


def _worker(args: tuple[int, bool, bool]) -> _Job:
    return _job(_WORKER_STATE["scene"], _WORKER_STATE["root"], *args)  # type: ignore[arg-type]


def _run_jobs(scene: ExposureScene, root: Path, ccds: Sequence[int], raw: bool, workers: int,
              red_immask: bool = True) -> Iterable[_Job]:
    """CCD jobs in CCD order, serially or in forked worker processes (which inherit the scene)."""
    if workers <= 1 or len(ccds) < 2:
        for c in ccds:
            yield _job(scene, root, c, raw, red_immask)
        return
    _WORKER_STATE.update(scene=scene, root=root)
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            yield from pool.map(_worker, [(c, raw, red_immask) for c in ccds])
    finally:
        _WORKER_STATE.clear()


def _ccd_list(fp: FocalPlane, ccds: Iterable[int] | None) -> list[int]:
    if ccds is None:
        return list(ALL_CCDS)
    out = sorted({int(c) for c in ccds})
    for c in out:
        fp.ccd(c)
    return out


def _raw_only_expnums(preset: Preset, wanted: bool | Iterable[int]) -> frozenset[int]:
    """The template expnums to build raw-only (``Survey(raw_only_templates=...)``)."""
    templates = {e for n in preset.nights if n.kind != SEARCH for e in n.expnums}
    if wanted is True:
        return frozenset(templates)
    if wanted is False or wanted is None:
        return frozenset()
    try:
        out = frozenset(int(e) for e in wanted)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise SimulationError(f"raw_only_templates must be True, False or template expnums, got {wanted!r}") from None
    if out - templates:
        raise SimulationError(f"raw_only_templates: {sorted(out - templates)} are not template exposures of preset "
                              f"{preset.name!r}; its templates are {sorted(templates)}")
    return out


def _column_type(first: object, values: list[object]) -> str:
    if isinstance(first, bool):
        return "?"
    if isinstance(first, (int, np.integer)):
        return "i8"
    if isinstance(first, (float, np.floating)):
        return "f8"
    return f"S{max(1, max(len(str(v)) for v in values))}"


def _jsonable(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def make_exposure(expnum: int, root: str | Path, *, preset: str | Preset = "demo", seed: int = 42,
                  ccds: Iterable[int] | None = None, raw: bool | None = None, workers: int = 1,
                  progress: Progress | None = None, **overrides: object) -> ExposureResult:
    """Write one exposure of the preset's survey (see :meth:`Survey.make_exposure`)."""
    return Survey(preset, seed, **overrides).make_exposure(expnum, root, ccds=ccds, raw=raw, workers=workers,
                                                          progress=progress)


def make_night(nite: str, root: str | Path, *, preset: str | Preset = "demo", seed: int = 42,
               ccds: Iterable[int] | None = None, workers: int = 1, progress: Progress | None = None,
               **overrides: object) -> NightResult:
    """Write one night of the preset's survey (see :meth:`Survey.make_night`)."""
    return Survey(preset, seed, **overrides).make_night(nite, root, ccds=ccds, workers=workers, progress=progress)
