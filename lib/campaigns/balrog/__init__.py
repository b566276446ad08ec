"""The DES Balrog campaign: tile injection, MEDS, measurement and matching (issue #5)."""
