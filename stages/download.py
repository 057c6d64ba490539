"""download: materialise the dataset (kaggle / path / url / sklearn / sign_mnist) and describe it."""
from __future__ import annotations

from collections import Counter

from pipeline import datasets, sources
from pipeline.errors import PipelineError
from pipeline.workspace import listing_fingerprint, write_json

DATASET = "dataset.json"


def external_fingerprint(cfg, ws) -> str:
    """A local folder source is fingerprinted by its listing, so edits to it make this stage stale."""
    return datasets.local_fingerprint(cfg.download.source, cfg.download.subdir)


def run(cfg, ws, log):
    d = cfg.download
    root = datasets.image_root(d.source, d.subdir, ws.data, log)
    files = datasets.list_images(root)
    top = [p.relative_to(root).parts for p in files]
    loose = sum(1 for parts in top if len(parts) == 1)
    if loose:
        log(f"skipped {loose} image(s) directly in {root} (not in a class folder)")
    counts = Counter(parts[0] for parts in top if len(parts) > 1)
    links = [p.relative_to(root).as_posix() for p in sources.list_links(root)]
    if links:
        log(f"skipped {len(links)} symbolic link(s) (links inside a dataset are not followed): {', '.join(links[:5])}")
    empty = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
                   and p.name not in counts)
    if empty:
        log(f"skipped {len(empty)} class folder(s) with no images: {', '.join(empty[:10])}")
    if not counts:
        raise PipelineError(f"no class folders with images under {root} ({loose} loose images): expected "
                            f"<root>/<class>/<image> with at least two class folders; set download.subdir "
                            f"to the folder that holds them")
    log(f"{sum(counts.values())} images in {len(counts)} classes under {root}")
    return [write_json(ws.artifact("download", DATASET), {
        "source": sources.redact_source(d.source), "root": str(root), "classes": sorted(counts),
        "counts": dict(sorted(counts.items())),
        "n_images": sum(counts.values()), "empty_classes": empty, "loose_images": loose,
        "links_skipped": links,
        "listing": listing_fingerprint(files, root),
    })]
