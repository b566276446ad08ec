"""balrog.measure speed and metacal accuracy: mixture fitting vs GalSim-drawn fitting, and the shear test.

1. Cost per object of SOF (bdf model, 3 bands x ``--epochs`` epochs, 48x48 cutouts, one core) and of
   metacal (5 sheared image sets + fixnoise, gauss fits), also per band-epoch; the PSF-mixture fit
   per epoch is timed on its own (MEDS gives one PSF image per cutout).
2. The same fits with a fitter whose model evaluation draws the same model with GalSim each
   iteration (Exponential/DeVaucouleurs sheared, shifted, convolved with the PSF image as an
   InterpolatedImage, drawn through each epoch's Jacobian, ``no_pixel``), minimised by the same
   Levenberg-Marquardt from the same start, with finite-difference derivatives in the shape
   parameters (the fluxes are linear). Side by side per object, with the speed-up and the flux
   agreement.
3. The full-size metacal shear test: ``--quads`` quads (galaxy and 90-degree twin, each under
   +-0.02 shear with the same noise; see tests/unit/test_balrog_metacal.py) at S/N ~ 180 with
   fixnoise, and a noiseless run: m and c with jackknife errors against |m| < 5e-3, |c| < 1e-4.

Results: ``bench/results/balrog_fit.json``. ``python -m bench balrog_fit`` runs the defaults; for
options run the module: ``python -m bench.bench_balrog_fit --quads 1000 --objects 30``.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import galsim  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from skyops.campaigns.balrog import fitter, gmix, metacal  # noqa: E402
from skyops.campaigns.balrog import measuresim as ms  # noqa: E402
from skyops.campaigns.balrog.levmar import levmar  # noqa: E402
from skyops.campaigns.balrog.psfmix import fit_psf  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "balrog_fit.json"
ZP = 30.0
NBAND = 3


def make_objects(n: int, nepoch: int, seed: int) -> list[tuple[ms.SimObject, np.ndarray]]:
    """bdf galaxies of mag 19-22 with DES-like single-epoch noise, 3 bands x nepoch epochs."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        mag = rng.uniform(19.0, 22.0, NBAND)
        flux = 10 ** (0.4 * (ZP - mag))
        hlr, g = rng.uniform(0.3, 0.8), rng.normal(0, 0.2, 2).clip(-0.5, 0.5)
        gals = [galsim.Add([galsim.Exponential(half_light_radius=hlr, flux=0.7 * f),
                            galsim.DeVaucouleurs(half_light_radius=0.6 * hlr, flux=0.3 * f)]).shear(g1=g[0], g2=g[1])
                for f in flux]
        out.append((ms.draw_object(gals, rng, nepoch=nepoch, stamp=48, noise=8.0), flux))
    return out


