"""``python -m bench [NAME ...]``: run every benchmark module (or the named ones)."""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = argv or sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    rc = 0
    for name in names:
        mod = importlib.import_module(f"bench.{name if name.startswith('bench_') else 'bench_' + name}")
        print(f"\n=== {mod.__name__} ===", flush=True)
        rc |= int(mod.main([]) or 0)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
