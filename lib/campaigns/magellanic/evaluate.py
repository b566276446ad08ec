"""``magellanic.swarp_eval`` (kred's SwarpEval.py): PNG previews of a field's mosaics, scaled to show flaws.

For each tile x filter x exposure time mosaic, one PNG in ``DECam_SWARP/<field>/eval/``: the
mosaic before background matching (``TileNN``) and after (``TileNN_b``) side by side, on the same
grey scale. The scale is chosen for flaws, not for beauty: the mosaic is binned 4x4 (which beats
the pixel noise down fourfold) and stretched over +-3 binned sigma about the background mode, so a
seam or a gradient of a tenth of the pixel noise shows as a step in grey; empty areas are blue.

Seams are judged by eye here, as kred did; their size is measured against the truth in the tests
(``tests/integration/test_magellanic_pipeline.py``), from SWarp's resampled layers.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import fitsio
import numpy as np

from skyops.campaigns.magellanic.fieldlog import FieldLog
from skyops.campaigns.magellanic.hsm import background_mode
from skyops.campaigns.magellanic.layout import KredTree, mosaic_name
from skyops.campaigns.magellanic.tiles import read_index
from skyops.steps.context import StepContext
from skyops.steps.registry import step

BIN = 4


def block_reduce(img: np.ndarray, b: int, func=np.nanmean) -> np.ndarray:
    """``img`` reduced over b x b blocks (the ragged edge dropped), NaN-aware."""
    ny, nx = (img.shape[0] // b) * b, (img.shape[1] // b) * b
    blocks = img[:ny, :nx].reshape(ny // b, b, nx // b, b)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks (no coverage) are NaN, quietly
        return func(blocks, axis=(1, 3))


def read_mosaic(path: Path) -> np.ndarray:
    """A mosaic with the pixels no image covered (weight 0) as NaN."""
    img = fitsio.read(str(path)).astype(np.float64)
    wt = path.with_name(f"{path.stem}.wt.fits")
    if wt.is_file():
        img[fitsio.read(str(wt)) <= 0] = np.nan
    return img


def render_png(path: Path, panels: list[tuple[str, np.ndarray]], title: str) -> None:
    """Panels side by side on one grey scale (+-3 binned sigma about the first panel's mode) into ``path``."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    binned = [(label, block_reduce(img, BIN)) for label, img in panels]
    ref = binned[0][1]
    m = background_mode(ref[np.isfinite(ref)])
    lo, hi = m.mode - 3.0 * m.sigma, m.mode + 3.0 * m.sigma
    cmap = matplotlib.colormaps["gray"].copy()
    cmap.set_bad("#203a80")
    fig = Figure(figsize=(4.2 * len(binned), 4.6), dpi=100)
    FigureCanvasAgg(fig)
    for k, (label, img) in enumerate(binned):
        ax = fig.add_subplot(1, len(binned), k + 1)
        ax.imshow(img, origin="lower", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}   grey: {lo:.4g} .. {hi:.4g} ({BIN}x{BIN} binned, +-3 sigma)", fontsize=9)
    fig.savefig(str(path), format="png")


@step("magellanic.swarp_eval", resources={"cpu": 1, "memory_mb": 1024}, outputs=["kred_eval_png"])
def swarp_eval(ctx: StepContext, *, root: str, field: str, tiles: list[str] | None = None) -> dict:
    """Write before/after PNG previews of every mosaic of the field (or of ``tiles``) into ``eval/``."""
    tree = KredTree(Path(root), field)
    index = read_index(tree)
    names = [t for t in index if not tiles or tiles == ["all"] or t in tiles]
    made, pairs = 0, 0
    for tile in names:
        for g in index[tile]["groups"].values():
            before = tree.mosaic(tile, g["filter"], g["exptime"])
            after = tree.mosaic(tile, g["filter"], g["exptime"], bsub=True)
            panels = [(label, read_mosaic(ctx.use(p, filetype="kred_mosaic")))
                      for label, p in (("before matching", before), ("after matching", after)) if p.is_file()]
            if not panels:
                continue
            stem = mosaic_name(tile, g["filter"], g["exptime"])
            with ctx.output(tree.eval_dir / f"{stem}.png", filetype="kred_eval_png") as tmp:
                render_png(tmp, panels, f"{field} {stem}")
            made += 1
            pairs += len(panels) == 2
    FieldLog(tree).write("SwarpEval", f"{made} previews in {tree.eval_dir.relative_to(tree.root)} ({pairs} with "
                                      "before and after matching side by side)")
    return {"previews": made, "before_after": pairs}
