"""Simulations that check balrog.measure against truth: GalSim-drawn objects, epochs and MEDS files.

Everything here is drawn by GalSim -- never by the mixture code under test -- through per-epoch
affine WCSs that are deliberately not a plain pixel grid (rotation, a few per cent of shear and
anisotropic scale, and parity flips), with per-epoch Moffat PSFs whose *images* (pixel response
included) are what the measurement sees, as a PSFEx model would give it.

* :func:`draw_object` -- one object's epochs in every band, as the fitter's :class:`Epoch` list
  (PSF mixtures fitted to the PSF images), with its truth.
* :func:`shear_pair` -- the same galaxy and the same noise under +g and -g shear: the
  noise-cancelling pair of the metacalibration test.
* :class:`Scene` / :func:`write_meds` -- several objects drawn into shared exposures, cut out into a
  MEDS file of the standard layout (``medsreader``'s docstring), for the reader, MOF and the step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import fitsio
import galsim
import numpy as np

from skyops.campaigns.balrog.fitter import Epoch
from skyops.campaigns.balrog.gmix import Jacobian
from skyops.campaigns.balrog.psfmix import fit_psf

PIXEL_SCALE = 0.263  # DECam, arcsec
PSF_STAMP = 25


def random_jacobian(rng: np.random.Generator, row0: float, col0: float, scale: float = PIXEL_SCALE,
                    distortion: float = 0.05) -> Jacobian:
    """A DECam-like local WCS: random rotation and parity, a few per cent of anisotropic distortion."""
    theta = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(theta), math.sin(theta)
    flip = rng.choice([-1.0, 1.0])
    d = rng.uniform(-distortion, distortion, size=3)
    m = scale * np.array([[1 + d[0], d[2]], [d[2], 1 - d[0] + d[1]]]) @ np.array([[c, -s], [s, c]])
    m[:, 1] *= flip
    # (u, v) = m @ (col, row) offsets -> dudcol = m[0,0], dudrow = m[0,1], dvdcol = m[1,0], dvdrow = m[1,1]
    return Jacobian(row0, col0, m[0, 1], m[0, 0], m[1, 1], m[1, 0])


def random_psf(rng: np.random.Generator, fwhm: tuple[float, float] = (0.8, 1.1), ellip: float = 0.03
               ) -> galsim.GSObject:
    """A Moffat (beta 3.5) PSF of random FWHM with a little random ellipticity."""
    g = rng.uniform(-ellip, ellip, size=2)
    return galsim.Moffat(beta=3.5, fwhm=rng.uniform(*fwhm)).shear(g1=g[0], g2=g[1])


def draw_at(obj: galsim.GSObject, jac: Jacobian, shape: tuple[int, int], u: float, v: float,
            image: galsim.Image | None = None, method: str = "auto") -> np.ndarray:
    """Draw ``obj`` centred at sky offset (u, v) from the Jacobian centre into an array of ``shape``."""
    if image is None:
        image = galsim.ImageD(shape[1], shape[0], wcs=jac.galsim_wcs())
    row, col = jac.to_pixel(u, v)
    offset = galsim.PositionD(col - (shape[1] - 1) / 2.0, row - (shape[0] - 1) / 2.0)
    obj.drawImage(image, method=method, offset=offset, add_to_image=False)
    return image.array.copy()


def psf_image(psf: galsim.GSObject, jac: Jacobian, size: int = PSF_STAMP) -> tuple[np.ndarray, Jacobian]:
    """The effective PSF (pixel included) drawn centred in a ``size`` stamp, and that stamp's Jacobian."""
    pj = jac.recentred((size - 1) / 2.0, (size - 1) / 2.0)
    return draw_at(psf, pj, (size, size), 0.0, 0.0), pj


@dataclass
class SimObject:
    """One object's epochs (all bands), the PSF images behind their mixtures, and the truth."""

    epochs: list[Epoch]
    psf_images: list[np.ndarray]
    psfs: list[galsim.GSObject]
    truth: dict[str, object]


