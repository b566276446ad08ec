"""skyops.imaging.fftconv against scipy.signal.fftconvolve (the reference it replaces)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve as reference

from skyops.imaging.fftconv import fftconvolve


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("shapes", [((37, 29), (7, 5)), ((16, 16), (16, 16)), ((40, 33), (4, 9))])
def test_matches_scipy_signal_2d(mode: str, shapes: tuple) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=shapes[0]), rng.normal(size=shapes[1])
    np.testing.assert_allclose(fftconvolve(a, b, mode), reference(a, b, mode), atol=1e-10)


def test_batched_over_axes_as_psfmatch_uses_it() -> None:
    rng = np.random.default_rng(2)
    patches, basis = rng.normal(size=(5, 1, 31, 31)), rng.normal(size=(1, 8, 11, 11))
    got = fftconvolve(patches, basis, mode="valid", axes=(2, 3))
    assert got.shape == (5, 8, 21, 21)
    np.testing.assert_allclose(got, reference(patches, basis, mode="valid", axes=(2, 3)), atol=1e-10)


def test_bad_mode_and_too_small_input_are_named() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        fftconvolve(np.ones(3), np.ones(2), mode="circular")
    with pytest.raises(ValueError, match="at least as large"):
        fftconvolve(np.ones((3, 3)), np.ones((5, 5)), mode="valid")
