"""The keypoints drawn on the photo: what a person checks by eye (the app's overlay, datablock's batch.png, the
top-losses grid)."""
from __future__ import annotations

from pathlib import Path

from .detect import PAD, Detector, load_rgb, padding
from .features import BONES

def draw_keypoints(img, points):
    """RGB array `img` as a PIL image with the 21 keypoints and the bones between them drawn; `points` are in the
    padded square's normalised coordinates, as `Detector` and `Tracker` return them for that image."""
    from PIL import Image, ImageDraw

    out = Image.fromarray(img)
    w, h = out.size
    side, top, left = padding(h, w)  # `square`'s black square, the image centred in it
    xy = [(x * side - left, y * side - top) for x, y, _ in points]
    pen = ImageDraw.Draw(out)
    width = max(2, round(max(w, h) / 150))
    for a, b in BONES:
        pen.line([xy[a], xy[b]], fill=(0, 255, 0), width=width)
    for x, y in xy:
        pen.ellipse([x - 1.5 * width, y - 1.5 * width, x + 1.5 * width, y + 1.5 * width], fill=(255, 0, 0))
    return out


def plot_landmarks(paths: list, labels: list, path: Path, title: str = "hand landmarks") -> Path:
    """A grid of images with their keypoints and bones drawn (re-detected for display), each titled with its
    label: where the landmark model's input comes from, to check by eye."""
    from ...core.workspace import pyplot, save_figure

    plt = pyplot()

    n = len(paths)
    cols = min(4, max(1, n))
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(2.2 * cols, 2.4 * ((n + cols - 1) // cols)),
                             squeeze=False)
    detector = Detector()
    try:
        for ax, p, label in zip(axes.flat, paths, labels):
            img = load_rgb(p)
            h, w = img.shape[:2]
            side = max(h, w) * (1 + 2 * PAD)
            ax.imshow(img)
            points, _, _ = detector(p)
            if points is not None:  # back from the padded square to this image's pixels
                xy = [((x * side) - (side - w) / 2, (y * side) - (side - h) / 2) for x, y, _ in points]
                for a, b in BONES:
                    ax.plot([xy[a][0], xy[b][0]], [xy[a][1], xy[b][1]], color="lime", linewidth=1)
                ax.scatter([q[0] for q in xy], [q[1] for q in xy], s=4, color="red", zorder=3)
            ax.set_title(f"{label}{'' if points is not None else ' (no hand)'}", fontsize=8)
    finally:
        detector.close()
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)