def draw_object(gals: list[galsim.GSObject], rng: np.random.Generator, *, nepoch: int = 3, stamp: int = 48,
                noise: list[float] | float = 1.0, du: float = 0.0, dv: float = 0.0, psf_ngauss: int = 3,
                neighbours: list[tuple[list[galsim.GSObject], float, float]] = ()) -> SimObject:
    """``nepoch`` epochs per band of the galaxies ``gals`` (one GSObject per band, flux included).

    The object sits at sky offset (du, dv) arcsec from every cutout's Jacobian centre, which is near
    the stamp centre with a random sub-pixel offset. ``neighbours`` -- (per-band objects, du, dv) --
    are drawn into the same cutouts (a blend). Noise is Gaussian with sigma ``noise[band]``.
    """
    nb = len(gals)
    sig = [noise] * nb if np.isscalar(noise) else list(noise)
    epochs, pimgs, psfs = [], [], []
    for b in range(nb):
        for _ in range(nepoch):
            c0 = (stamp - 1) / 2.0
            jac = random_jacobian(rng, c0 + rng.uniform(-0.5, 0.5), c0 + rng.uniform(-0.5, 0.5))
            psf = random_psf(rng)
            img = draw_at(galsim.Convolve(gals[b], psf), jac, (stamp, stamp), du, dv)
            for nbr, nu, nv in neighbours:
                img += draw_at(galsim.Convolve(nbr[b], psf), jac, (stamp, stamp), nu, nv)
            img += rng.normal(0.0, sig[b], img.shape)
            pim, pjac = psf_image(psf, jac)
            gm = fit_psf(pim, pjac, psf_ngauss).gmix
            epochs.append(Epoch(img, np.full(img.shape, 1.0 / sig[b] ** 2), jac, gm, band=b))
            pimgs.append(pim)
            psfs.append(psf)
    truth = {"flux": [g.flux for g in gals], "du": du, "dv": dv}
    return SimObject(epochs, pimgs, psfs, truth)


def shear_pair(rng: np.random.Generator, shear: float = 0.02, *, hlr: float = 0.5, flux: float = 1.0,
               noise: float = 0.0, sigma_e: float = 0.2, stamp: int = 32, nepoch: int = 1,
               psf_g: tuple[float, float] = (0.02, -0.01), rotate90: bool = False) -> tuple[list[dict], list[dict]]:
    """One exponential galaxy under shear (+shear, 0) and (-shear, 0), same intrinsic shape and noise.

    Returns, for + and -, a list of epochs as dicts: image, weight, psf_image, jac (the galaxy's
    centre), psf_jac, and fixnoise (a unit-variance field for metacal's noise correction). The PSF
    is a Moffat with a fixed anisotropy ``psf_g`` (what leaks into an additive bias if the PSF
    correction fails), a random size per epoch, and each epoch a random orientation and parity of
    its (square-pixel) WCS.

    The +- pair cancels the intrinsic shape and the noise in g1 (the multiplicative bias) but not
    in g2. Calling again with the same ``rng`` state and ``rotate90`` gives the twin whose galaxy
    *and noise fields* are rotated by 90 degrees, in the same sense on the sky whatever the WCS's
    parity (e -> -e; the PSF is not rotated): averaging the four images cancels intrinsic shape and
    noise in g2 to first order while the PSF's leakage into g2 -- the additive bias -- stays, so c
    is measured without shape noise. (Noise turned the other way than the galaxy still averages
    out, but cancels far less: sigma_c per quad 1.6e-3 instead of 2e-4 at S/N 180.)
    """
    e = rng.normal(0.0, sigma_e, 2)
    while np.hypot(*e) > 0.7:
        e = rng.normal(0.0, sigma_e, 2)
    du, dv = rng.uniform(-0.5, 0.5, 2) * PIXEL_SCALE
    if rotate90:
        e, du, dv = -e, -dv, du
    base = galsim.Exponential(half_light_radius=hlr, flux=flux).shear(g1=e[0], g2=e[1])
    epochs = []
    for _ in range(nepoch):
        c0 = (stamp - 1) / 2.0
        jac = random_jacobian(rng, c0, c0, distortion=0.0)
        psf = galsim.Moffat(beta=3.5, fwhm=rng.uniform(0.85, 1.0)).shear(g1=psf_g[0], g2=psf_g[1])
        n = rng.normal(0.0, 1.0, (stamp, stamp))
        fix = rng.normal(0.0, 1.0, (stamp, stamp))
        if rotate90:
            # turn the noise arrays with the galaxy: +90 degrees on the sky, (u, v) -> (-v, u), about the
            # stamp centre. np.rot90(k=1) maps pixel offsets (x, y) -> (y, -x), -90 degrees in pixel
            # space, which is -90 on the sky for a WCS of positive determinant and +90 for a flipped one.
            k = -1 if jac.dudcol * jac.dvdrow - jac.dudrow * jac.dvdcol > 0 else 1
            n, fix = np.rot90(n, k).copy(), np.rot90(fix, k).copy()
        pim, pjac = psf_image(psf, jac)
        epochs.append((jac, psf, n * noise, fix, pim, pjac))
    out: tuple[list[dict], list[dict]] = ([], [])
    for k, sgn in enumerate((1.0, -1.0)):
        gal = base.shear(g1=sgn * shear, g2=0.0)
        for jac, psf, n, fix, pim, pjac in epochs:
            img = draw_at(galsim.Convolve(gal, psf), jac, (stamp, stamp), du, dv) + n
            w = np.full(img.shape, 1.0 / noise ** 2 if noise > 0 else 1.0)
            out[k].append({"image": img, "weight": w, "psf_image": pim, "jac": jac, "psf_jac": pjac,
                           "fixnoise": fix})
    return out


