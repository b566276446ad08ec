"""External tools (SExtractor, SWarp, PSFEx, SCAMP): finding them, their versions, running them.

Debian installs the Astromatic tools under renamed commands (``source-extractor``,
``SWarp``); :data:`TOOLS` maps skyops' names to the commands to try. A missing tool is a
:class:`~skyops.errors.ToolError` that says how to install it; a failed run carries the
tail of the tool's own output, since that is where its reason is.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from skyops.errors import ToolError

log = logging.getLogger(__name__)

#: skyops name -> (candidate commands, Debian package)
TOOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "source-extractor": (("source-extractor", "sex", "sextractor"), "source-extractor"),
    "SWarp": (("SWarp", "swarp"), "swarp"),
    "psfex": (("psfex",), "psfex"),
    "scamp": (("scamp",), "scamp"),
}

_VERSION = re.compile(r"version\s+([0-9][0-9A-Za-z.\-]*)", re.IGNORECASE)


def find_tool(name: str) -> str:
    """Absolute path of a tool's command, or ToolError with the install command."""
    cands, pkg = TOOLS.get(name, ((name,), name))
    for c in cands:
        p = shutil.which(c)
        if p:
            return p
    raise ToolError(f"{name}: not found on PATH (tried {', '.join(cands)}); install it: apt-get install {pkg}")


@lru_cache(maxsize=None)
def tool_version(name: str) -> str:
    """The tool's own version string, e.g. ``SWarp 2.41.5 (2021-01-27)``."""
    exe = find_tool(name)
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    text = (out.stdout + out.stderr).strip().splitlines()
    line = next((ln for ln in text if _VERSION.search(ln)), text[0] if text else "")
    return line.strip()


def run_tool(name: str, args: Sequence[str | Path], *, cwd: Path | None = None, timeout: float | None = None) -> str:
    """Run a tool, returning its combined output; ToolError with the output's tail on failure."""
    exe = find_tool(name)
    argv = [exe, *map(str, args)]
    log.debug("running %s", " ".join(argv))
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{name} timed out after {timeout} s in {cwd or Path.cwd()}") from None
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise ToolError(f"{name} exited {proc.returncode} in {cwd or Path.cwd()}:\n{tail}")
    return output
