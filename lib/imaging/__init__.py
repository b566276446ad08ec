"""Imaging helpers shared by the campaigns: the Astromatic tools, FITS I/O, resampling."""