# ------------------------------------------------------------------------------------------------
# Scenes and MEDS files
# ------------------------------------------------------------------------------------------------

@dataclass
class Exposure:
    """One image of the scene: band, size, affine WCS about the tangent point, PSF and noise."""

    band: int
    shape: tuple[int, int]
    jac: Jacobian  # (row0, col0) = pixel position of the tangent point (u, v) = (0, 0)
    psf: galsim.GSObject
    noise: float
    image: np.ndarray | None = None
    weight: np.ndarray | None = None
    seg: np.ndarray | None = None


@dataclass
class Scene:
    """Objects at sky offsets (u, v) arcsec around (ra0, dec0), drawn into exposures per band."""

    ra0: float
    dec0: float
    positions: np.ndarray  # (n, 2) u, v arcsec
    gals: list[list[galsim.GSObject]]  # [object][band], flux included
    exposures: list[Exposure] = field(default_factory=list)

    def radec(self, u: float, v: float) -> tuple[float, float]:
        """Small-field tangent plane: u towards +RA (east), v towards +Dec."""
        return (self.ra0 + u / 3600.0 / math.cos(math.radians(self.dec0)), self.dec0 + v / 3600.0)

    def render(self, rng: np.random.Generator, seg_radius: float = 1.2) -> None:
        """Draw every object into every exposure (GalSim, pixel response included) and add noise.

        The segmentation map labels pixels within ``seg_radius`` arcsec of an object with its number
        (1-based), nearest object winning -- a stand-in for SExtractor's.
        """
        for ex in self.exposures:
            img = galsim.ImageD(ex.shape[1], ex.shape[0], wcs=ex.jac.galsim_wcs())
            for (u, v), gal in zip(self.positions, self.gals):
                row, col = ex.jac.to_pixel(u, v)
                obj = galsim.Convolve(gal[ex.band], ex.psf)
                # an odd stamp's centre pixel is its true centre: the profile lands at centre + offset
                st = obj.drawImage(nx=65, ny=65, wcs=ex.jac.galsim_wcs(),
                                   offset=galsim.PositionD(col - round(col), row - round(row)))
                st.setCenter(int(round(col)) + 1, int(round(row)) + 1)  # galsim is 1-based
                b = st.bounds & img.bounds
                if b.isDefined():
                    img[b] += st[b]
            ex.image = img.array + rng.normal(0.0, ex.noise, ex.shape)
            ex.weight = np.full(ex.shape, 1.0 / ex.noise ** 2)
            rr, cc = np.mgrid[0:ex.shape[0], 0:ex.shape[1]]
            u = ex.jac.dudrow * (rr - ex.jac.row0) + ex.jac.dudcol * (cc - ex.jac.col0)
            v = ex.jac.dvdrow * (rr - ex.jac.row0) + ex.jac.dvdcol * (cc - ex.jac.col0)
            d2 = np.stack([(u - pu) ** 2 + (v - pv) ** 2 for pu, pv in self.positions])
            near = np.argmin(d2, axis=0)
            ex.seg = np.where(np.min(d2, axis=0) < seg_radius ** 2, near + 1, 0).astype(np.int32)


