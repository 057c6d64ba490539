"""download: materialise each training source (kaggle / path / url / sklearn / sign_mnist / mnist) and describe it.

`download.source` is one source of class folders; `[[download.sources]]` are several, each with its own label
rules and groups (signers). Each source is cached on its own, and a rerun re-lists only the sources whose config
or local files changed: the others' entries are carried over from the previous dataset.json.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pipeline.core import artifacts, fingerprints
from pipeline.core.errors import PipelineError
from pipeline.core.stagespec import StageSpec
from pipeline.core.workspace import listing_fingerprint, read_json, sha256_text, write_json
from pipeline.data import datasets, sources

STAGE = StageSpec(
    "download",
    summary="fetch each source (kaggle/path/url/sklearn) into the cache, find its images, labels and groups",
    writes=(artifacts.DATASET,),
    params=("download",),
    external=True, model_code=False)


def _local(src) -> str:
    return datasets.local_fingerprint(src.source, src.subdir)


def external_fingerprint(cfg, ws) -> str:
    """A local folder source is fingerprinted by its listing, so edits to it make this stage stale. Several
    sources: a JSON object, source name → fingerprint, so that status can name the one that changed."""
    if not cfg.download.sources:
        return _local(cfg.download.training_sources()[0])
    return json.dumps({s.name: _local(s) for s in cfg.download.sources}, sort_keys=True)


def _key(src) -> str:
    """What one source's entry depends on: its config, its local listing and the code that lists it (`datasets` and
    every module it imports, derived from the import graph, and this file)."""
    code = fingerprints.module_code_hash("data.datasets") + sha256_text(Path(__file__).read_text())
    return sha256_text(json.dumps([vars(src), _local(src), code], sort_keys=True, default=str))


def _describe(src, ws, log) -> dict:
    root = datasets.image_root(src.source, src.subdir, ws.data, log)
    files = sources.list_image_strings(root)  # one walk of the folder, for the labels and the listing fingerprint
    items, left = datasets.labelled_images(root, **src.rules(), files=files)
    counts = Counter(label for _, label, _ in items)
    if left["loose"]:
        log(f"{src.name}: skipped {left['loose']} image(s) directly in {root} (not in a class folder)")
    if left["unmatched"]:
        log(f"{src.name}: skipped {left['unmatched']} image(s) whose name label_regex {src.label_regex!r} does not match")
    if left["filtered"]:
        log(f"{src.name}: skipped {left['filtered']} image(s) with labels outside class_regex {src.class_regex!r}")
    links = [p.relative_to(root).as_posix() for p in sources.list_links(root)]
    if links:
        log(f"{src.name}: skipped {len(links)} symbolic link(s) (links inside a dataset are not followed): "
            f"{', '.join(links[:5])}")
    if left["ungrouped"]:
        log(f"{src.name}: {left['ungrouped']} image(s) whose path group_regex {src.group_regex!r} does not match "
            f"are each a group of their own")
    empty = []
    if not src.label_regex:  # class folders that gave no image (a filtered-out class is not worth a warning)
        kept = {rel.split("/", 1)[0] for rel, _, _ in items}
        empty = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink() and sources.visible_name(p.name)
                       and p.name not in kept and _passes_filter(p.name, src))
        if empty:
            log(f"{src.name}: skipped {len(empty)} class folder(s) with no images: {', '.join(empty[:10])}")
    groups = Counter(g for _, _, g in items)
    log(f"{src.name}: {len(items)} images in {len(counts)} classes" +
        (f", {len(groups)} groups" if src.group_regex else "") + f" under {root}")
    return {"name": src.name, "source": sources.redact_source(src.source), "root": str(root),
            "classes": sorted(counts), "counts": dict(sorted(counts.items())), "n_images": len(items),
            "groups": dict(sorted(groups.items())), "empty_classes": empty, "loose_images": left["loose"],
            "unmatched": left["unmatched"], "filtered": left["filtered"], "ungrouped": left["ungrouped"],
            "links_skipped": links,
            "listing": listing_fingerprint(files, root), "key": _key(src)}


def _passes_filter(folder: str, src) -> bool:
    """Whether a class folder's label would pass the source's class_regex (an empty folder that would be
    filtered anyway is not worth a warning)."""
    import re

    from pipeline.data.labels import Labeller

    return not src.class_regex or bool(re.fullmatch(src.class_regex,
                                                    Labeller("", src.label_map, src.uppercase).map(folder)))


def run(cfg, ws, log):
    srcs = cfg.download.training_sources()
    try:
        # the last complete listing: the committed stage folder (this run writes into its staging folder)
        previous = {s["name"]: s for s in read_json(ws.root / "download" / artifacts.DATASET).get("sources", [])}
    except (OSError, ValueError):
        previous = {}
    entries = []
    for src in srcs:
        old = previous.get(src.name)
        if len(srcs) > 1 and old and old.get("key") == _key(src) and Path(old["root"]).is_dir():
            log(f"{src.name}: unchanged, {old['n_images']} images (listed before)")
            entries.append(old)
            continue
        try:
            entries.append(_describe(src, ws, log))
        except PipelineError as e:
            raise PipelineError(f"source {src.name}: {e}" if len(srcs) > 1 else str(e)) from None
    for e in entries:
        if e["n_images"]:
            continue
        if len(srcs) == 1 and not srcs[0].label_regex:
            raise PipelineError(f"no class folders with images under {e['root']} ({e['loose_images']} loose images): "
                                f"expected <root>/<class>/<image> with at least two class folders; set "
                                f"download.subdir to the folder that holds them")
        raise PipelineError(f"source {e['name']}: no labelled images under {e['root']} ({e['loose_images']} loose, "
                            f"{e['unmatched']} not matching label_regex, {e['filtered']} outside class_regex)")
    counts = Counter()
    for e in entries:
        counts.update(e["counts"])
    if len(entries) > 1:
        log(f"{sum(counts.values())} images in {len(counts)} classes from {len(entries)} sources")
    summary = {"sources": entries, "classes": sorted(counts), "counts": dict(sorted(counts.items())),
               "n_images": sum(counts.values())}
    summary["source"] = "; ".join(f"{e['name']}: {e['source']} ({e['n_images']} images)" for e in entries)
    if len(entries) == 1:  # the single-source fields every earlier dataset.json had
        one = entries[0]
        summary.update({k: one[k] for k in ("source", "root", "empty_classes", "loose_images", "links_skipped",
                                            "listing")})
    return [write_json(ws.artifact("download", artifacts.DATASET), summary)]
