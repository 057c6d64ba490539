"""The image kinds' data (datablock): batch.png, a training batch as the model sees it, and with
`datablock.cache` every image decoded once into the pixel cache (data/cache.py)."""
from __future__ import annotations

from pathlib import Path

from ...core import artifacts


def prepare(dls, df, root: Path, ws, log, cache: bool, image_size: int, grayscale: bool) -> list[Path]:
    """batch.png from `dls` (the split's DataLoaders at `image_size`) and, with `cache`, every image decoded once."""
    from ...core.workspace import pyplot, save_figure
    from ...data import cache as pixel_cache

    plt = pyplot()
    dls.show_batch(max_n=16, figsize=(8, 8))
    outputs = [save_figure(plt.gcf(), ws.artifact("datablock", artifacts.BATCH_PNG))]
    if cache:
        outputs += pixel_cache.build(ws, dls, df, root, log, image_size, grayscale)
    return outputs