def write_meds(path: str, scene: Scene, band: int, box_size: int = 48, magzp_ref: float = 30.0,
               psf_ext: str | None = "psf", psf_fwhm: float | None = None) -> None:
    """Write ``scene``'s cutouts in ``band`` as a MEDS file of the layout ``medsreader`` documents.

    Cutout 0 is the first exposure of the band (standing in for the coadd); the others follow.
    ``psf_ext=None`` writes no PSF images and instead an image_info ``psf_fwhm`` column (arcsec),
    filled with ``psf_fwhm``.
    """
    exps = [e for e in scene.exposures if e.band == band]
    n = len(scene.positions)
    ncut = len(exps)
    half = (box_size - 1) / 2.0
    odt = [("id", "i8"), ("number", "i4"), ("box_size", "i4"), ("ra", "f8"), ("dec", "f8"), ("ncutout", "i4"),
           ("file_id", "i4", ncut), ("start_row", "i8", ncut), ("orig_row", "f8", ncut), ("orig_col", "f8", ncut),
           ("orig_start_row", "i4", ncut), ("orig_start_col", "i4", ncut), ("cutout_row", "f8", ncut),
           ("cutout_col", "f8", ncut), ("dudrow", "f8", ncut), ("dudcol", "f8", ncut), ("dvdrow", "f8", ncut),
           ("dvdcol", "f8", ncut), ("psf_box_size", "i4", ncut), ("psf_start_row", "i8", ncut),
           ("psf_cutout_row", "f8", ncut), ("psf_cutout_col", "f8", ncut)]
    od = np.zeros(n, dtype=odt)
    imgs, wts, segs, bms, psfs = [], [], [], [], []
    row_count = 0
    psf_count = 0
    for i, (u, v) in enumerate(scene.positions):
        od["id"][i] = 1000 + i
        od["number"][i] = i + 1
        od["box_size"][i] = box_size
        od["ra"][i], od["dec"][i] = scene.radec(u, v)
        k = 0
        for fid, ex in enumerate(exps):
            row, col = ex.jac.to_pixel(u, v)
            r0, c0 = int(round(row - half)), int(round(col - half))
            if r0 < 0 or c0 < 0 or r0 + box_size > ex.shape[0] or c0 + box_size > ex.shape[1]:
                continue
            sl = (slice(r0, r0 + box_size), slice(c0, c0 + box_size))
            od["file_id"][i, k] = fid
            od["start_row"][i, k] = row_count
            od["orig_row"][i, k], od["orig_col"][i, k] = row, col
            od["orig_start_row"][i, k], od["orig_start_col"][i, k] = r0, c0
            od["cutout_row"][i, k], od["cutout_col"][i, k] = row - r0, col - c0
            j = ex.jac
            od["dudrow"][i, k], od["dudcol"][i, k], od["dvdrow"][i, k], od["dvdcol"][i, k] = (
                j.dudrow, j.dudcol, j.dvdrow, j.dvdcol)
            imgs.append(ex.image[sl].ravel())
            wts.append(ex.weight[sl].ravel())
            segs.append(ex.seg[sl].ravel())
            bms.append(np.zeros(box_size * box_size, dtype=np.int32))
            row_count += box_size * box_size
            if psf_ext:
                pim, _ = psf_image(ex.psf, ex.jac.recentred(row, col))
                od["psf_box_size"][i, k] = PSF_STAMP
                od["psf_start_row"][i, k] = psf_count
                od["psf_cutout_row"][i, k] = od["psf_cutout_col"][i, k] = (PSF_STAMP - 1) / 2.0
                psfs.append(pim.ravel())
                psf_count += PSF_STAMP * PSF_STAMP
            k += 1
        od["ncutout"][i] = k
    maxlen = 64
    iidt = [("image_path", f"U{maxlen}"), ("image_id", "i8"), ("image_flags", "i4"), ("magzp", "f4"),
            ("scale", "f4"), ("position_offset", "f8")]
    if psf_fwhm is not None:
        iidt.append(("psf_fwhm", "f8"))
    ii = np.zeros(ncut, dtype=iidt)
    for fid in range(ncut):
        ii["image_path"][fid] = f"sim_band{band}_exp{fid}.fits"
        ii["image_id"][fid] = fid
        ii["magzp"][fid] = magzp_ref
        ii["scale"][fid] = 1.0
        if psf_fwhm is not None:
            ii["psf_fwhm"][fid] = psf_fwhm
    meta = np.zeros(1, dtype=[("magzp_ref", "f8"), ("medsconf", "U16")])
    meta["magzp_ref"], meta["medsconf"] = magzp_ref, "simtest"
    with fitsio.FITS(path, "rw", clobber=True) as f:
        f.write(od, extname="object_data")
        f.write(ii, extname="image_info")
        f.write(meta, extname="metadata")
        f.write(np.concatenate(imgs).astype(np.float32), extname="image_cutouts")
        f.write(np.concatenate(wts).astype(np.float32), extname="weight_cutouts")
        f.write(np.concatenate(segs).astype(np.int32), extname="seg_cutouts")
        f.write(np.concatenate(bms).astype(np.int32), extname="bmask_cutouts")
        if psf_ext:
            f.write(np.concatenate(psfs).astype(np.float32), extname=psf_ext)
