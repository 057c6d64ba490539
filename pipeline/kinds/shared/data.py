"""What several kinds share on the data side (no torch): where a detection's keypoints lie in the photo's pixels
(`keypoint_pixels`, the base of the hand crop's box and of the hand network's crop), a crop as PNG bytes (`png`) and
a grid of crops for datablock's batch.png (`plot_crops`). A kind's own data preparation is its `data.py`; this
module and those are all that datablock's fingerprint holds of the kinds' code besides their classes."""
from __future__ import annotations

import io
from pathlib import Path

from ...data import hands


def keypoint_pixels(det: list, width: int, height: int) -> tuple[list[float], list[float]]:
    """The x and y of a found `det`'s 21 keypoints in the photo's pixels."""
    side, top, left = hands.padding(height, width)  # the square `hands.Detector` looked in
    points = hands.keypoints(det)
    return [x * side - left for x, _, _ in points], [y * side - top for _, y, _ in points]


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def plot_crops(images: list, labels: list, path: Path, title: str = "training images: hand crops") -> Path:
    """A grid of crops (PNG bytes) titled with their labels: what the model sees, to check by eye."""
    from PIL import Image

    from ...core.workspace import pyplot, save_figure

    plt = pyplot()

    n = len(images)
    cols = min(4, max(1, n))
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax, png_bytes, label in zip(axes.flat, images, labels):
        ax.imshow(Image.open(io.BytesIO(png_bytes)))
        ax.set_title(label, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)
