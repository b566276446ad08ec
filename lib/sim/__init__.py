"""``skyops.sim``: a deterministic synthetic DECam survey, the truth every science test checks.

It stands in for DESDM: raw exposures with overscan, master bias/flat/BPM, reduced
``red_immask`` CCD images (SCI/MSK/WGT), a GAIA-like reference catalog, templates from an
earlier season and search exposures with transients -- in DESDM's paths, registered in the
archive database -- plus truth tables of everything that went into the pixels.

Entry points
------------
::

    create_archive(preset="demo", seed=42, config=None, root=None, progress=None,
                   *, workers=1, register=True, parts=None, ccds=None, raw_only_templates=False,
                   **overrides) -> ArchiveSummary
    TileSurvey(preset="demo", seed=42, **overrides).build(root) -> TileBuildResult   # DES tiles
    KredField(preset.kred, seed).render_ccd(expnum, ccdnum); kredtree.build_field(field, root)
    Survey(preset="demo", seed=42, **overrides)          # plan + catalogs + rendering
        .exposures {expnum: ExposureSpec}, .nites, .stars, .refcat, .galaxies, .transients(nite)
        .render_ccd(expnum, ccdnum, raw=None) -> CCDProduct           # in memory
        .make_exposure(expnum, root, *, ccds=None, raw=None, workers=1, progress=None) -> ExposureResult
        .make_calibrations(nite, root, *, ccds=None) -> [WrittenFile]
        .make_night(nite, root, *, ccds=None, workers=1, progress=None) -> NightResult
        .write_catalogs(root) -> [WrittenFile];  .build(root, *, workers=1, progress=None) -> BuildResult
    make_exposure(expnum, root, *, preset="demo", seed=42, ccds=None, raw=None, **overrides)
    make_night(nite, root, *, preset="demo", seed=42, ccds=None, **overrides)

``overrides`` change the preset (``ccd_shape=(64, 128)``, ``star_density=...``) or its
:class:`SimOptions` (``noise=False`` for noiseless truth builds, ``defects=False``,
``astrometric_offset_sigma=0`` for exact header WCS, ``zp_scatter``...). ``python -m
skyops.sim --preset demo --root DIR`` builds from the shell.

Determinism: every random number comes from a generator keyed by (seed, purpose, ids)
(:mod:`~skyops.sim.seeding`); headers carry no clock; so the same seed gives byte-identical
files, and any CCD built alone (or in a worker process) equals the same CCD in a full build.

The reusable core (for coadd tiles, kred MEF trees and other instruments)
------------------------------------------------------------------------
=====================  ======================================================================
``focalplane``         DECam's 62 CCDs (S1..S31, N1..N31; CCDNUM 1..62; 2 and 61 dead), a size
                       knob ``ccd_shape``; focal-plane coordinates (u, v) in pixels
``wcs``                gnomonic projection, per-CCD TAN WCS (true vs header, astrometric shift),
                       DESDM footprint columns (corners, racmin/racmax, crossra0)
``psf``                Moffat PSF varying smoothly over the field; stamp radius and n_eff
``photometry``         bands, zeropoints (mag -> electrons), sky brightness, S/N <-> flux
``skycells``           static sources generated per sky cell (independent of pointings)
``refcat``             true stars + GAIA-like catalog; ``band_mag`` colour transformation
``galaxies``           disk / de Vaucouleurs / bulge+disk catalog and GalSim profiles
``transients``         per-night transients with target S/N and light curves
``draw``               GalSim drawing of sources into stamps added to a CCD image
``ccd``                detector: amplifiers, bias pattern, flat response, defects, BADPIX bits,
                       master bias / flat
``exposure_spec``      ExposureSpec: one exposure's time, pointing, band, conditions, campaign
``exposure``           ExposureScene (what is on the sky) and ``render_ccd`` (one CCD's pixels)
``raw``                digitisation with overscan; DATASEC/BIASSEC; reference overscan+trim
``headers``            DECam/DESDM header cards; ``fitswrite``: deterministic atomic FITS/CSV
``products``           red_immask, raw MEF and calibration writers -> WrittenFile records
``layout``             DESDM archive paths and filetypes
``truth``              truth-table dtypes (objects, CCDs, transients)
``survey``/``presets`` planning nights and exposures; the demo and bench presets
``register``/``build`` archive-database rows and ``create_archive``; ``cli``: ``python -m skyops.sim``
``seeding``            keyed random streams: (seed, purpose, ids) -> numpy Generator
=====================  ======================================================================

Optional parts (``create_archive(..., parts="all")``; ``Preset.parts`` is the default)
--------------------------------------------------------------------------------------
=====================  ======================================================================
``tiles``              DES coadd tiles: names, TAN geometry, COADDTILE_GEOM rows, the
                       footprint overlap test of ``se_sources``; :class:`TilePlan` knobs
``tilesurvey``         :class:`TileSurvey`: exposures per (epoch, tile, band) over the tiles,
                       red_immask with a residual background, truth tables (``SIM/truth/tiles``)
``tileproducts``       red_bkg / red_segmap / psfex_model from the real SExtractor and PSFEx
``kred``               :class:`KredPlan`, :class:`KredField`: a Magellanic field's scene (diffuse
                       emission + stars), sky, per-exposure offsets; InstCal-like CCD rendering
``kredtree``           ``DECam_MEF/<field>/`` MEFs, ``KRED/config/<field>.yaml``, kred truth
``register_parts``     archive rows of tiles (COADDTILE_GEOM, MISCFILE ...) and kred files
=====================  ======================================================================

A new product type (a coadd tile, a kred MEF) reuses ``wcs`` (a tile is a ``CCDWcs``-like TAN
header), ``draw.draw_sources`` with an :class:`ExposureScene`-like source list, ``psf``,
``photometry``, ``ccd`` noise/masks, ``fitswrite`` and ``layout``; its archive rows go
through ``register``'s pattern (``ArchiveDB.insert_rows``/``register_files``).

Conventions
-----------
Reduced images are in electrons and sky-subtracted (the true sky plane; ``SKYBRITE`` is its
value at the CCD centre). ``flux_e = 10**(-0.4 (mag - mag_zero))`` with the CCD's truth
``mag_zero`` (truth only: not in any header). Pixel positions in truth are FITS 1-based.
Arrays are numpy ``(ny, nx)``.
"""
from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule defining it. Imported on first use (PEP 562), so that science
#: code borrowing one constant (``from skyops.sim.ccd import BADPIX``) does not pay for GalSim
#: and the whole survey builder in every task it runs.
_EXPORTS: dict[str, str] = {
    "create_archive": "build", "ArchiveSummary": "build",
    "BADPIX": "ccd", "Detector": "ccd",
    "CCDProduct": "exposure", "ExposureScene": "exposure", "SimOptions": "exposure", "render_ccd": "exposure",
    "ExposureSpec": "exposure_spec",
    "ALL_CCDS": "focalplane", "BAD_CCDS": "focalplane", "CCDNUM": "focalplane", "DETPOS": "focalplane",
    "GOOD_CCDS": "focalplane", "FocalPlane": "focalplane",
    "KredField": "kred", "KredPlan": "kred",
    "ALL_PARTS": "presets", "PRESETS": "presets", "Preset": "presets", "get_preset": "presets",
    "WrittenFile": "products",
    "band_mag": "refcat",
    "BuildResult": "survey", "ExposureResult": "survey", "NightResult": "survey", "Survey": "survey",
    "make_exposure": "survey", "make_night": "survey",
    "Tile": "tiles", "TilePlan": "tiles",
    "TileSurvey": "tilesurvey",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'skyops.sim' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
