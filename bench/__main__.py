"""``python -m bench [NAME ...] [--option ...]``: run every benchmark module (or the named ones).

Options after the name(s) go to the benchmark (``python -m bench gw_orchestration --preset bench``).
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    first_opt = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    argv, options = argv[:first_opt], argv[first_opt:]
    names = argv or sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    rc = 0
    for name in names:
        mod = importlib.import_module(f"bench.{name if name.startswith('bench_') else 'bench_' + name}")
        print(f"\n=== {mod.__name__} ===", flush=True)
        rc |= int(mod.main(options) or 0)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
