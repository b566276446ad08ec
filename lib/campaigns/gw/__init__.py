"""The GW nightly campaign (``gw_nightly``): the DES GW pipeline's per-CCD steps.

Steps (registered by :mod:`.steps`):

``gw.se_ccd``     (:mod:`.se`) ``SE_job_mod.sh -c CCD``: raw CCD + master bias/flat/BPM + GAIA
                  catalog -> ``red_immask`` (SCI/MSK/WGT with the refined WCS), ``cat_finalcut``
                  (FITS_LDAC, MAG_PSF/SPREAD_MODEL/apertures) and ``psfex_model`` (.psf).
``gw.calibrate``  (:mod:`.calibrate`) ``BLISS-expCalib_Y3apass.py``: ``cat_finalcut`` catalogs +
                  GAIA -> ``bliss_zeropoint`` (FITS: ZEROPOINT rows per CCD, EXPOSURE_ZP per
                  exposure); a single-CCD run also returns the metric ``ccd_mag_zero``.
``gw.diffimg_ccd`` (:mod:`.diffimg`, difference imaging) takes the search ``red_immask``, the
                  template ``red_immask`` files, the search ``psfex_model`` and the zeropoint.

Building blocks: :mod:`.detrend` (overscan, bias, gain, flat, masks, weights), :mod:`.sky`,
:mod:`.astrometry` (match to GAIA, linear TAN refinement), :mod:`.psf` (PSFEx model FWHM),
:mod:`.photcal` (GAIA-to-DECam magnitudes, matching, clipped zeropoints).
"""