class GalSimModelFitter:
    """The same model and likelihood as :class:`fitter.ObjectFitter`, each evaluation drawn by GalSim."""

    def __init__(self, obj: ms.SimObject, model: str, TdByTe: float = 1.0) -> None:
        self.model, self.TdByTe = model, TdByTe
        self.epochs = obj.epochs
        self.psfs = [galsim.InterpolatedImage(galsim.ImageD(p, wcs=e.jac.galsim_wcs()), x_interpolant="lanczos15")
                     for p, e in zip(obj.psf_images, obj.epochs)]
        self.img = np.concatenate([e.image.ravel() for e in obj.epochs])
        self.sw = np.sqrt(np.concatenate([e.weight.ravel() for e in obj.epochs]))
        self.band = np.concatenate([np.full(e.image.size, e.band) for e in obj.epochs])
        self.nshape = 6 if model == "bdf" else 5

    def _profile(self, theta: np.ndarray) -> galsim.GSObject:
        g1, g2, T = theta[2], theta[3], max(theta[4], 1e-6)
        gsq = min(g1 * g1 + g2 * g2, 0.98)
        t_round = T * (1 - gsq) / (1 + gsq)

        def prof(name: str, tfac: float, flux: float) -> galsim.GSObject:
            hlr = math.sqrt(t_round * tfac / gmix.T_PER_HLR2[name])
            cls = galsim.Exponential if name == "exp" else galsim.DeVaucouleurs
            return cls(half_light_radius=hlr, flux=flux)

        if self.model == "bdf":
            fd = float(np.clip(theta[5], 0, 1))
            gal = galsim.Add([prof("exp", 1.0, 1 - fd), prof("dev", self.TdByTe, fd)])
        else:
            gal = prof(self.model, 1.0, 1.0)
        return gal.shear(g1=g1, g2=g2)

    def unit(self, theta: np.ndarray) -> np.ndarray:
        gal = self._profile(theta)
        parts = []
        for e, psf in zip(self.epochs, self.psfs):
            parts.append(ms.draw_at(galsim.Convolve(gal, psf), e.jac, e.image.shape, theta[0], theta[1],
                                    method="no_pixel").ravel())
        return np.concatenate(parts)

    def fit(self, guess: np.ndarray) -> np.ndarray:
        ns = self.nshape
        steps = np.array([1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-3])[:ns]

        def fun(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            theta, flux = x[:ns], x[ns:]
            u = self.unit(theta)
            fb = flux[self.band]
            r = self.sw * (fb * u - self.img)
            J = np.zeros((r.size, x.size))
            for q in range(ns):
                tp = theta.copy()
                tp[q] += steps[q]
                J[:, q] = self.sw * fb * (self.unit(tp) - u) / steps[q]
            for b in range(NBAND):
                J[:, ns + b] = np.where(self.band == b, self.sw * u, 0.0)
            return r, J

        lo = np.concatenate([[-5, -5, -0.99, -0.99, 1e-4, 0.0][:ns], np.full(NBAND, -np.inf)])
        hi = np.concatenate([[5, 5, 0.99, 0.99, 1e4, 1.0][:ns], np.full(NBAND, np.inf)])
        x0 = np.concatenate([guess[:ns], guess[fitter.NSHAPE:]])
        return levmar(fun, x0, lo, hi, maxiter=100).x


def bench_fitting(console: Console, nobj: int, nepoch: int, n_galsim: int, seed: int) -> dict:
    objs = make_objects(nobj, nepoch, seed)
    # warm the numba caches
    fitter.fit_object(objs[0][0].epochs, NBAND, "bdf")
    t0 = time.perf_counter()
    npsf = 0
    for obj, _ in objs:
        for img, e in zip(obj.psf_images, obj.epochs):
            fit_psf(img, e.jac.recentred(12.0, 12.0), 3)
            npsf += 1
    t_psf = (time.perf_counter() - t0) / npsf
    out: dict = {"n_objects": nobj, "epochs_per_band": nepoch, "bands": NBAND, "stamp": 48,
                 "psf_fit_ms_per_epoch": 1e3 * t_psf}
    for model in ("exp", "bdf"):
        t0 = time.perf_counter()
        res = [fitter.fit_object(o.epochs, NBAND, model) for o, _ in objs]
        dt = (time.perf_counter() - t0) / nobj
        dmag = np.concatenate([2.5 * np.log10(r.flux / f) for r, (_, f) in zip(res, objs)])
        out[f"sof_{model}_ms_per_object"] = 1e3 * dt
        out[f"sof_{model}_ms_per_band_epoch"] = 1e3 * dt / (NBAND * nepoch)
        out[f"sof_{model}_median_abs_dmag"] = float(np.median(np.abs(dmag)))
        out[f"sof_{model}_flags_nonzero"] = int(sum(r.flags != 0 for r in res))
        # the GalSim-drawn fitter on the first n_galsim objects, same start
        tg, tm, agree = 0.0, 0.0, []
        for (o, _), r in zip(objs[:n_galsim], res[:n_galsim]):
            f = fitter.ObjectFitter(o.epochs, NBAND, model)
            guess = f.default_guess()
            t0 = time.perf_counter()
            mine = f.fit(guess)
            tm += time.perf_counter() - t0
            t0 = time.perf_counter()
            gs = GalSimModelFitter(o, model).fit(guess)
            tg += time.perf_counter() - t0
            agree.extend(2.5 * np.log10(np.abs(gs[-NBAND:] / mine.flux)))
        out[f"galsim_{model}_ms_per_object"] = 1e3 * tg / n_galsim
        out[f"mixture_{model}_ms_per_object_same_objects"] = 1e3 * tm / n_galsim
        out[f"speedup_{model}"] = tg / tm
        out[f"galsim_vs_mixture_{model}_max_abs_dmag"] = float(np.max(np.abs(agree)))
        out[f"galsim_vs_mixture_{model}_median_abs_dmag"] = float(np.median(np.abs(agree)))
    # metacal per object (all bands and epochs, fixnoise)
    nm = min(nobj, 10)
    t0 = time.perf_counter()
    for o, _ in objs[:nm]:
        mes = [metacal.MetacalEpoch(e.image, e.weight, e.jac, p, e.jac.recentred(12.0, 12.0), e.band)
               for e, p in zip(o.epochs, o.psf_images)]
        metacal.metacal_fit(mes, NBAND, np.random.default_rng(1))
    dt = (time.perf_counter() - t0) / nm
    out["metacal_ms_per_object"] = 1e3 * dt
    out["metacal_ms_per_band_epoch"] = 1e3 * dt / (NBAND * nepoch)
    t = Table(title=f"fit cost, one core: {NBAND} bands x {nepoch} epochs, 48x48 cutouts, mag 19-22 bdf galaxies")
    for col in ("", "ms / object", "ms / band-epoch"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("PSF mixture fit (3 Gaussians, 25x25)", "", f"{out['psf_fit_ms_per_epoch']:.2f}")
    for model in ("exp", "bdf"):
        t.add_row(f"SOF {model} (mixtures)", f"{out[f'sof_{model}_ms_per_object']:.1f}",
                  f"{out[f'sof_{model}_ms_per_band_epoch']:.2f}")
    t.add_row("metacal (5 image sets + fixnoise, gauss)", f"{out['metacal_ms_per_object']:.1f}",
              f"{out['metacal_ms_per_band_epoch']:.2f}")
    console.print(t)
    t = Table(title=f"mixture fitter vs GalSim-drawn fitter (same model, data, start, solver; {n_galsim} objects)")
    for col in ("model", "mixture ms/obj", "GalSim ms/obj", "speed-up", "|dmag| between them: median / max"):
        t.add_column(col, justify="right")
    for model in ("exp", "bdf"):
        t.add_row(model, f"{out[f'mixture_{model}_ms_per_object_same_objects']:.1f}",
                  f"{out[f'galsim_{model}_ms_per_object']:.1f}", f"{out[f'speedup_{model}']:.1f}x",
                  f"{out[f'galsim_vs_mixture_{model}_median_abs_dmag']:.4f} / "
                  f"{out[f'galsim_vs_mixture_{model}_max_abs_dmag']:.4f}")
    console.print(t)
    console.print(f"SOF median |delta mag| (mag 19-22): exp {out['sof_exp_median_abs_dmag']:.4f}, "
                  f"bdf {out['sof_bdf_median_abs_dmag']:.4f}")
    return out


def bench_shear(console: Console, nquad: int, seed: int, noise: float) -> dict:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
    from test_balrog_metacal import run_quads, shear_bias  # the test's own estimator

    t0 = time.perf_counter()
    rows = run_quads(nquad, seed, noise)
    dt = time.perf_counter() - t0
    m, sm, c, sc = shear_bias(rows)
    out = {"quads": nquad, "noise": noise, "median_s2n": float(np.median(rows[:, 7])), "m": m, "sigma_m": sm,
           "c": c, "sigma_c": sc, "R11": float(rows[:, 5].mean()), "R22": float(rows[:, 6].mean()),
           "flagged": int((rows[:, 8] != 0).sum()), "wall_s": dt,
           "m_ok": abs(m) < 5e-3, "c_ok": abs(c) < 1e-4}
    console.print(f"metacal shear test ({nquad} quads = {4 * nquad} images, S/N "
                  f"{out['median_s2n']:.0f}{' (noiseless)' if noise == 0 else ', fixnoise'}): "
                  f"m = {m:+.2e} +- {sm:.1e}, c = {c:+.2e} +- {sc:.1e}; <R11> {out['R11']:.3f}; "
                  f"targets |m| < 5e-3: {'yes' if out['m_ok'] else 'NO'}, |c| < 1e-4: {'yes' if out['c_ok'] else 'NO'}"
                  f" ({dt:.0f} s)")
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench balrog_fit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=4, help="epochs per band")
    ap.add_argument("--galsim-objects", type=int, default=4)
    ap.add_argument("--quads", type=int, default=400)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    console = Console()
    doc = {"benchmark": "balrog_fit", "host": platform.node(), "python": platform.python_version(),
           "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "galsim": galsim.__version__}
    doc["fitting"] = bench_fitting(console, args.objects, args.epochs, args.galsim_objects, args.seed)
    doc["shear_noiseless"] = bench_shear(console, max(args.quads // 8, 10), args.seed + 1, 0.0)
    doc["shear_noisy"] = bench_shear(console, args.quads, args.seed + 2, 3e-4)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    console.print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
