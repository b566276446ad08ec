"""Software versions recorded with every task, so a product can be traced to its code."""
from __future__ import annotations

import importlib.metadata as md
import platform
import sys

#: Python distributions whose versions every result.json carries.
CORE_PACKAGES = ("numpy", "astropy", "galsim", "fitsio", "scipy")


def package_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def core_versions() -> dict[str, str]:
    """skyops, python and the numerical stack (missing packages are omitted)."""
    from skyops import __version__

    out = {"skyops": __version__, "python": platform.python_version()}
    for name in CORE_PACKAGES:
        v = package_version(name)
        if v:
            out[name] = v
    out["platform"] = f"{sys.platform}-{platform.machine()}"
    return out
