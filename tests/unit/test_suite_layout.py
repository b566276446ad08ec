"""The test suite's own layout: pytest imports test files by basename (no packages here)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_file_basenames_are_unique() -> None:
    # Two test_x.py in different folders make pytest fail collection with "import file mismatch".
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert sorted(n for n, c in names.items() if c > 1) == []
