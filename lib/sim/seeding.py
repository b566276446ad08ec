"""Random streams: one numpy Generator per (seed, purpose, ids...).

Every random number in a simulated survey comes from a generator keyed by the survey seed,
a named purpose ("noise", "refcat", ...) and integer ids (expnum, ccdnum, sky cell, ...).
Keys, not call order, decide the numbers, so a CCD can be built alone, in any order or in
another process and still be byte-identical to the CCD built inside a full survey run, and
adding a new purpose never changes the numbers of an existing one.
"""
from __future__ import annotations

import zlib

import numpy as np

from skyops.errors import SimulationError


def stream_id(purpose: str) -> int:
    """A stable 32-bit id for a purpose name (crc32: same on every machine and Python)."""
    return zlib.crc32(purpose.encode("ascii"))


def rng(seed: int, purpose: str, *ids: int) -> np.random.Generator:
    """The generator for ``purpose`` and ``ids`` within the survey ``seed``."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise SimulationError(f"seed must be a non-negative integer, got {seed!r}")
    bad = [i for i in ids if int(i) < 0]
    if bad:
        raise SimulationError(f"random-stream ids must be non-negative, got {ids} for purpose {purpose!r}")
    entropy = [int(seed), stream_id(purpose), *(int(i) for i in ids)]
    return np.random.default_rng(np.random.SeedSequence(entropy))
